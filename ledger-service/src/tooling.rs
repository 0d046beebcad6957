//! Tooling for the benchmarks in `examples/`: filling a log with synthetic entries written
//! exactly as the sequencer writes them (entries and their tiles in one batch), without the
//! signatures, registry or HTTP in the way.

use crate::db::readings::ReadingRow;
use crate::db::{Batch, Db, EntryRow, StorageError};
use crate::tiles::{Frontier, TileSet};
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

    /// Resumes the log a service left in `db` (a log without shards), to append after it while
    /// no service runs on it.
    pub async fn resume(db: &Db) -> anyhow::Result<Self> {
        let size = db.log_size().await?;
        let mut tiles = TileSet::default();
        tiles.extend(db.tiles(0, &Frontier::tiles_needed(size)).await?);
        let frontier = Frontier::load(size, &tiles).map_err(anyhow::Error::msg)?;
        Ok(Self {
            frontier,
            dirty: BTreeSet::new(),
        })
    }

    /// Appends reading entries (leaf data, logged at `logged_at`) with their `readings` rows
    /// (as the sequencer derives them), in one batch. The readings are not checked: the FHIR
    /// and readings benchmarks read rows and decode leaves, they do not verify them.
    pub async fn append_readings(
        &mut self,
        db: &Db,
        readings: Vec<SyntheticReading>,
        logged_at: u64,
    ) -> Result<(), StorageError> {
        let mut batch = Batch::default();
        for r in readings {
            let idx = self.frontier.size();
            self.frontier
                .push(merkle::leaf_hash(&r.leaf_data), &mut self.dirty);
            batch.entries.push(EntryRow {
                idx,
                kind: 1,
                leaf_data: r.leaf_data,
                logged_at,
            });
            batch.readings.push(ReadingRow {
                idx,
                sensor_id: r.sensor_id,
                seq: r.seq,
                sensor_hash: vec![0; 32],
                gateway_id: r.gateway_id,
                measured_at: r.measured_at,
                received_at: r.measured_at,
                patient: r.patient,
                values: r.values,
            });
        }
        batch.tiles = self.frontier.take_dirty(&mut self.dirty);
        db.commit_batch(&batch).await
    }
}

/// A synthetic reading: its leaf data and the row the sequencer would derive.
pub struct SyntheticReading {
    /// The log entry's bytes.
    pub leaf_data: Vec<u8>,
    /// Sensor id.
    pub sensor_id: String,
    /// Sequence number (unique per sensor).
    pub seq: u64,
    /// Gateway id.
    pub gateway_id: String,
    /// Measured at, Unix ms.
    pub measured_at: u64,
    /// Patient pseudonym.
    pub patient: Option<String>,
    /// Values (LOINC, value).
    pub values: Vec<(&'static str, f64)>,
}
