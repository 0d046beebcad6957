//! The storage contract (`db/mod.rs`), checked on both engines: one table of cases, each run on
//! a fresh database of every engine `LEDGER_TEST_ENGINES` enables (both when unset). PostgreSQL
//! is the real server at `DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use crate::alerts::{Alert, Status};
use crate::db::readings::{self, ReadingRow};
use crate::db::*;
use std::future::Future;
use std::pin::Pin;

mod guards;
mod proofs;
mod resources;

type Case = fn(&Db) -> Pin<Box<dyn Future<Output = ()> + '_>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), |db| Box::pin($name(db)))),*]
    };
}

/// Every case of the contract.
use guards::*;
use resources::*;

const CASES: &[(&str, Case)] = cases![
    meta_is_set_once,
    batches_are_atomic_and_lookups_agree,
    readings_page_in_a_total_order,
    a_failed_batch_writes_nothing_not_even_side_rows,
    an_index_is_written_once,
    tiles_only_grow,
    checkpoints_are_idempotent_and_ordered,
    registry_events_sequences_and_rejections,
    tokens_end_and_page,
    the_access_trail_is_append_only,
    security_alerts_count_and_notify_once,
    side_rows_are_written_with_the_batch,
    outbox_claims_are_exclusive_and_attempts_recorded,
    export_claims_progress_and_ends,
    pruning_empties_payloads_and_keeps_the_tree,
    the_fence_holds_off_a_deposed_leader,
    corrupt_rows_are_errors_that_name_the_row,
];

/// A fresh database of one engine, dropped at the end.
pub(super) struct Fresh {
    pub(super) db: Db,
    pg_name: Option<String>,
    dir: std::path::PathBuf,
}

fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub(super) fn enabled(engine: &str) -> bool {
    std::env::var("LEDGER_TEST_ENGINES")
        .map(|v| v.split(',').any(|e| e.trim().eq_ignore_ascii_case(engine)))
        .unwrap_or(true)
}

