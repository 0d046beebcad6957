//! Configuration from flags and environment.

use clap::{Args, Parser, Subcommand};
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
        /// admin, clinician, archivist, auditor or gateway.
        #[arg(long)]
        role: String,
        /// A name to recognise it by.
        #[arg(long, default_value = "unnamed")]
        name: String,
    },
}

/// Service settings.
#[derive(Args, Debug, Clone)]
pub struct Config {
    /// `postgres://…` for PostgreSQL; unset or empty for the embedded SQLite file under --data-dir.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where the embedded database and development keys live.
    #[arg(long, env = "LEDGER_DATA_DIR", default_value = "./ledger-data")]
    pub data_dir: PathBuf,
    /// Listen address.
    #[arg(long, env = "LEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
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
    /// Allowed clock skew into the future, ms.
    #[arg(long, env = "LEDGER_MAX_SKEW_MS", default_value_t = 300_000)]
    pub max_skew_ms: u64,
    /// Oldest reading accepted, ms before now (default 30 days).
    #[arg(long, env = "LEDGER_MAX_AGE_MS", default_value_t = 30 * 24 * 3600 * 1000)]
    pub max_age_ms: u64,
    /// Log as JSON lines.
    #[arg(long, env = "LEDGER_LOG_JSON")]
    pub log_json: bool,
}
