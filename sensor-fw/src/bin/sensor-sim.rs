//! `sensor-sim`: the factory and a fleet of simulated wearable sensors.
//!
//! - `sensor-sim init-ca --name "Acme Sensors" --out factory/` creates a manufacturer CA.
//! - `sensor-sim provision --factory factory/ --id SN-0001 --out devices/` plays the factory: a new
//!   sensor key, its certificate issued by the manufacturer CA, and a zero sequence counter.
//! - `sensor-sim run --devices devices/ --gateway 127.0.0.1:7700` runs every provisioned sensor:
//!   realistic vital-sign curves, one signed frame per sensor per period, sent as UDP datagrams
//!   (standing in for Bluetooth) to the gateway. Episodes (`--episode fever:SN-0001`) and faults
//!   (`--fault reboot|duplicate|corrupt`) can be injected.
//!
//! Keys are stored as hex seeds in files readable only by their owner; the counter is a file
//! written and fsynced before each frame is sent (the firmware core's `CounterStore`).

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use ed25519_dalek::SigningKey;
use provenance_core::cert::{self, CertParams, DeviceCert, Role};
use rand::Rng;
use sensor_fw::physiology::{Episode, Home, Physiology};
use sensor_fw::{CounterStore, Sensor};
use std::fs;
use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(
    name = "sensor-sim",
    version,
    about = "Factory and simulator for wearable vital-sign sensors"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a manufacturer CA (key and self-signed certificate) in --out.
    InitCa {
        /// Organisation name (certificate subject O and CN).
        #[arg(long)]
        name: String,
        /// Output folder.
        #[arg(long)]
        out: PathBuf,
    },
    /// Provision sensors: new keys, certificates issued by the manufacturer CA, zero counters.
    Provision {
        /// Folder made by init-ca.
        #[arg(long)]
        factory: PathBuf,
        /// Device ids (repeatable), e.g. SN-0001.
        #[arg(long = "id", required = true)]
        ids: Vec<String>,
        /// What to provision: sensors, or gateways (whose key file the gateway reads with
        /// --key-file; the fleet operator's CA is made with init-ca like a manufacturer's).
        #[arg(long, default_value = "sensor", value_parser = ["sensor", "gateway"])]
        role: String,
        /// Output folder for the devices.
        #[arg(long)]
        out: PathBuf,
    },
    /// Run every sensor provisioned in --devices, sending frames to the gateway over UDP.
    Run {
        /// Folder of provisioned sensors.
        #[arg(long, env = "SENSOR_SIM_DEVICES")]
        devices: PathBuf,
        /// The gateway's UDP address.
        #[arg(long, env = "SENSOR_SIM_GATEWAY", default_value = "127.0.0.1:7700")]
        gateway: String,
        /// Milliseconds between two readings of one sensor.
        #[arg(long, env = "SENSOR_SIM_PERIOD_MS", default_value_t = 5000)]
        period_ms: u64,
        /// Stop after this many readings per sensor (default: run forever); a finite run prints a
        /// JSON tally of what it sent (readings, corrupted, duplicated, reboots).
        #[arg(long)]
        count: Option<u64>,
        /// Abnormal episode: fever|tachycardia|desaturation, optionally :SENSOR-ID (default all).
        #[arg(long = "episode")]
        episodes: Vec<String>,
        /// Fault to inject now and then: reboot|duplicate|corrupt.
        #[arg(long = "fault")]
        faults: Vec<String>,
        /// What the sensors measure: `patient` (vital signs) or `home` (a living room's
        /// temperature with a day/night curve, a heating cycle and windows opened).
        #[arg(long, default_value = "patient", value_parser = ["patient", "home"])]
        profile: String,
    },
}

/// The sequence counter in a file, fsynced (written to a temporary file, synced, renamed).
struct FileCounter(PathBuf);

