//! The log: entries, tiles, checkpoints, the sequencer's batch and the epoch that fences it.

use super::{alerts, webhooks};
use super::{pg, sqlite, Cols, Db, DbResult, DbRow, Sql, StorageError};
use crate::alerts::{Alert, Limit};
use crate::db::readings::ReadingRow;
use provenance_core::merkle::Hash;

/// One log entry to insert.
#[derive(Debug, Clone)]
pub struct EntryRow {
    /// Log index.
    pub idx: u64,
    /// 1 reading, 2 registry event.
    pub kind: i16,
    /// The leaf data.
    pub leaf_data: Vec<u8>,
    /// Logged-at, ms.
    pub logged_at: u64,
}

/// A stored tile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TileRow {
    /// Tile level.
    pub level: u8,
    /// Tile index.
    pub idx: u64,
    /// The hashes (1..=256).
    pub hashes: Vec<Hash>,
}

/// A stored checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointRow {
    /// The shard it is of (0: the log as first started, see `db::shards`).
    pub shard: u32,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// The checkpoint as served: the log-signed note followed by the witness cosignatures
    /// collected for it (`cosignatures`).
    pub note: String,
    /// The cosignature lines collected (each ending in `\n`; empty if none yet).
    pub cosignatures: String,
    /// How many configured witnesses they are from.
    pub cosigners: u64,
}

impl CheckpointRow {
    /// A checkpoint just signed by the log, without cosignatures.
    pub fn signed(shard: u32, size: u64, root: Hash, note: String) -> Self {
        Self {
            shard,
            size,
            root,
            note,
            cosignatures: String::new(),
            cosigners: 0,
        }
    }

    /// The same checkpoint with `lines` (from `cosigners` witnesses) as its cosignatures.
    pub fn with_cosignatures(&self, lines: String, cosigners: u64) -> Self {
        let signed = self
            .note
            .strip_suffix(self.cosignatures.as_str())
            .unwrap_or(&self.note);
        Self {
            shard: self.shard,
            size: self.size,
            root: self.root,
            note: format!("{signed}{lines}"),
            cosignatures: lines,
            cosigners,
        }
    }
}

/// Rows the sequencer writes beside the log, in the same transaction (contract 1): alerts and
/// their transitions, patient alert limits (`db::alerts`), and the webhook outbox
/// (`db::webhooks`). Each resource module writes its own variants.
#[derive(Debug, Clone)]
pub enum SideRow {
    /// An alert's new state (insert or update).
    Alert(Alert),
    /// A transition.
    AlertEvent {
        /// Alert.
        alert_id: String,
        /// Its number among the alert's transitions (1, 2, …).
        seq: u32,
        /// When.
        at: u64,
        /// opened | escalated | acknowledged | resolved.
        transition: &'static str,
        /// `system` or a token name.
        actor: String,
        /// Severity after it.
        severity: u8,
        /// The reading that caused it, if one did.
        reading_index: Option<u64>,
    },
    /// A patient's limits for a vital sign (`None`: back to NEWS2).
    Limit {
        /// Patient pseudonym.
        patient: String,
        /// LOINC.
        loinc: String,
        /// The limits.
        limit: Option<Limit>,
        /// Who set them.
        set_by: String,
        /// When.
        at: u64,
    },
    /// A logged private message's query row.
    Private(super::private::PrivateRow),
    /// A shard opened by the batch (which logs its shard start).
    OpenShard(super::shards::ShardRow),
    /// A webhook message for one endpoint.
    Outbox {
        /// The webhook-id.
        msg_id: String,
        /// Endpoint.
        endpoint_id: String,
        /// Event type.
        event_type: String,
        /// JSON body.
        payload: String,
        /// When.
        at: u64,
    },
}

