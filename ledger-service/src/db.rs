//! Storage: one interface ([`Db`]) over two engines, PostgreSQL (production) and SQLite (the
//! embedded default). Every query is written once where the SQL is the same for both (sqlx binds
//! `$N` on both); bulk writes differ: set-based `UNNEST` inserts on PostgreSQL, prepared
//! statements in one transaction on SQLite.
//!
//! Storage contract: [`Db::commit_batch`] writes a batch's entries (registry events among them),
//! readings, side rows and tiles in one transaction; an index MUST NOT be acknowledged before that transaction commits.

use crate::alerts::{Alert, Limit, Status};
use provenance_core::merkle::Hash;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};
use std::collections::HashMap;
use std::str::FromStr;

/// A storage error (always internal: never shown to clients in detail).
pub type DbResult<T> = Result<T, sqlx::Error>;

/// The database: PostgreSQL or SQLite.
#[derive(Clone, Debug)]
pub enum Db {
    /// PostgreSQL (production).
    Pg(PgPool),
    /// SQLite (embedded default, one file).
    Lite(SqlitePool),
}

/// Runs the same expression against whichever pool this is.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Pg($pool) => $body,
            Db::Lite($pool) => $body,
        }
    };
}

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

/// The derived query row of a reading.
#[derive(Debug, Clone)]
pub struct ReadingRow {
    /// Log index.
    pub idx: u64,
    /// Sensor id.
    pub sensor_id: String,
    /// Sequence number.
    pub seq: u64,
    /// SHA-256 of the sensor COSE_Sign1 bytes.
    pub sensor_hash: Vec<u8>,
    /// Gateway id.
    pub gateway_id: String,
    /// Measured-at, ms.
    pub measured_at: u64,
    /// Received-at (gateway), ms.
    pub received_at: u64,
    /// Patient pseudonym at measurement time, if assigned.
    pub patient: Option<String>,
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

/// What one sequencer batch writes, atomically.
#[derive(Debug, Default)]
pub struct Batch {
    /// Log entries.
    pub entries: Vec<EntryRow>,
    /// Reading rows.
    pub readings: Vec<ReadingRow>,
    /// Changed tiles (full rewrite of each).
    pub tiles: Vec<TileRow>,
    /// Alert, alert-limit and webhook-outbox rows written with the batch.
    pub side: Vec<SideRow>,
    /// PostgreSQL: the leader's epoch; the transaction commits only if `sequencer_epoch` still
    /// holds it (see `election.rs`).
    pub fence: Option<i64>,
}

impl Batch {
    /// Whether it writes nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.side.is_empty()
    }
}

/// Rows the sequencer writes beside the log, in the same transaction: alerts and their
/// transitions, patient alert limits, and the webhook outbox.
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

