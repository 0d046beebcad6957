//! One sequencer per log on PostgreSQL: a second node is a standby (503, not ready) while the
//! first leads, takes over when the leader stops, and continues the same log consistently; a
//! leader whose epoch was superseded cannot commit (fencing).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;

use common::now_ms;
use common::{Devices, Engine, TestApp};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::merkle;
use provenance_core::note::NoteVerifier;
use serde_json::Value;
use std::time::{Duration, Instant};

async fn ingest(app: &TestApp, dev: &Devices, seqs: std::ops::Range<u64>) -> (u16, Value) {
    // One base time per process: the same sequence number always gives the same bytes.
    static T0: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let now = *T0.get_or_init(now_ms);
    let envs: Vec<Vec<u8>> = seqs
        .map(|seq| dev.envelope(0, 0, seq, now - 10_000 + seq, 70))
        .collect();
    app.ingest(&envs).await
}

/// Proves the checkpoint `old` a prefix of `new` (both verified with `key`) with the consistency
/// proof `app` serves.
async fn assert_consistent(app: &TestApp, key: &NoteVerifier, old: &str, new: &str) {
    let (old, new) = (
        Checkpoint::open(old, key).unwrap(),
        Checkpoint::open(new, key).unwrap(),
    );
    let p: Value = app
        .get(
            &format!(
                "/v1/log/proof/consistency?from={}&to={}",
                old.size, new.size
            ),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let hashes: Vec<merkle::Hash> = p["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| common::b64(h).try_into().unwrap())
        .collect();
    merkle::verify_consistency(old.size, new.size, &old.root, &new.root, &hashes).unwrap();
}

/// The log's sequencer epoch as stored (every new leadership bumps it).
async fn sequencer_epoch(pool: &sqlx::PgPool) -> String {
    sqlx::query_scalar::<_, String>("SELECT value FROM log_meta WHERE key = 'sequencer_epoch'")
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn status(app: &TestApp, path: &str) -> u16 {
    app.get(path, None).await.status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_takes_over_when_the_leader_stops() {
    if !Engine::Postgres.required("a_standby_takes_over_when_the_leader_stops") {
        return;
    }
    let a = TestApp::spawn(Engine::Postgres).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&a).await;
    assert_eq!(ingest(&a, &dev, 0..5).await.0, 200);
    let b = a.second_node().await;
    // The standby: alive, not ready, and it refuses the API with a clear problem.
    assert_eq!(status(&b, "/healthz").await, 200);
    assert_eq!(status(&b, "/readyz").await, 503);
    let (s, body) = ingest(&b, &dev, 5..6).await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(
        body["type"],
        "https://vitals-ledger.example/problems/standby"
    );
    assert_eq!(status(&b, "/v1/log/checkpoint").await, 503);
    // The leader goes on.
    assert_eq!(ingest(&a, &dev, 5..10).await.0, 200);
    let size_a = a.shared.committed();
    let cp_a = a.wait_for_checkpoint(size_a).await;
    let key = NoteVerifier::from_vkey(
        a.get("/v1/log/key", None)
            .await
            .json::<Value>()
            .await
            .unwrap()["vkey"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    // The leader stops (its lock's session ends): the standby takes over.
    let _stopped = a.stop().await;
    let t = Instant::now();
    while status(&b, "/readyz").await != 200 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the standby did not take over"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It continues the same log: duplicates are recognised, new readings follow.
    let (s, body) = ingest(&b, &dev, 8..12).await;
    assert_eq!(s, 200, "{body}");
    let r = body["results"].as_array().unwrap();
    assert_eq!(r[0]["status"], "duplicate");
    assert_eq!(r[2]["status"], "accepted");
    assert_eq!(r[2]["index"].as_u64(), Some(size_a), "no gap, no overlap");
    let size_b = b.shared.committed();
    let cp_b = b.wait_for_checkpoint(size_b).await;
    assert_consistent(&b, &key, &cp_a, &cp_b).await;
    b.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_leader_cannot_commit() {
    if !Engine::Postgres.required("a_superseded_leader_cannot_commit") {
        return;
    }
    let app = TestApp::spawn(Engine::Postgres).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    assert_eq!(ingest(&app, &dev, 0..3).await.0, 200);
    let before = app.readings().await;
    // Another leader's epoch (as if this node had lost its lock without noticing).
    let pool = sqlx::PgPool::connect(&app.storage.url).await.unwrap();
    sqlx::query("UPDATE log_meta SET value = (CAST(value AS BIGINT) + 1)::text WHERE key = 'sequencer_epoch'")
        .execute(&pool)
        .await
        .unwrap();
    let (s, body) = ingest(&app, &dev, 3..6).await;
    assert_eq!(s, 503, "{body}");
    assert_eq!(app.readings().await, before, "nothing stored");
    pool.close().await;
    app.finish().await;
}

/// The leader's lock session dies (as in a PostgreSQL restart or a network cut): it steps down,
/// stands again, wins (no other node), reloads and leads on, under a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_its_lock_stands_again() {
    if !Engine::Postgres.required("a_leader_that_loses_its_lock_stands_again") {
        return;
    }
    let app = TestApp::spawn(Engine::Postgres).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    assert_eq!(ingest(&app, &dev, 0..3).await.0, 200);
    let pool = sqlx::PgPool::connect(&app.storage.url).await.unwrap();
    let epoch = || sequencer_epoch(&pool);
    let before = epoch().await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l JOIN pg_database d ON d.oid = l.database \
         WHERE l.locktype = 'advisory' AND l.granted AND d.datname = current_database()",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(killed, vec![true], "the leader's lock session");
    let t = Instant::now();
    loop {
        if epoch().await != before && status(&app, "/readyz").await == 200 {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the node did not lead again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (s, body) = ingest(&app, &dev, 3..6).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "accepted");
    pool.close().await;
    app.finish().await;
}

/// A batch whose commit fails mid-transaction (its connection killed, as in a database
/// fail-over) is not acknowledged, and the node no longer trusts its state in memory: it reloads
/// the log's state from storage and leads on under a new epoch, with the same lock. Everything
/// resubmitted is then logged exactly once and the log stays consistent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_commit_reloads_the_log_state() {
    if !Engine::Postgres.required("a_failed_commit_reloads_the_log_state") {
        return;
    }
    let app = TestApp::spawn(Engine::Postgres).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    assert_eq!(ingest(&app, &dev, 0..3).await.0, 200);
    let first_cp = app.wait_for_checkpoint(app.shared.committed()).await;
    let pool = sqlx::PgPool::connect(&app.storage.url).await.unwrap();
    let epoch = || sequencer_epoch(&pool);
    let before = epoch().await;
    // Batches of 200 readings, one after the other, while a killer ends every session that is
    // inside a transaction writing the log (never the lock's session).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let killer = {
        let pool = pool.clone();
        let stop = std::sync::Arc::clone(&stop);
        tokio::spawn(async move {
            let mut killed = 0u64;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let n: Vec<bool> = sqlx::query_scalar(
                    "SELECT pg_terminate_backend(a.pid) FROM pg_stat_activity a \
                     WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
                       AND a.state IN ('active', 'idle in transaction') AND a.xact_start IS NOT NULL \
                       AND a.query ILIKE '%entries%' \
                       AND a.pid NOT IN (SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted)",
                )
                .fetch_all(&pool)
                .await
                .unwrap_or_default();
                killed += n.iter().filter(|k| **k).count() as u64;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            killed
        })
    };
    // As a gateway does: a batch that was not acknowledged is sent again, before anything newer
    // (the per-sensor sequence rule refuses an older one after a newer).
    let mut failures = 0;
    let t = Instant::now();
    let mut next = 3;
    while epoch().await == before || failures == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "no commit failed and reloaded"
        );
        let (s, _) = ingest(&app, &dev, next..next + 200).await;
        if s == 200 {
            next += 200;
        } else {
            failures += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(killer.await.unwrap() > 0);
    // The node leads again (same lock) and takes the resubmission: each reading once.
    let t = Instant::now();
    loop {
        let (s, body) = ingest(&app, &dev, next..next + 200).await;
        if s == 200 {
            next += 200;
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the node did not lead again: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&app, "/readyz").await, 200);
    let logged: i64 = sqlx::query_scalar("SELECT count(*) FROM readings")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(logged as u64, next, "every reading sent, once");
    // The log is consistent across the reload: the first checkpoint is a prefix of the last.
    let size = app.shared.committed();
    let last_cp = app.wait_for_checkpoint(size).await;
    let vkey: Value = app.get("/v1/log/key", None).await.json().await.unwrap();
    let v = NoteVerifier::from_vkey(vkey["vkey"].as_str().unwrap()).unwrap();
    assert_consistent(&app, &v, &first_cp, &last_cp).await;
    pool.close().await;
    app.finish().await;
}
