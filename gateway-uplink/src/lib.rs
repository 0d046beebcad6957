//! # gateway-uplink
//!
//! The gateway between wearable sensors and the ledger service. It receives sensor frames on a
//! local UDP socket (standing in for Bluetooth), checks each with the registry state machine of
//! `provenance-core` over the logged registry events it synced ([`frames`]: decoded, sensor
//! enrolled, bound, key and issuer valid and not revoked at reception, signature valid, sequence
//! number new), raises local
//! alarms on critical values ([`alarms`]) even with the cloud unreachable, wraps each accepted
//! frame in its countersigned envelope (`provenance-core`), appends it to the durable spool
//! ([`spool`], fsynced before it counts as received) and uploads the spool in order, in batches,
//! with retry, exponential backoff and jitter ([`uploader`]).
//!
//! Invariants: nothing is spooled that failed a check; nothing counts as received before it is
//! fsynced; the spool's cursor moves only after the service acknowledged a batch, so a crash
//! re-sends at most one batch and the service answers those as duplicates; the synced registry
//! events are cached on disk so the gateway keeps working when it starts without the cloud; replay
//! protection survives restarts and spool compaction (the per-sensor high-water marks are saved
//! in `replay-marks.json` before the spool drops any record, and the spool's records cover the
//! rest); every alarm is appended to the alarm file (JSON lines, fsynced) and, if configured,
//! handed to the alarm command, before the frame is spooled.

pub mod alarms;
pub mod frames;
pub mod services;
pub mod spool;
pub mod uploader;

