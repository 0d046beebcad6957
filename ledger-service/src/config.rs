//! Configuration from flags and environment.

use clap::{Args, Parser, Subcommand};
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The ledger service.
#[derive(Parser, Debug)]
#[command(
    name = "ledger-service",
    version,
    about = "Vital-sign provenance ledger: registry, verified ingest, Merkle log, checkpoints and proofs"
)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Service settings.
    #[command(flatten)]
    pub config: Config,
}

/// Tokens end after this many days unless asked otherwise.
pub const DEFAULT_TTL_DAYS: u64 = 90;

/// Subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the service (the default).
    Serve,
    /// Generate a log signing key file (0600) for `--origin` and print its vkey.
    GenerateLogKey {
        /// Where to write the key (must not exist).
        #[arg(long)]
        out: PathBuf,
    },
    /// Write a log archive for offline audit (`ledger-verify export DIR`): the entries from
    /// --from up to the latest checkpoint, with what proves the range complete. Prints its
    /// manifest's range and checkpoint size.
    ExportLog {
        /// Archive folder (created; must not hold an archive yet).
        #[arg(long)]
        out: PathBuf,
        /// First log index to include (0: the whole log; later: an incremental archive).
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// Create an API token and print it (shown once; stored hashed).
    CreateToken {
        /// admin, clinician, archivist, auditor, gateway, monitor (metrics only) or household.
        #[arg(long)]
        role: String,
        /// A name to recognise it by.
        #[arg(long, default_value = "unnamed")]
        name: String,
        /// Days until it expires.
        #[arg(long, default_value_t = DEFAULT_TTL_DAYS)]
        expires_in_days: u64,
        /// For a gateway token (required then): the gateway id it may submit for, or `*` for a
        /// relay that may submit for any gateway.
        #[arg(long)]
        gateway: Option<String>,
        /// For a household token (required then): the household whose private feed it reads.
        #[arg(long, conflicts_with = "gateway")]
        household: Option<String>,
    },
    /// Write the access trail of patient data as NDJSON (one record a line, oldest first).
    ExportAccessLog {
        /// The file to write (must not exist).
        #[arg(long)]
        out: PathBuf,
        /// Only records from this time on, Unix ms.
        #[arg(long, default_value_t = 0)]
        from: u64,
    },
    /// List the tokens (id, role, name, gateway, state, expiry, last use; never a secret).
    ListTokens,
    /// Revoke a token by id (`tok_…`): refused from the next request on.
    RevokeToken {
        /// The token's id.
        #[arg(long)]
        id: String,
    },
    /// Rotate a token by id: print a new one with the same role, name and gateway; the old one
    /// keeps working for --overlap-hours.
    RotateToken {
        /// The token's id.
        #[arg(long)]
        id: String,
        /// How long the old token keeps working, hours.
        #[arg(long, default_value_t = 24)]
        overlap_hours: u64,
    },
}

