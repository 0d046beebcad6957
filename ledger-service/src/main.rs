//! `ledger-service`: reads configuration, sets up tracing, and runs the service (or a command).
//!
//! Tracing goes to stderr (text, or JSON lines with `--log-json`); when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported over OTLP/HTTP (protobuf) to
//! that collector. Without it no collector is needed.

use clap::Parser;
use ledger_service::config::{Cli, Command};
use ledger_service::Db;
use ledger_service::{issue_token, Role, TokenSpec};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use std::process::ExitCode;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// Sets up logging and, if configured, OTLP export; returns the provider to flush at exit.
fn init_tracing(json: bool) -> anyhow::Result<Option<SdkTracerProvider>> {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .boxed()
    };
    let provider = match std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT") {
        Ok(endpoint) if !endpoint.is_empty() => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build()?;
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(
                        opentelemetry_sdk::Resource::builder()
                            .with_service_name("ledger-service")
                            .build(),
                    )
                    .build(),
            )
        }
        _ => None,
    };
    let otel = provider
        .as_ref()
        .map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer("ledger-service")));
    tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .with(otel)
        .init();
    Ok(provider)
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let provider = match init_tracing(cli.config.log_json) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("ledger-service: cannot set up tracing: {e:#}");
            return ExitCode::from(2);
        }
    };
    let code = match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ledger-service: {e:#}");
            ExitCode::FAILURE
        }
    };
    if let Some(p) = provider {
        let _ = tokio::task::spawn_blocking(move || p.shutdown()).await;
    }
    code
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let cfg = cli.config;
    if let Some(Command::GenerateLogKey { out }) = &cli.command {
        let vkey = ledger_service::generate_log_key(&cfg.origin, out)?;
        println!("{vkey}");
        return Ok(());
    }
    let url = ledger_service::database_url(&cfg)?;
    if cfg.read_node.read_only && matches!(cli.command, None | Some(Command::Serve)) {
        // A read node: a replica's public log, nothing written (reader.rs).
        let shared = ledger_service::reader::start(&cfg, &url).await?;
        let listener = tokio::net::TcpListener::bind(cfg.listen).await?;
        tracing::info!(listen = %listener.local_addr()?, "serving (read node)");
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        ledger_service::serve(listener, shared, shutdown).await?;
        return Ok(());
    }
    let db = Db::connect(&url, cfg.db_connections).await?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::CreateToken {
            role,
            name,
            expires_in_days,
            gateway,
            household,
        } => {
            let role =
                Role::parse(&role).ok_or_else(|| anyhow::anyhow!("unknown role {role:?}"))?;
            let spec = TokenSpec {
                role,
                name,
                ttl_days: expires_in_days,
                gateway: gateway.or(household),
                created_by: "cli".into(),
            };
            let issued = issue_token(&db, &spec).await?;
            eprintln!(
                "created {} ({}, expires at {} ms)",
                issued.row.id, issued.row.role, issued.row.expires_at
            );
            println!("{}", issued.secret);
            Ok(())
        }
        Command::ExportAccessLog { out, from } => {
            let n = ledger_service::export_access_log(&db, &out, from).await?;
            eprintln!("{}: {n} access records", out.display());
            Ok(())
        }
        Command::ListTokens => {
            let now = ledger_service::now_ms();
            println!("id\trole\tname\tgateway\tstate\tcreated_at\texpires_at\tlast_used_at");
            for t in ledger_service::list_tokens(&db).await? {
                let state = t.state(now);
                println!(
                    "{}\t{}\t{}\t{}\t{state}\t{}\t{}\t{}",
                    t.id,
                    t.role,
                    t.name.escape_debug(),
                    t.gateway.as_deref().unwrap_or("-"),
                    t.created_at,
                    t.expires_at,
                    t.last_used_at.map_or("-".to_string(), |u| u.to_string())
                );
            }
            Ok(())
        }
        Command::RevokeToken { id } => {
            let t = ledger_service::revoke_token(&db, &id, "cli").await?;
            eprintln!("revoked {} at {} ms", t.id, t.revoked_at.unwrap_or(0));
            Ok(())
        }
        Command::RotateToken { id, overlap_hours } => {
            let (new, old) = ledger_service::rotate_token(&db, &id, overlap_hours, "cli").await?;
            eprintln!(
                "created {}; {} now expires at {} ms",
                new.row.id, old.id, old.expires_at
            );
            println!("{}", new.secret);
            Ok(())
        }
        Command::GenerateLogKey { .. } => Ok(()),
        Command::ExportLog { out, from } => {
            // With a witness quorum, the archive is cut where the service publishes.
            let quorum = cfg.witnesses.witness_quorum;
            let m = ledger_service::write_cosigned_log_archive(&db, &out, from, quorum).await?;
            println!(
                "{}: entries [{}, {}), {} entry files, {} registry entries before the range",
                out.display(),
                m.start,
                m.end,
                m.entry_files.len(),
                m.registry_prelude.len()
            );
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
