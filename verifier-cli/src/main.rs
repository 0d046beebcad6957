//! `ledger-verify`: command line. Exit status 0 verified, 1 verification failed, 2 usage or I/O
//! error.

use clap::{Args, Parser, Subcommand};
use provenance_core::cert::DeviceCert;
use provenance_core::note::NoteVerifier;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use verifier_cli::files;
use verifier_cli::report::Report;
use verifier_cli::trust::Trust;

#[derive(Parser)]
#[command(
    name = "ledger-verify",
    version,
    about = "Offline verification of vital-sign evidence bundles, log archives and checkpoints",
    after_help = "Exit status: 0 verified, 1 verification failed, 2 usage or I/O error."
)]
struct Cli {
    /// Print the report as JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args)]
struct TrustArgs {
    /// The log's public key: a C2SP vkey, or a file holding one.
    #[arg(long, env = "LEDGER_VERIFY_LOG_KEY")]
    log_key: String,
    /// A trusted issuer (manufacturer or fleet) CA certificate, PEM (repeatable).
    #[arg(long = "issuer")]
    issuers: Vec<PathBuf>,
    /// A witness's vkey, or a file holding one (repeatable).
    #[arg(long = "witness")]
    witnesses: Vec<String>,
    /// How many witnesses must have cosigned the checkpoint.
    #[arg(long, default_value_t = 0)]
    quorum: usize,
    /// A checkpoint kept from earlier (signed note file; repeatable): a different root for the
    /// same size is reported as a fork.
    #[arg(long = "checkpoint")]
    checkpoints: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Verify one reading's evidence bundle (as served at /v1/readings/{index}/evidence).
    Bundle {
        /// The bundle (JSON).
        file: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Verify a log archive folder (written by `ledger-service export-log`), in parallel.
    Export {
        /// The archive folder.
        dir: PathBuf,
        #[command(flatten)]
        trust: TrustArgs,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
    },
    /// Verify that the log only grew between two checkpoints: OLD NEW PROOF from files, or OLD
    /// and `--url` to fetch the newer checkpoint and the proof from the service.
    Consistency {
        /// The older checkpoint (signed note file).
        old: PathBuf,
        /// The newer checkpoint (signed note file); not with --url.
        new: Option<PathBuf>,
        /// The consistency proof: the service's JSON answer or one base64 hash per line.
        proof: Option<PathBuf>,
        /// Fetch the latest checkpoint and the proof from this service URL.
        #[arg(long, conflicts_with_all = ["new", "proof"])]
        url: Option<String>,
        /// After a successful online check, save the newer checkpoint here (keep it for next
        /// time).
        #[arg(long, requires = "url")]
        save: Option<PathBuf>,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Follow a live log through its public checkpoints, tiles and registry entries (no token):
    /// prove each new checkpoint consistent with the last one kept, and report every registry
    /// change. Exit status with --once: 0 nothing alarming, 1 an alert (fork, inconsistency,
    /// incomplete registry, bad checkpoint, unannounced key change of a watched device), 2 usage,
    /// I/O or network error.
    Monitor {
        /// The service's base URL.
        #[arg(long)]
        url: String,
        /// The state file: the kept checkpoint, its frontier and the registry (created if
        /// missing, resumed from otherwise).
        #[arg(long, default_value = "ledger-monitor.json")]
        state: PathBuf,
        /// Report only this device's changes (repeatable; default: everything).
        #[arg(long = "watch")]
        watch: Vec<String>,
        /// Report only this issuer's changes: its certificate CN or key id (repeatable).
        #[arg(long = "watch-issuer")]
        watch_issuers: Vec<String>,
        /// An announced key change `DEVICE=KEYID` (hex): not an alert (repeatable).
        #[arg(long = "expect-key")]
        expect_keys: Vec<String>,
        /// Run this command (sh -c) per finding, with its JSON on stdin.
        #[arg(long)]
        exec: Option<String>,
        /// Post each finding as a Standard Webhook to this URL.
        #[arg(long, requires = "webhook_secret")]
        webhook: Option<String>,
        /// The webhook's `whsec_` secret.
        #[arg(long, env = "LEDGER_MONITOR_WEBHOOK_SECRET", hide_env_values = true)]
        webhook_secret: Option<String>,
        /// One round (catch up, report, exit) instead of following.
        #[arg(long)]
        once: bool,
        /// Seconds between rounds when following.
        #[arg(long, default_value_t = 10)]
        interval_secs: u64,
        /// No progress bar.
        #[arg(long)]
        no_progress: bool,
        #[command(flatten)]
        trust: TrustArgs,
    },
}

/// A usage or I/O error: exit status 2.
struct Usage(String);

fn read(path: &Path) -> Result<String, Usage> {
    files::read_text(path, files::MAX_SMALL_FILE).map_err(|e| Usage(format!("reading {e}")))
}

/// A vkey given literally or as a file.
fn vkey(arg: &str) -> Result<NoteVerifier, Usage> {
    let text = if Path::new(arg).is_file() {
        read(Path::new(arg))?
    } else {
        arg.to_string()
    };
    NoteVerifier::from_vkey(text.trim()).map_err(|e| Usage(format!("{arg:?} is not a vkey: {e}")))
}

impl TrustArgs {
    fn load(&self) -> Result<Trust, Usage> {
        let issuers = self
            .issuers
            .iter()
            .map(|p| {
                DeviceCert::from_pem(&read(p)?)
                    .map_err(|e| Usage(format!("{}: not an issuer certificate: {e}", p.display())))
            })
            .collect::<Result<_, _>>()?;
        let witnesses = self
            .witnesses
            .iter()
            .map(|w| vkey(w))
            .collect::<Result<_, _>>()?;
        let known = self
            .checkpoints
            .iter()
            .map(|p| read(p))
            .collect::<Result<_, _>>()?;
        // The same rule as the browser's verifier: a witness holding the log's key, or one given
        // twice, is refused.
        Trust::new(vkey(&self.log_key)?, issuers, witnesses, self.quorum, known)
            .map_err(|e| Usage(format!("--witness: {e}")))
    }
}

fn run(cli: &Cli) -> Result<Report, Usage> {
    match &cli.command {
        Cmd::Monitor { .. } => Err(Usage("the monitor reports findings, not one report".into())),
        Cmd::Bundle { file, trust } => {
            let trust = trust.load()?;
            let max = provenance_core::bundle::MAX_BUNDLE_LEN as u64;
            // A bundle over the limit is not a valid bundle (verification fails, exit 1); a
            // path that is not a readable regular file is a usage error (exit 2).
            if let Ok(meta) = std::fs::metadata(file) {
                if meta.file_type().is_file() && meta.len() > max {
                    let mut r = Report::new(format!("bundle {}", file.display()));
                    r.fail(
                        "bundle.format",
                        format!(
                            "the bundle is {} bytes, more than the {max} allowed",
                            meta.len()
                        ),
                    );
                    return Ok(r);
                }
            }
            let bytes = files::read_named(file, max).map_err(|e| Usage(format!("reading {e}")))?;
            Ok(verifier_cli::bundle::verify_bundle(
                &bytes,
                &format!("bundle {}", file.display()),
                &trust,
            ))
        }
        Cmd::Export {
            dir,
            trust,
            no_progress,
        } => {
            let trust = trust.load()?;
            if !dir.is_dir() {
                return Err(Usage(format!("{} is not a folder", dir.display())));
            }
            let progress = !no_progress && !cli.json;
            Ok(verifier_cli::export::verify_export(dir, &trust, progress))
        }
        Cmd::Consistency {
            old,
            new,
            proof,
            url,
            save,
            trust,
        } => {
            let trust = trust.load()?;
            let old_text = read(old)?;
            let (new_text, hashes, subject) = match (url, new, proof) {
                (Some(url), _, _) => {
                    let (n, h) =
                        verifier_cli::consistency::fetch(url, &old_text, &trust).map_err(Usage)?;
                    (n, h, format!("{} → {url}", old.display()))
                }
                (None, Some(n), Some(p)) => {
                    let h = verifier_cli::consistency::parse_proof(&read(p)?).map_err(Usage)?;
                    (read(n)?, h, format!("{} → {}", old.display(), n.display()))
                }
                _ => return Err(Usage("give NEW and PROOF files, or --url".into())),
            };
            let report = verifier_cli::consistency::verify_consistency(
                &old_text, &new_text, &hashes, &subject, &trust,
            );
            if let (true, Some(path)) = (report.verified, save) {
                std::fs::write(path, &new_text)
                    .map_err(|e| Usage(format!("writing {}: {e}", path.display())))?;
            }
            Ok(report)
        }
    }
}

/// The monitor: one round with `--once`, else rounds forever. Findings go to stdout (text or
/// JSON lines), the command and the webhook.
fn monitor(cli: &Cli) -> Result<ExitCode, Usage> {
    let Cmd::Monitor {
        url,
        state,
        watch,
        watch_issuers,
        expect_keys,
        exec,
        webhook,
        webhook_secret,
        once,
        interval_secs,
        no_progress,
        trust,
    } = &cli.command
    else {
        return Err(Usage("not the monitor".into()));
    };
    use verifier_cli::findings::{self as monitor, Severity, Watch};
    use verifier_cli::monitor::{Monitor, Options};
    let expect_keys = expect_keys
        .iter()
        .map(|e| {
            e.split_once('=')
                .map(|(d, k)| (d.to_string(), k.to_string()))
                .ok_or_else(|| Usage(format!("--expect-key {e:?}: expected DEVICE=KEYID")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let opts = Options {
        url: url.clone(),
        state: state.clone(),
        watch: Watch {
            devices: watch.clone(),
            issuers: watch_issuers.clone(),
            expect_keys,
        },
        progress: !no_progress && !cli.json,
    };
    let mut m = Monitor::open(opts, trust.load()?).map_err(Usage)?;
    let mut alerted = false;
    loop {
        match m.poll() {
            Ok(findings) => {
                for f in &findings {
                    alerted |= f.severity == Severity::Alert;
                    if cli.json {
                        println!("{}", serde_json::to_string(f).unwrap_or_default());
                    } else {
                        println!("{}", f.human());
                    }
                    if let Some(cmd) = exec {
                        if let Err(e) = monitor::run_command(cmd, f) {
                            eprintln!("ledger-verify monitor: {e}");
                        }
                    }
                    if let (Some(url), Some(secret)) = (webhook, webhook_secret) {
                        let now = std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map_or(0, |d| d.as_secs());
                        if let Err(e) = monitor::post_webhook(url, secret, f, now) {
                            eprintln!("ledger-verify monitor: {e}");
                        }
                    }
                }
                if *once {
                    if !cli.json {
                        println!(
                            "monitor: {url}: kept checkpoint of size {}; {} finding(s)",
                            m.size(),
                            findings.len()
                        );
                    }
                    return Ok(ExitCode::from(u8::from(alerted)));
                }
            }
            Err(e) if *once => return Err(Usage(e)),
            Err(e) => eprintln!("ledger-verify monitor: {e} (retrying)"),
        }
        std::thread::sleep(std::time::Duration::from_secs((*interval_secs).max(1)));
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Cmd::Monitor { .. }) {
        return match monitor(&cli) {
            Ok(code) => code,
            Err(Usage(msg)) => {
                if cli.json {
                    println!("{}", serde_json::json!({"error": msg}));
                }
                eprintln!("ledger-verify: {msg}");
                ExitCode::from(2)
            }
        };
    }
    match run(&cli) {
        Ok(report) => {
            if cli.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.human());
            }
            if report.verified {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(Usage(msg)) => {
            if cli.json {
                println!("{}", serde_json::json!({"error": msg}));
            }
            eprintln!("ledger-verify: {msg}");
            ExitCode::from(2)
        }
    }
}
