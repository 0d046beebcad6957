//! Storage conformance: the same suite against PostgreSQL and SQLite. Batches are atomic,
//! lookups agree, tiles only grow, and proofs served from stored tiles of a one-million-leaf
//! log are correct for random indices and sizes.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

mod common;

use common::{Engine, Storage};
use ledger_service::db::{Batch, CheckpointRow, Db, EntryRow, ReadingRow, TileRow};
use ledger_service::state::TileFetcher;
use ledger_service::tiles::{Frontier, TileSet};
use provenance_core::merkle::{self, MemoryTree};
use std::collections::BTreeSet;

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

async fn conformance(engine: Engine) {
    let storage = Storage::fresh(engine).await;
    let db = Db::connect(&storage.url, 4).await.unwrap();
    assert_eq!(db.log_size().await.unwrap(), 0);
    assert_eq!(db.meta_init("k", "v1").await.unwrap(), "v1");
    assert_eq!(
        db.meta_init("k", "v2").await.unwrap(),
        "v1",
        "meta is set once"
    );

    let batch = Batch {
        side: vec![],
        fence: None,
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
    };
    db.commit_batch(&batch).await.unwrap();
    assert_eq!(db.log_size().await.unwrap(), 3);
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
    assert_eq!(
        db.reading_indices(Some("p"), None, 0, u64::MAX >> 2, 10)
            .await
            .unwrap(),
        vec![0, 1, 2]
    );
    assert_eq!(
        db.reading_indices(None, Some("S2"), 0, u64::MAX >> 2, 10)
            .await
            .unwrap(),
        vec![2]
    );

    // A batch that violates a constraint (a second reading with S1/1) leaves nothing behind.
    let bad = Batch {
        side: vec![],
        fence: None,
        entries: vec![entry(3)],
        readings: vec![reading(3, "S1", 1)],
        tiles: vec![TileRow {
            level: 0,
            idx: 0,
            hashes: vec![[1; 32], [2; 32], [3; 32], [4; 32]],
        }],
    };
    assert!(db.commit_batch(&bad).await.is_err());
    assert_eq!(
        db.log_size().await.unwrap(),
        3,
        "a failed batch is not half-written"
    );
    assert_eq!(db.tiles(&[(0, 0)]).await.unwrap()[0].hashes.len(), 3);

    // Tiles only grow: a narrower rewrite is ignored.
    db.commit_batch(&Batch {
        tiles: vec![TileRow {
            level: 0,
            idx: 0,
            hashes: vec![[9; 32]],
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(db.tiles(&[(0, 0)]).await.unwrap()[0].hashes[0], [1; 32]);

    // Checkpoints: idempotent per size, ordered.
    for size in [3u64, 1, 3] {
        db.insert_checkpoint(
            &CheckpointRow {
                size,
                root: [size as u8; 32],
                note: format!("n{size}"),
            },
            0,
        )
        .await
        .unwrap();
    }
    let cps = db.checkpoints().await.unwrap();
    assert_eq!(cps.iter().map(|c| c.size).collect::<Vec<_>>(), vec![1, 3]);
    assert_eq!(db.latest_checkpoint().await.unwrap().unwrap().size, 3);

    // Registry entries come back alone, in log order; each sensor's highest sequence number;
    // tokens by hash.
    let size = db.log_size().await.unwrap();
    let registry = EntryRow {
        kind: 2,
        ..entry(size)
    };
    db.commit_batch(&Batch {
        entries: vec![registry.clone()],
        ..Batch::default()
    })
    .await
    .unwrap();
    assert_eq!(
        db.registry_entries_before(size + 1).await.unwrap(),
        vec![(size, registry.leaf_data.clone())]
    );
    assert!(db.registry_entries_before(size).await.unwrap().is_empty());
    let mut seqs = db.max_seqs().await.unwrap();
    seqs.sort();
    assert_eq!(seqs, vec![("S1".to_string(), 2), ("S2".to_string(), 1)]);
    db.insert_token(&[7; 32], "admin", "t", 0).await.unwrap();
    assert_eq!(
        db.token(&[7; 32]).await.unwrap(),
        Some(("admin".to_string(), "t".to_string()))
    );
    assert!(db.token(&[8; 32]).await.unwrap().is_none());
    db.close().await;
    storage.drop_all().await;
}
both_engines!(conformance_both, conformance);

/// One million leaves: tiles written in sequencer-sized batches; proofs read back from storage
/// match an independent in-memory tree for random indices and sizes, and verify.
async fn proofs_at_one_million(engine: Engine) {
    let storage = Storage::fresh(engine).await;
    let db = Db::connect(&storage.url, 4).await.unwrap();
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
            db.commit_batch(&Batch {
                tiles,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    }
    let fetch = TileFetcher {
        db: &db,
        cache: None,
    };
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
        assert_eq!(
            proof,
            merkle::inclusion_proof(&mem, index, size).unwrap(),
            "index {index} size {size}"
        );
        let root = mem.root_at(size).unwrap();
        merkle::verify_inclusion(
            index,
            size,
            &merkle::leaf_hash(&index.to_le_bytes()),
            &proof,
            &root,
        )
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
    assert_eq!(
        Frontier::load(n, &set).unwrap().root(),
        mem.root_at(n).unwrap()
    );
    db.close().await;
    storage.drop_all().await;
}
both_engines!(proofs_at_one_million_both, proofs_at_one_million);
