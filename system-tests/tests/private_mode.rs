//! Private mode (issue #17) with the real programs: `sensor-sim --profile home` → `gateway-uplink
//! --household` (encrypts for the household's recipients, countersigns the ciphertext) →
//! `ledger-service` (a separate process on SQLite, logging at debug) → `vitals-home` (fetches,
//! decrypts, verifies, aggregates, draws). Then the cloud is searched for what it must not hold:
//! nothing of the plaintext in its database file, its log lines, the gateway's log or an export
//! of the log. And the cloud attacks: a ciphertext altered in storage, a recipient enrolled
//! behind the owner's back, a replayed page — each caught by the app with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use ledger_testkit::{binary, free_tcp, free_udp, metric, now_ms, wait_for, Child};
use provenance_core::audit::trust::Trust;
use provenance_core::feed::HouseholdFeed;
use provenance_core::log_entry::{DecodedBody, LogEntry};
use provenance_core::private::RecipientSecret;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use vitals_home::Home;

const HOUSEHOLD: &str = "HH-0001";
const ROUNDS: u64 = 40;

fn run(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} {args:?}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The forms a byte string could take in a file: raw, hex, base64 at each alignment.
fn forms(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = vec![bytes.to_vec(), hex::encode(bytes).into_bytes()];
    for k in 0..3 {
        let n = (bytes.len() - k) / 3 * 3;
        out.push(B64.encode(&bytes[k..k + n]).into_bytes());
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.len() <= hay.len() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Every file under `dir`, its bytes.
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files(&p));
        } else if let Ok(b) = std::fs::read(&p) {
            out.push((p, b));
        }
    }
    out
}

struct Service {
    _child: Child,
    base: String,
    admin: String,
}

fn start_service(data: &Path, log: &Path) -> Service {
    let bin = binary("ledger-service", "ledger-service");
    let data_dir = data.display().to_string();
    let env = [("LEDGER_DATA_DIR", data_dir.as_str()), ("DATABASE_URL", "")];
    let admin = run(
        &bin,
        &[
            "create-token",
            "--role",
            "admin",
            "--name",
            "owner-test-admin",
        ],
        &env,
    );
    let listen = free_tcp();
    let child = Command::new(&bin)
        .envs(env)
        .env("LEDGER_LISTEN", &listen)
        .env("RUST_LOG", "debug")
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .map(Child)
        .unwrap();
    Service {
        _child: child,
        base: format!("http://{listen}"),
        admin: admin.trim().to_string(),
    }
}

