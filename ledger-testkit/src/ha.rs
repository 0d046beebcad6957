//! The high-availability drill (issue #18): a Patroni cluster of three PostgreSQL members and
//! three etcd members (`scripts/ha-cluster`), two `ledger-service` processes on it, steady
//! gateway load that moves between the service URLs and resubmits what was not acknowledged;
//! then `kill -9` of the primary database member, of the leading service node and of etcd's
//! leader, one after the other. Reported per fault: the seconds without acknowledgements; at the
//! end the readings sent, acknowledged, logged, lost and duplicated, and every checkpoint
//! published during the drill proved consistent with the last one.
//!
//! `scripts/ha-drill` runs the full form; `system-tests/tests/ha.rs` a short one.

use crate::process::{binary, Child};
use crate::{free_tcp, now_ms, Devices};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::note::NoteVerifier;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The cluster of `scripts/ha-cluster`.
pub struct Cluster {
    pub dir: PathBuf,
    pub port_base: u16,
    pub url: String,
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/ha-cluster")
}

fn get_json(url: &str) -> Option<Value> {
    let resp = ureq_get(url)?;
    serde_json::from_str(&resp).ok()
}

/// A blocking GET on loopback: the body of a 200 answer.
fn ureq_get(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let out = crate::http_get::blocking_get(host, &path);
    let (head, body) = out.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200")).then(|| body.to_string())
}

/// Every process of this machine, with one of its `/proc` files (`stat`, `cmdline`).
fn processes(file: &str) -> Vec<(u32, String)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| {
            let p = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let text = std::fs::read(format!("/proc/{p}/{file}")).ok()?;
            Some((p, String::from_utf8_lossy(&text).replace('\0', " ")))
        })
        .collect()
}

/// The pids of `pid` and every process below it.
fn tree(pid: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for (p, stat) in processes("stat") {
        // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
        let after = stat.rsplit_once(')').map_or("", |x| x.1);
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|x| x.parse().ok()) {
            children.entry(ppid).or_default().push(p);
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        out.extend(children.get(&out[i]).cloned().unwrap_or_default());
        i += 1;
    }
    out
}

/// `kill -9` of every process whose command line names a path starting with `prefix`, but for
/// `keep` (a drill killed before its clean-up left its cluster running on the same ports).
pub fn kill_leftovers(prefix: &str, keep: Option<&Path>) {
    let keep = keep.map(|k| k.display().to_string());
    let pids: Vec<u32> = processes("cmdline")
        .into_iter()
        .filter(|(p, cmd)| {
            let kept = keep.as_ref().is_some_and(|k| cmd.contains(k.as_str()));
            cmd.contains(prefix) && !kept && *p != std::process::id()
        })
        .map(|(p, _)| p)
        .collect();
    kill9(&pids);
}

fn kill9(pids: &[u32]) {
    for p in pids {
        let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
    }
}

impl Cluster {
    /// Starts (or resumes) the cluster in `dir` with ports from `port_base`.
    pub fn up(dir: &Path, port_base: u16) -> Self {
        let out = Command::new("bash")
            .arg(script())
            .args(["up", &dir.display().to_string()])
            .env("HA_PORT_BASE", port_base.to_string())
            .output()
            .expect("running scripts/ha-cluster");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "scripts/ha-cluster up: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let url = text
            .lines()
            .find_map(|l| l.strip_prefix("DATABASE_URL="))
            .expect("the cluster's DATABASE_URL")
            .to_string();
        Self {
            dir: dir.to_path_buf(),
            port_base,
            url,
        }
    }

    /// Stops every member.
    pub fn down(&self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", &self.dir.display().to_string()])
            .env("HA_PORT_BASE", self.port_base.to_string())
            .output();
    }

