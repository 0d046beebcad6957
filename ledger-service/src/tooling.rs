//! Tooling for the benchmarks in `examples/`: filling a log with synthetic entries written
//! exactly as the sequencer writes them (entries and their tiles in one batch), without the
//! signatures, registry or HTTP in the way.

use crate::db::{Batch, Db, EntryRow, StorageError};
use crate::tiles::Frontier;
use provenance_core::merkle;
use std::collections::BTreeSet;

/// A log being filled with synthetic reading entries.
#[derive(Default)]
pub struct SyntheticLog {
    frontier: Frontier,
    dirty: BTreeSet<(u8, u64)>,
}

impl SyntheticLog {
    /// An empty log (the database must be empty too).
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries so far.
    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    /// Appends entries with these leaf data (logged at time 0) and their tiles, in one batch.
    pub async fn append(&mut self, db: &Db, leaves: Vec<Vec<u8>>) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        for leaf_data in leaves {
            let idx = self.frontier.size();
            self.frontier
                .push(merkle::leaf_hash(&leaf_data), &mut self.dirty);
            batch.entries.push(EntryRow {
                idx,
                kind: 1,
                leaf_data,
                logged_at: 0,
            });
        }
        batch.tiles = self.frontier.take_dirty(&mut self.dirty);
        db.commit_batch(&batch).await
    }
}
