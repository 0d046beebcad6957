//! `vitals-home`: the owner's app in private mode. See the crate documentation and README.md.

use anyhow::Context;
use clap::{Parser, Subcommand};
use provenance_core::audit::trust::Trust;
use std::path::PathBuf;
use std::process::ExitCode;
use vitals_home::{hourly, periods, sparkline, svg, values, Home, ROOM_TEMPERATURE};

#[derive(Parser)]
#[command(
    name = "vitals-home",
    version,
    about = "The owner's app: reads a household's end-to-end encrypted readings and proves where they came from, without trusting the cloud"
)]
struct Cli {
    /// The app's folder (its key, state and readings).
    #[arg(long, env = "VITALS_HOME_DIR", default_value = "./vitals-home")]
    dir: PathBuf,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Make a new key pair for a household and print its public key (for an administrator to
    /// enroll: POST /v1/registry/recipients). The private key never leaves the folder.
    Init {
        /// The household.
        #[arg(long)]
        household: String,
    },
    /// Print this app's public key and KeyId.
    Key,
    /// Fetch the household's new messages, verify and decrypt each, store what passes.
    Fetch {
        /// The service's base URL.
        #[arg(long, env = "VITALS_HOME_SERVICE")]
        service: String,
        /// A household token (role household) for this household.
        #[arg(long, env = "VITALS_HOME_TOKEN", hide_env_values = true)]
        token: String,
        /// The log's vkey (a file holding it).
        #[arg(long)]
        log_key: PathBuf,
        /// A trusted issuer CA certificate (PEM file), repeatable: sensors and gateways must
        /// chain to one of them.
        #[arg(long = "issuer", required = true)]
        issuers: Vec<PathBuf>,
        /// A witness's vkey (file), repeatable.
        #[arg(long = "witness")]
        witnesses: Vec<PathBuf>,
        /// How many of the witnesses must have cosigned the checkpoint.
        #[arg(long, default_value_t = 0)]
        quorum: usize,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Accept the household's registry changes the last fetch reported (all, or the given log
    /// indices): a new recipient of the household, once accepted, may read its messages.
    Accept {
        /// Log indices to accept (default: every pending change).
        entries: Vec<u64>,
    },
    /// Aggregate the readings shown: hourly mean, min and max, when it was warm or cold; a
    /// terminal sparkline, or an SVG chart.
    Show {
        /// LOINC code to show (default: room temperature).
        #[arg(long, default_value = ROOM_TEMPERATURE)]
        loinc: String,
        /// Above this it was warm.
        #[arg(long, default_value_t = 21.0)]
        warm: f64,
        /// Below this it was cold.
        #[arg(long, default_value_t = 17.0)]
        cold: f64,
        /// Write an SVG chart here.
        #[arg(long)]
        svg: Option<PathBuf>,
        /// Print the aggregates as JSON.
        #[arg(long)]
        json: bool,
    },
}

fn read(path: &PathBuf) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Cmd::Init { household } => {
            let home = Home::init(&cli.dir, &household)?;
            let pk = home.public_key();
            println!("{}", hex::encode(pk.0));
            eprintln!(
                "household {household}: enroll this public key (KeyId {}) as a recipient; the private key stays in {}",
                pk.key_id(),
                cli.dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Key => {
            let home = Home::open(&cli.dir)?;
            let pk = home.public_key();
            println!("{} {}", hex::encode(pk.0), pk.key_id());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Fetch {
            service,
            token,
            log_key,
            issuers,
            witnesses,
            quorum,
            json,
        } => {
            let pems: Vec<String> = issuers.iter().map(read).collect::<Result<_, _>>()?;
            let wits: Vec<String> = witnesses.iter().map(read).collect::<Result<_, _>>()?;
            let trust = Trust::pinned(
                &read(&log_key)?,
                &pems.iter().map(String::as_str).collect::<Vec<_>>(),
                &wits.iter().map(String::as_str).collect::<Vec<_>>(),
                quorum,
                Vec::new(),
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            let mut home = Home::open(&cli.dir)?;
            let agent = ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(30))
                .redirects(0)
                .build();
            let base = service.trim_end_matches('/').to_string();
            let household = home.state.household.clone();
            let fetched = home.fetch(&trust, |after| {
                let mut url = format!("{base}/v1/households/{household}/feed?limit=500");
                if let Some(a) = after {
                    url.push_str(&format!("&after={a}"));
                }
                let resp = agent
                    .get(&url)
                    .set("authorization", &format!("Bearer {token}"))
                    .call()
                    .map_err(|e| anyhow::anyhow!("GET {url}: {e}"))?;
                let mut body = Vec::new();
                std::io::Read::read_to_end(
                    &mut std::io::Read::take(resp.into_reader(), 8 << 20),
                    &mut body,
                )?;
                Ok(body)
            })?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({
                        "shown": fetched.shown.len(),
                        "refused": fetched.refused.iter().map(|(i, why)| serde_json::json!({"index": i, "why": why})).collect::<Vec<_>>(),
                        "page_failures": fetched.page_failures,
                        "warnings": fetched.warnings,
                        "pages": fetched.pages,
                    })
                );
            } else {
                println!(
                    "{} new readings verified and decrypted ({} pages)",
                    fetched.shown.len(),
                    fetched.pages
                );
                for w in &fetched.warnings {
                    println!("WARNING: the household's registry changed without this app: {w} (vitals-home accept, once you know it)");
                }
                for f in &fetched.page_failures {
                    println!("REFUSED the whole page: {f}");
                }
                for (i, why) in &fetched.refused {
                    match i {
                        Some(i) => println!("REFUSED message at entry {i}: {why}"),
                        None => println!("REFUSED a message: {why}"),
                    }
                }
            }
            Ok(if fetched.clean() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Cmd::Accept { entries } => {
            let mut home = Home::open(&cli.dir)?;
            let which = (!entries.is_empty()).then_some(entries.as_slice());
            let done = home.accept(which)?;
            println!("accepted {} change(s): {done:?}", done.len());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Show {
            loinc,
            warm,
            cold,
            svg: svg_path,
            json,
        } => {
            let home = Home::open(&cli.dir)?;
            let readings = home.readings()?;
            let v = values(&readings, &loinc);
            let hours = hourly(&v);
            let marks = periods(&v, warm, cold);
            if let Some(p) = &svg_path {
                let name =
                    provenance_core::reading::vital(&loinc).map_or(loinc.as_str(), |x| x.name);
                std::fs::write(
                    p,
                    svg(
                        &format!("{} of {}", name, home.state.household),
                        &hours,
                        &marks,
                    ),
                )
                .with_context(|| format!("writing {}", p.display()))?;
            }
            if json {
                println!(
                    "{}",
                    serde_json::json!({"hours": hours, "periods": marks, "values": v.len()})
                );
            } else if hours.is_empty() {
                println!("no readings of {loinc} yet");
            } else {
                println!(
                    "{} values, {} hours: {}",
                    v.len(),
                    hours.len(),
                    sparkline(&hours.iter().map(|h| h.mean).collect::<Vec<_>>())
                );
                for h in &hours {
                    println!(
                        "{} mean {:.2} min {:.1} max {:.1} ({} values)",
                        h.start_ms, h.mean, h.min, h.max, h.count
                    );
                }
                for p in &marks {
                    println!(
                        "{} from {} to {} (reaching {:.1})",
                        p.kind, p.from_ms, p.to_ms, p.extreme
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("vitals-home: {e:#}");
            ExitCode::from(2)
        }
    }
}
