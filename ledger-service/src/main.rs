//! `ledger-service`: reads configuration, sets up tracing, and runs the service (or a command).

use clap::Parser;
use ledger_service::auth::{create_token, Role};
use ledger_service::config::{Cli, Command};
use ledger_service::db::Db;
use std::process::ExitCode;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,tower_http=warn"));
    if cli.config.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ledger-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = cli.config;
    let url = ledger_service::database_url(&cfg)?;
    let db = Db::connect(&url, cfg.db_connections).await?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::CreateToken { role, name } => {
            let role =
                Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role:?}"))?;
            let token = create_token(&db, role, &name).await?;
            println!("{token}");
            Ok(())
        }
        Command::Serve => {
            let signer = ledger_service::log_signer(&cfg)?;
            let running = ledger_service::start(&cfg, db, signer).await?;
            let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
            tracing::info!(listen = %listener.local_addr()?, "serving");
            let shutdown = async {
                let _ = tokio::signal::ctrl_c().await;
                tracing::info!("shutting down");
            };
            ledger_service::serve(listener, running.shared, shutdown).await?;
            Ok(())
        }
    }
}