use crate::frames::{GatewayRegistry, SyncedEvents};
use crate::spool::Spool;
use clap::Parser;
use ed25519_dalek::SigningKey;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use provenance_core::cose::GatewayEnvelope;
use provenance_core::private::{PrivateEnvelope, Seal};
use secrecy::{ExposeSecret, SecretString};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Gateway settings (flags and environment).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "gateway-uplink",
    version,
    about = "Gateway: verify sensor frames, alarm locally, countersign, spool and upload"
)]
pub struct Config {
    /// Gateway id (its certificate's CN, as enrolled in the registry).
    #[arg(long, env = "GATEWAY_ID")]
    pub gateway_id: String,
    /// File with the gateway's Ed25519 key (32-byte seed, hex).
    #[arg(long, env = "GATEWAY_KEY_FILE")]
    pub key_file: PathBuf,
    /// UDP address sensors send frames to.
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:7700")]
    pub listen: String,
    /// The ledger service's base URL, or several separated by commas (one per service node:
    /// the gateway moves to the next when one is unreachable or not ready).
    #[arg(
        long,
        env = "GATEWAY_SERVICE_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub service_url: String,
    /// PEM file of the CA certificate(s) that sign the service's TLS certificate; only they are
    /// trusted then (default: the system's roots).
    #[arg(long, env = "GATEWAY_SERVICE_CA")]
    pub service_ca: Option<PathBuf>,
    /// Allow plain `http://` to a service that is not on this machine (the token and the
    /// registry would travel unauthenticated, in clear).
    #[arg(long, env = "GATEWAY_INSECURE_HTTP")]
    pub insecure_http: bool,
    /// PEM files of the issuer CAs (sensor manufacturers) this gateway trusts, comma-separated:
    /// every synced sensor certificate must chain to one of them, whatever the registry says.
    /// Without any, the registry's issuers are trusted (a warning at start).
    #[arg(long, env = "GATEWAY_ISSUER_CAS", value_delimiter = ',')]
    pub issuer_ca: Vec<PathBuf>,
    /// API token with the gateway role. Never logged.
    #[arg(long, env = "GATEWAY_TOKEN", hide_env_values = true, value_parser = secret)]
    pub token: SecretString,
    /// Spool folder (the durable store-and-forward queue and the bound-sensor cache).
    #[arg(long, env = "GATEWAY_SPOOL_DIR", default_value = "./gateway-spool")]
    pub spool_dir: PathBuf,
    /// Most unsent readings the spool holds; beyond it new frames are dropped, loudly.
    #[arg(long, env = "GATEWAY_SPOOL_MAX", default_value_t = 1_000_000)]
    pub spool_max: usize,
    /// Bytes past which a fully uploaded spool log is emptied.
    #[arg(long, env = "GATEWAY_SPOOL_COMPACT_BYTES", default_value_t = spool::COMPACT_AT)]
    pub spool_compact_bytes: u64,
    /// Readings per upload request.
    #[arg(long, env = "GATEWAY_BATCH", default_value_t = 500)]
    pub batch: usize,
    /// First retry delay, ms (doubles up to --backoff-max-ms; each wait is random between half
    /// and all of the current delay).
    #[arg(long, env = "GATEWAY_BACKOFF_MS", default_value_t = 200)]
    pub backoff_ms: u64,
    /// Longest retry delay, ms.
    #[arg(long, env = "GATEWAY_BACKOFF_MAX_MS", default_value_t = 30_000)]
    pub backoff_max_ms: u64,
    /// Seconds between two syncs of the bound-sensor list.
    #[arg(long, env = "GATEWAY_SYNC_SECS", default_value_t = 30)]
    pub sync_secs: u64,
    /// Critical limits overriding the NEWS2 defaults, `LOINC:LOW:HIGH` (repeatable; an empty bound
    /// means none), e.g. `--alarm-limit 8867-4:45:120 --alarm-limit 2708-6:92:`.
    #[arg(
        long = "alarm-limit",
        env = "GATEWAY_ALARM_LIMITS",
        value_delimiter = ','
    )]
    pub alarm_limits: Vec<String>,
    /// File every local alarm is appended to, one JSON object per line (fsynced), for a
    /// nurse-station display or a log shipper to follow. Default: `alarms.jsonl` in the spool
    /// folder.
    #[arg(long, env = "GATEWAY_ALARM_FILE")]
    pub alarm_file: Option<PathBuf>,
    /// Command run (through `sh -c`) for every local alarm, with the alarm's JSON on its standard
    /// input, e.g. to sound a buzzer or page the ward. It runs in the background; a failure is
    /// logged.
    #[arg(long, env = "GATEWAY_ALARM_COMMAND")]
    pub alarm_command: Option<String>,
    /// Least time between two runs of the alarm command for the same sensor and vital sign, ms
    /// (every alarm is still logged and written to the alarm file). At most
    /// `MAX_ALARM_COMMANDS` run at once; the command's environment holds only PATH, HOME, LANG,
    /// LC_ALL, TZ and TMPDIR (never the gateway's token).
    #[arg(
        long,
        env = "GATEWAY_ALARM_COMMAND_INTERVAL_MS",
        default_value_t = 60_000
    )]
    pub alarm_command_interval_ms: u64,
    /// Private mode (issue #17): the household this gateway serves. Every reading is then
    /// encrypted end to end for the household's current recipients (HPKE, as the registry lists
    /// them) and the gateway countersigns the ciphertext; nothing leaves in clear. The registry
    /// must bind the gateway to this household: a binding to another household, or none, or a
    /// household without a current recipient, refuses the frame (metric
    /// `frames{outcome="no_recipients"}`) rather than send it in clear or to someone else.
    #[arg(long, env = "GATEWAY_HOUSEHOLD")]
    pub household: Option<String>,
    /// Prometheus metrics address (empty: none).
    #[arg(long, env = "GATEWAY_METRICS_LISTEN", default_value = "127.0.0.1:9700")]
    pub metrics_listen: String,
    /// Log as JSON lines.
    #[arg(long, env = "GATEWAY_LOG_JSON")]
    pub log_json: bool,
}