/// Writes one side row with an executor of either database (same SQL on both).
macro_rules! side_row {
    ($ex:expr, $row:expr) => {{
        let q = match $row {
            SideRow::Alert(a) => sqlx::query(
                "INSERT INTO alerts (id, patient, parameter, state, severity, value, reading_index, opened_at, updated_at, last_abnormal_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
                 ON CONFLICT (id) DO UPDATE SET state = excluded.state, severity = excluded.severity, value = excluded.value, \
                 reading_index = excluded.reading_index, updated_at = excluded.updated_at, last_abnormal_at = excluded.last_abnormal_at",
            )
            .bind(a.id.clone()).bind(a.patient.clone()).bind(a.parameter.clone()).bind(a.status.as_str())
            .bind(i16::from(a.severity)).bind(a.value).bind(i(a.reading_index)).bind(i(a.opened_at))
            .bind(i(a.updated_at)).bind(i(a.last_abnormal_at)),
            SideRow::AlertEvent { alert_id, seq, at, transition, actor, severity, reading_index } => sqlx::query(
                "INSERT INTO alert_events (alert_id, seq, at, transition, actor, severity, reading_index) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(alert_id.clone()).bind(*seq as i32).bind(i(*at)).bind(*transition).bind(actor.clone())
            .bind(i16::from(*severity)).bind(reading_index.map(i)),
            SideRow::Limit { patient, loinc, limit: Some(l), set_by, at } => sqlx::query(
                "INSERT INTO alert_limits (patient, loinc, low, high, set_by, set_at) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (patient, loinc) DO UPDATE SET low = excluded.low, high = excluded.high, set_by = excluded.set_by, set_at = excluded.set_at",
            )
            .bind(patient.clone()).bind(loinc.clone()).bind(l.low).bind(l.high).bind(set_by.clone()).bind(i(*at)),
            SideRow::Limit { patient, loinc, limit: None, .. } => sqlx::query(
                "DELETE FROM alert_limits WHERE patient = $1 AND loinc = $2",
            )
            .bind(patient.clone()).bind(loinc.clone()),
            SideRow::Outbox { msg_id, endpoint_id, event_type, payload, at } => sqlx::query(
                "INSERT INTO webhook_outbox (msg_id, endpoint_id, event_type, payload, created_at, state, attempts, next_attempt_at, locked_until) \
                 VALUES ($1, $2, $3, $4, $5, 'pending', 0, $5, 0)",
            )
            .bind(msg_id.clone()).bind(endpoint_id.clone()).bind(event_type.clone()).bind(payload.clone()).bind(i(*at)),
        };
        q.execute($ex).await.map(drop)
    }};
}

/// An existing reading found by (sensor, seq).
#[derive(Debug, Clone)]
pub struct ExistingReading {
    /// Log index.
    pub idx: u64,
    /// SHA-256 of the sensor layer.
    pub sensor_hash: Vec<u8>,
}

/// A stored checkpoint.
#[derive(Debug, Clone)]
pub struct CheckpointRow {
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// Signed note.
    pub note: String,
}

fn i(v: u64) -> i64 {
    // Indices, times and sequence numbers are < 2^63 (checked at the edge).
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn hash_of(v: &[u8]) -> Hash {
    let mut h = [0u8; 32];
    if v.len() == 32 {
        h.copy_from_slice(v);
    }
    h
}

fn tile_bytes(hashes: &[Hash]) -> Vec<u8> {
    hashes.concat()
}

fn tile_hashes(bytes: &[u8]) -> Vec<Hash> {
    bytes.chunks_exact(32).map(hash_of).collect()
}

impl Db {
    /// Connects and runs the migrations. `url` is `postgres://…` or `sqlite://path`.
    pub async fn connect(url: &str, max_connections: u32) -> DbResult<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .connect_with(opts)
                .await?;
            sqlx::migrate!("../migrations/postgres").run(&pool).await?;
            Ok(Db::Pg(pool))
        } else {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a committed transaction survives power loss, not only a process crash.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                .busy_timeout(std::time::Duration::from_secs(10));
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections.min(8))
                .connect_with(opts)
                .await?;
            sqlx::migrate!("../migrations/sqlite").run(&pool).await?;
            Ok(Db::Lite(pool))
        }
    }

    /// "postgres" or "sqlite".
    pub fn engine(&self) -> &'static str {
        match self {
            Db::Pg(_) => "postgres",
            Db::Lite(_) => "sqlite",
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    /// A trivial query, for readiness.
    pub async fn ping(&self) -> DbResult<()> {
        on_pool!(self, p => sqlx::query("SELECT 1").execute(p).await.map(drop))
    }

    /// Reads a metadata value.
    pub async fn meta(&self, key: &str) -> DbResult<Option<String>> {
        let sql = "SELECT value FROM log_meta WHERE key = $1";
        on_pool!(self, p => sqlx::query_scalar(sql).bind(key).fetch_optional(p).await)
    }

    /// Sets a metadata value if it is not set yet; returns the stored value.
    pub async fn meta_init(&self, key: &str, value: &str) -> DbResult<String> {
        let sql = "INSERT INTO log_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
        on_pool!(self, p => sqlx::query(sql).bind(key).bind(value).execute(p).await.map(drop))?;
        Ok(self.meta(key).await?.unwrap_or_default())
    }

    /// Number of log entries.
    pub async fn log_size(&self) -> DbResult<u64> {
        let sql = "SELECT COALESCE(MAX(idx) + 1, 0) FROM entries";
        let n: i64 = on_pool!(self, p => sqlx::query_scalar(sql).fetch_one(p).await)?;
        Ok(u(n))
    }

    /// Tiles by coordinates (missing ones are absent from the answer).
    pub async fn tiles(&self, coords: &[(u8, u64)]) -> DbResult<Vec<TileRow>> {
        if coords.is_empty() {
            return Ok(Vec::new());
        }
        if let Db::Pg(p) = self {
            // One round trip for all of them.
            let levels: Vec<i16> = coords.iter().map(|c| i16::from(c.0)).collect();
            let idxs: Vec<i64> = coords.iter().map(|c| i(c.1)).collect();
            let rows = sqlx::query(
                "SELECT t.level, t.idx, t.hashes FROM tiles t \
                 JOIN UNNEST($1::smallint[], $2::bigint[]) AS q(l, i) ON t.level = q.l AND t.idx = q.i",
            )
            .bind(&levels)
            .bind(&idxs)
            .fetch_all(p)
            .await?;
            return Ok(rows
                .into_iter()
                .map(|r| TileRow {
                    level: u8::try_from(r.get::<i16, _>(0)).unwrap_or(0),
                    idx: u(r.get(1)),
                    hashes: tile_hashes(&r.get::<Vec<u8>, _>(2)),
                })
                .collect());
        }
        let sql = "SELECT hashes FROM tiles WHERE level = $1 AND idx = $2";
        let mut out = Vec::with_capacity(coords.len());
        for &(level, idx) in coords {
            let row: Option<Vec<u8>> = on_pool!(self, p => sqlx::query_scalar(sql)
                .bind(i16::from(level)).bind(i(idx)).fetch_optional(p).await)?;
            if let Some(bytes) = row {
                out.push(TileRow {
                    level,
                    idx,
                    hashes: tile_hashes(&bytes),
                });
            }
        }
        Ok(out)
    }

    /// The latest checkpoint.
    pub async fn latest_checkpoint(&self) -> DbResult<Option<CheckpointRow>> {
        let sql = "SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1";
        let row = on_pool!(self, p => sqlx::query(sql).fetch_optional(p).await.map(|r| r.map(|r| {
            CheckpointRow { size: u(r.get(0)), root: hash_of(&r.get::<Vec<u8>, _>(1)), note: r.get(2) }
        })))?;
        Ok(row)
    }

    /// Every stored checkpoint, oldest first (for audits and tests).
    pub async fn checkpoints(&self) -> DbResult<Vec<CheckpointRow>> {
        let sql = "SELECT size, root, note FROM checkpoints ORDER BY size";
        on_pool!(self, p => sqlx::query(sql).fetch_all(p).await.map(|rows| rows.into_iter().map(|r| {
            CheckpointRow { size: u(r.get(0)), root: hash_of(&r.get::<Vec<u8>, _>(1)), note: r.get(2) }
        }).collect()))
    }

    /// Stores a checkpoint (idempotent per size).
    pub async fn insert_checkpoint(&self, cp: &CheckpointRow, at: u64) -> DbResult<()> {
        let sql =
            "INSERT INTO checkpoints (size, root, note, published_at) VALUES ($1, $2, $3, $4) \
                   ON CONFLICT (size) DO NOTHING";
        on_pool!(self, p => sqlx::query(sql).bind(i(cp.size)).bind(cp.root.to_vec()).bind(&cp.note)
            .bind(i(at)).execute(p).await.map(drop))
    }

    /// One log entry: (kind, leaf data).
    pub async fn entry(&self, idx: u64) -> DbResult<Option<(i16, Vec<u8>)>> {
        let sql = "SELECT kind, leaf_data FROM entries WHERE idx = $1";
        on_pool!(self, p => sqlx::query(sql).bind(i(idx)).fetch_optional(p).await
            .map(|r| r.map(|r| (r.get::<i16, _>(0), r.get::<Vec<u8>, _>(1)))))
    }

    /// Entries with `from <= idx < to` (of one kind if given), in index order, at most `limit`.
    pub async fn entries_range(
        &self,
        from: u64,
        to: u64,
        kind: Option<i16>,
        limit: u64,
    ) -> DbResult<Vec<(u64, Vec<u8>)>> {
        let sql = "SELECT idx, leaf_data FROM entries WHERE idx >= $1 AND idx < $2 \
                   AND ($3 IS NULL OR kind = $3) ORDER BY idx LIMIT $4";
        on_pool!(self, p => sqlx::query(sql).bind(i(from)).bind(i(to)).bind(kind).bind(i(limit))
            .fetch_all(p).await
            .map(|rows| rows.into_iter().map(|r| (u(r.get(0)), r.get::<Vec<u8>, _>(1))).collect()))
    }

    /// Readings already logged for these (sensor, seq) pairs.
    pub async fn existing_readings(
        &self,
        keys: &[(String, u64)],
    ) -> DbResult<HashMap<(String, u64), ExistingReading>> {
        let mut out = HashMap::new();
        if keys.is_empty() {
            return Ok(out);
        }
        match self {
            Db::Pg(p) => {
                let sensors: Vec<&str> = keys.iter().map(|k| k.0.as_str()).collect();
                let seqs: Vec<i64> = keys.iter().map(|k| i(k.1)).collect();
                let rows = sqlx::query(
                    "SELECT r.sensor_id, r.seq, r.idx, r.sensor_hash FROM readings r \
                     JOIN UNNEST($1::text[], $2::bigint[]) AS q(s, n) ON r.sensor_id = q.s AND r.seq = q.n",
                )
                .bind(&sensors)
                .bind(&seqs)
                .fetch_all(p)
                .await?;
                for r in rows {
                    out.insert(
                        (r.get(0), u(r.get(1))),
                        ExistingReading {
                            idx: u(r.get(2)),
                            sensor_hash: r.get(3),
                        },
                    );
                }
            }
            Db::Lite(p) => {
                for (s, n) in keys {
                    let row = sqlx::query(
                        "SELECT idx, sensor_hash FROM readings WHERE sensor_id = $1 AND seq = $2",
                    )
                    .bind(s)
                    .bind(i(*n))
                    .fetch_optional(p)
                    .await?;
                    if let Some(r) = row {
                        out.insert(
                            (s.clone(), *n),
                            ExistingReading {
                                idx: u(r.get(0)),
                                sensor_hash: r.get(1),
                            },
                        );
                    }
                }
            }
        }
        Ok(out)
    }

    /// Writes one sequencer batch in one transaction.
    pub async fn commit_batch(&self, b: &Batch) -> DbResult<()> {
        match self {
            Db::Pg(p) => {
                let mut tx = p.begin().await?;
                if let Some(epoch) = b.fence {
                    let now: Option<String> = sqlx::query_scalar(
                        "SELECT value FROM log_meta WHERE key = 'sequencer_epoch' FOR UPDATE",
                    )
                    .fetch_optional(&mut *tx)
                    .await?;
                    if now.as_deref() != Some(epoch.to_string().as_str()) {
                        return Err(sqlx::Error::Protocol(format!(
                            "fenced: this node's sequencer epoch {epoch} is no longer the log's ({now:?}); another node leads"
                        )));
                    }
                }
                if !b.entries.is_empty() {
                    let idx: Vec<i64> = b.entries.iter().map(|e| i(e.idx)).collect();
                    let kind: Vec<i16> = b.entries.iter().map(|e| e.kind).collect();
                    let data: Vec<&[u8]> =
                        b.entries.iter().map(|e| e.leaf_data.as_slice()).collect();
                    let at: Vec<i64> = b.entries.iter().map(|e| i(e.logged_at)).collect();
                    sqlx::query(
                        "INSERT INTO entries (idx, kind, leaf_data, logged_at) \
                         SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::bytea[], $4::bigint[])",
                    )
                    .bind(&idx).bind(&kind).bind(&data).bind(&at)
                    .execute(&mut *tx)
                    .await?;
                }
                if !b.readings.is_empty() {
                    let r = &b.readings;
                    let idx: Vec<i64> = r.iter().map(|x| i(x.idx)).collect();
                    let sensor: Vec<&str> = r.iter().map(|x| x.sensor_id.as_str()).collect();
                    let seq: Vec<i64> = r.iter().map(|x| i(x.seq)).collect();
                    let sh: Vec<&[u8]> = r.iter().map(|x| x.sensor_hash.as_slice()).collect();
                    let gw: Vec<&str> = r.iter().map(|x| x.gateway_id.as_str()).collect();
                    let meas: Vec<i64> = r.iter().map(|x| i(x.measured_at)).collect();
                    let recv: Vec<i64> = r.iter().map(|x| i(x.received_at)).collect();
                    let pat: Vec<Option<&str>> = r.iter().map(|x| x.patient.as_deref()).collect();
                    sqlx::query(
                        "INSERT INTO readings (idx, sensor_id, seq, sensor_hash, gateway_id, measured_at, received_at, patient) \
                         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bytea[], $5::text[], $6::bigint[], $7::bigint[], $8::text[])",
                    )
                    .bind(&idx).bind(&sensor).bind(&seq).bind(&sh).bind(&gw).bind(&meas).bind(&recv).bind(&pat)
                    .execute(&mut *tx)
                    .await?;
                }
                for row in &b.side {
                    side_row!(&mut *tx, row)?;
                }
                if !b.tiles.is_empty() {
                    let level: Vec<i16> = b.tiles.iter().map(|t| i16::from(t.level)).collect();
                    let idx: Vec<i64> = b.tiles.iter().map(|t| i(t.idx)).collect();
                    let width: Vec<i32> = b.tiles.iter().map(|t| t.hashes.len() as i32).collect();
                    let bytes: Vec<Vec<u8>> =
                        b.tiles.iter().map(|t| tile_bytes(&t.hashes)).collect();
                    sqlx::query(
                        "INSERT INTO tiles (level, idx, width, hashes) \
                         SELECT * FROM UNNEST($1::smallint[], $2::bigint[], $3::int[], $4::bytea[]) \
                         ON CONFLICT (level, idx) DO UPDATE SET width = EXCLUDED.width, hashes = EXCLUDED.hashes \
                         WHERE tiles.width < EXCLUDED.width",
                    )
                    .bind(&level).bind(&idx).bind(&width).bind(&bytes)
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await
            }
            Db::Lite(p) => {
                let mut tx = p.begin().await?;
                for e in &b.entries {
                    sqlx::query("INSERT INTO entries (idx, kind, leaf_data, logged_at) VALUES ($1, $2, $3, $4)")
                        .bind(i(e.idx)).bind(e.kind).bind(&e.leaf_data).bind(i(e.logged_at))
                        .execute(&mut *tx)
                        .await?;
                }
                for r in &b.readings {
                    sqlx::query(
                        "INSERT INTO readings (idx, sensor_id, seq, sensor_hash, gateway_id, measured_at, received_at, patient) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    )
                    .bind(i(r.idx)).bind(&r.sensor_id).bind(i(r.seq)).bind(&r.sensor_hash)
                    .bind(&r.gateway_id).bind(i(r.measured_at)).bind(i(r.received_at)).bind(&r.patient)
                    .execute(&mut *tx)
                    .await?;
                }
                for row in &b.side {
                    side_row!(&mut *tx, row)?;
                }
                for t in &b.tiles {
                    sqlx::query(
                        "INSERT INTO tiles (level, idx, width, hashes) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (level, idx) DO UPDATE SET width = excluded.width, hashes = excluded.hashes \
                         WHERE tiles.width < excluded.width",
                    )
                    .bind(i16::from(t.level)).bind(i(t.idx)).bind(t.hashes.len() as i32).bind(tile_bytes(&t.hashes))
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await
            }
        }
    }

    /// The logged registry events before index `size`, in log order (the registry as of a
    /// checkpoint of that size; migration 0004 indexes them). The registry is rebuilt from them.
    pub async fn registry_entries_before(&self, size: u64) -> DbResult<Vec<(u64, Vec<u8>)>> {
        let sql = "SELECT idx, leaf_data FROM entries WHERE kind = 2 AND idx < $1 ORDER BY idx";
        on_pool!(self, p => sqlx::query(sql).bind(i(size)).fetch_all(p).await.map(|rows| rows.into_iter().map(|r| (u(r.get(0)), r.get(1))).collect()))
    }

    /// Each sensor's highest logged sequence number.
    pub async fn max_seqs(&self) -> DbResult<Vec<(String, u64)>> {
        let sql = "SELECT sensor_id, MAX(seq) FROM readings GROUP BY sensor_id";
        on_pool!(self, p => sqlx::query(sql).fetch_all(p).await.map(|rows| rows.into_iter().map(|r| (r.get(0), u(r.get(1)))).collect()))
    }

    /// Stores a token hash with its role.
    pub async fn insert_token(&self, hash: &[u8], role: &str, name: &str, at: u64) -> DbResult<()> {
        let sql = "INSERT INTO tokens (token_hash, role, name, created_at) VALUES ($1, $2, $3, $4)";
        on_pool!(self, p => sqlx::query(sql).bind(hash).bind(role).bind(name).bind(i(at)).execute(p).await.map(drop))
    }

    /// Records rejected ingest items: (reason, detail, envelope SHA-256).
    pub async fn insert_rejections(
        &self,
        at: u64,
        items: &[(String, String, Vec<u8>)],
    ) -> DbResult<()> {
        if items.is_empty() {
            return Ok(());
        }
        let sql =
            "INSERT INTO rejections (at, reason, detail, envelope_sha256) VALUES ($1, $2, $3, $4)";
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            for (reason, detail, h) in items {
                sqlx::query(sql).bind(i(at)).bind(reason).bind(detail).bind(h).execute(&mut *tx).await?;
            }
            tx.commit().await
        })
    }

    /// Number of rejections recorded with this reason.
    pub async fn count_rejections(&self, reason: &str) -> DbResult<u64> {
        let sql = "SELECT COUNT(*) FROM rejections WHERE reason = $1";
        let n: i64 = on_pool!(self, p => sqlx::query_scalar(sql).bind(reason).fetch_one(p).await)?;
        Ok(u(n))
    }

    /// Records a security alert.
    pub async fn insert_security_alert(
        &self,
        at: u64,
        kind: &str,
        sensor_id: &str,
        seq: u64,
        logged_idx: u64,
        envelope_sha256: &[u8],
    ) -> DbResult<()> {
        let sql = "INSERT INTO security_alerts (at, kind, sensor_id, seq, logged_idx, envelope_sha256) VALUES ($1, $2, $3, $4, $5, $6)";
        on_pool!(self, p => sqlx::query(sql).bind(i(at)).bind(kind).bind(sensor_id).bind(i(seq)).bind(i(logged_idx))
            .bind(envelope_sha256).execute(p).await.map(drop))
    }

    /// Number of readings stored.
    pub async fn count_readings(&self) -> DbResult<u64> {
        let n: i64 = on_pool!(self, p => sqlx::query_scalar("SELECT COUNT(*) FROM readings").fetch_one(p).await)?;
        Ok(u(n))
    }

    /// Reading indices by patient or sensor and time range, oldest first.
    pub async fn reading_indices(
        &self,
        patient: Option<&str>,
        sensor: Option<&str>,
        from: u64,
        to: u64,
        limit: u32,
    ) -> DbResult<Vec<u64>> {
        let sql = "SELECT idx FROM readings WHERE ($1 IS NULL OR patient = $1) AND ($2 IS NULL OR sensor_id = $2) \
                   AND measured_at >= $3 AND measured_at < $4 ORDER BY measured_at, idx LIMIT $5";
        let rows: Vec<i64> = on_pool!(self, p => sqlx::query_scalar(sql).bind(patient).bind(sensor).bind(i(from)).bind(i(to))
            .bind(i64::from(limit)).fetch_all(p).await)?;
        Ok(rows.into_iter().map(u).collect())
    }
}

/// A webhook endpoint as stored.
#[derive(Debug, Clone)]
pub struct EndpointRow {
    /// `ep_…`.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// Event types it receives.
    pub event_types: Vec<String>,
    /// Current `whsec_…` secret (never printed, not even by `Debug`).
    pub secret: SecretString,
    /// The secret before the last rotation, still used until `previous_until`.
    pub previous_secret: Option<SecretString>,
    /// Until when the previous secret also signs.
    pub previous_until: Option<u64>,
    /// Why deliveries stopped, if they did.
    pub disabled_reason: Option<String>,
    /// Created, Unix ms.
    pub created_at: u64,
}

/// A claimed outbox message, with what a delivery needs.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    /// The webhook-id.
    pub msg_id: String,
    /// Endpoint.
    pub endpoint_id: String,
    /// Event type.
    pub event_type: String,
    /// JSON body.
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// State (pending, delivered, dead).
    pub state: String,
    /// Created, Unix ms.
    pub created_at: u64,
    /// Last HTTP status.
    pub last_status: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
}

