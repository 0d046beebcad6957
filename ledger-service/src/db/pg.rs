//! The statements that differ on PostgreSQL: set-based batch writes (`UNNEST`), one-round-trip
//! lookups, and claims with `FOR UPDATE SKIP LOCKED`.

use super::log::{check_fence, Batch, TileRow};
use super::readings::ExistingReading;
use super::{bound, i, Cols, DbResult, DbRow, Sql};
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::collections::HashMap;

/// A pool on `url`'s primary. With several hosts (`h1:5432,h2:5432,…`) a connection that lands
/// on a standby is refused, and a watcher moves the pool to the new primary after a fail-over
/// (`hosts.rs`).
pub(super) async fn connect(url: &str, max_connections: u32) -> DbResult<PgPool> {
    let targets = super::hosts::targets(url)?;
    let (first, target) = super::hosts::connect_primary(&targets).await?;
    drop(first);
    let mut options = PgPoolOptions::new().max_connections(max_connections);
    if targets.len() > 1 {
        options = options
            .acquire_timeout(std::time::Duration::from_secs(5))
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    if super::hosts::is_primary(conn).await? {
                        Ok(())
                    } else {
                        Err(sqlx::Error::Configuration(
                            "this database host is a standby now, not the primary".into(),
                        ))
                    }
                })
            });
    }
    let pool = options.connect_with(target).await?;
    super::hosts::watch(pool.clone(), targets, true);
    sqlx::migrate!("../migrations/postgres").run(&pool).await?;
    Ok(pool)
}

/// A read node's pool: on the first of `url`'s hosts that answers (a standby will do), moved to
/// another when it stops answering; no migrations (a standby cannot run them).
pub(super) async fn connect_read_only(url: &str, max_connections: u32) -> DbResult<PgPool> {
    let targets = super::hosts::targets(url)?;
    let (first, target) = super::hosts::connect_any(&targets).await?;
    drop(first);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(std::time::Duration::from_secs(5))
        .after_connect(|conn, _meta| {
            Box::pin(async move {
                // Nothing this node runs may write, even on a primary.
                sqlx::query("SET default_transaction_read_only = on")
                    .execute(conn)
                    .await
                    .map(|_| ())
            })
        })
        .connect_with(target)
        .await?;
    super::hosts::watch(pool.clone(), targets, false);
    Ok(pool)
}