fn http(method: &str, url: &str, token: &str, body: Option<&Value>) -> (u16, Value) {
    let req = ureq::request(method, url).set("authorization", &format!("Bearer {token}"));
    let resp = match body {
        Some(b) => req
            .set("content-type", "application/json")
            .send_string(&b.to_string()),
        None => req.call(),
    };
    let (status, resp) = match resp {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(s, r)) => (s, r),
        Err(e) => panic!("{method} {url}: {e}"),
    };
    let text = resp.into_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_home_reading_travels_encrypted_and_only_the_owner_reads_it() {
    let dir = std::env::temp_dir().join(format!("private-mode-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = |p: &str| dir.join(p).display().to_string();
    let sim = binary("sensor-fw", "sensor-sim");
    let home_bin = binary("vitals-home", "vitals-home");

    // The cloud.
    let svc = start_service(&dir.join("ledger"), &dir.join("service.log"));
    let base = svc.base.clone();
    wait_for("the service", 60, || {
        ureq::get(&format!("{base}/readyz")).call().is_ok()
    })
    .await;
    let admin = svc.admin.clone();
    let post = |path: &str, body: Value| {
        let (s, v) = http("POST", &format!("{base}{path}"), &admin, Some(&body));
        assert_eq!(s, 201, "{path}: {v}");
        v
    };

    // The factory, the fleet, the home's sensor and gateway.
    run(
        &sim,
        &["init-ca", "--name", "Acme Home", "--out", &d("factory")],
        &[],
    );
    run(
        &sim,
        &[
            "provision",
            "--factory",
            &d("factory"),
            "--out",
            &d("sensors"),
            "--id",
            "TH-0001",
        ],
        &[],
    );
    run(
        &sim,
        &["init-ca", "--name", "Home Gateways", "--out", &d("fleet")],
        &[],
    );
    run(
        &sim,
        &[
            "provision",
            "--role",
            "gateway",
            "--factory",
            &d("fleet"),
            "--out",
            &d("gateways"),
            "--id",
            "HG-0001",
        ],
        &[],
    );
    let pem = |p: &str| std::fs::read_to_string(dir.join(p)).unwrap();
    post(
        "/v1/registry/issuers",
        json!({"certificate_pem": pem("factory/ca.pem"), "role": "sensor-manufacturer"}),
    );
    post(
        "/v1/registry/issuers",
        json!({"certificate_pem": pem("fleet/ca.pem"), "role": "gateway-fleet"}),
    );
    post(
        "/v1/registry/gateways",
        json!({"certificate_pem": pem("gateways/HG-0001.pem")}),
    );
    post(
        "/v1/registry/sensors",
        json!({"certificate_pem": pem("sensors/TH-0001.pem")}),
    );
    let from = now_ms() - 3_600_000;
    post(
        "/v1/registry/bindings",
        json!({"sensor_id": "TH-0001", "gateway_id": "HG-0001", "from_ms": from}),
    );

    // The tenants' app: its key never leaves its folder; an admin enrolls the public key.
    let app_dir = d("app");
    let pk = run(
        &home_bin,
        &["--dir", &app_dir, "init", "--household", HOUSEHOLD],
        &[],
    );
    post(
        "/v1/registry/recipients",
        json!({"household": HOUSEHOLD, "name": "tenant-phone", "public_key": pk.trim(), "from_ms": from}),
    );
    post(
        "/v1/registry/household-bindings",
        json!({"gateway_id": "HG-0001", "household": HOUSEHOLD, "from_ms": from}),
    );
    let token = post(
        "/v1/tokens",
        json!({"role": "household", "name": "tenant app", "household": HOUSEHOLD}),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();
    let gw_token = post(
        "/v1/tokens",
        json!({"role": "gateway", "name": "HG-0001", "gateway": "HG-0001"}),
    )["token"]
        .as_str()
        .unwrap()
        .to_string();

    // The gateway, in private mode.
    let listen = free_udp();
    let metrics = free_tcp();
    // The gateway in private mode; its logs at debug (searched for plaintext below).
    let start_gateway = |logs: bool| {
        let out = |name: &str| {
            if logs {
                Stdio::from(std::fs::File::create(dir.join(name)).unwrap())
            } else {
                Stdio::null()
            }
        };
        Command::new(binary("gateway-uplink", "gateway-uplink"))
            .env("GATEWAY_ID", "HG-0001")
            .env("GATEWAY_KEY_FILE", dir.join("gateways/HG-0001.key"))
            .env("GATEWAY_LISTEN", &listen)
            .env("GATEWAY_SERVICE_URL", &base)
            .env("GATEWAY_TOKEN", &gw_token)
            .env("GATEWAY_SPOOL_DIR", dir.join("spool"))
            .env("GATEWAY_METRICS_LISTEN", &metrics)
            .env("GATEWAY_ISSUER_CAS", dir.join("factory/ca.pem"))
            .env("GATEWAY_HOUSEHOLD", HOUSEHOLD)
            .env("RUST_LOG", "debug")
            .stdout(out("gateway.log"))
            .stderr(out("gateway.err"))
            .spawn()
            .map(Child)
            .unwrap()
    };
    let gateway = start_gateway(true);
    wait_for("registry sync", 30, || {
        dir.join("spool")
            .join(gateway_uplink::REGISTRY_CACHE)
            .exists()
            && metric(&metrics, "gateway_alarms_total").is_some()
    })
    .await;
    let out = Command::new(&sim)
        .args([
            "run",
            "--devices",
            &d("sensors"),
            "--gateway",
            &listen,
            "--profile",
            "home",
        ])
        .args(["--period-ms", "20", "--count", &ROUNDS.to_string()])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_for("the upload", 30, || {
        metric(&metrics, "gateway_uploaded_total") == Some(ROUNDS)
    })
    .await;

    // The app: everything decrypts and verifies, against only the log key and the issuers.
    let (_, key) = http("GET", &format!("{base}/v1/log/key"), &admin, None);
    std::fs::write(dir.join("log.vkey"), key["vkey"].as_str().unwrap()).unwrap();
    let fetch = || {
        Command::new(&home_bin)
            .args([
                "--dir",
                &app_dir,
                "fetch",
                "--json",
                "--service",
                &base,
                "--token",
                &token,
            ])
            .args([
                "--log-key",
                &d("log.vkey"),
                "--issuer",
                &d("factory/ca.pem"),
                "--issuer",
                &d("fleet/ca.pem"),
            ])
            .output()
            .unwrap()
    };
    let mut shown = 0;
    for _ in 0..40 {
        let out = fetch();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(v["refused"].as_array().unwrap().is_empty(), "{v}");
        shown += v["shown"].as_u64().unwrap();
        // Its own enrollment is accepted by itself; the gateway's binding is a change to look at.
        assert!(
            v["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w.as_str().unwrap().contains("encrypts for the household")),
            "{v}"
        );
        if shown == ROUNDS {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(
        shown, ROUNDS,
        "every reading reached the app, decrypted and verified"
    );
    let show = run(
        &home_bin,
        &["--dir", &app_dir, "show", "--json", "--svg", &d("room.svg")],
        &[],
    );
    let agg: Value = serde_json::from_str(&show).unwrap();
    assert_eq!(agg["values"], ROUNDS);
    assert!(!agg["hours"].as_array().unwrap().is_empty());
    let svg = std::fs::read_to_string(dir.join("room.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("room temperature of HH-0001"));

    // What the plaintext is: the sensor's signed readings, opened with the app's own key.
    let secret = {
        let raw = std::fs::read_to_string(dir.join("app/recipient.key")).unwrap();
        RecipientSecret::from_bytes(hex::decode(raw.trim()).unwrap().try_into().unwrap())
    };
    let (_, page) = http(
        "GET",
        &format!("{base}/v1/households/{HOUSEHOLD}/feed?limit=500"),
        &token,
        None,
    );
    let page = HouseholdFeed::from_json(&serde_json::to_vec(&page).unwrap()).unwrap();
    let mut needles: Vec<Vec<u8>> = vec![b"60832-3".to_vec()];
    for m in &page.messages {
        let leaf = m.leaf_bytes().unwrap();
        let DecodedBody::Private(env) = LogEntry::from_cbor(&leaf).unwrap().decode_body().unwrap()
        else {
            panic!("a private entry")
        };
        let (plain, sr) = env.open(&secret).unwrap();
        needles.extend(forms(&plain[plain.len() - 64..])); // the sensor's signature
        needles.extend(forms(sr.payload())); // the reading itself
    }
    assert_eq!(page.messages.len() as u64, ROUNDS);

    // The cloud holds none of it: its metrics, database, log lines, the gateway's metrics and
    // log lines, an export of the log.
    let (_, service_metrics) = http("GET", &format!("{base}/metrics"), &admin, None);
    let gateway_metrics = ledger_testkit::http_get::blocking_get_metrics(&metrics);
    for (what, text) in [
        (
            "the service's metrics",
            service_metrics.as_str().unwrap_or_default().to_string(),
        ),
        ("the gateway's metrics", gateway_metrics),
    ] {
        assert!(text.len() > 1000, "{what}: {} bytes", text.len());
        for n in &needles {
            assert!(!contains(text.as_bytes(), n), "{what} hold plaintext");
        }
    }
    drop(gateway);
    let bin = binary("ledger-service", "ledger-service");
    let data_dir = dir.join("ledger").display().to_string();
    run(
        &bin,
        &["export-log", "--out", &d("archive")],
        &[("LEDGER_DATA_DIR", &data_dir), ("DATABASE_URL", "")],
    );
    let mut searched = 0;
    for place in ["ledger", "archive", "spool"] {
        for (path, bytes) in files(&dir.join(place)) {
            searched += bytes.len();
            for n in &needles {
                assert!(
                    !contains(&bytes, n),
                    "{} holds plaintext ({} bytes of it)",
                    path.display(),
                    n.len()
                );
            }
        }
    }
    let mut logged = 0;
    for log in ["service.log", "service.err", "gateway.log", "gateway.err"] {
        let bytes = std::fs::read(dir.join(log)).unwrap();
        logged += bytes.len();
        searched += bytes.len();
        for n in &needles {
            assert!(!contains(&bytes, n), "{log} holds plaintext");
        }
    }
    assert!(
        logged > 10_000,
        "the programs logged {logged} bytes at debug"
    );
    assert!(searched > 100_000, "searched {searched} bytes");
    // ... and what it does hold is what it proves: the archive verifies (private entries: the
    // gateway's signature, its household, the recipients).
    let verify = Command::new(binary("verifier-cli", "ledger-verify"))
        .args([
            "export",
            &d("archive"),
            "--log-key",
            &d("log.vkey"),
            "--issuer",
            &d("factory/ca.pem"),
            "--issuer",
            &d("fleet/ca.pem"),
        ])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    // Attacks. A ciphertext altered in storage: the app refuses it (inclusion) and says why.
    let trust = Trust::pinned(
        key["vkey"].as_str().unwrap(),
        &[&pem("factory/ca.pem"), &pem("fleet/ca.pem")],
        &[],
        0,
        Vec::new(),
    )
    .unwrap();
    let raw_page = |after: Option<u64>| {
        let mut url = format!("{base}/v1/households/{HOUSEHOLD}/feed?limit=500");
        if let Some(a) = after {
            url.push_str(&format!("&after={a}"));
        }
        let (s, v) = http("GET", &url, &token, None);
        assert_eq!(s, 200);
        serde_json::to_vec(&v).unwrap()
    };
    let mut home = Home::open(&dir.join("app")).unwrap();
    // The replay: the cloud serves the same page again.
    let replayed = home.fetch(&trust, |_| Ok(raw_page(None))).unwrap();
    assert_eq!(replayed.shown.len(), 0);
    assert_eq!(replayed.refused.len() as u64, ROUNDS);
    assert!(
        replayed
            .refused
            .iter()
            .all(|(_, why)| why.contains("private.replay") && why.contains("replayed")),
        "{:?}",
        replayed.refused[0]
    );
    // Storage altered: a byte of a message's ciphertext.
    let mut altered: Value = serde_json::from_slice(&raw_page(None)).unwrap();
    let leaf = B64
        .decode(altered["messages"][3]["leaf_data"].as_str().unwrap())
        .unwrap();
    let mut bad = leaf.clone();
    let at = bad.len() - 100;
    bad[at] ^= 1;
    altered["messages"][3]["leaf_data"] = B64.encode(&bad).into();
    let mut state = home.state.clone();
    state.last_index = None;
    state.gateway_seq.clear();
    state.sensor_seq.clear();
    let secret2 = secret.clone();
    let check = provenance_core::audit::home::verify_feed(
        &serde_json::to_vec(&altered).unwrap(),
        &trust,
        &secret2,
        &mut state,
    );
    assert!(check.page.verified);
    let m3 = &check.messages[3];
    assert!(m3.reading.is_none());
    assert_eq!(
        m3.report.failed_steps(),
        vec!["private.inclusion"],
        "{}",
        m3.report.human()
    );
    assert!(check
        .messages
        .iter()
        .enumerate()
        .all(|(i, m)| (i == 3) != m.reading.is_some()));

    // A recipient the cloud enrolled behind the owner's back: the gateway now encrypts to it
    // too; the app warns and shows none of those messages.
    let cloud = RecipientSecret::derive(b"the cloud's own key");
    post(
        "/v1/registry/recipients",
        json!({"household": HOUSEHOLD, "name": "maintenance", "public_key": hex::encode(cloud.public().0), "from_ms": now_ms() - 1000}),
    );
    let gateway = start_gateway(false);
    wait_for("the gateway", 30, || {
        metric(&metrics, "gateway_alarms_total").is_some()
    })
    .await;
    let out = Command::new(&sim)
        .args([
            "run",
            "--devices",
            &d("sensors"),
            "--gateway",
            &listen,
            "--profile",
            "home",
        ])
        .args(["--period-ms", "20", "--count", "5"])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success());
    wait_for("the upload", 30, || {
        metric(&metrics, "gateway_uploaded_total") == Some(5)
    })
    .await;
    // (Refused messages come back on the next fetch: once their recipients are accepted,
    // they are shown.)
    let mut refused = std::collections::BTreeMap::new();
    let mut warnings = Vec::new();
    for _ in 0..40 {
        let f = home.fetch(&trust, |after| Ok(raw_page(after))).unwrap();
        warnings.extend(f.warnings);
        refused.extend(f.refused.into_iter().map(|(i, why)| (i.unwrap(), why)));
        assert!(
            f.shown.is_empty(),
            "a message readable by the cloud's key was shown"
        );
        if refused.len() >= 5 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    assert_eq!(refused.len(), 5, "{refused:?}");
    assert!(
        refused
            .values()
            .all(|why| why.contains("private.recipients")
                && why.contains("maintenance")
                && why.contains("not accepted")),
        "{refused:?}"
    );
    assert!(
        warnings.iter().any(|w| w.contains("recipient maintenance")),
        "{warnings:?}"
    );
    // The cloud's key really can read them: that is what the warning is about.
    let (_, page) = http(
        "GET",
        &format!(
            "{base}/v1/households/{HOUSEHOLD}/feed?limit=500&after={}",
            refused.keys().next().unwrap() - 1
        ),
        &token,
        None,
    );
    let page = HouseholdFeed::from_json(&serde_json::to_vec(&page).unwrap()).unwrap();
    let leaf = page.messages[0].leaf_bytes().unwrap();
    let DecodedBody::Private(env) = LogEntry::from_cbor(&leaf).unwrap().decode_body().unwrap()
    else {
        panic!()
    };
    assert!(env.open(&cloud).is_ok());
    // The owner looks at the change and accepts it: the messages are shown.
    let accepted = home.accept(None).unwrap();
    assert!(!accepted.is_empty());
    let f = home.fetch(&trust, |after| Ok(raw_page(after))).unwrap();
    assert_eq!(f.shown.len(), 5, "{:?}", f.refused);
    assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    // A household token reads only its own household; without one, nothing.
    let (s, _) = http(
        "GET",
        &format!("{base}/v1/households/HH-0002/feed"),
        &token,
        None,
    );
    assert_eq!(s, 403);
    drop(gateway);
    let _ = std::fs::remove_dir_all(&dir);
}
