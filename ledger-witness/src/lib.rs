//! # ledger-witness
//!
//! A C2SP `tlog-witness` (`c2sp.org/tlog-witness`) that a hospital runs next to its archive. It
//! follows the logs it is configured with (by vkey; a log's origin is its key's name) and the
//! shards of a time-sharded one (origin `<log>/<period>`, the log's key under that name, each a
//! log of its own), and for each keeps the latest checkpoint it cosigned. It answers `POST /add-checkpoint` with a
//! `cosignature/v1` signature line only for a checkpoint signed by the log and consistent with
//! that state; every other answer is the one the specification gives (400, 403, 404, 409 with
//! `text/x.tlog.size`, 422). The decision is `provenance_core::witness::judge`; this crate adds
//! the state, HTTP, metrics and evidence.
//!
//! **Invariants**: checking a request against the stored state and persisting the new state is
//! atomic (one lock per witness, held from the check until the state file is fsynced and renamed
//! into place); nothing is answered `200` before the new state is durable; a state file that
//! does not verify stops the witness at start (forgetting it would let a log roll back); a
//! log-signed request refused as inconsistent is kept as evidence (`evidence/`).
//!
//! State folder layout: `witness.key` (the cosigner key, mode 0600), `logs/<sha256(origin)>`
//! (the latest cosigned checkpoint with this witness's cosignature), `evidence/` (refused
//! log-signed requests, at most [`MAX_EVIDENCE_FILES`]).

use anyhow::{bail, Context};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use provenance_core::checkpoint::Checkpoint;
use provenance_core::note::{Cosigner, NoteVerifier};
use provenance_core::witness::{self, AddCheckpoint, Cosigned, Refusal};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::Mutex;

/// The cosigner key file in the state folder.
pub const KEY_FILE: &str = "witness.key";
/// Most refused requests kept as evidence.
pub const MAX_EVIDENCE_FILES: usize = 10_000;

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StatusLabel {
    status: u16,
}

/// Labels of the per-log gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabel {
    origin: String,
}

struct Metrics {
    registry: Registry,
    requests: Family<StatusLabel, Counter>,
    cosigned_size: Family<OriginLabel, Gauge>,
    evidence: Counter,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::<StatusLabel, Counter>::default();
        let cosigned_size = Family::<OriginLabel, Gauge>::default();
        let evidence = Counter::default();
        registry.register(
            "witness_add_checkpoint_requests",
            "add-checkpoint requests by answer status",
            requests.clone(),
        );
        registry.register(
            "witness_cosigned_size",
            "size of the latest checkpoint cosigned, per log origin",
            cosigned_size.clone(),
        );
        registry.register(
            "witness_evidence_kept",
            "log-signed requests refused as inconsistent and kept as evidence",
            evidence.clone(),
        );
        Self {
            registry,
            requests,
            cosigned_size,
            evidence,
        }
    }
}

/// Why a request got no cosignature.
enum Failure {
    /// An answer of the specification.
    Refused(Refusal),
    /// The new state could not be made durable (503; nothing changed).
    Storage,
}