impl Config {
    /// The settings with every default of the command line (no environment is read), listening
    /// on any free UDP port and without a metrics listener: for tests and embedding.
    pub fn with_defaults(
        gateway_id: &str,
        key_file: &std::path::Path,
        service_url: &str,
        token: &str,
        spool_dir: &std::path::Path,
    ) -> Self {
        let mut cfg = Self {
            gateway_id: gateway_id.into(),
            key_file: key_file.into(),
            listen: "127.0.0.1:0".into(),
            service_url: service_url.into(),
            service_ca: None,
            insecure_http: false,
            issuer_ca: vec![],
            token: SecretString::from(token),
            spool_dir: spool_dir.into(),
            spool_max: 0,
            spool_compact_bytes: 0,
            batch: 0,
            backoff_ms: 0,
            backoff_max_ms: 0,
            sync_secs: 0,
            alarm_limits: vec![],
            alarm_file: None,
            alarm_command: None,
            alarm_command_interval_ms: 0,
            household: None,
            metrics_listen: String::new(),
            log_json: false,
        };
        // The numeric defaults come from the command-line definition itself.
        let cmd = <Self as clap::CommandFactory>::command();
        let default = |id: &str| -> u64 {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_default_values().first()?.to_str()?.parse().ok())
                .unwrap_or(0)
        };
        cfg.spool_max = default("spool_max") as usize;
        cfg.spool_compact_bytes = default("spool_compact_bytes");
        cfg.batch = default("batch") as usize;
        cfg.backoff_ms = default("backoff_ms");
        cfg.backoff_max_ms = default("backoff_max_ms");
        cfg.sync_secs = default("sync_secs");
        cfg.alarm_command_interval_ms = default("alarm_command_interval_ms");
        cfg
    }
}

/// Label for frame outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    /// accepted, or a rejection label.
    pub outcome: String,
}

/// Gateway metrics (also read by tests).
#[derive(Default)]
pub struct Stats {
    /// Frames by outcome.
    pub frames: Family<Outcome, Counter>,
    /// Alarms raised.
    pub alarms: Counter,
    /// Alarm commands not run (the same sensor and vital sign within the interval, or too many
    /// running).
    pub alarm_commands_skipped: Counter,
    /// Readings dropped because the spool was full.
    pub dropped: Counter,
    /// Readings acknowledged by the service.
    pub uploaded: Counter,
    /// Upload attempts that failed and were retried.
    pub upload_retries: Counter,
    /// Moves to the next service URL (the one in use was unreachable or not ready).
    pub service_failovers: Counter,
    /// Unsent readings in the spool.
    pub spooled: Gauge,
}

