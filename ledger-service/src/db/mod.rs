//! Storage: one handle ([`Db`]) over two engines, PostgreSQL (production) and SQLite (the
//! embedded default), one module per resource.
//!
//! | module | owns |
//! |---|---|
//! | [`access`] | the access trail of protected health information (append-only) |
//! | [`log`] | entries, tiles, checkpoints, the sequencer's batch and its fence |
//! | [`registry`] | the logged registry events (the registry is rebuilt from them) |
//! | [`shards`] | a time-sharded log's shards: period, base, final size |
//! | [`tokens`] | API tokens (hashed): role, expiry, revocation, last use, gateway |
//! | [`readings`] | the derived reading rows, rejections (a row per batch and reason), pruning marks |
//! | [`security`] | security alerts, de-duplicated, and their webhook messages |
//! | [`alerts`] | clinical alerts, their transitions, patient limits |
//! | [`webhooks`] | endpoints, the outbox and its claims, delivery attempts |
//! | [`exports`] | export jobs, their claims and the pruning they allow |
//! | `pg` / `sqlite` | the few statements that differ by engine (bulk writes, claims, lookups) |
//!
//! Every other statement is written once: [`Sql`] holds its text and owned arguments and runs on
//! either engine (sqlx binds `$N` on both), and [`Cols`] decodes a row, failing with
//! [`StorageError::Corrupt`] (the table, the row's key and the column) instead of defaulting.
//!
//! ## The storage contract
//!
//! An engine (and every change to one) MUST keep these; the conformance suite
//! (`storage_conformance.rs`, on both engines) checks each.
//!
//! 1. **Atomic batches.** [`Db::commit_batch`] writes a batch's entries, reading rows, side rows
//!    (alerts, limits, outbox) and tiles in one transaction: all of them or none. The sequencer
//!    MUST NOT acknowledge an index before that transaction commits.
//! 2. **Fencing.** A batch carrying an epoch MUST commit only if `sequencer_epoch` still holds
//!    that epoch when the transaction writes, on both engines; otherwise it MUST fail with
//!    [`StorageError::Fenced`] and write nothing. [`Db::bump_epoch`] starts a new epoch.
//! 3. **The log is append-only.** Entries are never updated except that pruning MAY empty a
//!    reading's leaf data (its hash stays in the tiles); an index is written once (a second
//!    write of the same index MUST fail).
//! 4. **Tiles only grow.** A tile write MUST NOT replace a wider stored tile; a tile's first `W`
//!    hashes never change once written.
//! 5. **Claims are exclusive.** A webhook message or export job claimed by one worker MUST NOT
//!    be claimed by another until its lease ends (PostgreSQL: `FOR UPDATE SKIP LOCKED`; SQLite:
//!    one writer at a time).
//! 6. **Corrupt data is an error.** A stored value outside its type's range (a negative index,
//!    a hash that is not 32 bytes, an unknown state) MUST surface as [`StorageError::Corrupt`]
//!    naming the row, never as a default.
//! 7. **Durability.** PostgreSQL runs with `synchronous_commit` as configured by the operator
//!    (`on` for the service's guarantees); SQLite runs WAL with `synchronous=FULL`, so a
//!    committed transaction survives power loss.
//!
//! Engines SHOULD write a batch with set-based statements (PostgreSQL: `UNNEST`), SHOULD answer
//! a proof's tile lookups in one round trip, and SHOULD keep every query used on a hot path
//! (ingest, proofs) on an index (migrations in `migrations/{postgres,sqlite}`).
//!
//! Adding a table: one migration per engine, its rows and statements in the resource's module,
//! a [`log::SideRow`] variant only if the sequencer writes it with a batch, and a case in the
//! conformance suite.

pub mod access;
pub mod alerts;
pub mod charts;
pub mod exports;
pub mod fhir;
pub mod hosts;
pub mod log;
mod pg;
pub mod private;
pub mod readings;
pub mod registry;
pub mod security;
pub mod shards;
mod sqlite;
pub mod tokens;
pub mod webhooks;

pub use alerts::AlertEventOut;
pub use exports::ExportJob;
pub use log::{Batch, CheckpointRow, EntryRow, SideRow, TileRow};
pub use readings::ReadingRow;
pub use shards::ShardRow;
pub use tokens::TokenRow;
pub use webhooks::{AttemptOut, DeliveryResult, EndpointRow, OutboxItem};

