//! A `kill -9` of the service during load loses no acknowledged reading: the real binary runs
//! as a child process, is killed with SIGKILL mid-load, restarted on the same storage, and every
//! receipt it gave is checked against the log; every earlier checkpoint stays consistent.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;
use ledger_testkit::both_engines;

use common::now_ms;
use common::{b64, Devices, Engine, Storage};
use ed25519_dalek::SigningKey;
use provenance_core::checkpoint::Checkpoint;
use provenance_core::merkle;
use provenance_core::note::{NoteSigner, NoteVerifier};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

struct Service {
    child: Child,
    base: String,
}

/// The service process never outlives the test, even when the test fails (it would hold the
/// test runner's output pipes open).
impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn command(storage: &Storage, key_file: &std::path::Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ledger-service"));
    c.env("DATABASE_URL", &storage.url)
        .env("LEDGER_LOG_KEY_FILE", key_file)
        .env("LEDGER_CHECKPOINT_MS", "50")
        .env("RUST_LOG", "warn");
    c
}

async fn start(storage: &Storage, key_file: &std::path::Path) -> Service {
    let port = free_port();
    let mut child = command(storage, key_file)
        .env("LEDGER_LISTEN", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..300 {
        if reqwest::get(format!("{base}/readyz"))
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return Service { child, base };
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("service did not become ready");
}

fn token(storage: &Storage, key_file: &std::path::Path, role: &str) -> String {
    let mut cmd = command(storage, key_file);
    cmd.args(["create-token", "--role", role]);
    if role == "gateway" {
        // A relay's token: the test submits for two gateways.
        cmd.args(["--gateway", "*"]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

async fn kill9_loses_nothing(engine: Engine) {
    let storage = Storage::fresh(engine).await;
    let key_file = std::env::temp_dir().join(format!(
        "ledger-crash-key-{}-{:?}",
        std::process::id(),
        engine
    ));
    let signer = NoteSigner::new("crash.example/vitals", SigningKey::from_bytes(&[5; 32])).unwrap();
    std::fs::write(&key_file, signer.to_skey()).unwrap();
    // Kept private, as the service requires of a log key file.
    #[cfg(unix)]
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let vkey = NoteVerifier::from_vkey(&signer.verifier().to_vkey()).unwrap();
    let admin = token(&storage, &key_file, "admin");
    let gateway = token(&storage, &key_file, "gateway");
    let reader = token(&storage, &key_file, "auditor");

    let svc = start(&storage, &key_file).await;
    let client = reqwest::Client::new();
    let dev = Devices::new("Crash Co", 20, 2);
    let issuers = dev.issuer_bodies().map(|b| ("/v1/registry/issuers", b));
    for (path, body) in issuers
        .into_iter()
        .chain(dev.sensors.iter().map(|(_, c)| {
            (
                "/v1/registry/sensors",
                json!({"certificate_pem": c.to_pem()}),
            )
        }))
        .chain(dev.gateways.iter().map(|(_, c)| {
            (
                "/v1/registry/gateways",
                json!({"certificate_pem": c.to_pem()}),
            )
        }))
    {
        let r = client
            .post(format!("{}{path}", svc.base))
            .bearer_auth(&admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let from = now_ms() - 86_400_000;
    for (i, (_, s)) in dev.sensors.iter().enumerate() {
        let g = &dev.gateways[i % 2].1;
        let r = client
            .post(format!("{}/v1/registry/bindings", svc.base))
            .bearer_auth(&admin)
            .json(&json!({"sensor_id": s.subject_cn, "gateway_id": g.subject_cn, "from_ms": from}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let checkpoint_before = client
        .get(format!("{}/v1/log/checkpoint", svc.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    // Load from four clients; record every receipt; kill -9 while requests are in flight.
    let now = now_ms();
    // Client c sends batches c, c + 4, c + 8, … in order, each of sensors 5c..5c+4 only: every
    // sensor's sequence numbers reach the service in increasing order, as from a gateway.
    let batches: Vec<Vec<u8>> = (0..400u64)
        .map(|b| {
            let (group, round) = (b % 4, b / 4);
            let items: Vec<Vec<u8>> = (0..25u64)
                .map(|k| {
                    let s = (group * 5 + k % 5) as usize;
                    dev.envelope(
                        s,
                        s % 2,
                        round * 5 + k / 5 + 1,
                        now - 600_000 + b * 25 + k,
                        70,
                    )
                })
                .collect();
            provenance_core::batch::encode(&items)
        })
        .collect();
    let batches = Arc::new(batches);
    let receipts: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for c in 0..4usize {
        let (client, base, gateway, batches, receipts, next) = (
            client.clone(),
            svc.base.clone(),
            gateway.clone(),
            Arc::clone(&batches),
            Arc::clone(&receipts),
            Arc::clone(&next),
        );
        tasks.push(tokio::spawn(async move {
            for i in (c..batches.len()).step_by(4) {
                next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let body = &batches[i];
                let Ok(r) = client
                    .post(format!("{base}/v1/ingest"))
                    .bearer_auth(&gateway)
                    .header("content-type", "application/cbor")
                    .body(body.clone())
                    .send()
                    .await
                else {
                    break;
                };
                let Ok(v) = r.json::<Value>().await else {
                    break;
                };
                for item in v["results"].as_array().into_iter().flatten() {
                    assert_eq!(item["status"], "accepted", "{item}");
                    receipts.lock().unwrap().push((
                        item["index"].as_u64().unwrap(),
                        item["leaf_hash"].as_str().unwrap().to_string(),
                    ));
                }
            }
        }));
    }
    // Let some batches land, then SIGKILL.
    while receipts.lock().unwrap().len() < 500 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut svc = svc;
    svc.child.kill().unwrap(); // SIGKILL on Unix
    svc.child.wait().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let receipts = receipts.lock().unwrap().clone();
    let sent = next
        .load(std::sync::atomic::Ordering::SeqCst)
        .min(batches.len());
    assert!(sent < batches.len(), "the kill must land mid-load");

    // Restart on the same storage: every acknowledged reading is there, byte for byte.
    let svc = start(&storage, &key_file).await;
    for (index, leaf_hash) in &receipts {
        let e: Value = client
            .get(format!("{}/v1/log/entries/{index}", svc.base))
            .bearer_auth(&reader)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(e["leaf_hash"].as_str().unwrap(), leaf_hash, "entry {index}");
    }
    // The pre-crash checkpoint is consistent with the newest one.
    let cp_old = Checkpoint::open(&checkpoint_before, &vkey).unwrap();
    // Resubmitting everything is idempotent: each batch is accepted or duplicate, never lost.
    for body in batches.iter().take(sent + 4) {
        let r = client
            .post(format!("{}/v1/ingest", svc.base))
            .bearer_auth(&gateway)
            .header("content-type", "application/cbor")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        for item in v["results"].as_array().unwrap() {
            assert!(
                item["status"] == "accepted" || item["status"] == "duplicate",
                "{item}"
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let note = client
        .get(format!("{}/v1/log/checkpoint", svc.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let cp_new = Checkpoint::open(&note, &vkey).unwrap();
    let p: Value = client
        .get(format!(
            "{}/v1/log/proof/consistency?from={}&to={}",
            svc.base, cp_old.size, cp_new.size
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let proof: Vec<merkle::Hash> = p["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| b64(h).try_into().unwrap())
        .collect();
    merkle::verify_consistency(cp_old.size, cp_new.size, &cp_old.root, &cp_new.root, &proof)
        .unwrap();
    let mut svc = svc;
    svc.child.kill().unwrap();
    svc.child.wait().unwrap();
    storage.drop_all().await;
    let _ = std::fs::remove_file(&key_file);
    println!(
        "{engine:?}: {} receipts before kill -9, all present after restart",
        receipts.len()
    );
}
both_engines!(kill9_loses_nothing_both, kill9_loses_nothing);
