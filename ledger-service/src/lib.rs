//! # ledger-service
//!
//! The cloud service of the vital-sign provenance ledger: the device registry, verified batch
//! ingest, the Merkle log (RFC 9162 hashing, C2SP tiles and checkpoints), proofs, the readings
//! API and evidence bundles, on PostgreSQL or an embedded SQLite file.
//!
//! The API is small: [`config::Config`], [`Db::connect`], [`start`] (storage checked, registry
//! loaded, sequencer and workers running) and [`serve`]; [`app`] builds the router (tests drive
//! it over real HTTP on port 0, or in-process with `tower::ServiceExt::oneshot`); a few helpers
//! for operators and tests ([`create_token`], [`write_log_archive`], [`openapi_json`],
//! [`sign_webhook`]) and [`tooling`] for the benchmarks. Every module is internal: storage
//! (`db`, one module per resource), the use cases (`ingest`, `evidence`, `exports`, `alerts`,
//! `webhooks`), the one log writer (`sequencer`, reached through `mailbox`), HTTP (`routes`,
//! `error`, `openapi`).
//!
//! Every byte format and signature check comes from `provenance-core`; this crate knows HTTP and
//! SQL and nothing about encodings.

mod access;
mod alerts;
mod archive;
mod auth;
pub mod config;
mod db;
mod election;
mod error;
mod evidence;
mod exports;
pub mod fhir;
mod ingest;
mod mailbox;
mod openapi;
mod outbound;
pub mod reader;
mod registry;
mod routes;
mod security;
mod sequencer;
mod server;
mod shards;
mod state;
#[cfg(test)]
mod storage_conformance;
mod tiles;
pub mod tooling;
mod trail;
mod webhooks;
mod witnessing;

// The crate's API: what `main`, the test kit and the benchmarks use. Everything else is
// internal (see ARCHITECTURE.md for the module map).
pub use alerts::news2_subscore;
pub use archive::{write_cosigned_log_archive, write_log_archive, write_log_archive_at};
pub use auth::{
    create_household_token, create_token, issue_token, list_tokens, revoke_token, rotate_token,
    Issued, Role, TokenError, TokenSpec, ANY_GATEWAY, DEFAULT_TTL_DAYS,
};
pub use db::access::AccessRecord;
pub use db::{CheckpointRow, Db, StorageError, TokenRow};
pub use openapi::json as openapi_json;
pub use routes::fhir::{observation::Cursor as FhirCursor, search as fhir_search};
pub use routes::web::{asset_sizes as web_asset_sizes, VERIFIER_WASM};
pub use state::{now_ms, Shared};
pub use trail::export_access_log;
pub use webhooks::sign as sign_webhook;

use crate::config::Config;
use crate::registry::{Registry, TimePolicy};
use crate::sequencer::{load_frontier, load_shards, Sequencer, SequencerConfig};
use anyhow::Context;
use axum::Router;
use ed25519_dalek::SigningKey;
use provenance_core::note::NoteSigner;
use rand_core::OsRng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The router with every route.
pub fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .merge(routes::ops::router())
        .merge(routes::log::router())
        .merge(routes::registry::router())
        .merge(routes::households::router())
        .merge(routes::ingest::router())
        .merge(routes::readings::router())
        .merge(routes::alerts::router())
        .merge(routes::webhooks::router())
        .merge(routes::exports::router())
        .merge(routes::fhir::router())
        .merge(routes::tokens::router())
        .merge(routes::access::router())
        .merge(routes::security::router())
        .merge(routes::ward::router())
        .merge(routes::status::router())
        .merge(routes::web::router())
        .merge(openapi::router())
        .fallback(|| async { error::ApiError::not_found("no such route") })
        .method_not_allowed_fallback(|| async {
            error::ApiError::new(
                axum::http::StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "this route does not take that method",
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(
            routes::extract::MAX_JSON_BODY,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            access::record,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            routes::ops::standby_guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&shared),
            server::edge_guard,
        ))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .layer(axum::middleware::from_fn(routes::fhir::outcomes))
        .layer(
            // The path only: query strings carry patient pseudonyms, which stay out of logs.
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<axum::body::Body>| {
                    tracing::info_span!("request", method = %req.method(), path = %req.uri().path())
                },
            ),
        )
        .with_state(shared)
}