/// Service settings.
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// `postgres://…` for PostgreSQL; unset or empty for the embedded SQLite file under --data-dir.
    /// Secret (it may hold a password): never printed, not even by `Debug`.
    #[arg(long, env = "DATABASE_URL", value_parser = secret, hide_env_values = true)]
    pub database_url: Option<SecretString>,
    /// Where the embedded database and development keys live.
    #[arg(long, env = "LEDGER_DATA_DIR", default_value = "./ledger-data")]
    pub data_dir: PathBuf,
    /// Listen address.
    #[arg(long, env = "LEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The service's public base URL, as clients reach it (scheme, host, port and any path
    /// prefix a proxy adds, e.g. `https://ledger.ward.example`): every URL the service hands
    /// out is built on it — Bulk Data `Content-Location` and manifests, evidence links of
    /// readings, alerts and webhook payloads. Default: `http://` and the address it listens on
    /// (`127.0.0.1` when it listens on every interface).
    #[arg(long, env = "LEDGER_PUBLIC_URL", value_parser = public_url)]
    pub public_url: Option<String>,
    /// File holding the log's signer key (`PRIVATE+KEY+<origin>+…`). Without it, a development
    /// key is generated under --data-dir (never do that in production).
    #[arg(long, env = "LEDGER_LOG_KEY_FILE")]
    pub log_key_file: Option<PathBuf>,
    /// The log's origin (used when generating a development key).
    #[arg(
        long,
        env = "LEDGER_ORIGIN",
        default_value = "localhost/vitals-ledger/dev"
    )]
    pub origin: String,
    /// Database connections.
    #[arg(long, env = "LEDGER_DB_CONNECTIONS", default_value_t = 16)]
    pub db_connections: u32,
    /// Most readings per sequencer transaction.
    #[arg(long, env = "LEDGER_MAX_BATCH", default_value_t = 4096)]
    pub max_batch: usize,
    /// Least milliseconds between two checkpoints (at most 1000).
    #[arg(long, env = "LEDGER_CHECKPOINT_MS", default_value_t = 100)]
    pub checkpoint_ms: u64,
    /// A log per period (`year`, `month`, `day` or `<seconds>s`), as Certificate Transparency
    /// shards by time: each shard has its own origin `<origin>/<period>` and is closed with a
    /// final checkpoint at its end. Unset: one log that only grows. Set on a log that ran
    /// without it, its entries so far become shard 0, closed at once.
    #[arg(long, env = "LEDGER_SHARD_PERIOD", value_parser = provenance_core::shard::Period::parse)]
    pub shard_period: Option<provenance_core::shard::Period>,
    /// How long before a shard's start a reading may have been measured and still be logged
    /// in it (a gateway that was offline at the roll-over), ms. Earlier ones are refused
    /// (`shard_closed`): their shard is closed.
    #[arg(long, env = "LEDGER_SHARD_GRACE_MS", default_value_t = 24 * 3600 * 1000)]
    pub shard_grace_ms: u64,
    /// Allowed clock skew into the future, ms.
    #[arg(long, env = "LEDGER_MAX_SKEW_MS", default_value_t = 300_000)]
    pub max_skew_ms: u64,
    /// Oldest reading accepted, ms before now (default 30 days).
    #[arg(long, env = "LEDGER_MAX_AGE_MS", default_value_t = 30 * 24 * 3600 * 1000)]
    pub max_age_ms: u64,
    /// Log as JSON lines.
    #[arg(long, env = "LEDGER_LOG_JSON")]
    pub log_json: bool,
    /// Alerting and webhook delivery.
    #[command(flatten)]
    pub alerts: AlertSettings,
    /// Archival exports and retention.
    #[command(flatten)]
    pub exports: ExportSettings,
    /// Connection and request limits.
    #[command(flatten)]
    pub limits: LimitSettings,
    /// Where webhooks may be sent.
    #[command(flatten)]
    pub outbound: OutboundSettings,
    /// Witnesses asked to cosign each checkpoint.
    #[command(flatten)]
    pub witnesses: WitnessSettings,
    /// Read nodes on database replicas (`reader.rs`).
    #[command(flatten)]
    pub read_node: ReadNodeSettings,
}

/// A read node: `--read-only` serves the public log (checkpoint, tiles, proofs, registry
/// entries) from a database replica, never writes, and refuses everything else.
#[derive(Args, Debug, Clone)]
pub struct ReadNodeSettings {
    /// Serve only public log reads from `DATABASE_URL`, which may name standbys (any host that
    /// answers): no sequencer, no workers, no migrations, no writes.
    #[arg(long = "read-only", env = "LEDGER_READ_ONLY")]
    pub read_only: bool,
    /// The most a read node's answers may lag the database it reads, ms: the time since its
    /// last look at the latest checkpoint plus the replica's replay lag. Past it, reads get
    /// `503` and `/readyz` says not ready.
    #[arg(long, env = "LEDGER_READ_MAX_STALENESS_MS", default_value_t = 5_000)]
    pub read_max_staleness_ms: u64,
    /// How often a read node looks for a newer checkpoint, ms.
    #[arg(long, env = "LEDGER_READ_REFRESH_MS", default_value_t = 250)]
    pub read_refresh_ms: u64,
}

impl Default for ReadNodeSettings {
    fn default() -> Self {
        Self {
            read_only: false,
            read_max_staleness_ms: 5_000,
            read_refresh_ms: 250,
        }
    }
}

/// A witness the service asks to cosign its checkpoints (C2SP tlog-witness).
#[derive(Debug, Clone)]
pub struct WitnessTarget {
    /// Its `cosignature/v1` vkey.
    pub vkey: provenance_core::note::NoteVerifier,
    /// Its submission prefix: `add-checkpoint` is posted to `<url>/add-checkpoint`.
    pub url: String,
}