/// One transition of an alert, as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AlertEventOut {
    /// Its number among the alert's transitions.
    pub seq: u32,
    /// When, Unix ms.
    pub at_ms: u64,
    /// opened | escalated | acknowledged | resolved.
    pub transition: String,
    /// `system` or the clinician's token name.
    pub actor: String,
    /// Severity after it.
    pub severity: u8,
    /// The reading that caused it.
    pub reading_index: Option<u64>,
}

/// One delivery attempt.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AttemptOut {
    /// Endpoint.
    pub endpoint_id: String,
    /// 1, 2, …
    pub attempt: u32,
    /// When, Unix ms.
    pub at_ms: u64,
    /// HTTP status, if the receiver answered.
    pub status: Option<u16>,
    /// What went wrong.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone)]
pub enum DeliveryResult {
    /// 2xx.
    Delivered,
    /// Retry at this time.
    Retry(u64),
    /// No more attempts (too many, or the endpoint is gone).
    Dead,
}

const ALERT_COLUMNS: &str = "a.id, a.patient, a.parameter, a.state, a.severity, a.value, a.reading_index, \
     a.opened_at, a.updated_at, a.last_abnormal_at, (SELECT COUNT(*) FROM alert_events e WHERE e.alert_id = a.id)";

fn alert_of<R: Row>(r: &R) -> Alert
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    usize: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i16: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    f64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Alert {
        id: r.get(0),
        patient: r.get(1),
        parameter: r.get(2),
        status: Status::parse(&r.get::<String, _>(3)).unwrap_or(Status::Open),
        severity: u8::try_from(r.get::<i16, _>(4)).unwrap_or(0),
        value: r.get(5),
        reading_index: u(r.get(6)),
        opened_at: u(r.get(7)),
        updated_at: u(r.get(8)),
        last_abnormal_at: u(r.get(9)),
        events: u32::try_from(r.get::<i64, _>(10)).unwrap_or(0),
    }
}