    fn rest(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.port_base as usize + 40 + i)
    }

    /// The member that leads (Patroni's view), if any.
    pub fn primary(&self) -> Option<usize> {
        (0..3).find_map(|i| {
            let c = get_json(&format!("{}/cluster", self.rest(i)))?;
            let name = c["members"]
                .as_array()?
                .iter()
                .find(|m| m["role"] == "leader")?["name"]
                .as_str()?
                .to_string();
            name.strip_prefix("pg")?.parse().ok()
        })
    }

    /// `kill -9` of member `i`'s Patroni, its PostgreSQL and every backend: the machine dies.
    pub fn kill_member(&self, i: usize) {
        let pid = std::fs::read_to_string(self.dir.join(format!("pg{i}/pid"))).unwrap_or_default();
        let mut pids = pid.trim().parse().map(tree).unwrap_or_default();
        let pm = std::fs::read_to_string(self.dir.join(format!("pg{i}/data/postmaster.pid")))
            .unwrap_or_default();
        if let Some(p) = pm.lines().next().and_then(|l| l.trim().parse().ok()) {
            pids.extend(tree(p));
        }
        kill9(&pids);
    }

    /// The etcd member that leads the consensus, if any.
    pub fn etcd_leader(&self) -> Option<usize> {
        let endpoints: Vec<String> = (0..3)
            .map(|i| format!("127.0.0.1:{}", self.port_base as usize + 10 + i))
            .collect();
        let out = Command::new("etcdctl")
            .args([
                "--endpoints",
                &endpoints.join(","),
                "endpoint",
                "status",
                "-w",
                "json",
            ])
            .env("ETCDCTL_API", "3")
            .output()
            .ok()?;
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        let arr = v.as_array()?;
        let leader = arr.first()?["Status"]["leader"].as_u64()?;
        arr.iter()
            .position(|e| e["Status"]["header"]["member_id"].as_u64() == Some(leader))
            .and_then(|p| {
                let ep = arr[p]["Endpoint"].as_str()?;
                endpoints.iter().position(|e| e == ep)
            })
    }

    /// `kill -9` of etcd member `i`.
    pub fn kill_etcd(&self, i: usize) {
        let pid =
            std::fs::read_to_string(self.dir.join(format!("etcd{i}/pid"))).unwrap_or_default();
        if let Ok(p) = pid.trim().parse() {
            kill9(&[p]);
        }
    }
}

/// A `ledger-service` process of the drill.
pub struct Node {
    child: Option<Child>,
    pub base: String,
    listen: String,
    data: PathBuf,
    env: Vec<(String, String)>,
}

impl Node {
    fn start(listen: &str, data: &Path, env: &[(String, String)]) -> Self {
        std::fs::create_dir_all(data).unwrap();
        let log = |ext: &str| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(data.join(format!("service.{ext}")))
                .unwrap()
        };
        let child = Command::new(binary("ledger-service", "ledger-service"))
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("LEDGER_LISTEN", listen)
            .env("LEDGER_DATA_DIR", data)
            .stdout(log("log"))
            .stderr(log("err"))
            .spawn()
            .map(Child)
            .unwrap();
        Self {
            child: Some(child),
            base: format!("http://{listen}"),
            listen: listen.to_string(),
            data: data.to_path_buf(),
            env: env.to_vec(),
        }
    }

    /// Whether this node answers `/readyz` with 200 (it leads the log).
    pub fn ready(&self) -> bool {
        ureq_get(&format!("{}/readyz", self.base)).is_some()
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill9();
        }
    }

    pub fn restart(&mut self) {
        self.kill9();
        *self = Node::start(&self.listen.clone(), &self.data.clone(), &self.env.clone());
    }
}

/// A real `gateway-uplink` process given both service URLs, fed signed frames over UDP by the
/// odd-numbered sensors at about 80 a second.
struct Ward {
    child: Child,
    metrics: String,
    stop: Arc<std::sync::atomic::AtomicBool>,
    sender: std::thread::JoinHandle<()>,
}