/// A running service core: shared state and the sequencer task.
pub struct Running {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The sequencer task (ends when every sender is dropped).
    pub sequencer: JoinHandle<()>,
    /// The webhook delivery task (runs until aborted).
    pub webhooks: JoinHandle<()>,
    /// The export job task (runs until aborted).
    pub exports: JoinHandle<()>,
}

/// Where the database is.
pub fn database_url(cfg: &Config) -> anyhow::Result<String> {
    // An empty DATABASE_URL counts as unset (the embedded default).
    match cfg
        .database_url
        .as_ref()
        .map(|u| secrecy::ExposeSecret::expose_secret(u).trim())
    {
        Some(u) if !u.is_empty() => Ok(u.to_string()),
        _ => {
            std::fs::create_dir_all(&cfg.data_dir)
                .with_context(|| format!("creating {}", cfg.data_dir.display()))?;
            Ok(format!(
                "sqlite://{}",
                cfg.data_dir.join("ledger.sqlite").display()
            ))
        }
    }
}

/// Loads the log's signing key, or generates and keeps a development key (loudly).
pub fn log_signer(cfg: &Config) -> anyhow::Result<NoteSigner> {
    if let Some(path) = &cfg.log_key_file {
        check_private(path)?;
        let skey = std::fs::read_to_string(path)
            .with_context(|| format!("reading log key file {}", path.display()))?;
        return NoteSigner::from_skey(&skey)
            .map_err(|e| anyhow::anyhow!("log key file {}: {e}", path.display()));
    }
    // An empty DATABASE_URL counts as unset (the embedded default), as in `database_url`.
    let production = cfg
        .database_url
        .as_ref()
        .is_some_and(|u| !secrecy::ExposeSecret::expose_secret(u).trim().is_empty());
    if production {
        anyhow::bail!(
            "with DATABASE_URL set (production), LEDGER_LOG_KEY_FILE must name the log's key file"
        );
    }
    let path = cfg.data_dir.join("log-key.dev");
    std::fs::create_dir_all(&cfg.data_dir)?;
    let signer = match std::fs::read_to_string(&path) {
        Ok(skey) => {
            check_private(&path)?;
            NoteSigner::from_skey(&skey).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        }
        Err(_) => {
            let signer = NoteSigner::new(&cfg.origin, SigningKey::generate(&mut OsRng))
                .map_err(|e| anyhow::anyhow!("origin {:?}: {e}", cfg.origin))?;
            write_secret(&path, &signer.to_skey())?;
            signer
        }
    };
    tracing::warn!(
        key_file = %path.display(),
        "DEVELOPMENT MODE: embedded SQLite and a generated log key. Do not use for patient data; \
         set DATABASE_URL and LEDGER_LOG_KEY_FILE in production."
    );
    Ok(signer)
}