fn endpoint_of<R: Row>(r: &R) -> EndpointRow
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    EndpointRow {
        id: r.get(0),
        url: r.get(1),
        event_types: serde_json::from_str(&r.get::<String, _>(2)).unwrap_or_default(),
        secret: r.get::<String, _>(3).into(),
        previous_secret: r.get::<Option<String>, _>(4).map(SecretString::from),
        previous_until: r.get::<Option<i64>, _>(5).map(u),
        disabled_reason: r.get(6),
        created_at: u(r.get(7)),
    }
}

fn outbox_of<R: Row>(r: &R) -> OutboxItem
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i32: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<i32>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    OutboxItem {
        msg_id: r.get(0),
        endpoint_id: r.get(1),
        event_type: r.get(2),
        payload: r.get(3),
        attempts: u32::try_from(r.get::<i32, _>(4)).unwrap_or(0),
        state: r.get(5),
        created_at: u(r.get(6)),
        last_status: r
            .get::<Option<i32>, _>(7)
            .and_then(|s| u16::try_from(s).ok()),
        last_error: r.get(8),
    }
}

const OUTBOX_COLUMNS: &str =
    "msg_id, endpoint_id, event_type, payload, attempts, state, created_at, last_status, last_error";
const ENDPOINT_COLUMNS: &str =
    "id, url, event_types, secret, previous_secret, previous_until, disabled_reason, created_at";