impl SideRow {
    /// The statement that writes it (the same on both engines).
    pub(crate) fn statement(&self) -> Sql {
        match self {
            SideRow::Alert(a) => alerts::write_alert(a),
            SideRow::AlertEvent {
                alert_id,
                seq,
                at,
                transition,
                actor,
                severity,
                reading_index,
            } => alerts::write_event(
                alert_id,
                *seq,
                *at,
                transition,
                actor,
                *severity,
                *reading_index,
            ),
            SideRow::Limit {
                patient,
                loinc,
                limit,
                set_by,
                at,
            } => alerts::write_limit(patient, loinc, limit.as_ref(), set_by, *at),
            SideRow::Outbox {
                msg_id,
                endpoint_id,
                event_type,
                payload,
                at,
            } => webhooks::write_outbox(msg_id, endpoint_id, event_type, payload, *at),
            SideRow::Private(r) => super::private::write_private(r),
            SideRow::OpenShard(r) => r.insert(),
        }
    }
}

/// What one sequencer batch writes, atomically.
#[derive(Debug, Default)]
pub struct Batch {
    /// Log entries.
    pub entries: Vec<EntryRow>,
    /// Reading rows.
    pub readings: Vec<ReadingRow>,
    /// Changed tiles (full rewrite of each), of the tree of shard `shard`.
    pub tiles: Vec<TileRow>,
    /// The shard the batch's entries and tiles are in.
    pub shard: u32,
    /// Alert, alert-limit and webhook-outbox rows written with the batch.
    pub side: Vec<SideRow>,
    /// The leader's epoch; the transaction commits only if `sequencer_epoch` still holds it
    /// (contract 2, see `election.rs`).
    pub fence: Option<i64>,
}

impl Batch {
    /// Whether it writes nothing.
    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.side.is_empty()
    }
}

/// Checks a fence against the epoch read inside the batch's transaction.
pub(crate) fn check_fence(ours: i64, stored: Option<String>) -> DbResult<()> {
    if stored.as_deref() == Some(ours.to_string().as_str()) {
        Ok(())
    } else {
        Err(StorageError::Fenced {
            ours,
            current: stored.unwrap_or_else(|| "none".into()),
        })
    }
}

/// The columns `checkpoint_of` reads.
const CHECKPOINT_COLS: &str =
    "SELECT size, root, note, cosignatures, cosigners, shard FROM checkpoints";

fn checkpoint_of(r: &DbRow) -> DbResult<CheckpointRow> {
    let c = Cols::new(r, "checkpoints");
    let size = c.u64(0)?;
    let shard = c.u64(5)?;
    let c = c.keyed(format_args!("shard {shard} size {size}"));
    let cosignatures = c.text(3)?;
    Ok(CheckpointRow {
        shard: u32::try_from(shard).map_err(|_| c.corrupt(5, "shard number out of range"))?,
        size,
        root: c.hash(1)?,
        note: format!("{}{cosignatures}", c.text(2)?),
        cosignatures,
        cosigners: c.u64(4)?,
    })
}

impl Db {
    /// Writes one sequencer batch in one transaction (contracts 1–4).
    pub(crate) async fn commit_batch(&self, b: &Batch) -> DbResult<()> {
        let side: Vec<Sql> = b.side.iter().map(SideRow::statement).collect();
        match self {
            Db::Pg(p) => pg::commit_batch(p, b, &side).await,
            Db::Lite(p) => sqlite::commit_batch(p, b, &side).await,
        }
    }

    /// Starts a new sequencer epoch (a new leader) and returns it.
    pub(crate) async fn bump_epoch(&self) -> DbResult<i64> {
        let s = Sql::new(
            "INSERT INTO log_meta (key, value) VALUES ('sequencer_epoch', '1') \
             ON CONFLICT (key) DO UPDATE SET value = CAST(CAST(log_meta.value AS BIGINT) + 1 AS TEXT) RETURNING value",
        );
        let row = self.row(s).await?.ok_or_else(|| StorageError::Corrupt {
            table: "log_meta",
            key: "sequencer_epoch".into(),
            column: 0,
            detail: "no value returned".into(),
        })?;
        let c = Cols::new(&row, "log_meta").keyed("sequencer_epoch");
        let v = c.text(0)?;
        v.parse()
            .map_err(|_| c.corrupt(0, format!("{v:?} is not a number")))
    }

