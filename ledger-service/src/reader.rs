//! Read nodes (issue #18): `ledger-service --read-only` on a database replica serves the public
//! log — the checkpoint, tiles, inclusion and consistency proofs, registry entries, the log key —
//! so that auditors, monitors, witnesses and verifiers do not load the primary or the leading
//! node. A read node never writes (every session is read-only), runs no sequencer and no worker,
//! and refuses every other route with `421 Misdirected Request` (problem type `read-only`).
//!
//! What it serves is bounded in staleness: it looks for a newer checkpoint every
//! `LEDGER_READ_REFRESH_MS`, checks each against the log's key before serving it, and reports its
//! staleness — the time since its last successful look plus the replica's replay lag — in the
//! `Ledger-Staleness-Ms` header of every answer. Past `LEDGER_READ_MAX_STALENESS_MS` it answers
//! `503` (problem type `stale`) and `/readyz` says not ready, so a load balancer moves on.
//!
//! Everything it serves is consistent by construction: the checkpoint row is written after the
//! batch that holds its entries and tiles, so a replica that holds a checkpoint holds every tile
//! under it; proofs and tiles are only served inside that checkpoint's tree.

use crate::config::Config;
use crate::db::Db;
use crate::error::ApiError;
use crate::registry::TimePolicy;
use crate::state::{now_ms, Shared};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::IntoResponse;
use provenance_core::checkpoint::Checkpoint;
use provenance_core::note::NoteVerifier;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The routes a read node answers besides health, readiness, metrics and the API description
/// (prefixes; GET and HEAD only).
const READS: [&str; 6] = [
    "/tile/",
    "/v1/log/checkpoint",
    "/v1/log/shards",
    "/v1/log/key",
    "/v1/log/proof/",
    "/v1/log/registry-entries",
];

pub use crate::state::Freshness;

/// Opens a read node on `url` (not migrated, not written) and starts its refresher.
pub async fn start(cfg: &Config, url: &str) -> anyhow::Result<Arc<Shared>> {
    let db = Db::connect_read_only(url, cfg.db_connections).await?;
    let vkey = db
        .meta("log_vkey")
        .await
        .map_err(|e| anyhow::anyhow!("this database holds no log (not the ledger's, or never migrated by a service node): {e}"))?
        .ok_or_else(|| anyhow::anyhow!("this database holds no log yet (no log_vkey)"))?;
    let verifier = NoteVerifier::from_vkey(&vkey)
        .map_err(|e| anyhow::anyhow!("the stored log key {vkey:?}: {e}"))?;
    // The sequencer's handle of a node that has none: every send fails (nothing is ingested).
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    drop(rx);
    let mut shared = Shared::new(
        db,
        verifier,
        Default::default(),
        None,
        0,
        crate::mailbox::SequencerHandle::new(tx),
        TimePolicy {
            max_skew_ms: cfg.max_skew_ms,
            max_age_ms: cfg.max_age_ms,
        },
    );
    shared.limits = cfg.limits;
    shared.requests = tokio::sync::Semaphore::new(cfg.limits.max_concurrent_requests.max(1));
    shared.witness_quorum = crate::witnessing::quorum(&cfg.witnesses)?;
    if let Some(base) = &cfg.public_url {
        let base = crate::config::public_url(base).map_err(anyhow::Error::msg)?;
        let _ = shared.public_base.set(base);
    }
    shared.leader.store(false, Ordering::SeqCst);
    let shared = Arc::new(shared);
    let fresh = Arc::new(Freshness {
        max_staleness_ms: cfg.read_node.read_max_staleness_ms,
        refreshed_at_ms: AtomicU64::new(0),
        replay_lag_ms: AtomicU64::new(0),
    });
    let _ = shared.reader.set(Arc::clone(&fresh));
    if let Err(e) = refresh(&shared, &fresh).await {
        tracing::warn!(error = %e, "read node: first look at the log failed; retrying");
    }
    let every = Duration::from_millis(cfg.read_node.read_refresh_ms.clamp(10, 10_000));
    let s = Arc::clone(&shared);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = refresh(&s, &fresh).await {
                tracing::warn!(error = %e, staleness_ms = fresh.staleness_ms(), "read node: looking for a newer checkpoint");
            }
        }
    });
    tracing::info!(origin = %shared.origin, size = shared.committed(), "read node opened (public log reads only)");
    Ok(shared)
}

/// Reads the latest published checkpoint; serves it once its signature verifies, if it is newer
/// (or the same with more cosignatures), never going back. Proofs and tiles are then answered inside its tree.
async fn refresh(s: &Shared, fresh: &Freshness) -> anyhow::Result<()> {
    let lag = s.db.replay_lag_ms().await?;
    let shards = s.db.shards(&s.origin).await?;
    let open = shards
        .last()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the replica has no shard"))?;
    let latest = if s.witness_quorum == 0 {
        s.db.latest_checkpoint(open.number).await?
    } else {
        s.db.latest_cosigned_checkpoint(open.number, s.witness_quorum as u64)
            .await?
    };
    s.set_shards(shards);
    if let Some(cp) = latest {
        // A newer checkpoint (of a later shard, or larger), or the same one with cosignatures
        // from more witnesses.
        let newer = s
            .latest_checkpoint()
            .is_none_or(|c| (cp.shard, cp.size, cp.cosigners) > (c.shard, c.size, c.cosigners));
        if newer {
            Checkpoint::open(&cp.note, &s.log_key.renamed(&open.origin)?).map_err(|e| {
                anyhow::anyhow!(
                    "the replica's checkpoint of size {} does not verify: {e}",
                    cp.size
                )
            })?;
            let size = open.base + cp.size;
            s.set_checkpoint(cp);
            s.committed_size.store(size, Ordering::SeqCst);
        }
    }
    fresh.replay_lag_ms.store(lag, Ordering::SeqCst);
    fresh.refreshed_at_ms.store(now_ms(), Ordering::SeqCst);
    Ok(())
}

/// Whether a read node answers `method path`.
pub fn serves(method: &Method, path: &str) -> bool {
    (method == Method::GET || method == Method::HEAD) && READS.iter().any(|r| path.starts_with(r))
}

/// The read node's gate (from `standby_guard`): public log reads while fresh, with their
/// staleness stated; `421` for everything else.
pub async fn guard(
    fresh: &Freshness,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if !serves(req.method(), req.uri().path()) {
        // 421 Misdirected Request: not "unavailable now" (503) — this node never serves it.
        return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "read-only",
                "this is a read node: it serves the public log (checkpoint, tiles, proofs, registry entries); send everything else to the service's leading node",
            )
            .into_response();
    }
    let staleness = fresh.staleness_ms();
    if staleness > fresh.max_staleness_ms {
        return ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stale",
                format!(
                    "this read node's copy of the log is {staleness} ms old, more than its bound of {} ms",
                    fresh.max_staleness_ms
                ),
            )
        }
        .into_response();
    }
    let mut resp = next.run(req).await;
    if let Ok(v) = HeaderValue::from_str(&staleness.to_string()) {
        resp.headers_mut().insert("ledger-staleness-ms", v);
    }
    resp
}