impl Db {
    /// Every alert not yet resolved (the sequencer's starting state).
    pub async fn unresolved_alerts(&self) -> DbResult<Vec<Alert>> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.state <> 'resolved'");
        on_pool!(self, p => sqlx::query(&sql).fetch_all(p).await.map(|rows| rows.iter().map(alert_of).collect()))
    }

    /// Alerts, newest first, optionally by state and patient.
    pub async fn alerts(
        &self,
        state: Option<&str>,
        patient: Option<&str>,
        limit: u64,
    ) -> DbResult<Vec<Alert>> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts a WHERE ($1 IS NULL OR a.state = $1) \
             AND ($2 IS NULL OR a.patient = $2) ORDER BY a.updated_at DESC, a.id LIMIT $3"
        );
        on_pool!(self, p => sqlx::query(&sql).bind(state).bind(patient).bind(i(limit)).fetch_all(p).await
            .map(|rows| rows.iter().map(alert_of).collect()))
    }

    /// One alert.
    pub async fn alert(&self, id: &str) -> DbResult<Option<Alert>> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = $1");
        on_pool!(self, p => sqlx::query(&sql).bind(id).fetch_optional(p).await.map(|r| r.as_ref().map(alert_of)))
    }

    /// An alert's transitions, in order.
    pub async fn alert_events(&self, id: &str) -> DbResult<Vec<AlertEventOut>> {
        let sql = "SELECT seq, at, transition, actor, severity, reading_index FROM alert_events \
                   WHERE alert_id = $1 ORDER BY seq";
        on_pool!(self, p => sqlx::query(sql).bind(id).fetch_all(p).await.map(|rows| rows.iter().map(|r| AlertEventOut {
            seq: u32::try_from(r.get::<i32, _>(0)).unwrap_or(0),
            at_ms: u(r.get(1)),
            transition: r.get(2),
            actor: r.get(3),
            severity: u8::try_from(r.get::<i16, _>(4)).unwrap_or(0),
            reading_index: r.get::<Option<i64>, _>(5).map(u),
        }).collect()))
    }

    /// Every patient's alert limits: (patient, LOINC, limits).
    pub async fn alert_limits(&self) -> DbResult<Vec<(String, String, Limit)>> {
        let sql = "SELECT patient, loinc, low, high FROM alert_limits ORDER BY patient, loinc";
        on_pool!(self, p => sqlx::query(sql).fetch_all(p).await.map(|rows| rows.iter().map(|r| (
            r.get(0), r.get(1), Limit { low: r.get(2), high: r.get(3) },
        )).collect()))
    }

    /// Webhook endpoints.
    pub async fn webhook_endpoints(&self) -> DbResult<Vec<EndpointRow>> {
        let sql =
            format!("SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id");
        on_pool!(self, p => sqlx::query(&sql).fetch_all(p).await.map(|rows| rows.iter().map(endpoint_of).collect()))
    }

    /// Stores a new endpoint.
    pub async fn insert_endpoint(&self, e: &EndpointRow) -> DbResult<()> {
        let sql = "INSERT INTO webhook_endpoints (id, url, event_types, secret, created_at) VALUES ($1, $2, $3, $4, $5)";
        let types = serde_json::to_string(&e.event_types).unwrap_or_else(|_| "[]".into());
        on_pool!(self, p => sqlx::query(sql).bind(&e.id).bind(&e.url).bind(types).bind(e.secret.expose_secret())
            .bind(i(e.created_at)).execute(p).await.map(drop))
    }

    /// Rotates an endpoint's secret; the old one keeps signing until `until`.
    pub async fn rotate_endpoint_secret(
        &self,
        id: &str,
        secret: &str,
        until: u64,
    ) -> DbResult<bool> {
        let sql = "UPDATE webhook_endpoints SET previous_secret = secret, previous_until = $3, secret = $2 WHERE id = $1";
        on_pool!(self, p => sqlx::query(sql).bind(id).bind(secret).bind(i(until)).execute(p).await
            .map(|r| r.rows_affected() == 1))
    }

    /// Stops (with a reason) or resumes (`None`) deliveries to an endpoint.
    pub async fn set_endpoint_disabled(&self, id: &str, reason: Option<&str>) -> DbResult<bool> {
        let sql = "UPDATE webhook_endpoints SET disabled_reason = $2 WHERE id = $1";
        on_pool!(self, p => sqlx::query(sql).bind(id).bind(reason).execute(p).await
            .map(|r| r.rows_affected() == 1))
    }

    /// Claims up to `limit` due messages of enabled endpoints for `lease_ms` (several workers,
    /// even on several nodes, never claim the same message: `FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL, one writer at a time on SQLite).
    pub async fn claim_outbox(
        &self,
        now: u64,
        lease_ms: u64,
        limit: u64,
    ) -> DbResult<Vec<OutboxItem>> {
        let pick = "SELECT o.msg_id, o.endpoint_id FROM webhook_outbox o JOIN webhook_endpoints e ON e.id = o.endpoint_id \
                    WHERE o.state = 'pending' AND o.next_attempt_at <= $1 AND o.locked_until <= $1 AND e.disabled_reason IS NULL \
                    ORDER BY o.created_at LIMIT $3";
        match self {
            Db::Pg(p) => {
                let sql = format!(
                    "UPDATE webhook_outbox w SET locked_until = $2 FROM ({pick} FOR UPDATE OF o SKIP LOCKED) d \
                     WHERE w.msg_id = d.msg_id AND w.endpoint_id = d.endpoint_id RETURNING w.msg_id, w.endpoint_id, \
                     w.event_type, w.payload, w.attempts, w.state, w.created_at, w.last_status, w.last_error"
                );
                sqlx::query(&sql)
                    .bind(i(now))
                    .bind(i(now + lease_ms))
                    .bind(i(limit))
                    .fetch_all(p)
                    .await
                    .map(|rows| rows.iter().map(outbox_of).collect())
            }
            Db::Lite(p) => {
                let sql = format!(
                    "UPDATE webhook_outbox SET locked_until = $2 WHERE (msg_id, endpoint_id) IN ({pick}) \
                     RETURNING {OUTBOX_COLUMNS}"
                );
                sqlx::query(&sql)
                    .bind(i(now))
                    .bind(i(now + lease_ms))
                    .bind(i(limit))
                    .fetch_all(p)
                    .await
                    .map(|rows| rows.iter().map(outbox_of).collect())
            }
        }
    }

    /// Records a delivery attempt and its outcome.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_attempt(
        &self,
        item: &OutboxItem,
        at: u64,
        status: Option<u16>,
        error: Option<&str>,
        duration_ms: u64,
        result: &DeliveryResult,
    ) -> DbResult<()> {
        let attempt = item.attempts + 1;
        let (state, next, delivered) = match result {
            DeliveryResult::Delivered => ("delivered", at, Some(at)),
            DeliveryResult::Retry(t) => ("pending", *t, None),
            DeliveryResult::Dead => ("dead", at, None),
        };
        let ins = "INSERT INTO webhook_attempts (msg_id, endpoint_id, attempt, at, status, error, duration_ms) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7)";
        let upd = "UPDATE webhook_outbox SET state = $3, attempts = $4, next_attempt_at = $5, locked_until = 0, \
                   last_status = $6, last_error = $7, delivered_at = $8 WHERE msg_id = $1 AND endpoint_id = $2";
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            sqlx::query(ins).bind(&item.msg_id).bind(&item.endpoint_id).bind(attempt as i32).bind(i(at))
                .bind(status.map(i32::from)).bind(error).bind(i(duration_ms)).execute(&mut *tx).await?;
            sqlx::query(upd).bind(&item.msg_id).bind(&item.endpoint_id).bind(state).bind(attempt as i32)
                .bind(i(next)).bind(status.map(i32::from)).bind(error).bind(delivered.map(i))
                .execute(&mut *tx).await?;
            tx.commit().await
        })
    }

    /// Outbox messages by state, oldest first.
    pub async fn outbox_messages(
        &self,
        state: Option<&str>,
        limit: u64,
    ) -> DbResult<Vec<OutboxItem>> {
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM webhook_outbox WHERE ($1 IS NULL OR state = $1) ORDER BY created_at, msg_id LIMIT $2"
        );
        on_pool!(self, p => sqlx::query(&sql).bind(state).bind(i(limit)).fetch_all(p).await
            .map(|rows| rows.iter().map(outbox_of).collect()))
    }

    /// Delivery attempts of a message.
    pub async fn attempts(&self, msg_id: &str) -> DbResult<Vec<AttemptOut>> {
        let sql =
            "SELECT endpoint_id, attempt, at, status, error, duration_ms FROM webhook_attempts \
                   WHERE msg_id = $1 ORDER BY endpoint_id, attempt";
        on_pool!(self, p => sqlx::query(sql).bind(msg_id).fetch_all(p).await.map(|rows| rows.iter().map(|r| AttemptOut {
            endpoint_id: r.get(0),
            attempt: u32::try_from(r.get::<i32, _>(1)).unwrap_or(0),
            at_ms: u(r.get(2)),
            status: r.get::<Option<i32>, _>(3).and_then(|s| u16::try_from(s).ok()),
            error: r.get(4),
            duration_ms: u(r.get(5)),
        }).collect()))
    }

    /// Sends a message again (dead or delivered): pending now, attempts counted afresh. Returns
    /// how many endpoint copies were re-queued.
    pub async fn replay_message(&self, msg_id: &str, now: u64) -> DbResult<u64> {
        let sql = "UPDATE webhook_outbox SET state = 'pending', attempts = 0, next_attempt_at = $2, locked_until = 0 \
                   WHERE msg_id = $1 AND state <> 'pending'";
        on_pool!(self, p => sqlx::query(sql).bind(msg_id).bind(i(now)).execute(p).await.map(|r| r.rows_affected()))
    }

    /// The name and role of a token hash.
    pub async fn token(&self, hash: &[u8]) -> DbResult<Option<(String, String)>> {
        let sql = "SELECT role, name FROM tokens WHERE token_hash = $1";
        on_pool!(self, p => sqlx::query(sql).bind(hash).fetch_optional(p).await
            .map(|r| r.map(|r| (r.get(0), r.get(1)))))
    }
}