impl Stats {
    fn count(&self, outcome: &str) {
        self.frames
            .get_or_create(&Outcome {
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Frames with this outcome so far.
    pub fn frames(&self, outcome: &str) -> u64 {
        self.frames
            .get_or_create(&Outcome {
                outcome: outcome.into(),
            })
            .get()
    }
}

/// Everything the gateway's tasks share.
pub struct Gateway {
    /// Settings.
    pub cfg: Config,
    key: SigningKey,
    /// The spool.
    pub spool: Mutex<Spool>,
    registry: RwLock<GatewayRegistry>,
    last_seq: Mutex<HashMap<String, u64>>,
    limits: Vec<alarms::Limit>,
    alarm_file: Mutex<std::fs::File>,
    /// When the alarm command last ran, per (sensor, LOINC).
    alarm_runs: Mutex<HashMap<(String, &'static str), u64>>,
    /// Alarm commands running now.
    alarm_running: Arc<std::sync::atomic::AtomicUsize>,
    /// Metrics.
    pub stats: Stats,
    /// Wakes the uploader when new readings are spooled.
    pub wake: tokio::sync::Notify,
    /// HTTP client.
    pub http: reqwest::Client,
    /// The service's URLs and the one in use.
    pub services: services::Services,
    /// The issuer CAs configured (every sensor certificate must chain to one; empty: the
    /// registry's issuers).
    trusted: Vec<provenance_core::cert::DeviceCert>,
}

/// The wall clock, Unix ms (the gateway's received-at).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Gateway {
    /// Opens the spool, loads the key and the cached bound-sensor list, rebuilds replay state.
    pub fn open(cfg: Config) -> anyhow::Result<Arc<Self>> {
        let trusted = load_issuer_cas(&cfg.issuer_ca)?;
        if trusted.is_empty() {
            tracing::warn!("no --issuer-ca: sensor certificates are trusted as the registry's issuers vouch for them");
        }
        let seed_hex = std::fs::read_to_string(&cfg.key_file)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", cfg.key_file.display()))?;
        let seed: [u8; 32] = hex::decode(seed_hex.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "{} must hold a 32-byte Ed25519 seed in hex",
                    cfg.key_file.display()
                )
            })?;
        let mut spool =
            Spool::open(&cfg.spool_dir, cfg.spool_max)?.compact_at(cfg.spool_compact_bytes);
        // Replay protection survives restarts: the marks saved before the last compaction, raised
        // by whatever the spool still holds.
        let marks_path = cfg.spool_dir.join(REPLAY_MARKS);
        let mut last_seq: HashMap<String, u64> = match std::fs::read(&marks_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                anyhow::anyhow!(
                    "{} is corrupt ({e}); refusing to start without replay protection",
                    marks_path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => HashMap::new(),
            Err(e) => anyhow::bail!("reading {}: {e}", marks_path.display()),
        };
        for env in spool.all()? {
            if let Ok(e) = GatewayEnvelope::decode(&env) {
                let r = &e.sensor.reading;
                let v = last_seq.entry(r.sensor_id.clone()).or_insert(r.seq);
                *v = (*v).max(r.seq);
            } else if let Ok(e) = PrivateEnvelope::decode(&env) {
                let v = last_seq.entry(PRIVATE_SEQ.into()).or_insert(e.msg_seq);
                *v = (*v).max(e.msg_seq);
            }
        }
        if let Some(h) = &cfg.household {
            anyhow::ensure!(
                provenance_core::reading::valid_device_id(h),
                "--household {h:?}: 1 to 64 letters, digits, '.', '_', ':' or '-'"
            );
        }
        // The registry events cached by the last sync, replayed by the state machine: the
        // gateway checks frames offline against them until the next sync.
        let registry = match std::fs::read(cfg.spool_dir.join(REGISTRY_CACHE)) {
            Ok(b) => serde_json::from_slice::<SyncedEvents>(&b)
                .map_err(|e| e.to_string())
                .and_then(|ev| GatewayRegistry::from_events(&cfg.gateway_id, &ev))
                .map(|r| r.trusting(trusted.clone()))
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "the cached registry events are unusable: refusing every frame until a sync");
                    GatewayRegistry::empty(&cfg.gateway_id)
                }),
            Err(_) => GatewayRegistry::empty(&cfg.gateway_id),
        };
        let services = services::Services::parse(&cfg.service_url)?;
        let http = http_client(&cfg, &services)?;
        let mut limits = alarms::default_limits();
        for spec in &cfg.alarm_limits {
            alarms::apply_override(&mut limits, spec).map_err(|e| anyhow::anyhow!(e))?;
        }
        let alarm_path = cfg
            .alarm_file
            .clone()
            .unwrap_or_else(|| cfg.spool_dir.join("alarms.jsonl"));
        let alarm_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&alarm_path)
            .map_err(|e| anyhow::anyhow!("opening the alarm file {}: {e}", alarm_path.display()))?;
        let stats = Stats::default();
        stats.spooled.set(spool.pending() as i64);
        Ok(Arc::new(Self {
            key: SigningKey::from_bytes(&seed),
            spool: Mutex::new(spool),
            registry: RwLock::new(registry),
            last_seq: Mutex::new(last_seq),
            limits,
            alarm_file: Mutex::new(alarm_file),
            alarm_runs: Mutex::new(HashMap::new()),
            alarm_running: Arc::default(),
            stats,
            wake: tokio::sync::Notify::new(),
            http,
            services,
            trusted,
            cfg,
        }))
    }

    /// Fetches the registry events this gateway needs from the service, replays them through
    /// the registry state machine and caches them on disk; returns how many sensors are bound.
    /// A sync whose events break the registry rules is refused and the previous state kept.
    pub async fn sync_registry(&self) -> anyhow::Result<usize> {
        let mut tries = self.services.len();
        let synced: SyncedEvents = loop {
            let (at, base) = self.services.active();
            let url = format!("{base}/v1/registry/gateways/{}/events", self.cfg.gateway_id);
            let resp = self
                .http
                .get(&url)
                .bearer_auth(self.cfg.token.expose_secret())
                .send()
                .await;
            let status = resp.as_ref().map(|r| r.status().as_u16()).ok();
            tries -= 1;
            if tries > 0 && status.is_none_or(services::move_on) && self.services.fail_over(at) {
                continue; // the next node
            }
            let resp = resp?;
            anyhow::ensure!(
                resp.status().is_success(),
                "registry sync: HTTP {}",
                resp.status()
            );
            break resp.json().await?;
        };
        let registry = GatewayRegistry::from_events(&self.cfg.gateway_id, &synced)
            .map_err(|e| anyhow::anyhow!("registry sync refused: {e}"))?
            .trusting(self.trusted.clone());
        let bytes = serde_json::to_vec(&synced)?;
        spool::write_durably(&self.cfg.spool_dir.join(REGISTRY_CACHE), &bytes)?;
        let n = registry.bound_sensors();
        if let Ok(mut r) = self.registry.write() {
            *r = registry;
        }
        Ok(n)
    }

    /// Marks the spool acknowledged up to `end`; if that compacts the spool, the replay marks
    /// are saved first.
    pub fn ack(&self, end: u64) -> anyhow::Result<()> {
        let mut spool = self
            .spool
            .lock()
            .map_err(|_| anyhow::anyhow!("spool lock poisoned"))?;
        let marks = self.cfg.spool_dir.join(REPLAY_MARKS);
        spool.ack(end, || {
            let snapshot = self
                .last_seq
                .lock()
                .map_err(|_| std::io::Error::other("replay state lock poisoned"))?
                .clone();
            spool::write_durably(&marks, &serde_json::to_vec(&snapshot)?)
        })?;
        self.stats.spooled.set(spool.pending() as i64);
        Ok(())
    }

    /// Whether the alarm command may run for this alarm now (one run per sensor and vital sign
    /// per interval); records the run.
    fn alarm_command_due(&self, a: &alarms::Alarm) -> bool {
        let now = now_ms();
        let mut runs = self
            .alarm_runs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let key = (a.sensor_id.clone(), a.loinc);
        let due = runs
            .get(&key)
            .is_none_or(|last| now.saturating_sub(*last) >= self.cfg.alarm_command_interval_ms);
        if due {
            if runs.len() > 10_000 {
                runs.clear(); // bounded: forget the oldest state rather than grow
            }
            runs.insert(key, now);
        }
        due
    }

    /// Records alarms: structured log line, metric, a line in the alarm file (fsynced), and the
    /// alarm command if there is one.
    fn raise(&self, raised: &[alarms::Alarm]) {
        if raised.is_empty() {
            return;
        }
        let mut lines = Vec::new();
        for a in raised {
            self.stats.alarms.inc();
            tracing::warn!(target: "alarm", sensor = %a.sensor_id, seq = a.seq, vital = a.name, value = a.value, unit = a.unit, "ALARM: critical value");
            let json =
                serde_json::json!({"gateway_id": self.cfg.gateway_id, "alarm": a}).to_string();
            if let Some(cmd) = &self.cfg.alarm_command {
                if self.alarm_command_due(a) {
                    run_alarm_command(cmd, &json, &self.alarm_running, &self.stats);
                } else {
                    self.stats.alarm_commands_skipped.inc();
                }
            }
            lines.extend_from_slice(json.as_bytes());
            lines.push(b'\n');
        }
        let written = self
            .alarm_file
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(&lines)?;
                f.sync_data()
            });
        if let Err(e) = written {
            tracing::error!(error = %e, "ALARM FILE: could not record {} alarm(s)", raised.len());
        }
    }

    /// Handles a burst of frames: check, alarm, wrap, spool (one fsync for the burst).
    pub fn receive(&self, frames: &[Vec<u8>]) {
        let received_at = now_ms();
        let mut accepted = Vec::new();
        let mut raised = Vec::new();
        {
            let Ok(registry) = self.registry.read() else {
                return;
            };
            let Ok(mut last) = self.last_seq.lock() else {
                return;
            };
            let private = self
                .cfg
                .household
                .as_deref()
                .map(|h| (h, frames::recipients(&registry, h, received_at)));
            for f in frames {
                match frames::check(f, &registry, received_at, &mut last) {
                    Ok(r) => {
                        // Local alarms work on the plaintext, in private mode too.
                        raised.extend(alarms::check(&r.reading, &self.limits));
                        match &private {
                            None => accepted.push(GatewayEnvelope::wrap(f, received_at, &self.key)),
                            Some((h, Ok(keys))) => {
                                let seq = last
                                    .get(PRIVATE_SEQ)
                                    .map_or(0, |s| s + 1)
                                    .max(received_at * 1000);
                                let sealed = Seal {
                                    gateway: &self.key,
                                    received_at_ms: received_at,
                                    household: h,
                                    msg_seq: seq,
                                }
                                .seal_os(f, keys);
                                match sealed {
                                    Ok(bytes) => {
                                        last.insert(PRIVATE_SEQ.into(), seq);
                                        accepted.push(bytes);
                                    }
                                    Err(e) => {
                                        self.stats.count("no_recipients");
                                        tracing::error!(household = %h, "frame not sent: cannot encrypt it: {e}");
                                    }
                                }
                            }
                            Some((h, Err(why))) => {
                                self.stats.count("no_recipients");
                                tracing::error!(household = %h, "frame not sent (private mode): {why}");
                            }
                        }
                    }
                    Err(e) => {
                        self.stats.count(e.label());
                        tracing::warn!(reason = e.label(), "frame rejected: {e}");
                    }
                }
            }
        }
        self.raise(&raised);
        if accepted.is_empty() {
            return;
        }
        let Ok(mut spool) = self.spool.lock() else {
            return;
        };
        match spool.append(&accepted) {
            Ok(()) => {
                for _ in &accepted {
                    self.stats.count("accepted");
                }
                self.stats.spooled.set(spool.pending() as i64);
                self.wake.notify_one();
            }
            Err(e) => {
                self.stats.dropped.inc_by(accepted.len() as u64);
                tracing::error!(dropped = accepted.len(), error = %e, "SPOOL: readings dropped: {e}");
            }
        }
    }
}

