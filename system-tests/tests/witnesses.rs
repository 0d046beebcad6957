//! Witnesses and monitors with the real service (both engines, real HTTP): checkpoints cosigned
//! by `ledger-witness` instances and published only with a quorum; witnesses down (ingest goes on,
//! publication waits) and back; the split-view drill (two instances of one log that diverge after
//! a common prefix: the witness cosigns the first and refuses the second, a bundle of the second
//! fails `--witness … --quorum 1`, the monitor reports the fork); the monitor following the log,
//! reporting registry changes, resuming, and catching a registry feed or tiles that lie.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;

use common::{now_ms, Devices, Engine, Stopped, TestApp};
use ledger_service::config::{witness_target, Config};
use ledger_witness::Witness;
use provenance_core::bundle::EvidenceBundle;
use provenance_core::note::NoteVerifier;
use provenance_core::witness;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use verifier_cli::findings::{Finding, Severity};
use verifier_cli::monitor::{Monitor, Options};
use verifier_cli::trust::Trust;

/// A witness on a fixed loopback port, which can be stopped and started again on it.
struct TestWitness {
    dir: tempdir::Dir,
    addr: String,
    vkey: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

mod tempdir {
    /// A folder removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl TestWitness {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "witness-{}-{}",
            name.replace('/', "_"),
            rand::random::<u64>()
        ));
        let vkey = ledger_witness::init(&dir, name).unwrap();
        Self {
            dir: tempdir::Dir(dir),
            addr: common::free_tcp(),
            vkey,
            task: None,
        }
    }

    /// `<vkey> <url>`, as the service's `--witness` takes it.
    fn target(&self) -> String {
        format!("{} http://{}", self.vkey, self.addr)
    }

    fn verifier(&self) -> NoteVerifier {
        NoteVerifier::from_vkey(&self.vkey).unwrap()
    }

    async fn start(&mut self, log_vkey: &str) {
        let w = Arc::new(
            Witness::open(
                &self.dir.0,
                vec![NoteVerifier::from_vkey(log_vkey).unwrap()],
            )
            .unwrap(),
        );
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(&self.addr).await {
                Ok(l) => break l,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("binding {}: {e}", self.addr),
            }
        };
        self.task = Some(tokio::spawn(async move {
            let _ = ledger_witness::serve(listener, w).await;
        }));
    }

    async fn stop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    fn evidence(&self) -> usize {
        std::fs::read_dir(self.dir.0.join("evidence"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn with_witnesses(targets: Vec<String>, quorum: usize) -> impl Fn(&mut Config) + Send + Sync {
    move |cfg: &mut Config| {
        cfg.witnesses.witnesses = targets.iter().map(|t| witness_target(t).unwrap()).collect();
        cfg.witnesses.witness_quorum = quorum;
        cfg.witnesses.witness_timeout_ms = 2_000;
    }
}

async fn log_vkey(app: &TestApp) -> String {
    let k: Value = app.get("/v1/log/key", None).await.json().await.unwrap();
    k["vkey"].as_str().unwrap().to_string()
}

/// Waits until the published checkpoint covers `size` with at least `cosigners` cosignatures.
async fn published(app: &TestApp, size: u64, cosigners: u64) -> String {
    for _ in 0..1500 {
        if let Some(cp) = app.shared.latest_checkpoint() {
            if cp.size >= size && cp.cosigners >= cosigners {
                return cp.note.clone();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!(
        "no checkpoint of size {size} with {cosigners} cosignatures; latest {:?}",
        app.shared
            .latest_checkpoint()
            .map(|c| (c.size, c.cosigners))
    );
}

async fn evidence(app: &TestApp, index: u64) -> (u16, Vec<u8>) {
    let r = app
        .get(&format!("/v1/readings/{index}/evidence"), Some(&app.reader))
        .await;
    (r.status().as_u16(), r.bytes().await.unwrap().to_vec())
}

fn trust(vkey: &str, dev: &Devices, witnesses: &[&TestWitness], quorum: usize) -> Trust {
    let mut t = Trust::log_only(NoteVerifier::from_vkey(vkey).unwrap());
    t.issuers = vec![dev.ca.clone(), dev.fleet.clone()];
    t.witnesses = witnesses.iter().map(|w| w.verifier()).collect();
    t.quorum = quorum;
    t
}

async fn ingest(app: &TestApp, dev: &Devices, seqs: std::ops::Range<u64>, hr: i64) -> Vec<u64> {
    let now = now_ms();
    let envs: Vec<Vec<u8>> = seqs
        .map(|seq| dev.envelope(0, 0, seq, now - 60_000 + seq * 100, hr))
        .collect();
    let (status, body) = app.ingest(&envs).await;
    assert_eq!(status, 200, "{body}");
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .collect()
}

async fn cosigned_publication(engine: Engine) {
    let mut ws: Vec<TestWitness> = (1..=3)
        .map(|i| TestWitness::new(&format!("witness.test/w{i}")))
        .collect();
    let targets = ws.iter().map(TestWitness::target).collect();
    // The witnesses need the log's key, the service their addresses: their ports are reserved
    // first, and they start once the service has its key (the service retries meanwhile).
    let app = TestApp::spawn_with(engine, with_witnesses(targets, 2)).await;
    let vkey = log_vkey(&app).await;
    for w in &mut ws {
        w.start(&vkey).await;
    }
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    let idx = ingest(&app, &dev, 0..5, 72).await;
    let note = published(&app, app.shared.committed(), 2).await;
    let refs: Vec<NoteVerifier> = ws.iter().map(TestWitness::verifier).collect();
    let by = witness::cosigned_by(&note, &refs.iter().collect::<Vec<_>>()).unwrap();
    assert!(by.len() >= 2, "{by:?}");
    // The served checkpoint and the evidence bundle carry the cosignatures.
    let served = app
        .get("/v1/log/checkpoint", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        witness::cosigned_by(&served, &refs.iter().collect::<Vec<_>>())
            .unwrap()
            .len()
            >= 2
    );
    let (st, body) = evidence(&app, idx[0]).await;
    assert_eq!(st, 200);
    let all: Vec<&TestWitness> = ws.iter().collect();
    let r = verifier_cli::bundle::verify_bundle(&body, "bundle", &trust(&vkey, &dev, &all, 2));
    assert!(r.verified, "{}", r.human());

    // Two witnesses down: ingest is acknowledged as before; no checkpoint is published beyond
    // what a quorum cosigned, so evidence for the new reading waits.
    ws[0].stop().await;
    ws[1].stop().await;
    let before = app.shared.latest_checkpoint().unwrap().size;
    let late = ingest(&app, &dev, 5..6, 73).await;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    assert_eq!(app.shared.latest_checkpoint().unwrap().size, before);
    assert!(app.shared.committed() > before);
    let (st, _) = evidence(&app, late[0]).await;
    assert!(
        st == 409 || st == 503,
        "evidence before a published checkpoint: {st}"
    );
    // One back: the quorum is there again and publication catches up.
    ws[0].start(&vkey).await;
    published(&app, app.shared.committed(), 2).await;
    let (st, _) = evidence(&app, late[0]).await;
    assert_eq!(st, 200);
    let m = app
        .get("/metrics", Some(&app.admin))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(
            "ledger_witness_requests_total{witness=\"witness.test/w3\",outcome=\"cosigned\"}"
        ),
        "{m}"
    );

    // A restart publishes the latest checkpoint a quorum cosigned, from storage.
    let size = app.shared.latest_checkpoint().unwrap().size;
    let app = app.restart().await;
    let cp = app.shared.latest_checkpoint().unwrap();
    assert!(
        cp.size >= size && cp.cosigners >= 2,
        "{} {}",
        cp.size,
        cp.cosigners
    );
    // A log archive is cut at a cosigned checkpoint and carries its cosignatures.
    let dir = std::env::temp_dir().join(format!("witness-archive-{}", rand::random::<u64>()));
    let m = ledger_service::write_cosigned_log_archive(app.shared.db(), &dir, 0, 2)
        .await
        .unwrap();
    assert!(
        witness::cosigned_by(&m.checkpoint, &refs.iter().collect::<Vec<_>>())
            .unwrap()
            .len()
            >= 2
    );
    let all: Vec<&TestWitness> = ws.iter().collect();
    let r = verifier_cli::export::verify_export(&dir, &trust(&vkey, &dev, &all, 2), false);
    assert!(r.verified, "{}", r.human());
    let _ = std::fs::remove_dir_all(&dir);
    for w in &mut ws {
        w.stop().await;
    }
    app.finish().await;
}

#[tokio::test]
async fn cosigned_publication_sqlite() {
    cosigned_publication(Engine::Sqlite).await;
}

#[tokio::test]
async fn cosigned_publication_postgres() {
    if Engine::Postgres.required("cosigned_publication_postgres") {
        cosigned_publication(Engine::Postgres).await;
    }
}

/// A witness that accepts connections and never answers: the service's request times out, it
/// backs off and retries, and the other witness's cosignature is enough for a quorum of 1.
#[tokio::test]
async fn a_witness_that_hangs_times_out() {
    let hang = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hang_addr = hang.local_addr().unwrap();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((sock, _)) = hang.accept().await {
            open.push(sock); // never read, never answered
        }
    });
    let hanging_key = provenance_core::note::Cosigner::new(
        "witness.test/hangs",
        ed25519_dalek::SigningKey::from_bytes(&[8; 32]),
    )
    .unwrap()
    .verifier()
    .to_vkey();
    let mut good = TestWitness::new("witness.test/good");
    let targets = vec![format!("{hanging_key} http://{hang_addr}"), good.target()];
    let app = TestApp::spawn_with(Engine::Sqlite, move |cfg: &mut Config| {
        with_witnesses(targets.clone(), 1)(cfg);
        cfg.witnesses.witness_timeout_ms = 300;
    })
    .await;
    good.start(&log_vkey(&app).await).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    let t = std::time::Instant::now();
    ingest(&app, &dev, 0..2, 70).await;
    let note = published(&app, app.shared.committed(), 1).await;
    assert!(
        t.elapsed().as_secs() < 5,
        "the hanging witness held publication up"
    );
    assert_eq!(
        witness::cosigned_by(&note, &[&good.verifier()]).unwrap(),
        vec!["witness.test/good".to_string()]
    );
    let start = std::time::Instant::now();
    loop {
        let m = app
            .get("/metrics", Some(&app.admin))
            .await
            .text()
            .await
            .unwrap();
        if m.contains("witness=\"witness.test/hangs\",outcome=\"error\"") {
            break;
        }
        assert!(start.elapsed().as_secs() < 10, "no timeout counted: {m}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    held.abort();
    good.stop().await;
    app.finish().await;
}

fn monitor(url: &str, state: &Path, vkey: &str) -> Monitor {
    Monitor::open(
        Options {
            url: url.into(),
            state: state.to_path_buf(),
            ..Options::default()
        },
        Trust::log_only(NoteVerifier::from_vkey(vkey).unwrap()),
    )
    .unwrap()
}

fn poll(m: &mut Monitor) -> Vec<Finding> {
    tokio::task::block_in_place(|| m.poll()).unwrap()
}

async fn split_view(engine: Engine) {
    let mut w = TestWitness::new("witness.hospital.test/archive");
    let a = TestApp::spawn_with(engine, with_witnesses(vec![w.target()], 1)).await;
    let vkey = log_vkey(&a).await;
    w.start(&vkey).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&a).await;
    ingest(&a, &dev, 0..5, 70).await;
    let prefix = a.shared.committed();
    published(&a, prefix, 1).await;
    // The operator copies the database and runs a second instance of the same log (same key)
    // that publishes whatever the witnesses say (no quorum).
    let stopped: Stopped = a.stop().await;
    let copy = stopped.copy_storage().await;
    let b = stopped
        .start_on(copy, with_witnesses(vec![w.target()], 0))
        .await;
    let a = stopped.start_again().await;
    // The two diverge after the common prefix.
    // The witness must see the first view first: `b` publishes without a quorum, so were its
    // checkpoint to reach the witness before `a`'s, the witness would hold `b`'s view and `a`
    // would never be cosigned.
    let in_a = ingest(&a, &dev, 5..10, 70).await;
    published(&a, a.shared.committed(), 1).await;
    let in_b = ingest(&b, &dev, 5..11, 150).await;
    b.wait_for_checkpoint(b.shared.committed()).await;
    // The witness cosigned the first view and refuses the second (keeping it as evidence).
    let start = std::time::Instant::now();
    while w.evidence() == 0 {
        assert!(
            start.elapsed().as_secs() < 20,
            "the witness kept no evidence"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The service counts the refusal once it has stored its security alert: wait for both.
    let start = std::time::Instant::now();
    loop {
        let m = b
            .get("/metrics", Some(&b.admin))
            .await
            .text()
            .await
            .unwrap();
        if m.contains("outcome=\"inconsistent\"") {
            break;
        }
        assert!(start.elapsed().as_secs() < 20, "{m}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // ... and raises the security alert `split_view` (one per witness and hour), which it
    // stores after counting the outcome: wait for it.
    let start = std::time::Instant::now();
    let alerts = loop {
        let alerts: Value = b
            .get("/v1/security-alerts?kind=split_view", Some(&b.admin))
            .await
            .json()
            .await
            .unwrap();
        if !alerts["alerts"].as_array().unwrap().is_empty() || start.elapsed().as_secs() > 10 {
            break alerts;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let items = alerts["alerts"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{alerts}");
    assert_eq!(items[0]["subject"], "witness.hospital.test/archive");
    // A bundle of the second view fails a verifier that wants the witness; one of the first
    // passes.
    let wit = [&w];
    let (st, body) = evidence(&b, in_b[0]).await;
    assert_eq!(st, 200);
    let r = verifier_cli::bundle::verify_bundle(&body, "b", &trust(&vkey, &dev, &wit, 1));
    assert!(!r.verified);
    assert_eq!(
        r.failed_steps(),
        vec!["checkpoint.witnesses"],
        "{}",
        r.human()
    );
    let (st, body) = evidence(&a, in_a[0]).await;
    assert_eq!(st, 200);
    let r = verifier_cli::bundle::verify_bundle(&body, "a", &trust(&vkey, &dev, &wit, 1));
    assert!(r.verified, "{}", r.human());
    EvidenceBundle::from_json(&body).unwrap();
    // The monitor follows the first view, then is shown the second: a fork.
    let state = std::env::temp_dir().join(format!("monitor-split-{}.json", rand::random::<u64>()));
    let mut mon = monitor(&a.base, &state, &vkey);
    let findings = poll(&mut mon);
    assert!(
        findings.iter().all(|f| f.severity != Severity::Alert),
        "{findings:?}"
    );
    let mut mon = monitor(&b.base, &state, &vkey);
    let findings = poll(&mut mon);
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0].severity, Severity::Alert);
    assert!(
        ["fork", "inconsistent"].contains(&findings[0].kind.as_str()),
        "{findings:?}"
    );
    assert!(findings[0].checkpoint.is_some() && findings[0].kept_checkpoint.is_some());
    // It kept the first view: shown the first again, nothing is wrong.
    let mut mon = monitor(&a.base, &state, &vkey);
    assert!(poll(&mut mon).iter().all(|f| f.severity != Severity::Alert));
    let _ = std::fs::remove_file(&state);
    w.stop().await;
    b.finish().await;
    a.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_view_drill_sqlite() {
    split_view(Engine::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_view_drill_postgres() {
    if Engine::Postgres.required("split_view_drill_postgres") {
        split_view(Engine::Postgres).await;
    }
}

/// Runs `ledger-verify monitor --once --json` and returns (exit code, findings).
fn run_monitor(args: &[&str]) -> (i32, Vec<Value>) {
    let exe = common::binary("verifier-cli", "ledger-verify");
    let out = std::process::Command::new(exe)
        .args(["--json", "monitor", "--once"])
        .args(args)
        .output()
        .unwrap();
    let findings = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code().unwrap(), findings)
}

fn kinds(findings: &[Value]) -> Vec<String> {
    findings
        .iter()
        .map(|f| f["kind"].as_str().unwrap_or("?").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_reports_registry_changes_and_resumes() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("Acme Sensors", 2, 1);
    dev.enroll(&app).await;
    ingest(&app, &dev, 0..3, 70).await;
    app.wait_for_checkpoint(app.shared.committed()).await;
    let vkey = log_vkey(&app).await;
    let dir = std::env::temp_dir().join(format!("monitor-{}", rand::random::<u64>()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = dir.join("state.json");
    let state_s = state.to_str().unwrap();
    let hook_out = dir.join("hook.jsonl");
    let hook = format!(
        "cat >> {}; echo >> {}",
        hook_out.display(),
        hook_out.display()
    );
    let (hook_url, deliveries) = webhook_receiver().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    // Everything: issuers, devices, bindings and assignments.
    let (code, f) = tokio::task::block_in_place(|| {
        run_monitor(&[
            "--url",
            &app.base,
            "--state",
            state_s,
            "--log-key",
            &vkey,
            "--exec",
            &hook,
            "--webhook",
            &hook_url,
            "--webhook-secret",
            secret,
        ])
    });
    assert_eq!(code, 0, "{f:?}");
    let k = kinds(&f);
    for want in [
        "issuer_enrolled",
        "device_enrolled",
        "binding",
        "assignment",
    ] {
        assert!(k.contains(&want.to_string()), "{k:?}");
    }
    assert_eq!(k.iter().filter(|k| *k == "issuer_enrolled").count(), 2);
    assert_eq!(k.iter().filter(|k| *k == "device_enrolled").count(), 3);
    let hooked = std::fs::read_to_string(&hook_out).unwrap();
    assert_eq!(
        hooked.lines().filter(|l| !l.is_empty()).count(),
        f.len(),
        "one command run per finding"
    );
    // One Standard Webhook per finding, signed: checked by our signer and by standardwebhooks.
    let got = deliveries.lock().unwrap().clone();
    assert_eq!(got.len(), f.len());
    for (headers, body) in &got {
        let want = provenance_core::webhook::sign(
            secret,
            &headers["webhook-id"],
            headers["webhook-timestamp"].parse().unwrap(),
            body,
        )
        .unwrap();
        assert_eq!(headers["webhook-signature"], want);
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["type"], "monitor.finding");
    }
    if let Some(python) = common::interop_python("the standardwebhooks check of the monitor") {
        let input: Vec<Value> = got
            .iter()
            .map(|(h, b)| json!({"secrets": [secret], "headers": h, "body": b}))
            .collect();
        let mut child = std::process::Command::new(python)
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../ledger-service/interop/verify_webhooks.py"
            ))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        let input = serde_json::to_string(&input).unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Resumed: nothing new, nothing reported.
    let (code, f) = tokio::task::block_in_place(|| {
        run_monitor(&["--url", &app.base, "--state", state_s, "--log-key", &vkey])
    });
    assert_eq!((code, f.len()), (0, 0), "{f:?}");

    // A key change of a watched device, not announced: an alert (exit 1) — but not for a
    // monitor watching another device. Announced with --expect-key: reported, no alert.
    let now = now_ms();
    let new_key = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
    let cert = dev.sensor_cert("SN-0000", &new_key, 4242);
    let r = app
        .post_json(
            "/v1/registry/rotations",
            Some(&app.admin),
            &json!({"device_id": "SN-0000", "certificate_pem": cert.to_pem(), "from_ms": now}),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.wait_for_checkpoint(app.shared.committed()).await;
    let other = dir.join("other.json");
    std::fs::copy(&state, &other).unwrap();
    let expected = dir.join("expected.json");
    std::fs::copy(&state, &expected).unwrap();
    let (code, f) = tokio::task::block_in_place(|| {
        run_monitor(&[
            "--url",
            &app.base,
            "--state",
            state_s,
            "--log-key",
            &vkey,
            "--watch",
            "SN-0000",
        ])
    });
    assert_eq!(code, 1, "{f:?}");
    assert_eq!(kinds(&f), vec!["unexpected_key_change"]);
    let (code, f) = tokio::task::block_in_place(|| {
        run_monitor(&[
            "--url",
            &app.base,
            "--state",
            other.to_str().unwrap(),
            "--log-key",
            &vkey,
            "--watch",
            "SN-0001",
        ])
    });
    assert_eq!((code, f.len()), (0, 0), "{f:?}");
    let kid = provenance_core::keys::KeyId::of(&new_key.verifying_key()).to_hex();
    let (code, f) = tokio::task::block_in_place(|| {
        run_monitor(&[
            "--url",
            &app.base,
            "--state",
            expected.to_str().unwrap(),
            "--log-key",
            &vkey,
            "--watch",
            "SN-0000",
            "--expect-key",
            &format!("SN-0000={kid}"),
        ])
    });
    assert_eq!(code, 0, "{f:?}");
    assert_eq!(kinds(&f), vec!["rotation"]);

    // Usage and network errors: exit 2.
    let (code, _) = tokio::task::block_in_place(|| {
        run_monitor(&[
            "--url",
            "http://127.0.0.1:9",
            "--state",
            dir.join("x.json").to_str().unwrap(),
            "--log-key",
            &vkey,
        ])
    });
    assert_eq!(code, 2);
    let _ = std::fs::remove_dir_all(&dir);
    app.finish().await;
}

type Deliveries = Arc<std::sync::Mutex<Vec<(std::collections::HashMap<String, String>, String)>>>;

/// A webhook receiver on loopback that records each request's headers and body and answers 204.
async fn webhook_receiver() -> (String, Deliveries) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Deliveries = Arc::default();
    let keep = Arc::clone(&got);
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let (headers, body) = loop {
                let n = sock.read(&mut chunk).await.unwrap_or(0);
                if n == 0 {
                    break (None, String::new());
                }
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).to_string();
                let Some((head, body)) = text.split_once("\r\n\r\n") else {
                    continue;
                };
                let headers: std::collections::HashMap<String, String> = head
                    .lines()
                    .skip(1)
                    .filter_map(|l| l.split_once(": "))
                    .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
                    .collect();
                let len: usize = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if body.len() >= len {
                    break (Some(headers), body[..len].to_string());
                }
            };
            if let Some(h) = headers {
                keep.lock().unwrap().push((h, body));
            }
            let _ = sock
                .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    (url, got)
}

/// A proxy in front of the service that lies in one way.
#[derive(Clone)]
enum Lie {
    /// Leaves the last registry entry out of the public feed.
    DropRegistryEntry,
    /// Changes one leaf hash in the level-0 tiles.
    AlterTile,
    /// Serves this checkpoint instead of the latest (one the log key holder signed).
    Checkpoint(String),
    /// Leaves the last carried registry event out of a shard's feed.
    DropCarried,
}

async fn lying_proxy(upstream: String, lie: Lie) -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let client = reqwest::Client::new();
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let upstream = upstream.clone();
            let client = client.clone();
            let lie = lie.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0u8; 8192];
                let n = sock.read(&mut buf).await.unwrap_or(0);
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let path = req.split(' ').nth(1).unwrap_or("/").to_string();
                let resp = client
                    .get(format!("{upstream}{path}"))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let mut body = resp.bytes().await.unwrap().to_vec();
                match &lie {
                    Lie::Checkpoint(note) if path == "/v1/log/checkpoint" => {
                        body = note.clone().into_bytes();
                    }
                    Lie::DropRegistryEntry if path.starts_with("/v1/log/registry-entries") => {
                        let mut v: Value = serde_json::from_slice(&body).unwrap();
                        v["entries"].as_array_mut().unwrap().pop();
                        body = serde_json::to_vec(&v).unwrap();
                    }
                    Lie::DropCarried if path.starts_with("/v1/log/registry-entries") => {
                        use base64::Engine as _;
                        let mut v: Value = serde_json::from_slice(&body).unwrap();
                        let entries = v["entries"].as_array_mut().unwrap();
                        let carried = |e: &Value| {
                            let leaf = base64::engine::general_purpose::STANDARD
                                .decode(e["leaf_data"].as_str().unwrap())
                                .unwrap();
                            provenance_core::log_entry::LogEntry::from_cbor(&leaf)
                                .unwrap()
                                .kind
                                == provenance_core::log_entry::EntryKind::Carried
                        };
                        if let Some(last) = entries.iter().rposition(carried) {
                            entries.remove(last);
                        }
                        body = serde_json::to_vec(&v).unwrap();
                    }
                    Lie::AlterTile if path.starts_with("/tile/0/") && !body.is_empty() => {
                        body[0] ^= 1;
                    }
                    _ => {}
                }
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
            });
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_catches_a_lying_feed() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    ingest(&app, &dev, 0..3, 70).await;
    app.wait_for_checkpoint(app.shared.committed()).await;
    let vkey = log_vkey(&app).await;
    for (lie, want) in [
        (Lie::DropRegistryEntry, "registry_incomplete"),
        (Lie::AlterTile, "inconsistent"),
    ] {
        let (url, task) = lying_proxy(app.base.clone(), lie).await;
        let state: PathBuf =
            std::env::temp_dir().join(format!("monitor-lie-{}.json", rand::random::<u64>()));
        let mut mon = monitor(&url, &state, &vkey);
        let f = poll(&mut mon);
        assert!(
            f.iter()
                .any(|f| f.kind == want && f.severity == Severity::Alert),
            "{want}: {f:?}"
        );
        // Nothing was kept: the honest service, followed next, gives no alert.
        assert!(!state.exists());
        let mut mon = monitor(&app.base, &state, &vkey);
        assert!(poll(&mut mon).iter().all(|f| f.severity != Severity::Alert));
        let _ = std::fs::remove_file(&state);
        task.abort();
    }
    app.finish().await;
}

/// The log key holder re-signs a checkpoint with the same size and root but another registry
/// commitment (say, one without a revocation). Witnesses cosign trees, not extension lines, and
/// a root comparison sees nothing: the monitor and the verifier's kept-checkpoint check must
/// compare the whole checkpoint, and a checkpoint older than the kept one must commit to the
/// registry the monitor replayed up to its size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resigned_registry_commitment_is_a_fork() {
    use provenance_core::checkpoint::Checkpoint;
    use provenance_core::note::NoteSigner;
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    ingest(&app, &dev, 0..3, 70).await;
    let first = app.wait_for_checkpoint(app.shared.committed()).await;
    let vkey = log_vkey(&app).await;
    let key = NoteVerifier::from_vkey(&vkey).unwrap();
    let signer = NoteSigner::from_skey(&app.log_skey).unwrap();
    let forge = |note: &str| {
        let mut cp = Checkpoint::open(note, &key).unwrap();
        let (count, root) =
            provenance_core::registry_state::parse_registry_extension(&cp.extensions).unwrap();
        cp.extensions = vec![provenance_core::registry_state::registry_extension(
            count - 1,
            &root,
        )];
        cp.sign(&signer).unwrap()
    };
    // The verifier, holding the honest checkpoint: the forged one of the same size is a fork.
    let mut trust = Trust::log_only(key.clone());
    trust.known_checkpoints = vec![first.clone()];
    let mut report = verifier_cli::report::Report::new("forged");
    trust.check_checkpoint(&forge(&first), &mut report).unwrap();
    assert_eq!(
        report.failed_steps(),
        vec!["checkpoint.fork"],
        "{}",
        report.human()
    );
    // The monitor, same size: a fork.
    let state: PathBuf =
        std::env::temp_dir().join(format!("monitor-resign-{}.json", rand::random::<u64>()));
    let mut mon = monitor(&app.base, &state, &vkey);
    assert!(poll(&mut mon).iter().all(|f| f.severity != Severity::Alert));
    let (url, task) = lying_proxy(app.base.clone(), Lie::Checkpoint(forge(&first))).await;
    let f = poll(&mut monitor(&url, &state, &vkey));
    assert!(
        f.iter()
            .any(|f| f.kind == "fork" && f.severity == Severity::Alert),
        "{f:?}"
    );
    task.abort();
    // The log grows; the monitor keeps the larger checkpoint. Shown the forged older one, it
    // must not take it for a merely stale checkpoint.
    ingest(&app, &dev, 3..6, 70).await;
    app.wait_for_checkpoint(app.shared.committed()).await;
    assert!(poll(&mut monitor(&app.base, &state, &vkey))
        .iter()
        .all(|f| f.severity != Severity::Alert));
    let (url, task) = lying_proxy(app.base.clone(), Lie::Checkpoint(forge(&first))).await;
    let f = poll(&mut monitor(&url, &state, &vkey));
    assert!(f.iter().any(|f| f.severity == Severity::Alert), "{f:?}");
    // The honest older checkpoint is only stale.
    task.abort();
    let (url, task) = lying_proxy(app.base.clone(), Lie::Checkpoint(first.clone())).await;
    let f = poll(&mut monitor(&url, &state, &vkey));
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(
        (f[0].kind.as_str(), f[0].severity),
        ("stale_checkpoint", Severity::Warning)
    );
    task.abort();
    let _ = std::fs::remove_file(&state);
    app.finish().await;
}

/// Time-sharded logs (issue #18): the witness follows the log's shards (each a log of its own
/// under the log's key), every shard's final checkpoint is cosigned when it closes, so a
/// closed shard's evidence verifies with a witness quorum; a restarted witness loads the
/// shards' state and goes on cosigning the new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shard_is_cosigned_to_its_end() {
    let mut w = TestWitness::new("witness.test/shards");
    let witnessed = with_witnesses(vec![w.target()], 1);
    let app = TestApp::spawn_with(Engine::preferred(), move |c| {
        witnessed(c);
        c.shard_period = Some(provenance_core::shard::Period::Seconds(3));
        c.shard_grace_ms = 2_000;
    })
    .await;
    let vkey = log_vkey(&app).await;
    w.start(&vkey).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    let now = now_ms();
    let envs: Vec<Vec<u8>> = (1..=3)
        .map(|seq| dev.envelope(0, 0, seq, now - 500 + seq, 72))
        .collect();
    let (status, body) = app.ingest(&envs[..2]).await;
    assert_eq!(status, 200, "{body}");
    // Published once cosigned (sizes are the shard's own: its base plus size is the ledger's).
    let committed = app.shared.committed();
    for _ in 0..300 {
        let covered = app.shared.latest_checkpoint().is_some_and(|c| {
            c.cosigners >= 1 && app.shared.shard(c.shard).unwrap().base + c.size >= committed
        });
        if covered {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The witness goes down; a reading is logged; the shard closes meanwhile. Its final
    // checkpoint (never published as the latest: the next shard opens at once) is owed.
    w.stop().await;
    let (status, body) = app.ingest(&envs[2..]).await;
    assert_eq!(status, 200, "{body}");
    let idx = body["results"][0]["index"].as_u64().unwrap();
    let shard_of = |shards: &Value| {
        shards["shards"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|s| s["base"].as_u64().unwrap() <= idx)
            .unwrap()
            .clone()
    };
    for _ in 0..300 {
        let s: Value = app.get("/v1/log/shards", None).await.json().await.unwrap();
        if shard_of(&s)["closed"] == true {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Back: the witness cosigns the closed shard's final checkpoint.
    w.start(&vkey).await;
    let refs = [w.verifier()];
    let refs: Vec<&NoteVerifier> = refs.iter().collect();
    let mut cosigned_final = None;
    for _ in 0..400 {
        let s: Value = app.get("/v1/log/shards", None).await.json().await.unwrap();
        let shard = shard_of(&s);
        if shard["closed"] == true {
            let n = shard["number"].as_u64().unwrap();
            let note = app
                .get(&format!("/v1/log/shards/{n}/checkpoint"), None)
                .await
                .text()
                .await
                .unwrap();
            if !witness::cosigned_by(&note, &refs).unwrap().is_empty() {
                cosigned_final = Some((n, note));
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (n, note) = cosigned_final.expect("the closed shard's final checkpoint cosigned");
    assert!(
        note.contains(&format!(
            "\n{}\n",
            app.shared.shard(n as u32).unwrap().final_size.unwrap()
        )),
        "{note}"
    );
    let (st, body) = evidence(&app, idx).await;
    assert_eq!(st, 200);
    let r =
        verifier_cli::bundle::verify_bundle(&body, "closed shard", &trust(&vkey, &dev, &[&w], 1));
    assert!(r.verified, "{}", r.human());
    assert!(
        r.checks
            .iter()
            .any(|c| c.step == "checkpoint.witnesses" && c.ok),
        "{}",
        r.human()
    );

    // A restarted witness opens the shards' state and cosigns the next shards' checkpoints
    // (with a quorum of 1, a checkpoint is published only once cosigned).
    w.stop().await;
    let open_at_restart = app.shared.open_shard().number;
    w.start(&vkey).await;
    for _ in 0..300 {
        if app
            .shared
            .latest_checkpoint()
            .is_some_and(|c| c.shard > open_at_restart)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let cp = app.shared.latest_checkpoint().unwrap();
    assert!(
        cp.shard > open_at_restart,
        "a shard opened after the witness's restart is cosigned and published: latest {:?}",
        (cp.shard, cp.size, cp.cosigners)
    );
    assert_eq!(witness::cosigned_by(&cp.note, &refs).unwrap().len(), 1);
    w.stop().await;
    app.finish().await;
}

/// Time-sharded logs (issue #18): the monitor follows the log shard by shard — each closed
/// shard to its final checkpoint, each next one from its start, which must commit to that
/// final checkpoint and carry exactly the registry replayed so far — reporting registry
/// changes and no alert across roll-overs, resuming from its state; a feed that leaves a
/// carried event out is caught.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_follows_a_sharded_log() {
    let app = TestApp::spawn_with(Engine::preferred(), |c| {
        c.shard_period = Some(provenance_core::shard::Period::Seconds(3));
        c.shard_grace_ms = 2_000;
    })
    .await;
    let vkey = log_vkey(&app).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    let shards = |app: &TestApp| app.shared.shards().len();
    let wait_roll = |app: &TestApp, n: usize| {
        let shared = std::sync::Arc::clone(&app.shared);
        async move {
            for _ in 0..200 {
                if shared.shards().len() >= n {
                    // and its first checkpoint published
                    if shared
                        .latest_checkpoint()
                        .is_some_and(|c| c.shard as usize + 1 >= n)
                    {
                        return;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("no shard {n}");
        }
    };
    wait_roll(&app, shards(&app) + 1).await;
    let state: PathBuf =
        std::env::temp_dir().join(format!("monitor-shards-{}.json", rand::random::<u64>()));
    let mut mon = monitor(&app.base, &state, &vkey);
    let alerts = |f: &[Finding]| {
        f.iter()
            .filter(|f| f.severity == Severity::Alert)
            .map(|f| format!("{}: {}", f.kind, f.detail))
            .collect::<Vec<_>>()
    };
    let f = poll(&mut mon);
    assert!(alerts(&f).is_empty(), "{f:?}");
    assert!(
        f.iter()
            .any(|f| f.kind == "device_enrolled" && f.subject == "SN-0000"),
        "{f:?}"
    );
    // A registry change, then roll-overs: followed across them, reported once.
    let r = app
        .post_json(
            "/v1/registry/assignments",
            Some(&app.admin),
            &json!({"sensor_id": "SN-0000", "pseudonym": "patient-shards", "from_ms": now_ms()}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 201, "{:?}", r.text().await);
    wait_roll(&app, shards(&app) + 2).await;
    let f = poll(&mut mon);
    assert!(alerts(&f).is_empty(), "{f:?}");
    assert_eq!(
        f.iter()
            .filter(|f| f.detail.contains("patient-shards"))
            .count(),
        1,
        "{f:?}"
    );
    // Resumed from its state, after another roll-over.
    drop(mon);
    wait_roll(&app, shards(&app) + 1).await;
    let mut mon = monitor(&app.base, &state, &vkey);
    let f = poll(&mut mon);
    assert!(alerts(&f).is_empty(), "{f:?}");
    assert!(
        f.iter().all(|f| !f.detail.contains("patient-shards")),
        "{f:?}"
    );

    // A fresh monitor behind a feed that leaves a carried event out.
    let (url, task) = lying_proxy(app.base.clone(), Lie::DropCarried).await;
    let lied: PathBuf =
        std::env::temp_dir().join(format!("monitor-shards-lie-{}.json", rand::random::<u64>()));
    let mut liar = monitor(&url, &lied, &vkey);
    let f = poll(&mut liar);
    assert!(
        f.iter()
            .any(|f| f.kind == "registry_incomplete" && f.severity == Severity::Alert),
        "{f:?}"
    );
    task.abort();
    let _ = std::fs::remove_file(&state);
    let _ = std::fs::remove_file(&lied);
    app.finish().await;
}
