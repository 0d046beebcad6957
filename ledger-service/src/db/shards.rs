//! The shards of a time-sharded log (issue #18, `provenance_core::shard`): one row per shard,
//! written when the sequencer opens it (in the batch that logs its shard start) and completed
//! once, when it closes it (in the transaction that stores its final checkpoint). Shard 0 is the
//! log as first started, under the log's own origin.

use super::log::{insert_checkpoint, CheckpointRow};
use super::{Cols, Db, DbResult, DbRow, Sql, StorageError};

/// A shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardRow {
    /// 0, 1, 2, … in log order.
    pub number: u32,
    /// The period name (`2027-01`); empty for shard 0 of a log started without shards.
    pub name: String,
    /// Its origin: the log's, or `<origin>/<name>`.
    pub origin: String,
    /// Period start, Unix ms (0 for shard 0 without a period).
    pub start_ms: u64,
    /// Period end (exclusive), Unix ms (`u64::MAX >> 1` for shard 0 without a period).
    pub end_ms: u64,
    /// Readings measured up to this long before the start are taken, ms.
    pub grace_ms: u64,
    /// The ledger position of its entry 0.
    pub base: u64,
    /// Its final size, once closed.
    pub final_size: Option<u64>,
}

/// The end of a shard without a period (as large as both engines store).
pub const NO_END: u64 = i64::MAX as u64;

impl ShardRow {
    /// Shard 0 of a log started without shards.
    pub fn first(origin: &str) -> Self {
        Self {
            number: 0,
            name: String::new(),
            origin: origin.to_string(),
            start_ms: 0,
            end_ms: NO_END,
            grace_ms: 0,
            base: 0,
            final_size: None,
        }
    }

    /// Whether it is a period's shard (not shard 0 of a log started without shards).
    pub fn has_period(&self) -> bool {
        !self.name.is_empty()
    }

    /// Whether a reading measured at `measured_at` may be logged in it: any reading in a shard
    /// without a period, else one measured in its period or within the grace before it.
    pub fn takes(&self, measured_at: u64) -> bool {
        !self.has_period() || measured_at.saturating_add(self.grace_ms) >= self.start_ms
    }

    /// The statement that stores it (in the batch that logs its shard start).
    pub(crate) fn insert(&self) -> Sql {
        self.insert_then("")
    }

    fn insert_then(&self, on_conflict: &'static str) -> Sql {
        Sql::new(format!(
            "INSERT INTO shards (number, name, origin, start_ms, end_ms, grace_ms, base) \
             VALUES ($1, $2, $3, $4, $5, $6, $7){on_conflict}"
        ))
        .u64(u64::from(self.number))
        .text(&self.name)
        .text(&self.origin)
        .u64(self.start_ms)
        .u64(self.end_ms)
        .u64(self.grace_ms)
        .u64(self.base)
    }
}

fn shard_of(r: &DbRow) -> DbResult<ShardRow> {
    let c = Cols::new(r, "shards");
    let number = c.u64(0)?;
    let c = c.keyed(number);
    Ok(ShardRow {
        number: u32::try_from(number).map_err(|_| c.corrupt(0, "shard number out of range"))?,
        name: c.text(1)?,
        origin: c.text(2)?,
        start_ms: c.u64(3)?,
        end_ms: c.u64(4)?,
        grace_ms: c.u64(5)?,
        base: c.u64(6)?,
        final_size: c.opt_u64(7)?,
    })
}

impl Db {
    /// Every shard, in order. A log without a stored shard has shard 0 under `origin`; a stored
    /// list that is not numbered 0, 1, 2, … with growing bases, or whose shard 0 is not of
    /// `origin`, is corrupt.
    pub async fn shards(&self, origin: &str) -> DbResult<Vec<ShardRow>> {
        let s = Sql::new(
            "SELECT number, name, origin, start_ms, end_ms, grace_ms, base, final_size \
             FROM shards ORDER BY number",
        );
        let mut rows = self.decode_all(s, shard_of).await?;
        if rows.is_empty() {
            rows.push(ShardRow::first(origin));
        }
        let corrupt = |key: u32, detail: &str| StorageError::Corrupt {
            table: "shards",
            key: key.to_string(),
            column: 0,
            detail: detail.into(),
        };
        if rows[0].number != 0 || rows[0].base != 0 || rows[0].origin != origin {
            return Err(corrupt(rows[0].number, "shard 0 is not the log's first"));
        }
        for w in rows.windows(2) {
            let follows = w[0].final_size.map(|f| w[0].base + f);
            if w[1].number != w[0].number + 1 || follows != Some(w[1].base) {
                return Err(corrupt(
                    w[1].number,
                    "does not follow the closed shard before it",
                ));
            }
        }
        Ok(rows)
    }

    /// The base of a shard (0 for shard 0 of a log without stored shards).
    pub(crate) async fn shard_base(&self, number: u32) -> DbResult<u64> {
        let s = Sql::new("SELECT base FROM shards WHERE number = $1").u64(u64::from(number));
        match self.number("shards", s).await? {
            Some(b) => Ok(b),
            None if number == 0 => Ok(0),
            None => Err(StorageError::Corrupt {
                table: "shards",
                key: number.to_string(),
                column: 0,
                detail: "a checkpoint's shard is not stored".into(),
            }),
        }
    }

    /// The latest checkpoint of the latest shard cosigned by at least `quorum` witnesses.
    pub(crate) async fn latest_cosigned_checkpoint_of_any_shard(
        &self,
        quorum: u64,
    ) -> DbResult<Option<CheckpointRow>> {
        let s = Sql::new("SELECT MAX(number) FROM shards");
        let shard = self.number("shards", s).await?.unwrap_or(0);
        self.latest_cosigned_checkpoint(u32::try_from(shard).unwrap_or(u32::MAX), quorum)
            .await
    }

    /// Stores shard 0 under `origin` if no shard is stored (the leader, at start).
    pub(crate) async fn ensure_first_shard(&self, origin: &str) -> DbResult<()> {
        let s = ShardRow::first(origin).insert_then(" ON CONFLICT DO NOTHING");
        self.exec(s).await.map(drop)
    }

    /// Closes a shard: stores its final checkpoint and marks it closed at that size, in one
    /// transaction (`false`: it was closed already, nothing written).
    pub(crate) async fn close_shard(&self, last: &CheckpointRow, at: u64) -> DbResult<bool> {
        let guard = Sql::new(
            "UPDATE shards SET final_size = $1, closed_at = $2 \
             WHERE number = $3 AND final_size IS NULL",
        )
        .u64(last.size)
        .u64(at)
        .u64(u64::from(last.shard));
        self.exec_guarded(guard, vec![insert_checkpoint(last, at)])
            .await
    }
}