/// The key of the gateway's private message number among the replay marks (a space: no
/// sensor id has one).
const PRIVATE_SEQ: &str = "private messages";

/// The file of per-sensor replay high-water marks, saved before the spool is compacted.
pub const REPLAY_MARKS: &str = "replay-marks.json";
/// The registry events of the last sync, in the spool folder.
pub const REGISTRY_CACHE: &str = "registry-events.json";

/// Alarm commands running at once at most; more are skipped (and counted).
pub const MAX_ALARM_COMMANDS: usize = 8;

/// The environment an alarm command gets: nothing of the gateway's own (its token least of all).
const ALARM_COMMAND_ENV: [&str; 6] = ["PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR"];

/// Starts the alarm command with the alarm on its standard input; a thread reaps it.
fn run_alarm_command(
    cmd: &str,
    json: &str,
    running: &Arc<std::sync::atomic::AtomicUsize>,
    stats: &Stats,
) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    use std::sync::atomic::Ordering;
    if running.fetch_add(1, Ordering::SeqCst) >= MAX_ALARM_COMMANDS {
        running.fetch_sub(1, Ordering::SeqCst);
        stats.alarm_commands_skipped.inc();
        tracing::error!(
            limit = MAX_ALARM_COMMANDS,
            "alarm command skipped: too many still running"
        );
        return;
    }
    let child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env_clear()
        .envs(
            ALARM_COMMAND_ENV
                .iter()
                .filter_map(|k| Some((k, std::env::var_os(k)?))),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            running.fetch_sub(1, Ordering::SeqCst);
            tracing::error!(error = %e, "alarm command could not be started");
            return;
        }
    };
    let input = format!("{json}\n").into_bytes();
    let running = Arc::clone(running);
    std::thread::spawn(move || {
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(&input);
        }
        match child.wait() {
            Ok(s) if s.success() => {}
            Ok(s) => tracing::error!(status = %s, "alarm command failed"),
            Err(e) => tracing::error!(error = %e, "alarm command failed"),
        }
        running.fetch_sub(1, Ordering::SeqCst);
    });
}