/// Parses `VKEY URL` (a space between them).
pub fn witness_target(s: &str) -> Result<WitnessTarget, String> {
    let (vkey, url) = s
        .trim()
        .split_once(' ')
        .ok_or_else(|| format!("{s:?}: expected a witness as `<vkey> <url>`"))?;
    let vkey = provenance_core::note::NoteVerifier::from_vkey(vkey)
        .map_err(|e| format!("witness vkey {vkey:?}: {e}"))?;
    if !vkey.is_cosigner() {
        return Err(format!(
            "witness vkey {:?}: not a cosignature/v1 key (type 0x04)",
            vkey.name()
        ));
    }
    let url = url.trim();
    if !(url.starts_with("https://") || url.starts_with("http://")) || url.contains(' ') {
        return Err(format!(
            "witness URL {url:?}: expected http(s)://host[:port][/prefix]"
        ));
    }
    Ok(WitnessTarget {
        vkey,
        url: url.trim_end_matches('/').to_string(),
    })
}

/// Witness settings (see `witnessing`).
#[derive(Args, Debug, Clone, Default)]
pub struct WitnessSettings {
    /// A witness to ask for cosignatures: `<vkey> <submission URL prefix>` (repeatable;
    /// comma-separated in the environment).
    #[arg(long = "witness", env = "LEDGER_WITNESSES", value_delimiter = ',', value_parser = witness_target)]
    pub witnesses: Vec<WitnessTarget>,
    /// Publish only checkpoints cosigned by at least this many of the witnesses (0: publish
    /// each checkpoint at once and add cosignatures as they arrive).
    #[arg(long, env = "LEDGER_WITNESS_QUORUM", default_value_t = 0)]
    pub witness_quorum: usize,
    /// How long one add-checkpoint request may take, ms.
    #[arg(long, env = "LEDGER_WITNESS_TIMEOUT_MS", default_value_t = 5_000)]
    pub witness_timeout_ms: u64,
}

/// Where webhooks may be sent (see `outbound` for the policy).
#[derive(Args, Debug, Clone, Default)]
pub struct OutboundSettings {
    /// Allow plain `http://` webhook URLs (patient alert data then travels in clear).
    #[arg(long, env = "LEDGER_WEBHOOK_ALLOW_HTTP")]
    pub webhook_allow_http: bool,
    /// Networks webhooks may reach although they are loopback, private, link-local or
    /// otherwise reserved (CIDR, comma-separated), e.g. `10.20.0.0/16` for the hospital's
    /// integration engine.
    #[arg(long, env = "LEDGER_WEBHOOK_ALLOW_NETS", value_delimiter = ',')]
    pub webhook_allow_nets: Vec<ipnet::IpNet>,
}

/// Archival export settings.
#[derive(Args, Debug, Clone)]
pub struct ExportSettings {
    /// Where export jobs write their files (default: `exports` under --data-dir). Several
    /// service nodes must share it.
    #[arg(long, env = "LEDGER_EXPORT_DIR")]
    pub export_dir: Option<PathBuf>,
    /// Readings measured longer ago than this many days may have their payload pruned once an
    /// export holding them is acknowledged by the archive (their leaf hashes stay).
    #[arg(long, env = "LEDGER_RETENTION_DAYS", default_value_t = 3650)]
    pub retention_days: u64,
    /// How long a node holds an export job between two progress records, ms (after a crash,
    /// another node, or the restarted one, takes the job over once it lapses).
    #[arg(long, env = "LEDGER_EXPORT_LEASE_MS", default_value_t = 15_000)]
    pub export_lease_ms: u64,
}

impl Default for ExportSettings {
    fn default() -> Self {
        Self {
            export_dir: None,
            retention_days: 3650,
            export_lease_ms: 15_000,
        }
    }
}

/// Alerting and webhook delivery settings.
#[derive(Args, Debug, Clone, Copy)]
pub struct AlertSettings {
    /// An alert resolves by itself once its parameter has been back in range for this long, ms.
    #[arg(long, env = "LEDGER_ALERT_NORMAL_MS", default_value_t = 15 * 60 * 1000)]
    pub alert_normal_ms: u64,
    /// How recent all five scored vital signs must be for an aggregate NEWS2 score, ms.
    #[arg(long, env = "LEDGER_NEWS2_WINDOW_MS", default_value_t = 15 * 60 * 1000)]
    pub news2_window_ms: u64,
    /// Delivery attempts of a webhook message before it is dead-lettered.
    #[arg(long, env = "LEDGER_WEBHOOK_MAX_ATTEMPTS", default_value_t = 15)]
    pub webhook_max_attempts: u32,
    /// First retry delay, ms (doubling, with jitter, up to --webhook-backoff-max-ms).
    #[arg(long, env = "LEDGER_WEBHOOK_BACKOFF_MS", default_value_t = 1000)]
    pub webhook_backoff_ms: u64,
    /// Longest retry delay, ms (also the cap on a receiver's Retry-After).
    #[arg(
        long,
        env = "LEDGER_WEBHOOK_BACKOFF_MAX_MS",
        default_value_t = 3_600_000
    )]
    pub webhook_backoff_max_ms: u64,
    /// Time allowed for one delivery, ms.
    #[arg(long, env = "LEDGER_WEBHOOK_TIMEOUT_MS", default_value_t = 10_000)]
    pub webhook_timeout_ms: u64,
    /// After a secret rotation, how long the previous secret also signs, ms.
    #[arg(long, env = "LEDGER_WEBHOOK_SECRET_OVERLAP_MS", default_value_t = 24 * 3600 * 1000)]
    pub webhook_secret_overlap_ms: u64,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            alert_normal_ms: 15 * 60 * 1000,
            news2_window_ms: 15 * 60 * 1000,
            webhook_max_attempts: 15,
            webhook_backoff_ms: 1000,
            webhook_backoff_max_ms: 3_600_000,
            webhook_timeout_ms: 10_000,
            webhook_secret_overlap_ms: 24 * 3600 * 1000,
        }
    }
}