use provenance_core::merkle::Hash;
use sqlx::postgres::{PgPool, PgRow};
use sqlx::sqlite::{SqlitePool, SqliteRow};
use sqlx::Row;
use std::borrow::Cow;

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// This node's sequencer epoch is no longer the log's: another node leads (contract 2).
    #[error("fenced: this node's sequencer epoch {ours} is no longer the log's ({current}); another node leads")]
    Fenced {
        /// The epoch the batch carried.
        ours: i64,
        /// The epoch stored now (`none` if unset).
        current: String,
    },
    /// A stored value is outside its type's range (contract 6).
    #[error("corrupt row in {table} ({key}), column {column}: {detail}")]
    Corrupt {
        /// Table.
        table: &'static str,
        /// The row's key, as far as it could be read.
        key: String,
        /// Column position in the query.
        column: usize,
        /// What is wrong.
        detail: String,
    },
    /// A write broke a uniqueness or other constraint (a second write of a log index, …).
    #[error("constraint violated: {0}")]
    Constraint(String),
    /// The database cannot be reached or answered with an error not caused by the data.
    #[error("storage unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// The schema could not be brought up to date.
    #[error("migrating the schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Database(d) if !matches!(d.kind(), sqlx::error::ErrorKind::Other) => {
                StorageError::Constraint(d.message().to_string())
            }
            sqlx::Error::ColumnDecode { index, source } => StorageError::Corrupt {
                table: "?",
                key: String::new(),
                column: index.parse().unwrap_or(0),
                detail: source.to_string(),
            },
            other => StorageError::Unavailable(other),
        }
    }
}

/// A storage result.
pub type DbResult<T> = Result<T, StorageError>;

/// The database: PostgreSQL or SQLite.
#[derive(Clone, Debug)]
pub enum Db {
    /// PostgreSQL (production).
    Pg(PgPool),
    /// SQLite (embedded default, one file).
    Lite(SqlitePool),
}

/// An index, time or sequence number as stored (all are < 2^63, checked at the edge).
pub(crate) fn i(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One argument of a statement, owned (so one statement runs on either engine).
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    I16(Option<i16>),
    I32(Option<i32>),
    I64(Option<i64>),
    F64(Option<f64>),
    Text(Option<String>),
    Bytes(Option<Vec<u8>>),
}

/// A statement with its arguments, the same text on both engines.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    text: Cow<'static, str>,
    args: Vec<Arg>,
}

/// Binds every argument of a [`Sql`] to a query of either engine.
macro_rules! bound {
    ($sql:expr) => {{
        let s = $sql;
        let mut q = sqlx::query(&s.text);
        for a in &s.args {
            q = match a {
                $crate::db::Arg::I16(v) => q.bind(*v),
                $crate::db::Arg::I32(v) => q.bind(*v),
                $crate::db::Arg::I64(v) => q.bind(*v),
                $crate::db::Arg::F64(v) => q.bind(*v),
                $crate::db::Arg::Text(v) => q.bind(v.as_deref()),
                $crate::db::Arg::Bytes(v) => q.bind(v.as_deref()),
            };
        }
        q
    }};
}
pub(crate) use bound;

impl Sql {
    pub(crate) fn new(text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            text: text.into(),
            args: Vec::new(),
        }
    }
    fn arg(mut self, a: Arg) -> Self {
        self.args.push(a);
        self
    }
    /// An index, time or count.
    pub(crate) fn u64(self, v: u64) -> Self {
        self.arg(Arg::I64(Some(i(v))))
    }
    pub(crate) fn opt_u64(self, v: Option<u64>) -> Self {
        self.arg(Arg::I64(v.map(i)))
    }
    pub(crate) fn i32(self, v: Option<i32>) -> Self {
        self.arg(Arg::I32(v))
    }
    pub(crate) fn i16(self, v: Option<i16>) -> Self {
        self.arg(Arg::I16(v))
    }
    pub(crate) fn f64(self, v: Option<f64>) -> Self {
        self.arg(Arg::F64(v))
    }
    pub(crate) fn text(self, v: &str) -> Self {
        self.arg(Arg::Text(Some(v.to_string())))
    }
    pub(crate) fn opt_text(self, v: Option<&str>) -> Self {
        self.arg(Arg::Text(v.map(str::to_string)))
    }
    pub(crate) fn bytes(self, v: &[u8]) -> Self {
        self.arg(Arg::Bytes(Some(v.to_vec())))
    }
}