/// What the real gateway did, read from its metrics once its spool drained.
struct WardCounts {
    accepted: u64,
    uploaded: u64,
    failovers: u64,
}

impl Ward {
    async fn start(dir: &Path, devices: &Arc<Devices>, bases: &[String], token: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let key = dir.join("gateway.key");
        std::fs::write(&key, hex::encode(devices.gateways[1].0.to_bytes())).unwrap();
        let listen = crate::free_udp();
        let metrics = free_tcp();
        let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
        let child = Command::new(binary("gateway-uplink", "gateway-uplink"))
            .env("GATEWAY_ID", &devices.gateways[1].1.subject_cn)
            .env("GATEWAY_KEY_FILE", &key)
            .env("GATEWAY_LISTEN", &listen)
            .env("GATEWAY_SERVICE_URL", bases.join(","))
            .env("GATEWAY_TOKEN", token)
            .env("GATEWAY_SPOOL_DIR", dir.join("spool"))
            .env("GATEWAY_BATCH", "50")
            .env("GATEWAY_BACKOFF_MS", "50")
            .env("GATEWAY_BACKOFF_MAX_MS", "500")
            .env("GATEWAY_METRICS_LISTEN", &metrics)
            .env("RUST_LOG", "warn")
            .stdout(log("gateway.log"))
            .stderr(log("gateway.err"))
            .spawn()
            .map(Child)
            .unwrap();
        let cache = dir.join("spool/registry-events.json");
        wait_until("the gateway's registry sync", 30, || cache.exists()).await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = {
            let stop = Arc::clone(&stop);
            let devices = Arc::clone(devices);
            std::thread::spawn(move || {
                let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                let mut seq = 0u64;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    seq += 1;
                    for (k, c) in devices.sensors.iter().skip(1).step_by(2).take(4) {
                        let r = provenance_core::reading::Reading {
                            sensor_id: c.subject_cn.clone(),
                            seq,
                            measured_at_ms: now_ms(),
                            measurements: vec![provenance_core::reading::Measurement::new(
                                "8867-4",
                                provenance_core::reading::Decimal::new(72, 0),
                            )
                            .unwrap()],
                        };
                        let frame = provenance_core::cose::SignedReading::sign(&r, k).unwrap();
                        let _ = sock.send_to(&frame, &listen);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        Self {
            child,
            metrics,
            stop,
            sender,
        }
    }

    /// Stops the frames, waits until the gateway's spool is empty, and reads its counts.
    async fn stop(mut self) -> WardCounts {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = self.sender.join();
        let m = self.metrics.clone();
        let accepted = || {
            crate::http_get::blocking_get_metrics(&m)
                .lines()
                .find_map(|l| l.strip_prefix("gateway_frames_total{outcome=\"accepted\"} "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        wait_until("the real gateway's spool to drain", 120, || {
            crate::metric(&m, "gateway_spooled") == Some(0)
                && accepted().is_some()
                && crate::metric(&m, "gateway_uploaded_total") == accepted()
        })
        .await;
        let counts = WardCounts {
            accepted: accepted().unwrap_or(0),
            uploaded: crate::metric(&m, "gateway_uploaded_total").unwrap_or(0),
            failovers: crate::metric(&m, "gateway_service_failovers_total").unwrap_or(0),
        };
        self.child.kill9();
        counts
    }
}

/// What the drill measured for one fault.
#[derive(Debug, Clone)]
pub struct FaultReport {
    pub fault: String,
    /// The longest time without any acknowledgement after the fault, seconds.
    pub unavailable_s: f64,
    /// Acknowledgements in the fault's window.
    pub acked: usize,
}

/// The drill's result.
#[derive(Debug, Clone)]
pub struct Report {
    pub faults: Vec<FaultReport>,
    pub sent: usize,
    pub acked: usize,
    pub logged: usize,
    pub lost: usize,
    pub duplicates: usize,
    pub rejected: usize,
    pub checkpoints: usize,
    pub checkpoints_proved: usize,
    pub final_size: u64,
    pub rate: f64,
    /// The real gateway-uplink's frames accepted, readings it says were acknowledged, its
    /// readings in the log, and its moves between service URLs.
    pub gateway_accepted: u64,
    pub gateway_uploaded: u64,
    pub gateway_logged: usize,
    pub gateway_failovers: u64,
    /// The same checkpoints proved again from a read node on the standbys (`--read-only`).
    pub read_node_proved: usize,
    pub read_node_hosts: String,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "| fault | seconds without acknowledgements | readings acknowledged in its window |"
        )?;
        writeln!(f, "|---|---:|---:|")?;
        for r in &self.faults {
            writeln!(f, "| {} | {:.2} | {} |", r.fault, r.unavailable_s, r.acked)?;
        }
        writeln!(f)?;
        writeln!(
            f,
            "readings sent {}, acknowledged {}, logged {}, lost {}, duplicates {}, rejected {} \
             (offered {:.0} readings/s); checkpoints seen {}, proved consistent with the last \
             (size {}) {}",
            self.sent,
            self.acked,
            self.logged,
            self.lost,
            self.duplicates,
            self.rejected,
            self.rate,
            self.checkpoints,
            self.final_size,
            self.checkpoints_proved
        )?;
        writeln!(
            f,
            "a real gateway-uplink given both service URLs: {} frames accepted, {} acknowledged, {} in the log, {} moves between the URLs",
            self.gateway_accepted, self.gateway_uploaded, self.gateway_logged, self.gateway_failovers
        )?;
        writeln!(
            f,
            "a read node on the standbys ({}) served the last checkpoint and proved {} of them again",
            self.read_node_hosts, self.read_node_proved
        )
    }
}

/// The drill's settings.
pub struct Drill {
    pub dir: PathBuf,
    pub port_base: u16,
    /// Readings offered per second.
    pub rate: u32,
    /// Sensors (spread over the readings).
    pub sensors: usize,
    /// Seconds of steady load before, between and after faults.
    pub settle_s: u64,
}

#[derive(Default)]
struct LoadState {
    pending: VecDeque<(usize, u64, Vec<u8>)>,
    sent: usize,
    acked: HashMap<(usize, u64), u64>,
    /// When each batch was acknowledged, and how many readings it held.
    ack_times: Vec<(Instant, usize)>,
    conflicts: usize,
    rejected: usize,
    rejections: Vec<String>,
    stop: bool,
}

/// The load: readings produced at a steady rate into a queue; one sender posts them in order
/// to the node in use, moves to the other on an error or a `503`, and resubmits what was not
/// acknowledged.
async fn load(
    state: Arc<Mutex<LoadState>>,
    devices: Arc<Devices>,
    bases: Vec<String>,
    rate: u32,
    token: String,
) {
    let producer = {
        let state = Arc::clone(&state);
        let devices = Arc::clone(&devices);
        tokio::spawn(async move {
            // The even sensors are this load's (bound to gateway 0); the odd ones the real
            // gateway's (gateway 1).
            let sensors = devices.sensors.len() / 2;
            let mut seqs = vec![0u64; devices.sensors.len()];
            let mut made: u64 = 0;
            let start = Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                let due = (start.elapsed().as_secs_f64() * f64::from(rate)) as u64;
                let mut st = state.lock().unwrap();
                if st.stop {
                    return;
                }
                while made < due {
                    let s = 2 * (made % sensors as u64) as usize;
                    seqs[s] += 1;
                    let env = devices.envelope(s, 0, seqs[s], now_ms(), 60 + (made % 40) as i64);
                    st.pending.push_back((s, seqs[s], env));
                    st.sent += 1;
                    made += 1;
                }
            }
        })
    };
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut active = 0usize;
    loop {
        let batch: Vec<(usize, u64, Vec<u8>)> = {
            let st = state.lock().unwrap();
            if st.stop && st.pending.is_empty() {
                break;
            }
            st.pending.iter().take(200).cloned().collect()
        };
        if batch.is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        }
        let body = provenance_core::batch::encode(
            &batch.iter().map(|b| b.2.as_slice()).collect::<Vec<_>>(),
        );
        let resp = http
            .post(format!("{}/v1/ingest", bases[active]))
            .bearer_auth(&token)
            .header("content-type", "application/cbor")
            .body(body)
            .send()
            .await;
        let ok = match resp {
            Ok(r) if r.status().as_u16() == 200 => r.json::<Value>().await.ok(),
            _ => None,
        };
        let Some(v) = ok.filter(|v| {
            v["results"]
                .as_array()
                .is_some_and(|a| a.len() == batch.len())
        }) else {
            active = (active + 1) % bases.len();
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let now = Instant::now();
        let mut st = state.lock().unwrap();
        for ((s, seq, _), r) in batch.iter().zip(v["results"].as_array().unwrap()) {
            match r["status"].as_str() {
                Some("accepted" | "duplicate") => {
                    let idx = r["index"].as_u64().unwrap_or(u64::MAX);
                    if let Some(prev) = st.acked.insert((*s, *seq), idx) {
                        if prev != idx {
                            st.conflicts += 1;
                        }
                    }
                }
                _ => {
                    st.rejected += 1;
                    if st.rejections.len() < 5 {
                        st.rejections.push(r.to_string());
                    }
                }
            }
        }
        for _ in 0..batch.len() {
            st.pending.pop_front();
        }
        st.ack_times.push((now, batch.len()));
    }
    let _ = producer.await;
}

/// How many batches were acknowledged after `t`.
fn acks_after(state: &Mutex<LoadState>, t: Instant) -> usize {
    state
        .lock()
        .unwrap()
        .ack_times
        .iter()
        .filter(|x| x.0 > t)
        .count()
}

/// The longest gap between acknowledgements in `[from, to)` (from the last one before `from`).
fn longest_gap(times: &[(Instant, usize)], from: Instant, to: Instant) -> (f64, usize) {
    let mut last = times
        .iter()
        .rev()
        .find(|t| t.0 < from)
        .map_or(from, |t| t.0);
    let mut gap = Duration::ZERO;
    let mut n = 0;
    for (t, k) in times.iter().filter(|t| t.0 >= from && t.0 < to) {
        gap = gap.max(t.duration_since(last));
        last = *t;
        n += k;
    }
    (gap.as_secs_f64(), n)
}

impl Drill {
    /// Runs the drill and returns its report (the cluster is stopped at the end).
    pub async fn run(&self) -> Report {
        // Members of an earlier drill that was killed before it could stop them hold the ports.
        let parent = self.dir.parent().unwrap_or(Path::new("/"));
        let name = self
            .dir
            .file_name()
            .map_or(String::new(), |n| n.to_string_lossy().to_string());
        let stem = name.trim_end_matches(|c: char| c.is_ascii_digit());
        // A folder named after this process (…-<pid>) is this drill's own; any other is earlier.
        let own = (stem.len() < name.len()).then_some(self.dir.as_path());
        kill_leftovers(&parent.join(stem).display().to_string(), own);
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).unwrap();
        let cluster = Cluster::up(&self.dir.join("cluster"), self.port_base);
        struct Down<'a>(&'a Cluster);
        impl Drop for Down<'_> {
            fn drop(&mut self) {
                self.0.down();
            }
        }
        let _down = Down(&cluster);
        let bin = binary("ledger-service", "ledger-service");
        let key = self.dir.join("log.key");
        let out = Command::new(&bin)
            .args([
                "--origin",
                "ha-drill.example/log",
                "generate-log-key",
                "--out",
            ])
            .arg(&key)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let vkey = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let env: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), cluster.url.clone()),
            ("LEDGER_LOG_KEY_FILE".into(), key.display().to_string()),
            ("LEDGER_ORIGIN".into(), "ha-drill.example/log".into()),
            ("LEDGER_DB_CONNECTIONS".into(), "8".into()),
            ("RUST_LOG".into(), "info,sqlx=warn".into()),
        ];
        let token = |role: &str, extra: &[&str]| {
            let out = Command::new(&bin)
                .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                .env("LEDGER_DATA_DIR", self.dir.join("cli"))
                .args(["create-token", "--role", role, "--name", "ha-drill"])
                .args(extra)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        let admin = token("admin", &[]);
        let mut nodes = vec![
            Node::start(&free_tcp(), &self.dir.join("node-a"), &env),
            Node::start(&free_tcp(), &self.dir.join("node-b"), &env),
        ];
        let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
        let leader = |nodes: &[Node]| nodes.iter().position(Node::ready);
        wait_until("a leading service node", 60, || leader(&nodes).is_some()).await;
        let devices = Arc::new(Devices::new("HA Drill", 2 * self.sensors, 2));
        let lead = leader(&nodes).unwrap();
        devices.enroll_at(&bases[lead], &admin).await;
        let gw = devices.gateways[0].1.subject_cn.clone();
        let gw_token = token("gateway", &["--gateway", &gw]);
        // A real gateway-uplink beside it, given both service URLs, fed over UDP.
        let ward_gw = devices.gateways[1].1.subject_cn.clone();
        let ward = Ward::start(
            &self.dir.join("gateway"),
            &devices,
            &bases,
            &token("gateway", &["--gateway", &ward_gw]),
        )
        .await;

        // Checkpoints as published during the drill, from whichever node answers.
        let seen: Arc<Mutex<BTreeMap<u64, HashSet<String>>>> = Arc::default();
        let stop_poll = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let poller = {
            let seen = Arc::clone(&seen);
            let stop = Arc::clone(&stop_poll);
            let bases = bases.clone();
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    for b in &bases {
                        if let Ok(r) = http.get(format!("{b}/v1/log/checkpoint")).send().await {
                            if r.status().is_success() {
                                if let Ok(t) = r.text().await {
                                    let size =
                                        t.lines().nth(1).and_then(|l| l.parse().ok()).unwrap_or(0);
                                    seen.lock().unwrap().entry(size).or_default().insert(t);
                                }
                            }
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };

        let state: Arc<Mutex<LoadState>> = Arc::default();
        let loader = tokio::spawn(load(
            Arc::clone(&state),
            Arc::clone(&devices),
            bases.clone(),
            self.rate,
            gw_token,
        ));
        let started = Instant::now();
        let settle = Duration::from_secs(self.settle_s);
        tokio::time::sleep(settle).await;
        let acks_since = |t: Instant| acks_after(&state, t);
        let mut windows: Vec<(String, Instant, Instant)> = Vec::new();
        let recover = |what: &'static str, at: Instant| {
            let state = Arc::clone(&state);
            async move {
                wait_until(what, 120, || {
                    acks_after(&state, at + Duration::from_millis(100)) > 20
                })
                .await;
            }
        };

        // 1. The primary database member dies.
        let primary = cluster.primary().expect("a primary");
        let t = Instant::now();
        cluster.kill_member(primary);
        recover("acknowledgements after the primary's loss", t).await;
        tokio::time::sleep(settle).await;
        windows.push((format!("kill -9 of the primary PostgreSQL member (pg{primary}: Patroni, postmaster, backends)"), t, Instant::now()));
        let _ = Cluster::up(&cluster.dir, cluster.port_base); // it rejoins as a standby
        tokio::time::sleep(settle).await;

        // 2. The leading service node dies.
        let lead = leader(&nodes).expect("a leading node");
        let t = Instant::now();
        nodes[lead].kill9();
        recover("acknowledgements after the leading node's loss", t).await;
        tokio::time::sleep(settle).await;
        windows.push((
            format!(
                "kill -9 of the leading ledger-service node ({})",
                bases[lead]
            ),
            t,
            Instant::now(),
        ));
        nodes[lead].restart(); // back as a standby
        tokio::time::sleep(settle).await;

        // 3. etcd's leader dies.
        let el = cluster.etcd_leader().expect("an etcd leader");
        let t = Instant::now();
        cluster.kill_etcd(el);
        tokio::time::sleep(settle.max(Duration::from_secs(6))).await;
        assert!(
            acks_since(t) > 0,
            "no acknowledgement after etcd's leader died"
        );
        windows.push((
            format!("kill -9 of etcd's leader (etcd{el})"),
            t,
            Instant::now(),
        ));
        let _ = Cluster::up(&cluster.dir, cluster.port_base);

        // Drain: every reading sent is acknowledged.
        let ward = ward.stop().await;
        state.lock().unwrap().stop = true;
        tokio::time::timeout(Duration::from_secs(120), loader)
            .await
            .expect("the load drains")
            .unwrap();
        let elapsed = started.elapsed().as_secs_f64();
        let st = std::mem::take(&mut *state.lock().unwrap());
        assert!(st.rejections.is_empty(), "rejected: {:?}", st.rejections);
        let faults = windows
            .iter()
            .map(|(what, from, to)| {
                let (gap, n) = longest_gap(&st.ack_times, *from, *to);
                FaultReport {
                    fault: what.clone(),
                    unavailable_s: gap,
                    acked: n,
                }
            })
            .collect();

        // What is in the log, read from the primary.
        let pool = sqlx::PgPool::connect(&primary_url(&cluster)).await.unwrap();
        let rows: Vec<(i64, String, i64)> =
            sqlx::query_as("SELECT idx, sensor_id, seq FROM readings")
                .fetch_all(&pool)
                .await
                .unwrap();
        let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM entries")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        let by_idx: HashMap<u64, (String, u64)> = rows
            .iter()
            .map(|(i, s, q)| (*i as u64, (s.clone(), *q as u64)))
            .collect();
        let lost = st
            .acked
            .iter()
            .filter(|((s, seq), idx)| {
                by_idx.get(idx) != Some(&(devices.sensors[*s].1.subject_cn.clone(), *seq))
            })
            .count();
        let ours: HashSet<&str> = devices
            .sensors
            .iter()
            .step_by(2)
            .map(|(_, c)| c.subject_cn.as_str())
            .collect();
        let distinct: HashSet<(String, u64)> = by_idx
            .values()
            .filter(|(s, _)| ours.contains(s.as_str()))
            .cloned()
            .collect();
        let all_distinct: HashSet<&(String, u64)> = by_idx.values().collect();
        let ward_logged = all_distinct.len() - distinct.len();
        // Registry entries: 2 issuers, each sensor's enrolment, binding and assignment, 2 gateways.
        let registry = 2 + 3 * devices.sensors.len() + 2;
        let duplicates = st.conflicts
            + (rows.len() - all_distinct.len())
            + (entries as usize).saturating_sub(rows.len() + registry);

        // Every checkpoint seen is consistent with the last one.
        let lead = leader(&nodes)
            .or_else(|| nodes.iter().position(Node::ready))
            .unwrap_or(0);
        let http = reqwest::Client::new();
        let size = entries as u64;
        let mut last = String::new();
        wait_until("the last checkpoint", 30, || {
            let t = ureq_get(&format!("{}/v1/log/checkpoint", bases[lead])).unwrap_or_default();
            let ok = t.lines().nth(1).and_then(|l| l.parse::<u64>().ok()) == Some(size);
            if ok {
                last = t;
            }
            ok
        })
        .await;
        stop_poll.store(true, std::sync::atomic::Ordering::SeqCst);
        let _ = poller.await;
        let verifier = NoteVerifier::from_vkey(&vkey).unwrap();
        let last_cp = Checkpoint::open(&last, &verifier).unwrap();
        let notes: Vec<String> = seen.lock().unwrap().values().flatten().cloned().collect();
        let proved = prove_all(&http, &bases[lead], &notes, &last_cp, &verifier).await;

        // A read node on the standbys serves the same log, every proof again.
        let primary_now = cluster.primary();
        let standbys: Vec<String> = (0..3)
            .filter(|i| Some(*i) != primary_now)
            .map(|i| format!("127.0.0.1:{}", cluster.port_base as usize + 30 + i))
            .collect();
        let mut reader_env = env.clone();
        reader_env.retain(|(k, _)| k != "DATABASE_URL" && k != "LEDGER_LOG_KEY_FILE");
        reader_env.push((
            "DATABASE_URL".into(),
            format!("postgres://postgres@{}/ledger", standbys.join(",")),
        ));
        reader_env.push(("LEDGER_READ_ONLY".into(), "true".into()));
        let reader = Node::start(&free_tcp(), &self.dir.join("reader"), &reader_env);
        wait_until("the read node's copy of the last checkpoint", 60, || {
            ureq_get(&format!("{}/v1/log/checkpoint", reader.base)).as_deref()
                == Some(last.as_str())
        })
        .await;
        let read_proved = prove_all(&http, &reader.base, &notes, &last_cp, &verifier).await;
        let refused = http
            .post(format!("{}/v1/ingest", reader.base))
            .body(Vec::new())
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        assert_eq!(
            refused, 421,
            "a read node refuses ingest: never served there"
        );
        drop(reader);
        drop(nodes);
        Report {
            faults,
            sent: st.sent,
            acked: st.acked.len(),
            logged: distinct.len(),
            lost,
            duplicates,
            rejected: st.rejected,
            checkpoints: notes.len(),
            checkpoints_proved: proved,
            gateway_accepted: ward.accepted,
            gateway_uploaded: ward.uploaded,
            gateway_logged: ward_logged,
            gateway_failovers: ward.failovers,
            read_node_proved: read_proved,
            read_node_hosts: standbys.join(","),
            final_size: last_cp.size,
            rate: st.sent as f64 / elapsed,
        }
    }
}