/// An export job as stored.
#[derive(Debug, Clone)]
pub struct ExportJob {
    /// `exp_…`.
    pub id: String,
    /// queued | running | complete | failed | cancelled.
    pub state: String,
    /// The kick-off request.
    pub request: String,
    /// Token name of the requester.
    pub requested_by: String,
    /// Per-patient export.
    pub patient: Option<String>,
    /// Resource types.
    pub types: Vec<String>,
    /// First log index considered.
    pub from_index: u64,
    /// The cut (checkpoint size).
    pub to_index: u64,
    /// The checkpoint note.
    pub checkpoint: String,
    /// Logging time of the last entry before the cut.
    pub transaction_time: u64,
    /// Resume point.
    pub next_index: u64,
    /// JSON progress.
    pub progress: String,
    /// The manifest, once complete.
    pub manifest: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Created.
    pub created_at: u64,
    /// The archive confirmed the download.
    pub acknowledged_at: Option<u64>,
}

const EXPORT_COLUMNS: &str =
    "id, state, request, requested_by, patient, types, from_index, to_index, checkpoint, \
     transaction_time, next_index, progress, manifest, error, created_at, acknowledged_at";

fn export_of<R: Row>(r: &R) -> ExportJob
where
    usize: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<String>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    Option<i64>: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    ExportJob {
        id: r.get(0),
        state: r.get(1),
        request: r.get(2),
        requested_by: r.get(3),
        patient: r.get(4),
        types: serde_json::from_str(&r.get::<String, _>(5)).unwrap_or_default(),
        from_index: u(r.get(6)),
        to_index: u(r.get(7)),
        checkpoint: r.get(8),
        transaction_time: u(r.get(9)),
        next_index: u(r.get(10)),
        progress: r.get(11),
        manifest: r.get(12),
        error: r.get(13),
        created_at: u(r.get(14)),
        acknowledged_at: r.get::<Option<i64>, _>(15).map(u),
    }
}

