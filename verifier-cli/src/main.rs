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
}

/// A usage or I/O error: exit status 2.
struct Usage(String);

fn read(path: &Path) -> Result<String, Usage> {
    files::read_text(path, files::MAX_SMALL_FILE).map_err(|e| Usage(format!("reading {e}")))
}

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
        let log_key = vkey(&self.log_key)?;
        let witnesses: Vec<NoteVerifier> = self
            .witnesses
            .iter()
            .map(|w| vkey(w))
            .collect::<Result<_, _>>()?;
        // A witness vouches for the log only if it holds another key than the log's (the log's
        // key holder can sign under any name) and counts once.
        for (i, w) in witnesses.iter().enumerate() {
            if w.key() == log_key.key() {
                return Err(Usage(format!(
                    "--witness {}: that is the log's own key; a witness must hold another key",
                    w.name()
                )));
            }
            if witnesses[..i].iter().any(|o| o.key() == w.key()) {
                return Err(Usage(format!(
                    "--witness {}: the same key is given twice; each witness counts once",
                    w.name()
                )));
            }
        }
        Ok(Trust {
            log_key,
            issuers,
            witnesses,
            quorum: self.quorum,
            known_checkpoints: self
                .checkpoints
                .iter()
                .map(|p| read(p))
                .collect::<Result<_, _>>()?,
        })
    }
}

fn run(cli: &Cli) -> Result<Report, Usage> {
    match &cli.command {
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

fn main() -> ExitCode {
    let cli = Cli::parse();
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