/// Runs the gateway until the process ends: registry sync, UDP receiver, uploader, metrics.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    serve(Gateway::open(cfg)?).await
}

/// Runs an opened gateway (tests keep the handle to watch its metrics).
pub async fn serve(gw: Arc<Gateway>) -> anyhow::Result<()> {
    match gw.sync_registry().await {
        Ok(n) => tracing::info!(
            sensors = n,
            "registry events synced: sensors bound to this gateway"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "registry sync failed: using the cached registry events")
        }
    }
    let sock = tokio::net::UdpSocket::bind(&gw.cfg.listen).await?;
    tracing::info!(listen = %sock.local_addr()?, gateway = %gw.cfg.gateway_id, "receiving sensor frames");
    {
        let gw = Arc::clone(&gw);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(gw.cfg.sync_secs.max(1)));
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = gw.sync_registry().await {
                    tracing::warn!(error = %e, "registry sync failed; keeping the cached list");
                }
            }
        });
    }
    tokio::spawn(uploader::run(Arc::clone(&gw)));
    if !gw.cfg.metrics_listen.is_empty() {
        let gw2 = Arc::clone(&gw);
        let listener = tokio::net::TcpListener::bind(&gw.cfg.metrics_listen).await?;
        tokio::spawn(async move {
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let gw = Arc::clone(&gw2);
                    async move { metrics_text(&gw) }
                }),
            );
            let _ = axum::serve(listener, app).await;
        });
    }
    let mut buf = vec![0u8; 65_536];
    loop {
        let (n, _) = sock.recv_from(&mut buf).await?;
        let mut burst = vec![buf[..n].to_vec()];
        // Group commit: take every frame already waiting, then spool them with one fsync.
        while burst.len() < 512 {
            match sock.try_recv_from(&mut buf) {
                Ok((n, _)) => burst.push(buf[..n].to_vec()),
                Err(_) => break,
            }
        }
        let gw = Arc::clone(&gw);
        tokio::task::spawn_blocking(move || gw.receive(&burst)).await?;
    }
}

