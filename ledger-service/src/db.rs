//! Storage: one interface ([`Db`]) over two engines, PostgreSQL (production) and SQLite (the
//! embedded default). Every query is written once where the SQL is the same for both (sqlx binds
//! `$N` on both); bulk writes differ: set-based `UNNEST` inserts on PostgreSQL, prepared
//! statements in one transaction on SQLite.
//!
//! Storage contract: [`Db::commit_batch`] writes a batch's entries, readings, registry rows and
//! tiles in one transaction; an index MUST NOT be acknowledged before that transaction commits.

use provenance_core::merkle::Hash;
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

/// A registry table row derived from a logged registry event.
#[derive(Debug, Clone)]
pub enum RegistryRow {
    /// A key (issuer, sensor or gateway).
    Key {
        /// KeyId bytes.
        key_id: Vec<u8>,
        /// Device id or issuer name.
        device_id: String,
        /// issuer | sensor | gateway.
        role: String,
        /// Certificate DER.
        cert: Vec<u8>,
        /// Valid from, ms.
        valid_from: u64,
        /// Valid until (exclusive), ms: set when the key is rotated out.
        valid_until: Option<u64>,
        /// Log index of the event.
        idx: u64,
    },
    /// Ends the validity of the device's previous keys (key rotation).
    CloseKeys {
        /// Device id.
        device_id: String,
        /// Valid until, ms.
        until: u64,
    },
    /// A binding.
    Binding {
        /// Log index.
        idx: u64,
        /// Sensor.
        sensor_id: String,
        /// Gateway.
        gateway_id: String,
        /// From, ms.
        from_ms: u64,
        /// Until, ms.
        until_ms: Option<u64>,
    },
    /// A patient assignment.
    Assignment {
        /// Log index.
        idx: u64,
        /// Sensor.
        sensor_id: String,
        /// Pseudonym.
        pseudonym: String,
        /// From, ms.
        from_ms: u64,
    },
    /// A revocation.
    Revocation {
        /// Log index.
        idx: u64,
        /// Revoked KeyId.
        key_id: Vec<u8>,
        /// From, ms.
        from_ms: u64,
        /// Reason.
        reason: String,
    },
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
    /// Registry rows.
    pub registry: Vec<RegistryRow>,
    /// Changed tiles (full rewrite of each).
    pub tiles: Vec<TileRow>,
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

/// Writes one registry row with an executor of either database (a macro: sqlx's generic
/// executor bounds are heavier than the duplication they would save).
macro_rules! registry_row {
    ($ex:expr, $row:expr) => {{
        let q = match $row {
            RegistryRow::Key { key_id, device_id, role, cert, valid_from, valid_until, idx } => sqlx::query(
                "INSERT INTO registry_keys (key_id, device_id, role, cert, valid_from, valid_until, idx) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(key_id.clone()).bind(device_id.clone()).bind(role.clone()).bind(cert.clone())
            .bind(i(*valid_from)).bind(valid_until.map(i)).bind(i(*idx)),
            RegistryRow::CloseKeys { device_id, until } => sqlx::query(
                "UPDATE registry_keys SET valid_until = $2 WHERE device_id = $1 AND valid_until IS NULL",
            )
            .bind(device_id.clone()).bind(i(*until)),
            RegistryRow::Binding { idx, sensor_id, gateway_id, from_ms, until_ms } => sqlx::query(
                "INSERT INTO registry_bindings (idx, sensor_id, gateway_id, from_ms, until_ms) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(i(*idx)).bind(sensor_id.clone()).bind(gateway_id.clone()).bind(i(*from_ms)).bind(until_ms.map(i)),
            RegistryRow::Assignment { idx, sensor_id, pseudonym, from_ms } => sqlx::query(
                "INSERT INTO registry_assignments (idx, sensor_id, pseudonym, from_ms) VALUES ($1, $2, $3, $4)",
            )
            .bind(i(*idx)).bind(sensor_id.clone()).bind(pseudonym.clone()).bind(i(*from_ms)),
            RegistryRow::Revocation { idx, key_id, from_ms, reason } => sqlx::query(
                "INSERT INTO registry_revocations (idx, key_id, from_ms, reason) VALUES ($1, $2, $3, $4)",
            )
            .bind(i(*idx)).bind(key_id.clone()).bind(i(*from_ms)).bind(reason.clone()),
        };
        q.execute($ex).await.map(drop)
    }};
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
                for row in &b.registry {
                    registry_row!(&mut *tx, row)?;
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
                for row in &b.registry {
                    registry_row!(&mut *tx, row)?;
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

    /// Every registry row, in log order, to rebuild the in-memory registry at start.
    pub async fn registry_rows(&self) -> DbResult<Vec<RegistryRow>> {
        let mut rows = Vec::new();
        on_pool!(self, p => {
            for r in sqlx::query("SELECT key_id, device_id, role, cert, valid_from, valid_until, idx FROM registry_keys ORDER BY idx")
                .fetch_all(p).await?
            {
                let valid_until: Option<i64> = r.get(5);
                rows.push(RegistryRow::Key {
                    key_id: r.get(0), device_id: r.get(1), role: r.get(2), cert: r.get(3),
                    valid_from: u(r.get(4)), valid_until: valid_until.map(u), idx: u(r.get(6)),
                });
            }
            for r in sqlx::query("SELECT idx, sensor_id, gateway_id, from_ms, until_ms FROM registry_bindings ORDER BY idx")
                .fetch_all(p).await?
            {
                let until: Option<i64> = r.get(4);
                rows.push(RegistryRow::Binding {
                    idx: u(r.get(0)), sensor_id: r.get(1), gateway_id: r.get(2), from_ms: u(r.get(3)), until_ms: until.map(u),
                });
            }
            for r in sqlx::query("SELECT idx, sensor_id, pseudonym, from_ms FROM registry_assignments ORDER BY idx")
                .fetch_all(p).await?
            {
                rows.push(RegistryRow::Assignment { idx: u(r.get(0)), sensor_id: r.get(1), pseudonym: r.get(2), from_ms: u(r.get(3)) });
            }
            for r in sqlx::query("SELECT idx, key_id, from_ms, reason FROM registry_revocations ORDER BY idx")
                .fetch_all(p).await?
            {
                rows.push(RegistryRow::Revocation { idx: u(r.get(0)), key_id: r.get(1), from_ms: u(r.get(2)), reason: r.get(3) });
            }
        });
        Ok(rows)
    }

    /// Stores a token hash with its role.
    pub async fn insert_token(&self, hash: &[u8], role: &str, name: &str, at: u64) -> DbResult<()> {
        let sql = "INSERT INTO tokens (token_hash, role, name, created_at) VALUES ($1, $2, $3, $4)";
        on_pool!(self, p => sqlx::query(sql).bind(hash).bind(role).bind(name).bind(i(at)).execute(p).await.map(drop))
    }

    /// The role of a token hash.
    pub async fn token_role(&self, hash: &[u8]) -> DbResult<Option<String>> {
        let sql = "SELECT role FROM tokens WHERE token_hash = $1";
        on_pool!(self, p => sqlx::query_scalar(sql).bind(hash).fetch_optional(p).await)
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
