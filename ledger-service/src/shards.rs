//! Time-sharded logs in the service (issue #18; formats in `provenance_core::shard`). Each
//! shard is a log of its own — its own tree, tiles and checkpoints under `<origin>/<period>` —
//! over one index space: a shard's entry `i` is ledger position `base + i`, so readings,
//! entries and exports keep their indices across shards. The sequencer closes the open shard at
//! its period's end with a final checkpoint and opens the next (`sequencer/roll.rs`); these are
//! the reads everyone else needs: which shard holds an index, and the checkpoint to prove it by.

use crate::db::{CheckpointRow, ShardRow, StorageError};
use crate::state::{read, write, Shared};
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::shard::Carried;
use std::collections::HashMap;
use std::sync::Arc;

impl Shared {
    /// Every shard, in order; the last is open.
    pub fn shards(&self) -> Arc<Vec<ShardRow>> {
        Arc::clone(&read(&self.shards))
    }

    /// The open shard (the one the sequencer logs into).
    pub fn open_shard(&self) -> ShardRow {
        let shards = self.shards();
        shards
            .last()
            .cloned()
            .unwrap_or_else(|| ShardRow::first(&self.origin))
    }

    /// A shard by number.
    pub fn shard(&self, number: u32) -> Option<ShardRow> {
        self.shards().get(number as usize).cloned()
    }

    /// The shard holding ledger position `index` (the last whose base is not above it), and the
    /// index within it.
    pub fn shard_of_index(&self, index: u64) -> (ShardRow, u64) {
        let shards = self.shards();
        let s = shards
            .iter()
            .rev()
            .find(|s| s.base <= index)
            .cloned()
            .unwrap_or_else(|| ShardRow::first(&self.origin));
        let local = index - s.base;
        (s, local)
    }

    /// Replaces the shard list (the sequencer after a roll-over, a node at start or reload).
    pub fn set_shards(&self, shards: Vec<ShardRow>) {
        if !shards.is_empty() {
            *write(&self.shards) = Arc::new(shards);
        }
    }

    /// The checkpoint a shard's entries are proved by: a closed shard's final one, the open
    /// shard's latest published one.
    pub async fn shard_checkpoint(
        &self,
        shard: &ShardRow,
    ) -> Result<Option<Arc<CheckpointRow>>, StorageError> {
        match shard.final_size {
            Some(size) => Ok(self
                .db
                .checkpoint_at(shard.number, size)
                .await?
                .map(Arc::new)),
            None => Ok(self.latest_checkpoint().filter(|c| c.shard == shard.number)),
        }
    }
}

impl Shared {
    /// In a shard with a period: the ledger position of the entry carrying each registry event
    /// logged before it, by the event's original position (read from the carried entries once,
    /// then kept: a shard's carried entries never change).
    pub async fn carried_positions(
        &self,
        shard: &ShardRow,
    ) -> Result<Arc<HashMap<u64, u64>>, crate::evidence::EvidenceError> {
        use crate::evidence::EvidenceError;
        if let Some(m) = read(&self.carried).get(&shard.number) {
            return Ok(Arc::clone(m));
        }
        let kind = Some(EntryKind::Carried as i16);
        // Carried entries follow the shard start, one after another: the first entry of
        // another kind ends them (a later shard's carried entries are not this shard's).
        let end = shard.final_size.map_or(u64::MAX >> 2, |f| shard.base + f);
        let rows = self
            .db
            .entries_range(shard.base + 1, end, kind, u64::MAX >> 2)
            .await?;
        let mut map = HashMap::with_capacity(rows.len());
        let consecutive = rows
            .into_iter()
            .enumerate()
            .take_while(|(k, (idx, _))| *idx == shard.base + 1 + *k as u64);
        for (_, (idx, leaf)) in consecutive {
            let corrupt = |detail: String| EvidenceError::CorruptEntry { index: idx, detail };
            let entry = LogEntry::from_cbor(&leaf).map_err(|e| corrupt(e.to_string()))?;
            let c = Carried::from_cbor(&entry.body).map_err(|e| corrupt(e.to_string()))?;
            if c.position >= shard.base {
                return Err(corrupt("carries an event of its own shard".into()));
            }
            map.insert(c.position, idx);
        }
        let map = Arc::new(map);
        write(&self.carried).insert(shard.number, Arc::clone(&map));
        Ok(map)
    }
}

impl Shared {
    /// The stored checkpoint whose tree ends at ledger position `to` (a shard's base plus its
    /// size), with its shard: what an export cut at `to` is proved by. At a shard boundary it is
    /// the closed shard's final checkpoint.
    pub async fn checkpoint_ending_at(
        &self,
        to: u64,
    ) -> Result<Option<(ShardRow, CheckpointRow)>, StorageError> {
        let shards = self.shards();
        let Some(shard) = shards.iter().rev().find(|s| s.base < to || s.number == 0) else {
            return Ok(None);
        };
        let cp = self.db.checkpoint_at(shard.number, to - shard.base).await?;
        Ok(cp.map(|c| (shard.clone(), c)))
    }
}
