//! The storage contract (`db/mod.rs`), checked on both engines: one table of cases, each run on
//! a fresh database of every engine `LEDGER_TEST_ENGINES` enables (both when unset). PostgreSQL
//! is the real server at `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use super::*;
use crate::alerts::{Alert, Limit, Status};
use crate::state::TileFetcher;
use crate::tiles::{Frontier, TileSet};
use provenance_core::merkle::{self, MemoryTree};
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;

type Case = fn(&Db) -> Pin<Box<dyn Future<Output = ()> + '_>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |db| Box::pin($name(db)))),*]
    };
}

/// Every case of the contract.
const CASES: &[(&str, Case)] = cases![
    meta_is_set_once,
    batches_are_atomic_and_lookups_agree,
    a_failed_batch_writes_nothing_not_even_side_rows,
    an_index_is_written_once,
    tiles_only_grow,
    checkpoints_are_idempotent_and_ordered,
    registry_events_sequences_and_tokens,
    side_rows_are_written_with_the_batch,
    outbox_claims_are_exclusive_and_attempts_recorded,
    export_claims_progress_and_ends,
    pruning_empties_payloads_and_keeps_the_tree,
    the_fence_holds_off_a_deposed_leader,
    corrupt_rows_are_errors_that_name_the_row,
];

/// A fresh database of one engine, dropped at the end.
struct Fresh {
    db: Db,
    pg_name: Option<String>,
    dir: std::path::PathBuf,
}

fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn enabled(engine: &str) -> bool {
    std::env::var("LEDGER_TEST_ENGINES")
        .map(|v| v.split(',').any(|e| e.trim().eq_ignore_ascii_case(engine)))
        .unwrap_or(true)
}

impl Fresh {
    async fn new(engine: &str) -> Self {
        let mut raw = [0u8; 6];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
        let name = format!("ledger_conf_{}", hex::encode(raw));
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        if engine == "sqlite" {
            let url = format!("sqlite://{}", dir.join("ledger.sqlite").display());
            let db = Db::connect(&url, 4).await.unwrap();
            return Self { db, pg_name: None, dir };
        }
        let admin = sqlx::PgPool::connect(&admin_url())
            .await
            .expect("PostgreSQL at DATABASE_URL");
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let mut opts: sqlx::postgres::PgConnectOptions = admin_url().parse().unwrap();
        opts = opts.database(&name);
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .unwrap();
        sqlx::migrate!("../migrations/postgres").run(&pool).await.unwrap();
        Self {
            db: Db::Pg(pool),
            pg_name: Some(name),
            dir,
        }
    }