    /// Number of log entries.
    pub(crate) async fn log_size(&self) -> DbResult<u64> {
        let s = Sql::new("SELECT MAX(idx) + 1 FROM entries");
        Ok(self.number("entries", s).await?.unwrap_or(0))
    }

    /// Tiles of shard `shard`'s tree by coordinates (missing ones are absent from the answer).
    pub(crate) async fn tiles(&self, shard: u32, coords: &[(u8, u64)]) -> DbResult<Vec<TileRow>> {
        if coords.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Db::Pg(p) => pg::tiles(p, shard, coords).await,
            Db::Lite(_) => {
                let mut out = Vec::with_capacity(coords.len());
                for &(level, idx) in coords {
                    let s = Sql::new(
                        "SELECT hashes FROM tiles WHERE level = $1 AND idx = $2 AND shard = $3",
                    )
                    .i16(Some(i16::from(level)))
                    .u64(idx)
                    .u64(u64::from(shard));
                    let hashes = self
                        .decode_one(s, |r| {
                            Cols::new(r, "tiles")
                                .keyed(format_args!("{level}/{idx}"))
                                .hashes(0)
                        })
                        .await?;
                    if let Some(hashes) = hashes {
                        out.push(TileRow { level, idx, hashes });
                    }
                }
                Ok(out)
            }
        }
    }

    /// The latest checkpoint of a shard.
    pub(crate) async fn latest_checkpoint(&self, shard: u32) -> DbResult<Option<CheckpointRow>> {
        let s = Sql::new(format!(
            "{CHECKPOINT_COLS} WHERE shard = $1 ORDER BY size DESC LIMIT 1"
        ))
        .u64(u64::from(shard));
        self.decode_one(s, checkpoint_of).await
    }

    /// Every stored checkpoint, oldest first, shard by shard (for audits and tests).
    pub async fn checkpoints(&self) -> DbResult<Vec<CheckpointRow>> {
        let s = Sql::new(format!("{CHECKPOINT_COLS} ORDER BY shard, size"));
        self.decode_all(s, checkpoint_of).await
    }

    /// A shard's stored checkpoint of this size.
    pub(crate) async fn checkpoint_at(
        &self,
        shard: u32,
        size: u64,
    ) -> DbResult<Option<CheckpointRow>> {
        let s = Sql::new(format!("{CHECKPOINT_COLS} WHERE shard = $1 AND size = $2"))
            .u64(u64::from(shard))
            .u64(size);
        self.decode_one(s, checkpoint_of).await
    }

    /// A shard's latest checkpoint cosigned by at least `quorum` witnesses (any checkpoint for
    /// 0).
    pub(crate) async fn latest_cosigned_checkpoint(
        &self,
        shard: u32,
        quorum: u64,
    ) -> DbResult<Option<CheckpointRow>> {
        let s = Sql::new(format!(
            "{CHECKPOINT_COLS} WHERE shard = $1 AND cosigners >= $2 ORDER BY size DESC LIMIT 1"
        ))
        .u64(u64::from(shard))
        .u64(quorum);
        self.decode_one(s, checkpoint_of).await
    }

    /// Records the cosignatures collected for the checkpoint of `size`, if they are from more
    /// witnesses than those recorded (cosignatures only grow). The log-signed note is kept as
    /// it was.
    pub(crate) async fn record_cosignatures(
        &self,
        shard: u32,
        size: u64,
        lines: &str,
        cosigners: u64,
    ) -> DbResult<()> {
        let s = Sql::new(
            "UPDATE checkpoints SET cosignatures = $2, cosigners = $3 \
             WHERE size = $1 AND cosigners < $3 AND shard = $4",
        )
        .u64(size)
        .text(lines)
        .u64(cosigners)
        .u64(u64::from(shard));
        self.exec(s).await.map(drop)
    }

    /// Stores a checkpoint (idempotent per size).
    pub(crate) async fn insert_checkpoint(&self, cp: &CheckpointRow, at: u64) -> DbResult<()> {
        self.exec(insert_checkpoint(cp, at)).await.map(drop)
    }

    /// One log entry: (kind, leaf data).
    pub(crate) async fn entry(&self, idx: u64) -> DbResult<Option<(i16, Vec<u8>)>> {
        let s = Sql::new("SELECT kind, leaf_data FROM entries WHERE idx = $1").u64(idx);
        self.decode_one(s, |r| {
            let c = Cols::new(r, "entries").keyed(idx);
            Ok((c.small(0)?, c.bytes(1)?))
        })
        .await
    }

    /// Entries with `from <= idx < to` (of one kind if given), in index order, at most `limit`.
    pub(crate) async fn entries_range(
        &self,
        from: u64,
        to: u64,
        kind: Option<i16>,
        limit: u64,
    ) -> DbResult<Vec<(u64, Vec<u8>)>> {
        let s = Sql::new(
            "SELECT idx, leaf_data FROM entries WHERE idx >= $1 AND idx < $2 \
             AND ($3 IS NULL OR kind = $3) ORDER BY idx LIMIT $4",
        )
        .u64(from)
        .u64(to)
        .i16(kind)
        .u64(limit);
        self.decode_all(s, index_and_data).await
    }

    /// The first index logged after `at` (Unix ms), if any.
    pub(crate) async fn first_index_after(&self, at: u64) -> DbResult<Option<u64>> {
        let s = Sql::new("SELECT MIN(idx) FROM entries WHERE logged_at > $1").u64(at);
        self.number("entries", s).await
    }

    /// The latest logging time of entries before `idx` (0 if none).
    pub(crate) async fn logged_before(&self, idx: u64) -> DbResult<u64> {
        let s = Sql::new("SELECT MAX(logged_at) FROM entries WHERE idx < $1").u64(idx);
        Ok(self.number("entries", s).await?.unwrap_or(0))
    }

    /// When a shard's checkpoint of `size` entries was published, Unix ms.
    pub(crate) async fn checkpoint_published_at(
        &self,
        shard: u32,
        size: u64,
    ) -> DbResult<Option<u64>> {
        let s = Sql::new("SELECT published_at FROM checkpoints WHERE size = $1 AND shard = $2")
            .u64(size)
            .u64(u64::from(shard));
        self.number("checkpoints", s).await
    }

    /// How many of the first `size` entries were logged after `at`: logging times never go
    /// back along the log, so a binary search over point reads finds the first one (no index
    /// on `logged_at` needed).
    pub(crate) async fn entries_logged_since(&self, at: u64, size: u64) -> DbResult<u64> {
        let logged_at = |idx: u64| {
            let s = Sql::new("SELECT logged_at FROM entries WHERE idx = $1").u64(idx);
            self.number("entries", s)
        };
        let (mut lo, mut hi) = (0, size);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if logged_at(mid).await?.unwrap_or(u64::MAX) > at {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(size - lo)
    }

    /// The latest logging time in the log (0 when empty).
    pub(crate) async fn max_logged_at(&self) -> DbResult<u64> {
        let s = Sql::new("SELECT MAX(logged_at) FROM entries");
        Ok(self.number("entries", s).await?.unwrap_or(0))
    }
}

/// The statement that stores a checkpoint (idempotent per shard and size).
pub(crate) fn insert_checkpoint(cp: &CheckpointRow, at: u64) -> Sql {
    Sql::new(
        "INSERT INTO checkpoints (shard, size, root, note, published_at, cosignatures, cosigners) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (shard, size) DO NOTHING",
    )
    .u64(u64::from(cp.shard))
    .u64(cp.size)
    .bytes(&cp.root)
    .text(
        cp.note
            .strip_suffix(cp.cosignatures.as_str())
            .unwrap_or(&cp.note),
    )
    .u64(at)
    .text(&cp.cosignatures)
    .u64(cp.cosigners)
}

/// (index, leaf data) of an `entries` row.
pub(crate) fn index_and_data(r: &DbRow) -> DbResult<(u64, Vec<u8>)> {
    let c = Cols::new(r, "entries");
    let idx = c.u64(0)?;
    Ok((idx, c.keyed(idx).bytes(1)?))
}