/// A reading to export: index, patient, leaf data, logging time.
pub type ExportRow = (u64, Option<String>, Vec<u8>, u64);

impl Db {
    /// Stores a new export job.
    pub async fn insert_export(&self, j: &ExportJob) -> DbResult<()> {
        let sql = "INSERT INTO export_jobs (id, state, request, requested_by, patient, types, from_index, to_index, checkpoint, \
                   transaction_time, next_index, progress, created_at, updated_at, claimed_until) \
                   VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $6, '{}', $10, $10, 0)";
        let types = serde_json::to_string(&j.types).unwrap_or_else(|_| "[]".into());
        on_pool!(self, p => sqlx::query(sql).bind(&j.id).bind(&j.request).bind(&j.requested_by).bind(&j.patient)
            .bind(types).bind(i(j.from_index)).bind(i(j.to_index)).bind(&j.checkpoint).bind(i(j.transaction_time))
            .bind(i(j.created_at)).execute(p).await.map(drop))
    }

    /// One export job.
    pub async fn export_job(&self, id: &str) -> DbResult<Option<ExportJob>> {
        let sql = format!("SELECT {EXPORT_COLUMNS} FROM export_jobs WHERE id = $1");
        on_pool!(self, p => sqlx::query(&sql).bind(id).fetch_optional(p).await.map(|r| r.as_ref().map(export_of)))
    }

    /// Claims the oldest queued (or abandoned running) job for `lease_ms`.
    pub async fn claim_export(&self, now: u64, lease_ms: u64) -> DbResult<Option<ExportJob>> {
        let pick = "SELECT id FROM export_jobs WHERE state IN ('queued', 'running') AND claimed_until <= $1 \
                    ORDER BY created_at LIMIT 1";
        let lock = match self {
            Db::Pg(_) => " FOR UPDATE SKIP LOCKED",
            Db::Lite(_) => "",
        };
        let sql = format!(
            "UPDATE export_jobs SET state = 'running', claimed_until = $2, updated_at = $1 \
             WHERE id = ({pick}{lock}) RETURNING {EXPORT_COLUMNS}"
        );
        on_pool!(self, p => sqlx::query(&sql).bind(i(now)).bind(i(now + lease_ms)).fetch_optional(p).await
            .map(|r| r.as_ref().map(export_of)))
    }

    /// Records a job's progress and extends its lease; false if it is no longer running (it was
    /// cancelled).
    pub async fn export_progress(
        &self,
        id: &str,
        next_index: u64,
        progress: &str,
        now: u64,
        lease_ms: u64,
    ) -> DbResult<bool> {
        let sql = "UPDATE export_jobs SET next_index = $2, progress = $3, updated_at = $4, claimed_until = $5 \
                   WHERE id = $1 AND state = 'running'";
        on_pool!(self, p => sqlx::query(sql).bind(id).bind(i(next_index)).bind(progress).bind(i(now))
            .bind(i(now + lease_ms)).execute(p).await.map(|r| r.rows_affected() == 1))
    }

    /// Ends a running job: complete with its manifest, or failed with an error.
    pub async fn finish_export(
        &self,
        id: &str,
        manifest: Option<&str>,
        error: Option<&str>,
        now: u64,
    ) -> DbResult<bool> {
        let state = if manifest.is_some() {
            "complete"
        } else {
            "failed"
        };
        let sql = "UPDATE export_jobs SET state = $2, manifest = $3, error = $4, updated_at = $5 \
                   WHERE id = $1 AND state = 'running'";
        on_pool!(self, p => sqlx::query(sql).bind(id).bind(state).bind(manifest).bind(error).bind(i(now))
            .execute(p).await.map(|r| r.rows_affected() == 1))
    }