    async fn drop_all(self) {
        self.db.close().await;
        if let Some(name) = &self.pg_name {
            if let Ok(admin) = sqlx::PgPool::connect(&admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&admin)
                    .await;
                admin.close().await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn run_all(engine: &str) {
    if !enabled(engine) {
        eprintln!("storage conformance: skipped on {engine}, LEDGER_TEST_ENGINES leaves it out");
        return;
    }
    for (name, case) in CASES {
        let fresh = Fresh::new(engine).await;
        eprintln!("storage conformance on {engine}: {name}");
        case(&fresh.db).await;
        fresh.drop_all().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_on_postgres() {
    run_all("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_on_sqlite() {
    run_all("sqlite").await;
}

fn reading(idx: u64, sensor: &str, seq: u64) -> ReadingRow {
    ReadingRow {
        idx,
        sensor_id: sensor.into(),
        seq,
        sensor_hash: vec![idx as u8; 32],
        gateway_id: "GW".into(),
        measured_at: 1000 + idx,
        received_at: 1001 + idx,
        patient: Some("p".into()),
    }
}

fn entry(idx: u64) -> EntryRow {
    EntryRow {
        idx,
        kind: 1,
        leaf_data: idx.to_le_bytes().to_vec(),
        logged_at: 5,
    }
}

/// A batch of `n` readings from index `from` (sensor S1, seq = index + 1).
fn readings_batch(from: u64, n: u64) -> Batch {
    Batch {
        entries: (from..from + n).map(entry).collect(),
        readings: (from..from + n).map(|i| reading(i, "S1", i + 1)).collect(),
        ..Batch::default()
    }
}

fn alert(id: &str, value: f64) -> Alert {
    Alert {
        id: id.into(),
        patient: "p".into(),
        parameter: "8867-4".into(),
        status: Status::Open,
        severity: 2,
        value,
        reading_index: 0,
        opened_at: 10,
        updated_at: 10,
        last_abnormal_at: 10,
        events: 0,
    }
}

fn endpoint(id: &str) -> EndpointRow {
    EndpointRow {
        id: id.into(),
        url: "http://127.0.0.1:9/hook".into(),
        event_types: vec!["alert.opened".into()],
        secret: "whsec_dGVzdA==".to_string().into(),
        previous_secret: None,
        previous_until: None,
        disabled_reason: None,
        created_at: 1,
    }
}

fn outbox(msg: &str, endpoint: &str, at: u64) -> SideRow {
    SideRow::Outbox {
        msg_id: msg.into(),
        endpoint_id: endpoint.into(),
        event_type: "alert.opened".into(),
        payload: "{}".into(),
        at,
    }
}

async fn meta_is_set_once(db: &Db) {
    assert_eq!(db.log_size().await.unwrap(), 0);
    assert_eq!(db.meta_init("k", "v1").await.unwrap(), "v1");
    assert_eq!(db.meta_init("k", "v2").await.unwrap(), "v1");
    assert_eq!(db.meta("nothing").await.unwrap(), None);
}

async fn batches_are_atomic_and_lookups_agree(db: &Db) {
    let batch = Batch {
        entries: (0..3).map(entry).collect(),
        readings: vec![reading(0, "S1", 1), reading(1, "S1", 2), reading(2, "S2", 1)],
        tiles: vec![TileRow {
            level: 0,
            idx: 0,
            hashes: vec![[1; 32], [2; 32], [3; 32]],
        }],
        ..Batch::default()
    };
    db.commit_batch(&batch).await.unwrap();
    assert_eq!(db.log_size().await.unwrap(), 3);
    assert_eq!(db.count_readings().await.unwrap(), 3);
    assert_eq!(db.entry(1).await.unwrap().unwrap(), (1, 1u64.to_le_bytes().to_vec()));
    assert!(db.entry(3).await.unwrap().is_none());
    let found = db
        .existing_readings(&[("S1".into(), 2), ("S2".into(), 1), ("S2".into(), 9)])
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[&("S1".to_string(), 2)].idx, 1);
    assert_eq!(found[&("S1".to_string(), 2)].sensor_hash, vec![1u8; 32]);
    let all = u64::MAX >> 2;
    assert_eq!(db.reading_indices(Some("p"), None, 0, all, 10).await.unwrap(), vec![0, 1, 2]);
    assert_eq!(db.reading_indices(None, Some("S2"), 0, all, 10).await.unwrap(), vec![2]);
    assert_eq!(db.reading_indices(None, None, 1001, all, 1).await.unwrap(), vec![1]);
    assert_eq!(
        db.entries_range(0, 3, Some(1), 2).await.unwrap(),
        vec![(0, 0u64.to_le_bytes().to_vec()), (1, 1u64.to_le_bytes().to_vec())]
    );
    assert_eq!(db.first_index_after(4).await.unwrap(), Some(0));
    assert_eq!(db.first_index_after(5).await.unwrap(), None);
    assert_eq!(db.logged_before(0).await.unwrap(), 0);
    assert_eq!(db.max_logged_at().await.unwrap(), 5);
    let devices = db.export_devices(0, 3, None).await.unwrap();
    assert_eq!(devices.len(), 3, "{devices:?}");
}

async fn a_failed_batch_writes_nothing_not_even_side_rows(db: &Db) {
    db.insert_endpoint(&endpoint("ep_1")).await.unwrap();
    db.commit_batch(&readings_batch(0, 1)).await.unwrap();
    // A second reading S1/1 violates (sensor, seq) uniqueness: entries, tiles, alerts and the
    // outbox of the same batch stay unwritten.
    let mut bad = Batch {
        entries: vec![entry(1)],
        readings: vec![reading(1, "S1", 1)],
        tiles: vec![TileRow {
            level: 0,
            idx: 0,
            hashes: vec![[1; 32], [2; 32]],
        }],
        ..Batch::default()
    };
    bad.side.push(SideRow::Alert(alert("alrt_1", 150.0)));
    bad.side.push(outbox("msg_1", "ep_1", 10));
    let err = db.commit_batch(&bad).await.unwrap_err();
    assert!(matches!(err, StorageError::Constraint(_)), "{err:?}");
    assert_eq!(db.log_size().await.unwrap(), 1, "a failed batch is not half-written");
    assert!(db.tiles(&[(0, 0)]).await.unwrap().is_empty());
    assert!(db.alert("alrt_1").await.unwrap().is_none());
    assert!(db.outbox_messages(None, 10).await.unwrap().is_empty());
}

async fn an_index_is_written_once(db: &Db) {
    db.commit_batch(&readings_batch(0, 2)).await.unwrap();
    let again = Batch {
        entries: vec![entry(1)],
        ..Batch::default()
    };
    let err = db.commit_batch(&again).await.unwrap_err();
    assert!(matches!(err, StorageError::Constraint(_)), "{err:?}");
    assert_eq!(db.entry(1).await.unwrap().unwrap().1, 1u64.to_le_bytes().to_vec());
}

async fn tiles_only_grow(db: &Db) {
    let tile = |hashes: Vec<[u8; 32]>| Batch {
        tiles: vec![TileRow { level: 0, idx: 0, hashes }],
        ..Batch::default()
    };
    db.commit_batch(&tile(vec![[1; 32], [2; 32]])).await.unwrap();
    db.commit_batch(&tile(vec![[9; 32]])).await.unwrap();
    assert_eq!(db.tiles(&[(0, 0)]).await.unwrap()[0].hashes, vec![[1; 32], [2; 32]]);
    db.commit_batch(&tile(vec![[1; 32], [2; 32], [3; 32]])).await.unwrap();
    let got = db.tiles(&[(0, 0), (1, 0), (0, 7)]).await.unwrap();
    assert_eq!(got.len(), 1, "missing tiles are absent");
    assert_eq!(got[0].hashes.len(), 3);
}

async fn checkpoints_are_idempotent_and_ordered(db: &Db) {
    for size in [3u64, 1, 3] {
        let cp = CheckpointRow {
            size,
            root: [size as u8; 32],
            note: format!("n{size}"),
        };
        db.insert_checkpoint(&cp, 0).await.unwrap();
    }
    let cps = db.checkpoints().await.unwrap();
    assert_eq!(cps.iter().map(|c| c.size).collect::<Vec<_>>(), vec![1, 3]);
    let latest = db.latest_checkpoint().await.unwrap().unwrap();
    assert_eq!((latest.size, latest.root, latest.note.as_str()), (3, [3; 32], "n3"));
    assert_eq!(db.checkpoint_at(1).await.unwrap().unwrap().note, "n1");
    assert!(db.checkpoint_at(2).await.unwrap().is_none());
}

async fn registry_events_sequences_and_tokens(db: &Db) {
    db.commit_batch(&readings_batch(0, 3)).await.unwrap();
    let registry = EntryRow { kind: 2, ..entry(3) };
    db.commit_batch(&Batch {
        entries: vec![registry.clone()],
        readings: vec![reading(4, "S2", 7)],
        ..Batch::default()
    })
    .await
    .unwrap_err(); // a reading row needs its entry
    db.commit_batch(&Batch {
        entries: vec![registry.clone()],
        ..Batch::default()
    })
    .await
    .unwrap();
    assert_eq!(
        db.registry_entries_before(4).await.unwrap(),
        vec![(3, registry.leaf_data.clone())]
    );
    assert!(db.registry_entries_before(3).await.unwrap().is_empty());
    assert_eq!(db.max_seqs().await.unwrap(), vec![("S1".to_string(), 3)]);
    db.insert_token(&[7; 32], "admin", "t", 0).await.unwrap();
    assert_eq!(
        db.token(&[7; 32]).await.unwrap(),
        Some(("admin".to_string(), "t".to_string()))
    );
    assert!(db.token(&[8; 32]).await.unwrap().is_none());
    let rej = readings::Rejection {
        reason: "bad_signature".into(),
        detail: "d".into(),
        envelope_sha256: vec![1; 32],
    };
    db.insert_rejections(9, &[rej.clone(), rej]).await.unwrap();
    assert_eq!(db.count_rejections("bad_signature").await.unwrap(), 2);
    assert_eq!(db.count_rejections("other").await.unwrap(), 0);
    db.insert_security_alert(9, "equivocation", "S1", 1, 0, &[2; 32]).await.unwrap();
}

async fn side_rows_are_written_with_the_batch(db: &Db) {
    db.insert_endpoint(&endpoint("ep_1")).await.unwrap();
    let mut b = readings_batch(0, 1);
    b.side = vec![
        SideRow::Alert(alert("alrt_1", 150.0)),
        SideRow::AlertEvent {
            alert_id: "alrt_1".into(),
            seq: 1,
            at: 10,
            transition: "opened",
            actor: "system".into(),
            severity: 2,
            reading_index: Some(0),
        },
        SideRow::Limit {
            patient: "p".into(),
            loinc: "8867-4".into(),
            limit: Some(Limit { low: Some(40.0), high: None }),
            set_by: "dr".into(),
            at: 10,
        },
        outbox("msg_1", "ep_1", 10),
    ];
    db.commit_batch(&b).await.unwrap();
    let a = db.alert("alrt_1").await.unwrap().unwrap();
    assert_eq!((a.status, a.value, a.events), (Status::Open, 150.0, 1));
    assert_eq!(db.unresolved_alerts().await.unwrap().len(), 1);
    assert_eq!(db.alerts(Some("open"), Some("p"), 10).await.unwrap().len(), 1);
    assert!(db.alerts(Some("resolved"), None, 10).await.unwrap().is_empty());
    let ev = db.alert_events("alrt_1").await.unwrap();
    assert_eq!((ev[0].seq, ev[0].transition.as_str(), ev[0].reading_index), (1, "opened", Some(0)));
    let limits = db.alert_limits().await.unwrap();
    assert_eq!(limits, vec![("p".into(), "8867-4".into(), Limit { low: Some(40.0), high: None })]);
    assert_eq!(db.outbox_messages(Some("pending"), 10).await.unwrap().len(), 1);
    // An update of the alert and the limit removed, in a later batch.
    let mut later = alert("alrt_1", 160.0);
    later.status = Status::Resolved;
    db.commit_batch(&Batch {
        side: vec![
            SideRow::Alert(later),
            SideRow::Limit {
                patient: "p".into(),
                loinc: "8867-4".into(),
                limit: None,
                set_by: "dr".into(),
                at: 11,
            },
        ],
        ..Batch::default()
    })
    .await
    .unwrap();
    assert_eq!(db.alert("alrt_1").await.unwrap().unwrap().status, Status::Resolved);
    assert!(db.unresolved_alerts().await.unwrap().is_empty());
    assert!(db.alert_limits().await.unwrap().is_empty());
}

async fn outbox_claims_are_exclusive_and_attempts_recorded(db: &Db) {
    db.insert_endpoint(&endpoint("ep_1")).await.unwrap();
    db.insert_endpoint(&endpoint("ep_off")).await.unwrap();
    assert!(db.set_endpoint_disabled("ep_off", Some("gone")).await.unwrap());
    assert!(!db.set_endpoint_disabled("ep_none", None).await.unwrap());
    let side = (0..20)
        .map(|n| outbox(&format!("msg_{n:02}"), "ep_1", 10))
        .chain([outbox("msg_off", "ep_off", 10)])
        .collect();
    db.commit_batch(&Batch { side, ..Batch::default() }).await.unwrap();
    // Concurrent claimers get disjoint sets, and a disabled endpoint's message waits.
    let (a, b, c) = tokio::join!(
        db.claim_outbox(100, 1000, 8),
        db.claim_outbox(100, 1000, 8),
        db.claim_outbox(100, 1000, 8)
    );
    let mut ids: Vec<String> = [a.unwrap(), b.unwrap(), c.unwrap()]
        .into_iter()
        .flatten()
        .map(|o| o.msg_id)
        .collect();
    let n = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "a message was claimed twice");
    assert_eq!(n, 20, "every due message of an enabled endpoint claimed once: {ids:?}");
    assert!(db.claim_outbox(500, 1000, 50).await.unwrap().is_empty(), "leased");
    // After the lease: claimable again; attempts recorded with their outcome.
    let again = db.claim_outbox(1200, 1000, 2).await.unwrap();
    assert_eq!(again.len(), 2);
    db.record_attempt(&again[0], 1200, Some(200), None, 5, &DeliveryResult::Delivered)
        .await
        .unwrap();
    db.record_attempt(&again[1], 1200, Some(500), Some("boom"), 5, &DeliveryResult::Retry(5000))
        .await
        .unwrap();
    let att = db.attempts(&again[1].msg_id).await.unwrap();
    assert_eq!((att[0].attempt, att[0].status, att[0].error.as_deref()), (1, Some(500), Some("boom")));
    assert_eq!(db.outbox_messages(Some("delivered"), 50).await.unwrap().len(), 1);
    let retry = db.claim_outbox(4000, 1000, 50).await.unwrap();
    assert!(retry.iter().all(|o| o.msg_id != again[1].msg_id), "not before its retry time");
    assert_eq!(db.replay_message(&again[0].msg_id, 6000).await.unwrap(), 1);
    assert_eq!(db.replay_message(&again[0].msg_id, 6000).await.unwrap(), 0, "already pending");
    assert!(db.rotate_endpoint_secret("ep_1", "whsec_bmV3", 9000).await.unwrap());
    let eps = db.webhook_endpoints().await.unwrap();
    let ep = eps.iter().find(|e| e.id == "ep_1").unwrap();
    assert_eq!(ep.previous_until, Some(9000));
    assert_eq!(secrecy::ExposeSecret::expose_secret(&ep.secret), "whsec_bmV3");
    assert_eq!(ep.event_types, vec!["alert.opened".to_string()]);
}

fn job(id: &str, created_at: u64) -> ExportJob {
    ExportJob {
        id: id.into(),
        state: "queued".into(),
        request: "/v1/export".into(),
        requested_by: "arch".into(),
        patient: None,
        types: vec!["Observation".into()],
        from_index: 0,
        to_index: 4,
        checkpoint: "note".into(),
        transaction_time: 5,
        next_index: 0,
        progress: "{}".into(),
        manifest: None,
        error: None,
        created_at,
        acknowledged_at: None,
    }
}

async fn export_claims_progress_and_ends(db: &Db) {
    db.insert_export(&job("exp_1", 1)).await.unwrap();
    db.insert_export(&job("exp_2", 2)).await.unwrap();
    let (a, b, c) = tokio::join!(
        db.claim_export(100, 1000),
        db.claim_export(100, 1000),
        db.claim_export(100, 1000)
    );
    let mut got: Vec<String> = [a.unwrap(), b.unwrap(), c.unwrap()]
        .into_iter()
        .flatten()
        .map(|j| j.id)
        .collect();
    got.sort();
    assert_eq!(got, vec!["exp_1".to_string(), "exp_2".to_string()], "each job claimed once");
    assert!(db.claim_export(500, 1000).await.unwrap().is_none());
    assert!(db.export_progress("exp_1", 2, "{\"n\":2}", 600, 1000).await.unwrap());
    assert!(db.claim_export(1200, 1000).await.unwrap().map(|j| j.id) == Some("exp_2".into()));
    let j = db.export_job("exp_1").await.unwrap().unwrap();
    assert_eq!((j.state.as_str(), j.next_index, j.types.len()), ("running", 2, 1));
    assert!(db.finish_export("exp_1", Some("{}"), None, 700).await.unwrap());
    assert!(!db.finish_export("exp_1", None, Some("late"), 700).await.unwrap());
    assert!(db.acknowledge_export("exp_1", 800).await.unwrap());
    assert_eq!(db.export_job("exp_1").await.unwrap().unwrap().acknowledged_at, Some(800));
    assert!(db.cancel_export("exp_2", 900).await.unwrap());
    assert!(!db.cancel_export("exp_2", 900).await.unwrap());
    assert!(!db.export_progress("exp_2", 3, "{}", 950, 1000).await.unwrap(), "cancelled");
    assert!(db.export_job("exp_none").await.unwrap().is_none());
}

async fn pruning_empties_payloads_and_keeps_the_tree(db: &Db) {
    let mut b = readings_batch(0, 4);
    b.tiles = vec![TileRow { level: 0, idx: 0, hashes: vec![[1; 32]; 4] }];
    db.commit_batch(&b).await.unwrap();
    assert_eq!(db.export_rows(0, 4, Some("p"), 10).await.unwrap().len(), 4);
    let j = job("exp_1", 1);
    db.insert_export(&j).await.unwrap();
    // Measured before 1002: indices 0 and 1.
    assert_eq!(db.prune_export(&j, 1002, 50).await.unwrap(), 2);
    assert_eq!(db.prune_export(&j, 1002, 60).await.unwrap(), 0, "pruned once");
    assert_eq!(db.pruned_by(1).await.unwrap().as_deref(), Some("exp_1"));
    assert!(db.pruned_by(2).await.unwrap().is_none());
    assert_eq!(db.entry(0).await.unwrap().unwrap().1, Vec::<u8>::new());
    assert_eq!(db.entry(2).await.unwrap().unwrap().1, 2u64.to_le_bytes().to_vec());
    assert_eq!(db.log_size().await.unwrap(), 4, "entries stay");
    assert_eq!(db.tiles(&[(0, 0)]).await.unwrap()[0].hashes.len(), 4, "hashes stay");
}

async fn the_fence_holds_off_a_deposed_leader(db: &Db) {
    let first = db.bump_epoch().await.unwrap();
    let second = db.bump_epoch().await.unwrap();
    assert_eq!(second, first + 1);
    let mut old = readings_batch(0, 1);
    old.fence = Some(first);
    let err = db.commit_batch(&old).await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Fenced { ours, current } if *ours == first && *current == second.to_string()),
        "{err:?}"
    );
    assert_eq!(db.log_size().await.unwrap(), 0, "a fenced batch writes nothing");
    let mut current = readings_batch(0, 1);
    current.fence = Some(second);
    db.commit_batch(&current).await.unwrap();
    assert_eq!(db.log_size().await.unwrap(), 1);
}

async fn corrupt_rows_are_errors_that_name_the_row(db: &Db) {
    db.commit_batch(&readings_batch(0, 1)).await.unwrap();
    let cp = CheckpointRow { size: 1, root: [1; 32], note: "n".into() };
    db.insert_checkpoint(&cp, 0).await.unwrap();
    db.commit_batch(&Batch { side: vec![SideRow::Alert(alert("alrt_x", 1.0))], ..Batch::default() })
        .await
        .unwrap();
    let tamper = [
        "UPDATE checkpoints SET root = $1 WHERE size = 1",
        "UPDATE alerts SET state = 'bogus' WHERE id = 'alrt_x'",
        "UPDATE tiles SET hashes = $1",
    ];
    db.commit_batch(&Batch {
        tiles: vec![TileRow { level: 0, idx: 0, hashes: vec![[1; 32]] }],
        ..Batch::default()
    })
    .await
    .unwrap();
    for sql in tamper {
        let s = Sql::new(sql);
        let s = if sql.contains("$1") { s.bytes(&[0; 5]) } else { s };
        db.exec(s).await.unwrap();
    }
    let err = db.latest_checkpoint().await.unwrap_err();
    assert!(
        matches!(&err, StorageError::Corrupt { table: "checkpoints", key, .. } if key == "size 1"),
        "{err:?}"
    );
    assert!(err.to_string().contains("5 bytes"), "{err}");
    let err = db.alert("alrt_x").await.unwrap_err();
    assert!(matches!(&err, StorageError::Corrupt { table: "alerts", key, .. } if key == "alrt_x"), "{err:?}");
    let err = db.tiles(&[(0, 0)]).await.unwrap_err();
    assert!(matches!(&err, StorageError::Corrupt { table: "tiles", key, .. } if key == "0/0"), "{err:?}");
    db.exec(Sql::new("UPDATE entries SET logged_at = -5")).await.unwrap();
    let err = db.max_logged_at().await.unwrap_err();
    assert!(err.to_string().contains("negative"), "{err}");
}

/// One million leaves: tiles written in sequencer-sized batches; proofs read back from storage
/// match an independent in-memory tree for random indices and sizes, and verify.
async fn proofs_at_one_million(db: &Db) {
    let n: u64 = 1 << 20;
    let mut frontier = Frontier::default();
    let mut mem = MemoryTree::new();
    let mut dirty = BTreeSet::new();
    for i in 0..n {
        let h = merkle::leaf_hash(&i.to_le_bytes());
        frontier.push(h, &mut dirty);
        mem.push_leaf_hash(h);
        if (i + 1) % 65_536 == 0 || i + 1 == n {
            let tiles = frontier.take_dirty(&mut dirty);
            db.commit_batch(&Batch { tiles, ..Default::default() }).await.unwrap();
        }
    }
    let fetch = TileFetcher { db, cache: None };
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move |m: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % m
    };
    for _ in 0..200 {
        let size = 1 + rnd(n);
        let index = rnd(size);
        let mut set = TileSet::default();
        let proof = fetch
            .with_tiles(&mut set, |r| merkle::inclusion_proof(r, index, size))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(proof, merkle::inclusion_proof(&mem, index, size).unwrap(), "index {index} size {size}");
        let root = mem.root_at(size).unwrap();
        merkle::verify_inclusion(index, size, &merkle::leaf_hash(&index.to_le_bytes()), &proof, &root)
            .unwrap();
        assert!(set.len() <= 12, "{} tiles read for one proof", set.len());
        let from = 1 + rnd(size);
        let mut set = TileSet::default();
        let c = fetch
            .with_tiles(&mut set, |r| merkle::consistency_proof(r, from, size))
            .await
            .unwrap()
            .unwrap();
        merkle::verify_consistency(from, size, &mem.root_at(from).unwrap(), &root, &c).unwrap();
    }
    // The frontier rebuilt from storage gives the same root.
    let mut set = TileSet::default();
    set.extend(db.tiles(&Frontier::tiles_needed(n)).await.unwrap());
    assert_eq!(Frontier::load(n, &set).unwrap().root(), mem.root_at(n).unwrap());
}

async fn proofs_on(engine: &str) {
    if !enabled(engine) {
        return;
    }
    let fresh = Fresh::new(engine).await;
    proofs_at_one_million(&fresh.db).await;
    fresh.drop_all().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_at_one_million_on_postgres() {
    proofs_on("postgres").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_at_one_million_on_sqlite() {
    proofs_on("sqlite").await;
}