/// A row of either engine.
pub(crate) enum DbRow {
    Pg(PgRow),
    Lite(SqliteRow),
}

impl DbRow {
    fn get<T>(&self, i: usize) -> Result<T, sqlx::Error>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres>
            + sqlx::Type<sqlx::Postgres>
            + for<'r> sqlx::Decode<'r, sqlx::Sqlite>
            + sqlx::Type<sqlx::Sqlite>,
    {
        match self {
            DbRow::Pg(r) => r.try_get(i),
            DbRow::Lite(r) => r.try_get(i),
        }
    }
}

/// Decodes the columns of one row of `table`; every failure names the table, the row's key and
/// the column (contract 6).
pub(crate) struct Cols<'a> {
    row: &'a DbRow,
    table: &'static str,
    key: String,
}

impl<'a> Cols<'a> {
    pub(crate) fn new(row: &'a DbRow, table: &'static str) -> Self {
        Self {
            row,
            table,
            key: String::new(),
        }
    }

    /// Names the row in errors from here on.
    pub(crate) fn keyed(mut self, key: impl std::fmt::Display) -> Self {
        self.key = key.to_string();
        self
    }

    pub(crate) fn corrupt(&self, column: usize, detail: impl std::fmt::Display) -> StorageError {
        StorageError::Corrupt {
            table: self.table,
            key: self.key.clone(),
            column,
            detail: detail.to_string(),
        }
    }

    fn raw<T>(&self, i: usize) -> DbResult<T>
    where
        T: for<'r> sqlx::Decode<'r, sqlx::Postgres>
            + sqlx::Type<sqlx::Postgres>
            + for<'r> sqlx::Decode<'r, sqlx::Sqlite>
            + sqlx::Type<sqlx::Sqlite>,
    {
        self.row.get(i).map_err(|e| match e {
            sqlx::Error::ColumnDecode { source, .. } => self.corrupt(i, source),
            other => self.corrupt(i, other),
        })
    }

    pub(crate) fn text(&self, i: usize) -> DbResult<String> {
        self.raw(i)
    }
    pub(crate) fn opt_text(&self, i: usize) -> DbResult<Option<String>> {
        self.raw(i)
    }
    pub(crate) fn bytes(&self, i: usize) -> DbResult<Vec<u8>> {
        self.raw(i)
    }
    pub(crate) fn f64(&self, i: usize) -> DbResult<f64> {
        self.raw(i)
    }
    pub(crate) fn opt_f64(&self, i: usize) -> DbResult<Option<f64>> {
        self.raw(i)
    }
    /// A non-negative BIGINT.
    pub(crate) fn u64(&self, i: usize) -> DbResult<u64> {
        let v: i64 = self.raw(i)?;
        u64::try_from(v).map_err(|_| self.corrupt(i, format!("negative value {v}")))
    }
    pub(crate) fn opt_u64(&self, i: usize) -> DbResult<Option<u64>> {
        let v: Option<i64> = self.raw(i)?;
        v.map(|v| u64::try_from(v).map_err(|_| self.corrupt(i, format!("negative value {v}"))))
            .transpose()
    }
    /// An INTEGER narrowed to `T`.
    pub(crate) fn int<T: TryFrom<i32>>(&self, i: usize) -> DbResult<T> {
        let v: i32 = self.raw(i)?;
        T::try_from(v).map_err(|_| self.corrupt(i, format!("value {v} out of range")))
    }
    pub(crate) fn opt_int<T: TryFrom<i32>>(&self, i: usize) -> DbResult<Option<T>> {
        let v: Option<i32> = self.raw(i)?;
        v.map(|v| T::try_from(v).map_err(|_| self.corrupt(i, format!("value {v} out of range"))))
            .transpose()
    }
    /// A SMALLINT narrowed to `T`.
    pub(crate) fn small<T: TryFrom<i16>>(&self, i: usize) -> DbResult<T> {
        let v: i16 = self.raw(i)?;
        T::try_from(v).map_err(|_| self.corrupt(i, format!("value {v} out of range")))
    }
    /// A 32-byte hash.
    pub(crate) fn hash(&self, i: usize) -> DbResult<Hash> {
        let v = self.bytes(i)?;
        Hash::try_from(v.as_slice())
            .map_err(|_| self.corrupt(i, format!("a hash of {} bytes, not 32", v.len())))
    }
    /// Concatenated 32-byte hashes (a tile).
    pub(crate) fn hashes(&self, i: usize) -> DbResult<Vec<Hash>> {
        let v = self.bytes(i)?;
        if v.is_empty() || v.len() % 32 != 0 || v.len() > 256 * 32 {
            return Err(self.corrupt(i, format!("a tile of {} bytes", v.len())));
        }
        Ok(v.chunks_exact(32)
            .map(|c| {
                let mut h = [0u8; 32];
                h.copy_from_slice(c);
                h
            })
            .collect())
    }
    /// A JSON list of strings.
    pub(crate) fn string_list(&self, i: usize) -> DbResult<Vec<String>> {
        let v = self.text(i)?;
        serde_json::from_str(&v)
            .map_err(|e| self.corrupt(i, format!("not a JSON list of strings: {e}")))
    }
    /// A text value one of a fixed set, parsed by `f`.
    pub(crate) fn parsed<T>(&self, i: usize, f: impl Fn(&str) -> Option<T>) -> DbResult<T> {
        let v = self.text(i)?;
        f(&v).ok_or_else(|| self.corrupt(i, format!("unknown value {v:?}")))
    }
}

