//! `ledger-witness`: a C2SP tlog-witness. `init` makes a state folder with a new key, `vkey`
//! prints its public key, `serve` answers `add-checkpoint` for the configured logs.

use anyhow::Context;
use clap::{Parser, Subcommand};
use ledger_witness::{app, init, load_key, parse_log_list, Witness};
use provenance_core::note::NoteVerifier;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "ledger-witness",
    version,
    about = "A C2SP tlog-witness: cosigns (cosignature/v1) only checkpoints consistent with what it cosigned before",
    after_help = "The state folder holds the key (witness.key), the latest cosigned checkpoint of \
                  each log (logs/) and refused log-signed requests kept as evidence (evidence/). \
                  Back it up; a witness whose state is lost must get a new key, not restart empty."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a state folder with a new cosigner key and print its vkey.
    Init {
        /// The state folder.
        #[arg(long, env = "WITNESS_STATE")]
        state: PathBuf,
        /// The witness's name (a schema-less URL, e.g. witness.hospital.example/w1).
        #[arg(long)]
        name: String,
    },
    /// Print the witness's vkey (give it to the logs and to verifiers).
    Vkey {
        /// The state folder.
        #[arg(long, env = "WITNESS_STATE")]
        state: PathBuf,
    },
    /// Serve POST /add-checkpoint (and GET /metrics, GET /healthz).
    Serve {
        /// The state folder.
        #[arg(long, env = "WITNESS_STATE")]
        state: PathBuf,
        /// Address to listen on.
        #[arg(long, env = "WITNESS_LISTEN", default_value = "127.0.0.1:7380")]
        listen: String,
        /// A log to follow: its vkey (the origin is the key's name; repeatable).
        #[arg(long = "log", env = "WITNESS_LOGS", value_delimiter = ',')]
        logs: Vec<String>,
        /// A file of log vkeys, one per line (`#` comments).
        #[arg(long)]
        log_list: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Cmd::Init { state, name } => {
            println!("{}", init(&state, &name)?);
        }
        Cmd::Vkey { state } => {
            println!("{}", load_key(&state)?.verifier().to_vkey());
        }
        Cmd::Serve {
            state,
            listen,
            logs,
            log_list,
        } => {
            let mut keys: Vec<NoteVerifier> = logs
                .iter()
                .map(|l| {
                    NoteVerifier::from_vkey(l.trim())
                        .map_err(|e| anyhow::anyhow!("--log {l:?}: {e}"))
                })
                .collect::<anyhow::Result<_>>()?;
            if let Some(path) = log_list {
                let text = std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                keys.extend(parse_log_list(&text)?);
            }
            let witness = Arc::new(Witness::open(&state, keys)?);
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("listening on {listen}"))?;
            tracing::info!(addr = %listener.local_addr()?, vkey = %witness.vkey(), "witness listening");
            axum::serve(listener, app(witness))
                .with_graceful_shutdown(async {
                    let _ = tokio::signal::ctrl_c().await;
                })
                .await?;
        }
    }
    Ok(())
}