impl From<Refusal> for Failure {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

/// A witness: its key, the logs it follows and their state.
pub struct Witness {
    cosigner: Cosigner,
    logs: HashMap<String, Vec<NoteVerifier>>,
    dir: PathBuf,
    state: Mutex<HashMap<String, Cosigned>>,
    metrics: Metrics,
    evidence_files: AtomicUsize,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("name", &self.cosigner.name())
            .field("logs", &self.logs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Creates a state folder with a new cosigner key named `name`; returns its vkey. Refuses a
/// folder that already holds a key.
pub fn init(dir: &Path, name: &str) -> anyhow::Result<String> {
    let path = dir.join(KEY_FILE);
    if path.exists() {
        bail!("{} already holds a witness key", dir.display());
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let cosigner =
        Cosigner::new(name, key).map_err(|e| anyhow::anyhow!("witness name {name:?}: {e}"))?;
    write_durably(&path, cosigner.to_skey().as_bytes(), true)?;
    Ok(cosigner.verifier().to_vkey())
}

/// Reads the cosigner key of a state folder.
pub fn load_key(dir: &Path) -> anyhow::Result<Cosigner> {
    let path = dir.join(KEY_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "reading {} (run `ledger-witness init` first)",
            path.display()
        )
    })?;
    // The error never repeats the key.
    Cosigner::from_skey(text.trim()).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The vkeys of a log list: one per line, `#` comments and blank lines ignored.
pub fn parse_log_list(text: &str) -> anyhow::Result<Vec<NoteVerifier>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| NoteVerifier::from_vkey(l).map_err(|e| anyhow::anyhow!("log vkey {l:?}: {e}")))
        .collect()
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The keys of `origin`: a followed log's, or, for a shard of a followed log (origin
/// `<log>/<period>`, `provenance_core::shard`), the log's keys under the shard's name. Each
/// shard is a log of its own to the witness: its own state, from `old 0`.
fn keys_for(logs: &HashMap<String, Vec<NoteVerifier>>, origin: &str) -> Option<Vec<NoteVerifier>> {
    if let Some(keys) = logs.get(origin) {
        return Some(keys.clone());
    }
    let (log, _) = origin.rsplit_once('/')?;
    provenance_core::shard::shard_name(log, origin)?;
    let keys: Vec<NoteVerifier> = logs
        .get(log)?
        .iter()
        .filter_map(|k| k.renamed(origin).ok())
        .collect();
    (!keys.is_empty()).then_some(keys)
}

fn origin_file(origin: &str) -> String {
    hex::encode(Sha256::digest(origin.as_bytes()))
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file: a temporary
/// file, fsynced, renamed over `path`, then the folder fsynced.
fn write_durably(path: &Path, bytes: &[u8], secret: bool) -> anyhow::Result<()> {
    let dir = path.parent().context("a state file has a folder")?;
    let tmp = path.with_extension("tmp");
    {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if secret {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = secret;
        let mut f = opts
            .open(&tmp)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

impl Witness {
    /// A witness over the state folder `dir` (its key read from it) following `logs`. Loads the
    /// stored state and refuses to start if any of it does not verify.
    pub fn open(dir: &Path, logs: Vec<NoteVerifier>) -> anyhow::Result<Self> {
        let cosigner = load_key(dir)?;
        let mut by_origin: HashMap<String, Vec<NoteVerifier>> = HashMap::new();
        for l in logs {
            if l.key() == cosigner.verifier().key() {
                bail!("log {}: that is this witness's own key", l.name());
            }
            by_origin.entry(l.name().to_string()).or_default().push(l);
        }
        if by_origin.is_empty() {
            bail!("no log to follow: give --log VKEY or --log-list FILE");
        }
        for sub in ["logs", "evidence"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let metrics = Metrics::new();
        let mut state = HashMap::new();
        // Every state file: of a followed log, or of one of its shards (whose origins are
        // learnt as they come); a file of a log no longer followed is left alone.
        for f in std::fs::read_dir(dir.join("logs"))? {
            let path = f?.path();
            if path.extension().is_some() || !path.is_file() {
                continue; // a temporary file of an interrupted write
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?;
            let origin = text.lines().next().unwrap_or_default().to_string();
            let Some(keys) = keys_for(&by_origin, &origin) else {
                continue;
            };
            if path.file_name().and_then(|n| n.to_str()) != Some(origin_file(&origin).as_str()) {
                bail!(
                    "{} holds the state of {origin:?}, which belongs in {}",
                    path.display(),
                    origin_file(&origin)
                );
            }
            let cp = stored_checkpoint(&text, &keys, &cosigner)
                .with_context(|| format!("the state of {origin:?} in {}", path.display()))?;
            metrics
                .cosigned_size
                .get_or_create(&OriginLabel {
                    origin: origin.clone(),
                })
                .set(i64::try_from(cp.size).unwrap_or(i64::MAX));
            state.insert(origin.clone(), cp);
        }
        let evidence_files = std::fs::read_dir(dir.join("evidence"))?.count();
        Ok(Self {
            cosigner,
            logs: by_origin,
            dir: dir.to_path_buf(),
            state: Mutex::new(state),
            metrics,
            evidence_files: AtomicUsize::new(evidence_files),
        })
    }

    /// The witness's vkey.
    pub fn vkey(&self) -> String {
        self.cosigner.verifier().to_vkey()
    }

    /// Answers one `add-checkpoint` body: (status, content type, body).
    pub async fn add_checkpoint(&self, body: &[u8]) -> (u16, &'static str, String) {
        let answer = self.decide(body).await;
        let status = match &answer {
            Ok(_) => 200,
            Err(Failure::Refused(r)) => r.status(),
            Err(Failure::Storage) => 503,
        };
        self.metrics
            .requests
            .get_or_create(&StatusLabel { status })
            .inc();
        match answer {
            Ok(line) => (200, "text/plain; charset=utf-8", line),
            Err(Failure::Refused(Refusal::WrongOldSize { latest })) => {
                (409, witness::SIZE_CONTENT_TYPE, witness::size_body(latest))
            }
            Err(Failure::Refused(r)) => (r.status(), "text/plain; charset=utf-8", format!("{r}\n")),
            Err(Failure::Storage) => (
                503,
                "text/plain; charset=utf-8",
                "the witness cannot store its state; try again later\n".into(),
            ),
        }
    }

    async fn decide(&self, body: &[u8]) -> Result<String, Failure> {
        let text = std::str::from_utf8(body)
            .map_err(|_| Refusal::BadRequest("the body is not UTF-8".into()))?;
        let req = AddCheckpoint::parse(text)?;
        let keys = keys_for(&self.logs, req.origin().unwrap_or_default());
        let logs = |_: &str| keys.as_ref().map(|v| v.iter().collect::<Vec<_>>());
        // The check and the write are one step: the lock is held until the state is durable.
        let mut state = self.state.lock().await;
        let origin = req.origin().unwrap_or_default().to_string();
        let cp = match witness::judge(&req, logs, state.get(&origin)) {
            Ok(cp) => cp,
            Err(r) => {
                if r.is_evidence() {
                    self.keep_evidence(&origin, text);
                }
                tracing::warn!(origin = %origin, old = req.old_size, refusal = %r, "refused a checkpoint");
                return Err(Failure::Refused(r));
            }
        };
        let line = self.cosigner.signature_line(&cp.to_text(), now_secs());
        let stored = format!("{}{line}", req.checkpoint);
        let path = self.dir.join("logs").join(origin_file(&origin));
        let persisted =
            tokio::task::spawn_blocking(move || write_durably(&path, stored.as_bytes(), false))
                .await;
        if !matches!(persisted, Ok(Ok(()))) {
            tracing::error!(origin = %origin, "cannot persist the witness state; not cosigning");
            // 503: the client retries later; the state is unchanged.
            return Err(Failure::Storage);
        }
        self.metrics
            .cosigned_size
            .get_or_create(&OriginLabel {
                origin: origin.clone(),
            })
            .set(i64::try_from(cp.size).unwrap_or(i64::MAX));
        tracing::info!(origin = %origin, size = cp.size, "cosigned");
        state.insert(
            origin,
            Cosigned {
                size: cp.size,
                root: cp.root,
            },
        );
        Ok(line)
    }

    fn keep_evidence(&self, origin: &str, request: &str) {
        if self.evidence_files.fetch_add(1, Ordering::SeqCst) >= MAX_EVIDENCE_FILES {
            return;
        }
        self.metrics.evidence.inc();
        let name = format!(
            "{}-{}.txt",
            &origin_file(origin)[..16],
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        if let Err(e) = write_durably(
            &self.dir.join("evidence").join(name),
            request.as_bytes(),
            false,
        ) {
            tracing::error!(error = %e, "cannot keep evidence of a refused checkpoint");
        }
    }

    fn metrics_text(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// The state stored for a log: a checkpoint signed by one of its keys and cosigned by us.
fn stored_checkpoint(
    text: &str,
    keys: &[NoteVerifier],
    cosigner: &Cosigner,
) -> anyhow::Result<Cosigned> {
    let refs: Vec<&NoteVerifier> = keys.iter().collect();
    let (body, _) = provenance_core::note::open(text, &refs)
        .map_err(|e| anyhow::anyhow!("not signed by the log: {e}"))?;
    let ours = cosigner.verifier();
    witness::cosigned_by(text, &[&ours])
        .ok()
        .filter(|n| !n.is_empty())
        .context("not cosigned by this witness's key")?;
    let cp = Checkpoint::from_text(body).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Cosigned {
        size: cp.size,
        root: cp.root,
    })
}

/// The witness's HTTP interface: `POST /add-checkpoint`, `GET /metrics`, `GET /healthz`.
pub fn app(w: Arc<Witness>) -> Router {
    Router::new()
        .route("/add-checkpoint", post(add_checkpoint))
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .layer(DefaultBodyLimit::max(witness::MAX_REQUEST_LEN))
        .with_state(w)
}

/// Serves [`app`] on `listener` until the task is dropped or the process stops.
pub async fn serve(listener: tokio::net::TcpListener, w: Arc<Witness>) -> std::io::Result<()> {
    axum::serve(listener, app(w)).await
}

async fn add_checkpoint(State(w): State<Arc<Witness>>, body: Bytes) -> Response {
    let (status, ctype, body) = w.add_checkpoint(&body).await;
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, ctype)],
        body,
    )
        .into_response()
}

async fn metrics(State(w): State<Arc<Witness>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        w.metrics_text(),
    )
        .into_response()
}