impl Fresh {
    pub(super) async fn new(engine: &str) -> Self {
        let mut raw = [0u8; 6];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
        let name = format!("ledger_conf_{}", hex::encode(raw));
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        if engine == "sqlite" {
            let url = format!("sqlite://{}", dir.join("ledger.sqlite").display());
            let db = Db::connect(&url, 4).await.unwrap();
            return Self {
                db,
                pg_name: None,
                dir,
            };
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
        sqlx::migrate!("../migrations/postgres")
            .run(&pool)
            .await
            .unwrap();
        Self {
            db: Db::Pg(pool),
            pg_name: Some(name),
            dir,
        }
    }

    pub(super) async fn drop_all(self) {
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

pub(super) fn reading(idx: u64, sensor: &str, seq: u64) -> ReadingRow {
    ReadingRow {
        idx,
        sensor_id: sensor.into(),
        seq,
        sensor_hash: vec![idx as u8; 32],
        gateway_id: "GW".into(),
        measured_at: 1000 + idx,
        received_at: 1001 + idx,
        patient: Some("p".into()),
        values: vec![("8867-4", 60.0 + idx as f64)],
    }
}

pub(super) fn entry(idx: u64) -> EntryRow {
    EntryRow {
        idx,
        kind: 1,
        leaf_data: idx.to_le_bytes().to_vec(),
        logged_at: 5,
    }
}

/// A batch of `n` readings from index `from` (sensor S1, seq = index + 1).
pub(super) fn readings_batch(from: u64, n: u64) -> Batch {
    Batch {
        entries: (from..from + n).map(entry).collect(),
        readings: (from..from + n).map(|i| reading(i, "S1", i + 1)).collect(),
        ..Batch::default()
    }
}

pub(super) fn alert(id: &str, value: f64) -> Alert {
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

pub(super) fn endpoint(id: &str) -> EndpointRow {
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

pub(super) fn outbox(msg: &str, endpoint: &str, at: u64) -> SideRow {
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
        readings: vec![
            reading(0, "S1", 1),
            reading(1, "S1", 2),
            reading(2, "S2", 1),
        ],
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
    assert_eq!(
        db.entry(1).await.unwrap().unwrap(),
        (1, 1u64.to_le_bytes().to_vec())
    );
    assert!(db.entry(3).await.unwrap().is_none());
    let found = db
        .existing_readings(&[("S1".into(), 2), ("S2".into(), 1), ("S2".into(), 9)])
        .await
        .unwrap();
    assert_eq!(found.len(), 2);
    assert_eq!(found[&("S1".to_string(), 2)].idx, 1);
    assert_eq!(found[&("S1".to_string(), 2)].sensor_hash, vec![1u8; 32]);
    let all = u64::MAX >> 2;
    assert_eq!(
        db.reading_indices(Some("p"), None, 0, all, 10)
            .await
            .unwrap(),
        vec![0, 1, 2]
    );
    assert_eq!(
        db.reading_indices(None, Some("S2"), 0, all, 10)
            .await
            .unwrap(),
        vec![2]
    );
    assert_eq!(
        db.reading_indices(None, None, 1001, all, 1).await.unwrap(),
        vec![1]
    );
    assert_eq!(
        db.entries_range(0, 3, Some(1), 2).await.unwrap(),
        vec![
            (0, 0u64.to_le_bytes().to_vec()),
            (1, 1u64.to_le_bytes().to_vec())
        ]
    );
    assert_eq!(db.first_index_after(4).await.unwrap(), Some(0));
    assert_eq!(db.first_index_after(5).await.unwrap(), None);
    assert_eq!(db.logged_before(0).await.unwrap(), 0);
    assert_eq!(db.max_logged_at().await.unwrap(), 5);
    let devices = db.export_devices(0, 3, None).await.unwrap();
    assert_eq!(devices.len(), 3, "{devices:?}");
}

async fn readings_page_in_a_total_order(db: &Db) {
    // Seven readings, five of them at the same time: pages of two see each exactly once.
    let mut b = readings_batch(0, 7);
    for (k, r) in b.readings.iter_mut().enumerate() {
        r.measured_at = if k < 5 { 500 } else { 400 + k as u64 };
    }
    db.commit_batch(&b).await.unwrap();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = db
            .reading_page(Some("p"), None, 0, u64::MAX >> 2, after, 2)
            .await
            .unwrap();
        seen.extend(page.iter().map(|p| p.idx));
        match page.last() {
            Some(p) if page.len() == 2 => after = Some((p.measured_at, p.idx)),
            _ => break,
        }
    }
    assert_eq!(seen, [5, 6, 0, 1, 2, 3, 4], "by measured-at, then index");
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
    assert_eq!(
        db.log_size().await.unwrap(),
        1,
        "a failed batch is not half-written"
    );
    assert!(db.tiles(0, &[(0, 0)]).await.unwrap().is_empty());
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
    assert_eq!(
        db.entry(1).await.unwrap().unwrap().1,
        1u64.to_le_bytes().to_vec()
    );
}

async fn tiles_only_grow(db: &Db) {
    let tile = |hashes: Vec<[u8; 32]>| Batch {
        tiles: vec![TileRow {
            level: 0,
            idx: 0,
            hashes,
        }],
        ..Batch::default()
    };
    db.commit_batch(&tile(vec![[1; 32], [2; 32]]))
        .await
        .unwrap();
    db.commit_batch(&tile(vec![[9; 32]])).await.unwrap();
    assert_eq!(
        db.tiles(0, &[(0, 0)]).await.unwrap()[0].hashes,
        vec![[1; 32], [2; 32]]
    );
    db.commit_batch(&tile(vec![[1; 32], [2; 32], [3; 32]]))
        .await
        .unwrap();
    let got = db.tiles(0, &[(0, 0), (1, 0), (0, 7)]).await.unwrap();
    assert_eq!(got.len(), 1, "missing tiles are absent");
    assert_eq!(got[0].hashes.len(), 3);
}

async fn checkpoints_are_idempotent_and_ordered(db: &Db) {
    for size in [3u64, 1, 3] {
        let cp = CheckpointRow::signed(0, size, [size as u8; 32], format!("n{size}\n"));
        db.insert_checkpoint(&cp, 0).await.unwrap();
    }
    let cps = db.checkpoints().await.unwrap();
    assert_eq!(cps.iter().map(|c| c.size).collect::<Vec<_>>(), vec![1, 3]);
    let latest = db.latest_checkpoint(0).await.unwrap().unwrap();
    assert_eq!(
        (latest.size, latest.root, latest.note.as_str()),
        (3, [3; 32], "n3\n")
    );
    assert_eq!(db.checkpoint_at(0, 1).await.unwrap().unwrap().note, "n1\n");
    assert!(db.checkpoint_at(0, 2).await.unwrap().is_none());
    // Cosignatures only grow, are served after the log's note, and count for a quorum.
    assert_eq!(db.latest_cosigned_checkpoint(0, 1).await.unwrap(), None);
    db.record_cosignatures(0, 1, "c1\nc2\n", 2).await.unwrap();
    db.record_cosignatures(0, 1, "c3\n", 1).await.unwrap();
    let one = db.checkpoint_at(0, 1).await.unwrap().unwrap();
    assert_eq!((one.note.as_str(), one.cosigners), ("n1\nc1\nc2\n", 2));
    assert_eq!(
        db.latest_cosigned_checkpoint(0, 2).await.unwrap(),
        Some(one.clone())
    );
    assert_eq!(db.latest_cosigned_checkpoint(0, 3).await.unwrap(), None);
    assert_eq!(
        db.latest_cosigned_checkpoint(0, 0)
            .await
            .unwrap()
            .unwrap()
            .size,
        3
    );
    // Replacing the cosignatures keeps the log's note.
    let more = one.with_cosignatures("c1\nc2\nc3\n".into(), 3);
    assert_eq!(more.note, "n1\nc1\nc2\nc3\n");
}

async fn registry_events_sequences_and_rejections(db: &Db) {
    db.commit_batch(&readings_batch(0, 3)).await.unwrap();
    let registry = EntryRow {
        kind: 2,
        ..entry(3)
    };
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
    let rej = readings::Rejection {
        reason: "bad_signature".into(),
        detail: "d".into(),
        envelope_sha256: vec![1; 32],
    };
    db.insert_rejections(9, &[rej.clone(), rej]).await.unwrap();
    assert_eq!(db.count_rejections("bad_signature").await.unwrap(), 2);
    assert_eq!(db.count_rejections("other").await.unwrap(), 0);
}