impl CounterStore for FileCounter {
    type Error = std::io::Error;
    fn load(&mut self) -> Result<u64, Self::Error> {
        match fs::read_to_string(&self.0) {
            Ok(s) => s
                .trim()
                .parse()
                .map_err(|_| std::io::Error::other("corrupt counter file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(e),
        }
    }
    fn store(&mut self, next: u64) -> Result<(), Self::Error> {
        let tmp = self.0.with_extension("tmp");
        let mut f = fs::File::create(&tmp)?;
        f.write_all(next.to_string().as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &self.0)?;
        if let Some(dir) = self.0.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn write_secret(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn read_key(path: &Path) -> anyhow::Result<SigningKey> {
    let hex_seed =
        fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let seed: [u8; 32] = hex::decode(hex_seed.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .with_context(|| format!("{} is not a 32-byte hex seed", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn params<'a>(cn: &'a str, org: &'a str, serial: u64) -> CertParams<'a> {
    let now = now_ms();
    CertParams {
        common_name: cn,
        organization: org,
        serial,
        not_before_ms: now - 3_600_000,
        not_after_ms: now + 5 * 365 * 86_400_000,
    }
}

fn init_ca(name: &str, out: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(out)?;
    let key = SigningKey::generate(&mut rand::rngs::OsRng);
    let ca = cert::issue_ca(&key, &params(&format!("{name} CA"), name, 1))?;
    write_secret(&out.join("ca.key"), &hex::encode(key.to_bytes()))?;
    fs::write(out.join("ca.pem"), ca.to_pem())?;
    fs::write(out.join("org"), name)?;
    println!("{}", out.join("ca.pem").display());
    Ok(())
}

fn provision(factory: &Path, ids: &[String], out: &Path, role: Role) -> anyhow::Result<()> {
    let ca_key = read_key(&factory.join("ca.key"))?;
    let ca = DeviceCert::from_pem(&fs::read_to_string(factory.join("ca.pem"))?)?;
    let org = fs::read_to_string(factory.join("org")).unwrap_or_else(|_| "Sensor Maker".into());
    fs::create_dir_all(out)?;
    for id in ids {
        let key = SigningKey::generate(&mut rand::rngs::OsRng);
        let serial = rand::thread_rng().gen_range(1_000..u64::MAX >> 1);
        let c = cert::issue_device(
            &ca_key,
            &ca,
            role,
            &key.verifying_key(),
            &params(id, org.trim(), serial),
        )?;
        write_secret(&out.join(format!("{id}.key")), &hex::encode(key.to_bytes()))?;
        fs::write(out.join(format!("{id}.pem")), c.to_pem())?;
        println!("{id} {}", c.key_id);
    }
    Ok(())
}

struct SimSensor {
    id: String,
    key: SigningKey,
    counter: PathBuf,
    core: Option<Sensor<FileCounter>>,
    body: Physiology,
}

impl SimSensor {
    fn boot(&mut self) -> anyhow::Result<()> {
        self.core = Some(
            Sensor::boot(
                self.key.clone(),
                &self.id,
                FileCounter(self.counter.clone()),
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.id))?,
        );
        Ok(())
    }
}

fn run(
    devices: &Path,
    gateway: &str,
    period_ms: u64,
    count: Option<u64>,
    episodes: &[String],
    faults: &[String],
    home: bool,
) -> anyhow::Result<()> {
    let mut sensors = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(devices)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "key"))
    {
        let id = p
            .file_stem()
            .and_then(|s| s.to_str())
            .context("sensor file name")?
            .to_string();
        let episode = episodes
            .iter()
            .find_map(|e| match e.split_once(':') {
                Some((kind, who)) if who == id => Some(kind),
                None => Some(e.as_str()),
                _ => None,
            })
            .map(|kind| {
                Episode::parse(kind).with_context(|| {
                    format!("unknown episode {kind:?}: use fever, tachycardia or desaturation")
                })
            })
            .transpose()?;
        let mut s = SimSensor {
            key: read_key(p)?,
            counter: devices.join(format!("{id}.counter")),
            id,
            core: None,
            body: Physiology { episode },
        };
        s.boot()?;
        sensors.push(s);
    }
    if sensors.is_empty() {
        bail!("no provisioned sensors (*.key) in {}", devices.display());
    }
    for f in faults {
        if !matches!(f.as_str(), "reboot" | "duplicate" | "corrupt") {
            bail!("unknown fault {f:?}: use reboot, duplicate or corrupt");
        }
    }
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(gateway)
        .with_context(|| format!("gateway address {gateway}"))?;
    let mut rng = rand::thread_rng();
    let mut buf = [0u8; provenance_core::sensor::MAX_FRAME_LEN];
    let start = Instant::now();
    let mut round = 0u64;
    let mut tally = Tally::default();
    eprintln!(
        "sensor-sim: {} sensors -> udp://{gateway}, one reading each every {period_ms} ms",
        sensors.len()
    );
    loop {
        if count.is_some_and(|c| round >= c) {
            break;
        }
        for s in sensors.iter_mut() {
            if faults.iter().any(|f| f == "reboot") && rng.gen_ratio(1, 50) {
                s.boot()?; // a power cycle: the counter comes back from storage
                tally.reboots += 1;
            }
            let now = now_ms();
            let room;
            let vitals;
            let measured: &[_] = if home {
                room = Home.sample(now, &mut rng)?;
                &room
            } else {
                vitals = s.body.sample(now, &mut rng)?;
                &vitals
            };
            let Some(core) = s.core.as_mut() else {
                continue;
            };
            let frame = core
                .sign(now, measured, &mut buf)
                .map_err(|e| anyhow::anyhow!("{}: {e}", s.id))?;
            let mut frame = frame.to_vec();
            tally.readings += 1;
            let corrupt = faults.iter().any(|f| f == "corrupt") && rng.gen_ratio(1, 20);
            if corrupt {
                let i = rng.gen_range(0..frame.len());
                frame[i] ^= 0x5a;
                tally.corrupted += 1;
            }
            // The gateway may refuse a datagram (ECONNREFUSED) while it restarts: keep going.
            let _ = sock.send(&frame);
            if faults.iter().any(|f| f == "duplicate") && rng.gen_ratio(1, 20) {
                let _ = sock.send(&frame);
                if corrupt {
                    tally.duplicated_corrupted += 1;
                } else {
                    tally.duplicated += 1;
                }
            }
        }
        round += 1;
        let next = Duration::from_millis(period_ms * round);
        if let Some(wait) = next.checked_sub(start.elapsed()) {
            std::thread::sleep(wait);
        }
    }
    println!("{}", serde_json::to_string(&tally)?);
    Ok(())
}

/// What a finite run sent, printed as one JSON line at its end (tests compare it with what the
/// gateway counted).
#[derive(Default, serde::Serialize)]
struct Tally {
    /// Signed readings (one frame each, before any duplicate).
    readings: u64,
    /// Readings sent with a flipped byte.
    corrupted: u64,
    /// Intact frames sent a second time.
    duplicated: u64,
    /// Corrupted frames sent a second time.
    duplicated_corrupted: u64,
    /// Simulated power cycles.
    reboots: u64,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::InitCa { name, out } => init_ca(&name, &out),
        Cmd::Provision {
            factory,
            ids,
            out,
            role,
        } => provision(
            &factory,
            &ids,
            &out,
            if role == "gateway" {
                Role::Gateway
            } else {
                Role::Sensor
            },
        ),
        Cmd::Run {
            devices,
            gateway,
            period_ms,
            count,
            episodes,
            faults,
            profile,
        } => run(
            &devices,
            &gateway,
            period_ms,
            count,
            &episodes,
            &faults,
            profile == "home",
        ),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sensor-sim: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}