/// Prometheus text of the gateway's metrics.
pub fn metrics_text(gw: &Gateway) -> String {
    let mut reg = prometheus_client::registry::Registry::with_prefix("gateway");
    reg.register(
        "frames",
        "Sensor frames by outcome",
        gw.stats.frames.clone(),
    );
    reg.register("alarms", "Local alarms raised", gw.stats.alarms.clone());
    reg.register(
        "alarm_commands_skipped",
        "Alarm commands not run (rate limit per sensor and vital sign, or too many running)",
        gw.stats.alarm_commands_skipped.clone(),
    );
    reg.register(
        "dropped",
        "Readings dropped because the spool was full",
        gw.stats.dropped.clone(),
    );
    reg.register(
        "uploaded",
        "Readings acknowledged by the service",
        gw.stats.uploaded.clone(),
    );
    reg.register(
        "upload_retries",
        "Failed upload attempts (retried)",
        gw.stats.upload_retries.clone(),
    );
    reg.register(
        "service_failovers",
        "Moves to the next service URL (the one in use was unreachable or not ready)",
        gw.stats.service_failovers.clone(),
    );
    reg.register(
        "spooled",
        "Unsent readings in the spool",
        gw.stats.spooled.clone(),
    );
    let mut out = String::new();
    let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
    out
}