pub(super) async fn commit_batch(p: &PgPool, b: &Batch, side: &[Sql]) -> DbResult<()> {
    let mut tx = p.begin().await?;
    if let Some(epoch) = b.fence {
        // The row lock holds off a new leader's bump until this batch commits.
        let now: Option<String> = sqlx::query_scalar(
            "SELECT value FROM log_meta WHERE key = 'sequencer_epoch' FOR UPDATE",
        )
        .fetch_optional(&mut *tx)
        .await?;
        check_fence(epoch, now)?;
    }
    if !b.entries.is_empty() {
        let idx: Vec<i64> = b.entries.iter().map(|e| i(e.idx)).collect();
        let kind: Vec<i16> = b.entries.iter().map(|e| e.kind).collect();
        let data: Vec<&[u8]> = b.entries.iter().map(|e| e.leaf_data.as_slice()).collect();
        let at: Vec<i64> = b.entries.iter().map(|e| i(e.logged_at)).collect();
        sqlx::query(
            "INSERT INTO entries (idx, kind, leaf_data, logged_at) \
             SELECT * FROM UNNEST($1::bigint[], $2::smallint[], $3::bytea[], $4::bigint[])",
        )
        .bind(&idx)
        .bind(&kind)
        .bind(&data)
        .bind(&at)
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
        let vals: Vec<_> = r.iter().map(super::charts::chart_values).collect();
        let col = |k: usize| -> Vec<Option<f64>> { vals.iter().map(|v| v[k]).collect() };
        sqlx::query(
            "INSERT INTO readings (idx, sensor_id, seq, sensor_hash, gateway_id, measured_at, received_at, patient, \
             v_body_temperature, v_heart_rate, v_spo2, v_respiratory_rate, v_systolic, v_diastolic) \
             SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bytea[], $5::text[], $6::bigint[], $7::bigint[], $8::text[], \
             $9::float8[], $10::float8[], $11::float8[], $12::float8[], $13::float8[], $14::float8[])",
        )
        .bind(&idx)
        .bind(&sensor)
        .bind(&seq)
        .bind(&sh)
        .bind(&gw)
        .bind(&meas)
        .bind(&recv)
        .bind(&pat)
        .bind(col(0))
        .bind(col(1))
        .bind(col(2))
        .bind(col(3))
        .bind(col(4))
        .bind(col(5))
        .execute(&mut *tx)
        .await?;
    }
    for s in side {
        bound!(s).execute(&mut *tx).await?;
    }
    if !b.tiles.is_empty() {
        let level: Vec<i16> = b.tiles.iter().map(|t| i16::from(t.level)).collect();
        let idx: Vec<i64> = b.tiles.iter().map(|t| i(t.idx)).collect();
        let width: Vec<i32> = b.tiles.iter().map(|t| t.hashes.len() as i32).collect();
        let bytes: Vec<Vec<u8>> = b.tiles.iter().map(|t| t.hashes.concat()).collect();
        sqlx::query(
            "INSERT INTO tiles (level, idx, width, hashes, shard) \
             SELECT *, $5::bigint FROM UNNEST($1::smallint[], $2::bigint[], $3::int[], $4::bytea[]) \
             ON CONFLICT (shard, level, idx) DO UPDATE SET width = EXCLUDED.width, hashes = EXCLUDED.hashes \
             WHERE tiles.width < EXCLUDED.width",
        )
        .bind(&level)
        .bind(&idx)
        .bind(&width)
        .bind(&bytes)
        .bind(i64::from(b.shard))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// All of a proof's missing tiles in one round trip.
pub(super) async fn tiles(p: &PgPool, shard: u32, coords: &[(u8, u64)]) -> DbResult<Vec<TileRow>> {
    let levels: Vec<i16> = coords.iter().map(|c| i16::from(c.0)).collect();
    let idxs: Vec<i64> = coords.iter().map(|c| i(c.1)).collect();
    let rows = sqlx::query(
        "SELECT t.level, t.idx, t.hashes FROM tiles t \
         JOIN UNNEST($1::smallint[], $2::bigint[]) AS q(l, i) ON t.level = q.l AND t.idx = q.i \
         WHERE t.shard = $3",
    )
    .bind(&levels)
    .bind(&idxs)
    .bind(i64::from(shard))
    .fetch_all(p)
    .await?;
    rows.into_iter()
        .map(|r| {
            let r = DbRow::Pg(r);
            let c = Cols::new(&r, "tiles");
            let (level, idx) = (c.small(0)?, c.u64(1)?);
            let c = c.keyed(format_args!("{level}/{idx}"));
            Ok(TileRow {
                level,
                idx,
                hashes: c.hashes(2)?,
            })
        })
        .collect()
}

/// The readings already logged for these (sensor, seq) pairs, in one round trip.
pub(super) async fn existing_readings(
    p: &PgPool,
    keys: &[(String, u64)],
) -> DbResult<HashMap<(String, u64), ExistingReading>> {
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
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let r = DbRow::Pg(r);
        let c = Cols::new(&r, "readings");
        let key = (c.text(0)?, c.u64(1)?);
        let c = c.keyed(format_args!("{}/{}", key.0, key.1));
        out.insert(
            key,
            ExistingReading {
                idx: c.u64(2)?,
                sensor_hash: c.bytes(3)?,
            },
        );
    }
    Ok(out)
}

/// Claims due outbox rows picked by `pick`, skipping rows another transaction has locked.
pub(super) fn claim_outbox(pick: &str) -> String {
    format!(
        "UPDATE webhook_outbox w SET locked_until = $2 FROM ({pick} FOR UPDATE OF o SKIP LOCKED) d \
         WHERE w.msg_id = d.msg_id AND w.endpoint_id = d.endpoint_id RETURNING w.msg_id, w.endpoint_id, \
         w.event_type, w.payload, w.attempts, w.state, w.created_at, w.last_status, w.last_error, \
         w.round_start"
    )
}

/// Claims the export job picked by `pick`, skipping one another transaction has locked.
pub(super) fn claim_export(pick: &str, columns: &str) -> String {
    format!(
        "UPDATE export_jobs SET state = 'running', claimed_until = $2, updated_at = $1 \
         WHERE id = ({pick} FOR UPDATE SKIP LOCKED) RETURNING {columns}"
    )
}