/// Refuses a key file others may read (group or world permissions): the log's key signs every
/// checkpoint, so it is kept `0600` (as `generate-log-key` writes it).
fn check_private(path: &std::path::Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .with_context(|| format!("reading log key file {}", path.display()))?
            .permissions()
            .mode();
        anyhow::ensure!(
            mode & 0o077 == 0,
            "log key file {} is open to other users (mode {:o}): `chmod 600` it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod key_file_tests {
    use super::check_private;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn an_empty_database_url_is_the_embedded_default() {
        use clap::Parser;
        let dir = std::env::temp_dir().join(format!("ledger_emptyurl_{}", std::process::id()));
        let d = dir.to_string_lossy().to_string();
        let cli = crate::config::Cli::try_parse_from([
            "ledger-service",
            "--data-dir",
            &d,
            "--database-url",
            "",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(super::database_url(&cli.config).is_ok_and(|u| u.starts_with("sqlite://")));
        // A development key, not the production demand for a key file.
        assert!(super::log_signer(&cli.config).is_ok());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_key_file_others_may_read_is_refused() {
        let dir = std::env::temp_dir().join(format!("ledger_keyfile_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap_or_default();
        let path = dir.join("log.key");
        std::fs::write(&path, "PRIVATE+KEY+x").unwrap_or_default();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o644, false),
            (0o604, false),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                .unwrap_or_default();
            let got = check_private(&path);
            assert_eq!(got.is_ok(), ok, "mode {mode:o}: {got:?}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Generates a new log key for `origin`, writes it to `path` (0600, must not exist) and returns
/// the matching vkey.
pub fn generate_log_key(origin: &str, path: &std::path::Path) -> anyhow::Result<String> {
    let signer = NoteSigner::new(origin, SigningKey::generate(&mut OsRng))
        .map_err(|e| anyhow::anyhow!("origin {origin:?}: {e}"))?;
    write_secret(path, &signer.to_skey())?;
    Ok(signer.verifier().to_vkey())
}

fn write_secret(path: &std::path::Path, content: &str) -> anyhow::Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    opts.mode(0o600);
    let mut f = opts
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// Opens storage, checks the log against its latest checkpoint, loads the registry and starts
/// the sequencer — at once if this node leads the log (always on SQLite; on PostgreSQL when it
/// takes the log's advisory lock), else as a standby that takes over when the leader's lock is
/// released (see `election.rs`).
pub async fn start(cfg: &Config, db: Db, signer: NoteSigner) -> anyhow::Result<Running> {
    let vkey = signer.verifier().to_vkey();
    let stored = db.meta_init("log_vkey", &vkey).await?;
    anyhow::ensure!(
        stored == vkey,
        "this database belongs to the log with key {stored}, not {vkey}: refusing to sign its checkpoints"
    );
    let lock = match &db {
        Db::Pg(_) => Some(
            election::LeaderLock::try_acquire(&database_url(cfg)?, election::lock_key(&vkey))
                .await?,
        ),
        Db::Lite(_) => None,
    };
    let leader_now = !matches!(lock, Some(Err(_)));
    let shards = load_shards(&db, signer.name(), leader_now).await?;
    let open = shards
        .last()
        .cloned()
        .unwrap_or_else(|| crate::db::ShardRow::first(signer.name()));
    let (frontier, latest) = load_frontier(&db, &signer, &open).await?;
    let registry = Registry::load(&db).await?;
    let (tx, rx) = mpsc::channel(1024);
    let size = open.base + frontier.size();
    let mut shared = Shared::new(
        db,
        signer.verifier(),
        registry.state().clone(),
        latest.clone(),
        size,
        crate::mailbox::SequencerHandle::new(tx),
        TimePolicy {
            max_skew_ms: cfg.max_skew_ms,
            max_age_ms: cfg.max_age_ms,
        },
    );
    shared.webhook_secret_overlap_ms = cfg.alerts.webhook_secret_overlap_ms;
    shared.limits = cfg.limits;
    shared.outbound = Arc::new(outbound::Policy::new(&cfg.outbound));
    shared.requests = tokio::sync::Semaphore::new(cfg.limits.max_concurrent_requests.max(1));
    if let Some(base) = &cfg.public_url {
        let base = config::public_url(base).map_err(anyhow::Error::msg)?;
        let _ = shared.public_base.set(base);
    }
    shared.export_dir = cfg
        .exports
        .export_dir
        .clone()
        .unwrap_or_else(|| cfg.data_dir.join("exports"));
    shared.retention_ms = cfg.exports.retention_days.saturating_mul(24 * 3600 * 1000);
    shared.export_lease_ms = cfg.exports.export_lease_ms.max(100);
    shared.witness_quorum = witnessing::quorum(&cfg.witnesses)?;
    shared.news2_window_ms = cfg.alerts.news2_window_ms;
    shared
        .leader
        .store(leader_now, std::sync::atomic::Ordering::SeqCst);
    shared.set_shards(shards);
    let shared = Arc::new(shared);
    shared.restore_checkpoint(latest.clone()).await?;
    witnessing::spawn(&shared, &cfg.witnesses)?;
    shared.set_webhooks(shared.db.webhook_endpoints().await?);
    let seq_cfg = SequencerConfig {
        max_batch: cfg.max_batch.max(1),
        checkpoint_interval: Duration::from_millis(cfg.checkpoint_ms.clamp(10, 1000)),
        sharding: cfg.shard_period.map(|period| crate::sequencer::Sharding {
            period,
            grace_ms: cfg.shard_grace_ms,
        }),
    };
    let alert_cfg = crate::alerts::AlertConfig {
        normal_period_ms: cfg.alerts.alert_normal_ms,
        news2_window_ms: cfg.alerts.news2_window_ms,
    };
    if !leader_now {
        tracing::warn!(
            "standby: another node runs this log's sequencer; this node takes over when it stops"
        );
    }
    let election = match &shared.db {
        Db::Pg(_) => Some((database_url(cfg)?, election::lock_key(&vkey))),
        Db::Lite(_) => None,
    };
    let handle = {
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let mut rx = rx;
            let mut next = lock;
            // A node that leads from the start already loaded the log's state above.
            let mut preloaded = leader_now.then_some((frontier, latest, registry));
            loop {
                // Lead: at once, or once the lock is ours (a standby blocks here).
                let lock = match next.take() {
                    None => None,
                    Some(Ok(l)) => Some(l),
                    Some(Err(standby)) => match standby.wait().await {
                        Ok(l) => {
                            tracing::warn!(
                                "took over the log's sequencer lock: this node now leads"
                            );
                            Some(l)
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "standby lost its database connection; reconnecting");
                            next = reconnect(election.as_ref()).await;
                            continue;
                        }
                    },
                };
                let signer = match NoteSigner::from_skey(&signer.to_skey()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "log key");
                        return;
                    }
                };
                let sequencer =
                    match lead(&shared, signer, seq_cfg, alert_cfg, preloaded.take()).await {
                        Ok(s) => s,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot start the sequencer; retrying");
                            shared
                                .leader
                                .store(false, std::sync::atomic::Ordering::SeqCst);
                            drop(lock);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                            next = reconnect(election.as_ref()).await;
                            continue;
                        }
                    };
                let Some(mut lock) = lock else {
                    // SQLite: the only node.
                    if sequencer.run(&mut rx).await {
                        shared
                            .leader
                            .store(false, std::sync::atomic::Ordering::SeqCst);
                        continue; // a failed commit: reload the log's state and lead again
                    }
                    return;
                };
                let keep = async {
                    loop {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        if !lock.alive().await {
                            break;
                        }
                    }
                };
                tokio::select! {
                    reload = sequencer.run(&mut rx) => {
                        if !reload {
                            return;
                        }
                        // A failed commit (a fail-over in progress, say): reload the log's
                        // state from storage, keeping the lock while its session lives.
                        shared.leader.store(false, std::sync::atomic::Ordering::SeqCst);
                        next = Some(match lock.alive().await {
                            true => Ok(lock),
                            false => {
                                tracing::error!("lost the log's sequencer lock: standing again");
                                match reconnect(election.as_ref()).await {
                                    Some(r) => r,
                                    None => return,
                                }
                            }
                        });
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                    () = keep => {
                        // The lock's session is gone (a PostgreSQL restart, a network cut): another
                        // node may lead now. Step down, then stand for election again; the epoch
                        // fences anything this node still had in flight.
                        tracing::error!("lost the log's sequencer lock: stepping down and standing again");
                        shared.leader.store(false, std::sync::atomic::Ordering::SeqCst);
                    }
                }
                next = reconnect(election.as_ref()).await;
            }
        })
    };
    let _ = shared.access.spawn_writer(shared.db.clone());
    let webhooks = tokio::spawn(crate::webhooks::run(Arc::clone(&shared), cfg.alerts));
    let exports = tokio::spawn(crate::exports::run(Arc::clone(&shared)));
    tracing::info!(engine = shared.db.engine(), size, origin = %shared.origin, leader = leader_now, "log opened");
    Ok(Running {
        shared,
        sequencer: handle,
        webhooks,
        exports,
    })
}

/// Connects the election again (retrying until the database answers): the lock, or a standby.
async fn reconnect(
    election: Option<&(String, i64)>,
) -> Option<Result<election::LeaderLock, election::Standby>> {
    let (url, key) = election?;
    loop {
        match election::LeaderLock::try_acquire(url, *key).await {
            Ok(r) => return Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "election: database unreachable; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Becomes the log's sequencer: (re)loads the log's state from storage into `shared` (a standby's
/// copy is stale; `preloaded` is the state a node leading from the start loaded already), starts
/// a new epoch on PostgreSQL, and returns the sequencer.
async fn lead(
    shared: &Arc<Shared>,
    signer: NoteSigner,
    seq_cfg: SequencerConfig,
    alert_cfg: crate::alerts::AlertConfig,
    preloaded: Option<(
        crate::tiles::Frontier,
        Option<crate::db::CheckpointRow>,
        Registry,
    )>,
) -> anyhow::Result<Sequencer> {
    let db = &shared.db;
    let (frontier, latest, registry) = match preloaded {
        Some(state) => state,
        None => {
            shared.set_shards(load_shards(db, signer.name(), true).await?);
            let open = shared.open_shard();
            let (frontier, latest) = load_frontier(db, &signer, &open).await?;
            let registry = Registry::load(db).await?;
            shared.set_registry(Arc::new(registry.state().clone()));
            shared.set_webhooks(db.webhook_endpoints().await?);
            shared.committed_size.store(
                open.base + frontier.size(),
                std::sync::atomic::Ordering::SeqCst,
            );
            shared.restore_checkpoint(latest.clone()).await?;
            (frontier, latest, registry)
        }
    };
    let last = latest.as_ref().map_or(u64::MAX, |c| c.size);
    let engine = crate::alerts::Engine::new(
        alert_cfg,
        db.unresolved_alerts().await?,
        db.alert_limits().await?,
    );
    // Every leader starts a new epoch and fences its batches with it (storage contract 2): on
    // PostgreSQL a deposed leader's batches fail; on SQLite (one node) it costs one read a batch.
    let epoch = Some(db.bump_epoch().await?);
    let sequencer = Sequencer::new(
        Arc::clone(shared),
        frontier,
        signer,
        seq_cfg,
        last,
        engine,
        registry,
    )
    .in_shard(shared.open_shard())?
    .after(db.max_logged_at().await?)
    .fenced(epoch);
    shared
        .leader
        .store(true, std::sync::atomic::Ordering::SeqCst);
    Ok(sequencer)
}

/// Serves HTTP on `listener` until `shutdown` resolves (see `server.rs`: timeouts, connection
/// limit, graceful shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Without a configured public URL, URLs are built on the address actually bound (the
    // port may have been 0).
    if shared.public_base.get().is_none() {
        let addr = listener.local_addr()?;
        let host = match addr.ip() {
            ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".to_string(),
            ip if ip.is_unspecified() => "[::1]".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            std::net::IpAddr::V4(ip) => ip.to_string(),
        };
        let _ = shared
            .public_base
            .set(format!("http://{host}:{}", addr.port()));
    }
    let served = server::run(listener, app(Arc::clone(&shared)), shared.limits, shutdown).await;
    // What the last requests did is in the access trail before the process ends.
    shared.access.flush().await;
    served
}