    /// Cancels a job (whatever its state but cancelled); false if there was none.
    pub async fn cancel_export(&self, id: &str, now: u64) -> DbResult<bool> {
        let sql = "UPDATE export_jobs SET state = 'cancelled', updated_at = $2 WHERE id = $1 AND state <> 'cancelled'";
        on_pool!(self, p => sqlx::query(sql).bind(id).bind(i(now)).execute(p).await.map(|r| r.rows_affected() == 1))
    }

    /// Marks a complete export as confirmed by the archive.
    pub async fn acknowledge_export(&self, id: &str, now: u64) -> DbResult<bool> {
        let sql =
            "UPDATE export_jobs SET acknowledged_at = $2 WHERE id = $1 AND state = 'complete'";
        on_pool!(self, p => sqlx::query(sql).bind(id).bind(i(now)).execute(p).await.map(|r| r.rows_affected() == 1))
    }

    /// Readings of `[from, to)` (of one patient if given), from index `from`, at most `limit`.
    pub async fn export_rows(
        &self,
        from: u64,
        to: u64,
        patient: Option<&str>,
        limit: u64,
    ) -> DbResult<Vec<ExportRow>> {
        let sql = "SELECT r.idx, r.patient, e.leaf_data, e.logged_at FROM readings r JOIN entries e ON e.idx = r.idx \
                   WHERE r.idx >= $1 AND r.idx < $2 AND ($3 IS NULL OR r.patient = $3) ORDER BY r.idx LIMIT $4";
        on_pool!(self, p => sqlx::query(sql).bind(i(from)).bind(i(to)).bind(patient).bind(i(limit)).fetch_all(p).await
            .map(|rows| rows.iter().map(|r| (u(r.get(0)), r.get(1), r.get(2), u(r.get(3)))).collect()))
    }

    /// The devices (sensors and gateways) of the readings of `[from, to)` (of one patient).
    pub async fn export_devices(
        &self,
        from: u64,
        to: u64,
        patient: Option<&str>,
    ) -> DbResult<Vec<String>> {
        let sql = "SELECT sensor_id FROM readings WHERE idx >= $1 AND idx < $2 AND ($3 IS NULL OR patient = $3) \
                   UNION SELECT gateway_id FROM readings WHERE idx >= $1 AND idx < $2 AND ($3 IS NULL OR patient = $3)";
        on_pool!(self, p => sqlx::query_scalar(sql).bind(i(from)).bind(i(to)).bind(patient).fetch_all(p).await)
    }

    /// The first index logged after `at` (Unix ms), if any.
    pub async fn first_index_after(&self, at: u64) -> DbResult<Option<u64>> {
        let sql = "SELECT MIN(idx) FROM entries WHERE logged_at > $1";
        let v: Option<i64> =
            on_pool!(self, p => sqlx::query_scalar(sql).bind(i(at)).fetch_one(p).await)?;
        Ok(v.map(u))
    }

    /// The latest logging time of entries before `idx` (0 if none).
    pub async fn logged_before(&self, idx: u64) -> DbResult<u64> {
        let sql = "SELECT MAX(logged_at) FROM entries WHERE idx < $1";
        let v: Option<i64> =
            on_pool!(self, p => sqlx::query_scalar(sql).bind(i(idx)).fetch_one(p).await)?;
        Ok(v.map_or(0, u))
    }

    /// Prunes the payloads of the readings of an acknowledged export measured before `cutoff`
    /// (the leaf data; the leaf hashes stay in the tiles). Returns how many were pruned.
    pub async fn prune_export(&self, job: &ExportJob, cutoff: u64, now: u64) -> DbResult<u64> {
        let mark = "INSERT INTO pruned_readings (idx, export_id, pruned_at) \
                    SELECT r.idx, $1, $2 FROM readings r WHERE r.idx >= $3 AND r.idx < $4 AND ($5 IS NULL OR r.patient = $5) \
                    AND r.measured_at < $6 AND NOT EXISTS (SELECT 1 FROM pruned_readings x WHERE x.idx = r.idx)";
        let empty = "UPDATE entries SET leaf_data = $2 WHERE idx IN (SELECT idx FROM pruned_readings WHERE export_id = $1)";
        on_pool!(self, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(mark).bind(&job.id).bind(i(now)).bind(i(job.from_index)).bind(i(job.to_index))
                .bind(&job.patient).bind(i(cutoff)).execute(&mut *tx).await?.rows_affected();
            sqlx::query(empty).bind(&job.id).bind(Vec::<u8>::new()).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(n)
        })
    }

    /// The export holding a pruned reading's payload.
    pub async fn pruned_by(&self, idx: u64) -> DbResult<Option<String>> {
        let sql = "SELECT export_id FROM pruned_readings WHERE idx = $1";
        on_pool!(self, p => sqlx::query_scalar(sql).bind(i(idx)).fetch_optional(p).await)
    }

    /// PostgreSQL: starts a new sequencer epoch (a new leader) and returns it.
    pub async fn bump_epoch(&self) -> DbResult<i64> {
        let sql = "INSERT INTO log_meta (key, value) VALUES ('sequencer_epoch', '1') \
                   ON CONFLICT (key) DO UPDATE SET value = (CAST(log_meta.value AS BIGINT) + 1)::text RETURNING value";
        match self {
            Db::Pg(p) => {
                let v: String = sqlx::query_scalar(sql).fetch_one(p).await?;
                v.parse()
                    .map_err(|_| sqlx::Error::Protocol("sequencer_epoch is not a number".into()))
            }
            Db::Lite(_) => Ok(0),
        }
    }

    /// The latest logging time in the log (0 when empty).
    pub async fn max_logged_at(&self) -> DbResult<u64> {
        let sql = "SELECT MAX(logged_at) FROM entries";
        let v: Option<i64> = on_pool!(self, p => sqlx::query_scalar(sql).fetch_one(p).await)?;
        Ok(v.map_or(0, u))
    }

    /// A stored checkpoint of this size.
    pub async fn checkpoint_at(&self, size: u64) -> DbResult<Option<CheckpointRow>> {
        let sql = "SELECT size, root, note FROM checkpoints WHERE size = $1";
        on_pool!(self, p => sqlx::query(sql).bind(i(size)).fetch_optional(p).await.map(|r| r.map(|r| CheckpointRow {
            size: u(r.get(0)),
            root: hash_of(&r.get::<Vec<u8>, _>(1)),
            note: r.get(2),
        })))
    }
}