impl Db {
    /// Connects and runs the migrations. `url` is `postgres://…` or `sqlite://path`.
    pub async fn connect(url: &str, max_connections: u32) -> DbResult<Self> {
        let db = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            pg::connect(url, max_connections).await.map(Db::Pg)?
        } else {
            sqlite::connect(url, max_connections).await.map(Db::Lite)?
        };
        // Readings logged before migration 0011 get their chart values (once).
        db.fill_chart_values().await?;
        Ok(db)
    }

    /// Connects a read node (`reader.rs`): PostgreSQL only, any host that answers (a standby
    /// will do), every session read-only, no migrations.
    pub async fn connect_read_only(url: &str, max_connections: u32) -> DbResult<Self> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return pg::connect_read_only(url, max_connections)
                .await
                .map(Db::Pg);
        }
        Err(StorageError::Unavailable(sqlx::Error::Configuration(
            "a read node reads a PostgreSQL replica: DATABASE_URL must be postgres://".into(),
        )))
    }

    /// How far this database's replay lags what it received, ms (0 on a primary and on SQLite).
    pub async fn replay_lag_ms(&self) -> DbResult<u64> {
        match self {
            Db::Pg(p) => Ok(hosts::replay_lag_ms(p).await?),
            Db::Lite(_) => Ok(0),
        }
    }

    /// "postgres" or "sqlite".
    pub fn engine(&self) -> &'static str {
        match self {
            Db::Pg(_) => "postgres",
            Db::Lite(_) => "sqlite",
        }
    }

    /// The bytes the database takes on disk (PostgreSQL: the database with its indexes and
    /// TOAST; SQLite: the main file, pages × page size).
    pub async fn database_bytes(&self) -> DbResult<u64> {
        let sql = match self {
            Db::Pg(_) => "SELECT pg_database_size(current_database())",
            Db::Lite(_) => {
                "SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()"
            }
        };
        Ok(self.number("database", Sql::new(sql)).await?.unwrap_or(0))
    }

    /// Closes the pool.
    pub async fn close(&self) {
        match self {
            Db::Pg(p) => p.close().await,
            Db::Lite(p) => p.close().await,
        }
    }

    /// Runs one statement; returns the rows it changed.
    pub(crate) async fn exec(&self, s: Sql) -> DbResult<u64> {
        Ok(match self {
            Db::Pg(p) => bound!(&s).execute(p).await?.rows_affected(),
            Db::Lite(p) => bound!(&s).execute(p).await?.rows_affected(),
        })
    }

    /// Runs statements in one transaction; returns the rows each changed.
    pub(crate) async fn exec_all(&self, stmts: Vec<Sql>) -> DbResult<Vec<u64>> {
        let mut out = Vec::with_capacity(stmts.len());
        match self {
            Db::Pg(p) => {
                let mut tx = p.begin().await?;
                for s in &stmts {
                    out.push(bound!(s).execute(&mut *tx).await?.rows_affected());
                }
                tx.commit().await?;
            }
            Db::Lite(p) => {
                let mut tx = p.begin().await?;
                for s in &stmts {
                    out.push(bound!(s).execute(&mut *tx).await?.rows_affected());
                }
                tx.commit().await?;
            }
        }
        Ok(out)
    }

    /// Runs `guard`, and only if it changed a row runs `then`, all in one transaction; returns
    /// whether the guard changed a row (if not, nothing is written).
    pub(crate) async fn exec_guarded(&self, guard: Sql, then: Vec<Sql>) -> DbResult<bool> {
        macro_rules! run {
            ($p:expr) => {{
                let mut tx = $p.begin().await?;
                if bound!(&guard).execute(&mut *tx).await?.rows_affected() == 0 {
                    tx.rollback().await?;
                    return Ok(false);
                }
                for s in &then {
                    bound!(s).execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(true)
            }};
        }
        match self {
            Db::Pg(p) => run!(p),
            Db::Lite(p) => run!(p),
        }
    }

    /// Every row of a query.
    pub(crate) async fn rows(&self, s: Sql) -> DbResult<Vec<DbRow>> {
        Ok(match self {
            Db::Pg(p) => bound!(&s)
                .fetch_all(p)
                .await?
                .into_iter()
                .map(DbRow::Pg)
                .collect(),
            Db::Lite(p) => bound!(&s)
                .fetch_all(p)
                .await?
                .into_iter()
                .map(DbRow::Lite)
                .collect(),
        })
    }

    /// The row of a query, if there is one.
    pub(crate) async fn row(&self, s: Sql) -> DbResult<Option<DbRow>> {
        Ok(match self {
            Db::Pg(p) => bound!(&s).fetch_optional(p).await?.map(DbRow::Pg),
            Db::Lite(p) => bound!(&s).fetch_optional(p).await?.map(DbRow::Lite),
        })
    }

    /// Every row of a query, decoded by `f`.
    pub(crate) async fn decode_all<T>(
        &self,
        s: Sql,
        f: impl Fn(&DbRow) -> DbResult<T>,
    ) -> DbResult<Vec<T>> {
        self.rows(s).await?.iter().map(f).collect()
    }

    /// The row of a query, if any, decoded by `f`.
    pub(crate) async fn decode_one<T>(
        &self,
        s: Sql,
        f: impl Fn(&DbRow) -> DbResult<T>,
    ) -> DbResult<Option<T>> {
        self.row(s).await?.as_ref().map(f).transpose()
    }

    /// A query answering one non-negative number (a count, `MAX(…)`; NULL is `None`).
    pub(crate) async fn number(&self, table: &'static str, s: Sql) -> DbResult<Option<u64>> {
        let row = self.row(s).await?;
        match row {
            Some(r) => Cols::new(&r, table).opt_u64(0),
            None => Ok(None),
        }
    }

    /// A trivial query, for readiness.
    pub(crate) async fn ping(&self) -> DbResult<()> {
        self.exec(Sql::new("SELECT 1")).await.map(drop)
    }

    /// Reads a metadata value.
    pub(crate) async fn meta(&self, key: &str) -> DbResult<Option<String>> {
        let s = Sql::new("SELECT value FROM log_meta WHERE key = $1").text(key);
        self.decode_one(s, |r| Cols::new(r, "log_meta").keyed(key).text(0))
            .await
    }

    /// Sets a metadata value if it is not set yet; returns the stored value.
    pub(crate) async fn meta_init(&self, key: &str, value: &str) -> DbResult<String> {
        let s = Sql::new(
            "INSERT INTO log_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING",
        )
        .text(key)
        .text(value);
        self.exec(s).await?;
        self.meta(key).await?.ok_or_else(|| StorageError::Corrupt {
            table: "log_meta",
            key: key.to_string(),
            column: 0,
            detail: "missing right after it was set".into(),
        })
    }
}
