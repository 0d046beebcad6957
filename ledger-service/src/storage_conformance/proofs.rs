//! Proofs served from stored tiles of a one-million-leaf log, on both engines.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use super::{enabled, Fresh};
use crate::db::{Batch, Db};
use crate::state::TileFetcher;
use crate::tiles::{Frontier, TileSet};
use provenance_core::merkle::{self, MemoryTree};
use std::collections::BTreeSet;

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
            db.commit_batch(&Batch {
                tiles,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    }
    let fetch = TileFetcher {
        db,
        cache: None,
        shard: 0,
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
    set.extend(db.tiles(0, &Frontier::tiles_needed(n)).await.unwrap());
    assert_eq!(
        Frontier::load(n, &set).unwrap().root(),
        mem.root_at(n).unwrap()
    );
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