/// Parses a secret argument (clap).
fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

/// The issuer CA certificates of these PEM files (each may hold several).
fn load_issuer_cas(files: &[PathBuf]) -> anyhow::Result<Vec<provenance_core::cert::DeviceCert>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)
            .map_err(|e| anyhow::anyhow!("issuer CA {}: {e}", f.display()))?;
        let mut found = 0;
        for block in text.split_inclusive("-----END CERTIFICATE-----") {
            if !block.contains("-----BEGIN CERTIFICATE-----") {
                continue;
            }
            let start = block.find("-----BEGIN CERTIFICATE-----").unwrap_or(0);
            let cert = provenance_core::cert::DeviceCert::from_pem(&block[start..])
                .map_err(|e| anyhow::anyhow!("issuer CA {}: {e}", f.display()))?;
            out.push(cert);
            found += 1;
        }
        anyhow::ensure!(found > 0, "issuer CA {}: no certificate in it", f.display());
    }
    Ok(out)
}

/// The HTTP client to the service: TLS (rustls) with the system's roots or only the configured
/// CA; plain http only to this machine unless `--insecure-http`; no redirects, no proxy from the
/// environment.
fn http_client(cfg: &Config, services: &services::Services) -> anyhow::Result<reqwest::Client> {
    let mut https = None;
    for base in services.all() {
        let url = reqwest::Url::parse(base)
            .map_err(|e| anyhow::anyhow!("GATEWAY_SERVICE_URL {base:?}: {e}"))?;
        check_scheme(cfg, &url)?;
        let this = url.scheme() == "https";
        anyhow::ensure!(
            https.is_none_or(|h| h == this),
            "GATEWAY_SERVICE_URL: every URL in the list is https://, or none is"
        );
        https = Some(this);
    }
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .connect_timeout(Duration::from_secs(5))
        .use_rustls_tls()
        .https_only(https == Some(true))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(ca) = &cfg.service_ca {
        b = with_ca(b, ca)?;
    }
    Ok(b.build()?)
}

/// Plain http only to this machine unless `--insecure-http`.
fn check_scheme(cfg: &Config, url: &reqwest::Url) -> anyhow::Result<()> {
    let local = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    match url.scheme() {
        "https" => {}
        "http" if local || cfg.insecure_http => {}
        "http" => anyhow::bail!(
            "GATEWAY_SERVICE_URL is plain http:// to {}: the token and the registry would travel unauthenticated; use https:// (or --insecure-http)",
            url.host_str().unwrap_or("?")
        ),
        other => anyhow::bail!("GATEWAY_SERVICE_URL: the scheme {other}:// is not supported"),
    }
    Ok(())
}

/// Trusts only the CA certificate(s) in `ca` for the service's TLS.
fn with_ca(
    mut b: reqwest::ClientBuilder,
    ca: &std::path::Path,
) -> anyhow::Result<reqwest::ClientBuilder> {
    let pem = std::fs::read(ca)
        .map_err(|e| anyhow::anyhow!("GATEWAY_SERVICE_CA {}: {e}", ca.display()))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| anyhow::anyhow!("GATEWAY_SERVICE_CA {}: {e}", ca.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "GATEWAY_SERVICE_CA {}: no certificate in it",
        ca.display()
    );
    b = b.tls_built_in_root_certs(false);
    for c in certs {
        b = b.add_root_certificate(c);
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_token_never_prints() {
        let cfg = super::Config::with_defaults(
            "GW-1",
            std::path::Path::new("k"),
            "http://127.0.0.1:9",
            "vlt_secret-token-value",
            std::path::Path::new("s"),
        );
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("secret-token-value"), "{shown}");
    }
}