/// Proves every checkpoint in `notes` consistent with `last` from proofs served at `base`.
async fn prove_all(
    http: &reqwest::Client,
    base: &str,
    notes: &[String],
    last: &Checkpoint,
    verifier: &NoteVerifier,
) -> usize {
    let mut proved = 0;
    for note in notes {
        let cp = Checkpoint::open(note, verifier).expect("a published checkpoint verifies");
        if cp.size == 0 {
            continue;
        }
        let proof: Value = http
            .get(format!(
                "{base}/v1/log/proof/consistency?from={}&to={}",
                cp.size, last.size
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let hashes: Vec<[u8; 32]> = proof["hashes"]
            .as_array()
            .unwrap_or_else(|| panic!("{base}: {proof}"))
            .iter()
            .map(|h| crate::b64(h).try_into().unwrap())
            .collect();
        provenance_core::merkle::verify_consistency(
            cp.size, last.size, &cp.root, &last.root, &hashes,
        )
        .unwrap_or_else(|e| {
            panic!(
                "{base}: the checkpoint of size {} is not consistent with the last: {e:?}",
                cp.size
            )
        });
        proved += 1;
    }
    proved
}

/// The URL of the current primary alone.
fn primary_url(cluster: &Cluster) -> String {
    let p = cluster.primary().expect("a primary");
    format!(
        "postgres://postgres@127.0.0.1:{}/ledger",
        cluster.port_base as usize + 30 + p
    )
}

async fn wait_until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let end = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(
            Instant::now() < end,
            "timed out after {secs} s waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
