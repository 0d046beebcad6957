//! The statements that differ on SQLite: the batch written row by row with prepared statements
//! in one transaction (SQLite has no arrays), the fence read without `FOR UPDATE` (a write
//! transaction holds the database's one write lock).

use super::log::{check_fence, Batch};
use super::{bound, i, DbResult};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use std::str::FromStr;

pub(super) async fn connect(url: &str, max_connections: u32) -> DbResult<SqlitePool> {
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
    Ok(pool)
}

pub(super) async fn commit_batch(p: &SqlitePool, b: &Batch, side: &[super::Sql]) -> DbResult<()> {
    let mut tx = p.begin().await?;
    for e in &b.entries {
        sqlx::query(
            "INSERT INTO entries (idx, kind, leaf_data, logged_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(i(e.idx))
        .bind(e.kind)
        .bind(&e.leaf_data)
        .bind(i(e.logged_at))
        .execute(&mut *tx)
        .await?;
    }
    for r in &b.readings {
        let v = super::charts::chart_values(r);
        sqlx::query(
            "INSERT INTO readings (idx, sensor_id, seq, sensor_hash, gateway_id, measured_at, received_at, patient, \
             v_body_temperature, v_heart_rate, v_spo2, v_respiratory_rate, v_systolic, v_diastolic) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        )
        .bind(i(r.idx))
        .bind(&r.sensor_id)
        .bind(i(r.seq))
        .bind(&r.sensor_hash)
        .bind(&r.gateway_id)
        .bind(i(r.measured_at))
        .bind(i(r.received_at))
        .bind(&r.patient)
        .bind(v[0])
        .bind(v[1])
        .bind(v[2])
        .bind(v[3])
        .bind(v[4])
        .bind(v[5])
        .execute(&mut *tx)
        .await?;
    }
    for s in side {
        bound!(s).execute(&mut *tx).await?;
    }
    for t in &b.tiles {
        sqlx::query(
            "INSERT INTO tiles (level, idx, width, hashes, shard) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (shard, level, idx) DO UPDATE SET width = excluded.width, hashes = excluded.hashes \
             WHERE tiles.width < excluded.width",
        )
        .bind(i16::from(t.level))
        .bind(i(t.idx))
        .bind(t.hashes.len() as i32)
        .bind(t.hashes.concat())
        .bind(i64::from(b.shard))
        .execute(&mut *tx)
        .await?;
    }
    if let Some(epoch) = b.fence {
        // Read inside the transaction after its first write: this connection holds SQLite's
        // write lock, so no other writer can bump the epoch before the commit.
        let now: Option<String> =
            sqlx::query_scalar("SELECT value FROM log_meta WHERE key = 'sequencer_epoch'")
                .fetch_optional(&mut *tx)
                .await?;
        check_fence(epoch, now)?;
    }
    tx.commit().await?;
    Ok(())
}

/// Claims due outbox rows picked by `pick` (one writer at a time: no row locks needed).
pub(super) fn claim_outbox(pick: &str, columns: &str) -> String {
    format!(
        "UPDATE webhook_outbox SET locked_until = $2 WHERE (msg_id, endpoint_id) IN ({pick}) \
         RETURNING {columns}"
    )
}

/// Claims the export job picked by `pick`.
pub(super) fn claim_export(pick: &str, columns: &str) -> String {
    format!(
        "UPDATE export_jobs SET state = 'running', claimed_until = $2, updated_at = $1 \
         WHERE id = ({pick}) RETURNING {columns}"
    )
}