/// What one client may hold of the service: the HTTP edge's timeouts and limits.
#[derive(Args, Debug, Clone, Copy)]
pub struct LimitSettings {
    /// Time a client has to send a request's headers, and the longest a kept-alive connection
    /// may sit idle before its next request, ms.
    #[arg(long, env = "LEDGER_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub header_timeout_ms: u64,
    /// Time allowed for a whole request (reading its body included) until the answer starts,
    /// ms; past it the answer is 408 problem+json.
    #[arg(long, env = "LEDGER_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    pub request_timeout_ms: u64,
    /// Open connections at most; more are closed as they arrive.
    #[arg(long, env = "LEDGER_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,
    /// Requests in progress at most; more are answered 503 with Retry-After (problem+json)
    /// instead of queueing without bound.
    #[arg(long, env = "LEDGER_MAX_CONCURRENT_REQUESTS", default_value_t = 256)]
    pub max_concurrent_requests: usize,
}

impl Default for LimitSettings {
    fn default() -> Self {
        Self {
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_connections: 1024,
            max_concurrent_requests: 256,
        }
    }
}

/// Parses a secret argument (clap).
fn secret(s: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(s))
}

/// A public base URL: `http` or `https`, a host, no query or fragment; kept without a trailing
/// slash.
pub fn public_url(s: &str) -> Result<String, String> {
    let rest = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .ok_or_else(|| format!("{s:?}: the public URL must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.is_empty()
        || s.contains(['?', '#'])
        || s.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "{s:?}: expected a base URL such as https://ledger.example or http://10.0.0.5:8080/ledger"
        ));
    }
    Ok(s.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let cli = Cli::try_parse_from([
            "ledger-service",
            "--database-url",
            "postgres://ledger:hunter2@db.example/ledger",
        ])
        .map_err(|e| e.to_string());
        let cli = match cli {
            Ok(c) => c,
            Err(e) => panic!("{e}"),
        };
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn public_urls_are_checked_and_kept_without_a_trailing_slash() {
        assert_eq!(
            public_url("https://ledger.example/").unwrap(),
            "https://ledger.example"
        );
        assert_eq!(
            public_url("http://10.0.0.5:8080/ledger").unwrap(),
            "http://10.0.0.5:8080/ledger"
        );
        for bad in [
            "ledger.example",
            "ftp://x",
            "https://",
            "https:///x",
            "https://a?b",
            "https://a#b",
            "https://a b",
        ] {
            assert!(public_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn witnesses_are_a_cosigner_vkey_and_a_url() {
        use ed25519_dalek::SigningKey;
        use provenance_core::note::{Cosigner, NoteSigner};
        let w = Cosigner::new("w.example/1", SigningKey::from_bytes(&[1; 32]))
            .unwrap()
            .verifier()
            .to_vkey();
        let t = witness_target(&format!("{w} https://w.example/1/")).unwrap();
        assert_eq!(t.url, "https://w.example/1");
        assert_eq!(t.vkey.to_vkey(), w);
        let plain = NoteSigner::new("log.example", SigningKey::from_bytes(&[2; 32]))
            .unwrap()
            .verifier()
            .to_vkey();
        for bad in [
            w.clone(),
            format!("{w} ftp://w.example"),
            format!("{w} w.example"),
            format!("{plain} https://w.example"),
            "nonsense https://w.example".into(),
        ] {
            assert!(witness_target(&bad).is_err(), "{bad}");
        }
    }
}
