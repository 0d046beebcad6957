//! The whole device chain with the real programs: `sensor-sim` (factory and simulated sensors
//! with a tachycardia episode and duplicate, corrupt and reboot faults) → `gateway-uplink` (a
//! separate process) → the ledger service on real PostgreSQL. Everything the gateway accepted is
//! in the log exactly once, in each sensor's order; every duplicate and corrupted frame was
//! refused at the gateway; the episode raised local alarms, and only for that sensor; the evidence
//! bundle of an alarmed reading verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;
use ledger_testkit as support;

use common::{free_tcp, wait_for};
use common::{Engine, TestApp};
use provenance_core::bundle::EvidenceBundle;
use provenance_core::log_entry::{DecodedBody, LogEntry};
use provenance_core::note::NoteVerifier;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use support::{free_udp, metric, Child};

/// The `sensor-sim` binary, built (or found up to date) in this build's target folder.
fn sensor_sim() -> PathBuf {
    ledger_testkit::binary("sensor-fw", "sensor-sim")
}

fn sim(args: &[&str]) {
    let out = Command::new(sensor_sim()).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "sensor-sim {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const SENSORS: [&str; 3] = ["SN-0001", "SN-0002", "SN-0003"];
const ROUNDS: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensor_sim_through_the_gateway_into_the_log() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let dir = std::env::temp_dir().join(format!("gw-chain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let d = |p: &str| dir.join(p).display().to_string();

    // The factory and the fleet operator.
    sim(&[
        "init-ca",
        "--name",
        "Acme Wearables",
        "--out",
        &d("factory"),
    ]);
    let (factory, out) = (d("factory"), d("sensors"));
    let mut args = vec!["provision", "--factory", &factory, "--out", &out];
    for id in SENSORS {
        args.extend(["--id", id]);
    }
    sim(&args);
    sim(&["init-ca", "--name", "Ward Gateways", "--out", &d("fleet")]);
    sim(&[
        "provision",
        "--role",
        "gateway",
        "--factory",
        &d("fleet"),
        "--out",
        &d("gateways"),
        "--id",
        "GW-0001",
    ]);

    // Enrollment and binding over the API, as the hospital's admin would do it.
    let admin = Some(app.admin.as_str());
    let pem = |p: &str| json!({"certificate_pem": std::fs::read_to_string(dir.join(p)).unwrap()});
    let post = |path: &'static str, body: Value| {
        let app = &app;
        async move {
            let r = app.post_json(path, admin, &body).await;
            assert_eq!(
                r.status().as_u16(),
                201,
                "{path}: {}",
                r.text().await.unwrap()
            );
        }
    };
    let issuer = |file: &str, role: &str| {
        let mut b = pem(file);
        b["role"] = role.into();
        b
    };
    post(
        "/v1/registry/issuers",
        issuer("factory/ca.pem", "sensor-manufacturer"),
    )
    .await;
    post(
        "/v1/registry/issuers",
        issuer("fleet/ca.pem", "gateway-fleet"),
    )
    .await;
    post("/v1/registry/gateways", pem("gateways/GW-0001.pem")).await;
    let from = common::now_ms() - 3_600_000;
    for (i, id) in SENSORS.iter().enumerate() {
        post("/v1/registry/sensors", pem(&format!("sensors/{id}.pem"))).await;
        post(
            "/v1/registry/bindings",
            json!({"sensor_id": id, "gateway_id": "GW-0001", "from_ms": from}),
        )
        .await;
        post(
            "/v1/registry/assignments",
            json!({"sensor_id": id, "pseudonym": format!("patient-{i}"), "from_ms": from}),
        )
        .await;
    }

    // The gateway, as its own process.
    let listen = free_udp();
    let metrics = free_tcp();
    let gateway = Command::new(ledger_testkit::binary("gateway-uplink", "gateway-uplink"))
        .env("GATEWAY_ID", "GW-0001")
        .env("GATEWAY_KEY_FILE", dir.join("gateways/GW-0001.key"))
        .env("GATEWAY_LISTEN", &listen)
        .env("GATEWAY_SERVICE_URL", &app.base)
        .env("GATEWAY_TOKEN", &app.gateway)
        .env("GATEWAY_SPOOL_DIR", dir.join("spool"))
        .env("GATEWAY_METRICS_LISTEN", &metrics)
        // Only the manufacturer's CA: every synced sensor certificate is chain-checked.
        .env("GATEWAY_ISSUER_CAS", dir.join("factory/ca.pem"))
        // Heart rate above 110 is critical on this ward: the tachycardia episode (about 132/min)
        // alarms, normal rates (about 72/min) never do.
        .env("GATEWAY_ALARM_LIMITS", "8867-4:40:110")
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Child)
        .unwrap();
    wait_for("registry sync", 20, || {
        dir.join("spool")
            .join(gateway_uplink::REGISTRY_CACHE)
            .exists()
            && metric(&metrics, "gateway_alarms_total").is_some()
    })
    .await;

    // The sensors: ROUNDS readings each, with faults injected.
    let run = Command::new(sensor_sim())
        .args(["run", "--devices", &d("sensors"), "--gateway", &listen])
        .args(["--period-ms", "20", "--count", &ROUNDS.to_string()])
        .args(["--episode", "tachycardia:SN-0002"])
        .args([
            "--fault",
            "duplicate",
            "--fault",
            "corrupt",
            "--fault",
            "reboot",
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    assert!(run.status.success());
    let tally: Value = serde_json::from_slice(&run.stdout).unwrap();
    let n = |k: &str| tally[k].as_u64().unwrap();
    assert_eq!(n("readings"), ROUNDS * SENSORS.len() as u64);
    let outcome = |o: &str| {
        let text = support::http_get::blocking_get_metrics(&metrics);
        let prefix = format!("gateway_frames_total{{outcome=\"{o}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix)?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // A flipped byte breaks the decoding, the key id, the sensor id, a time or the signature:
    // whichever check comes first refuses it (the registry's refusal code, or corrupt or
    // bad_signature).
    let refused_corrupt = || {
        ["corrupt", "bad_signature"]
            .into_iter()
            .chain(provenance_core::registry_state::Refusal::ALL.map(|r| r.code()))
            .map(outcome)
            .sum::<u64>()
    };
    let frames = n("readings") + n("duplicated") + n("duplicated_corrupted");
    wait_for("every frame handled", 30, || {
        outcome("accepted") + outcome("replay") + refused_corrupt() == frames
    })
    .await;
    assert_eq!(
        outcome("accepted"),
        n("readings") - n("corrupted"),
        "{tally}"
    );
    assert_eq!(
        outcome("replay"),
        n("duplicated"),
        "every duplicate refused as a replay"
    );
    assert_eq!(
        refused_corrupt(),
        n("corrupted") + n("duplicated_corrupted")
    );
    let accepted = outcome("accepted");
    wait_for("the upload", 30, || {
        metric(&metrics, "gateway_uploaded_total") == Some(accepted)
    })
    .await;
    assert_eq!(app.readings().await, accepted, "exactly once");

    // Per sensor: sequence numbers strictly increasing with the log index (in order, no
    // duplicate, no replay).
    let mut alarmed_index = None;
    for id in SENSORS {
        let v: Value = app
            .get(
                &format!("/v1/readings?sensor={id}&limit=1000"),
                Some(&app.reader),
            )
            .await
            .json()
            .await
            .unwrap();
        let items = v["readings"].as_array().unwrap();
        assert!(!items.is_empty(), "{id}");
        let mut pairs: Vec<(u64, u64)> = items
            .iter()
            .map(|r| (r["index"].as_u64().unwrap(), r["seq"].as_u64().unwrap()))
            .collect();
        pairs.sort_unstable();
        assert!(
            pairs.windows(2).all(|w| w[0].1 < w[1].1),
            "{id}: in order, once: {pairs:?}"
        );
        if id == "SN-0002" {
            alarmed_index = Some(pairs[0].0);
        }
    }

    // Local alarms: only the sensor with the episode, one line per alarm in the alarm file.
    let alarms: Vec<Value> = std::fs::read_to_string(dir.join("spool/alarms.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(!alarms.is_empty(), "the tachycardia episode alarmed");
    assert!(alarms
        .iter()
        .all(|a| a["alarm"]["sensor_id"] == "SN-0002" && a["alarm"]["loinc"] == "8867-4"));
    assert_eq!(
        metric(&metrics, "gateway_alarms_total"),
        Some(alarms.len() as u64)
    );

    // The evidence bundle of an alarmed reading: its proof verifies against the log's key, and
    // its leaf is that sensor's doubly signed reading. (ledger-verify checks bundles in full.)
    let idx = alarmed_index.unwrap();
    let k: Value = app.get("/v1/log/key", None).await.json().await.unwrap();
    let key = NoteVerifier::from_vkey(k["vkey"].as_str().unwrap()).unwrap();
    let resp = app
        .get(&format!("/v1/readings/{idx}/evidence"), Some(&app.reader))
        .await;
    assert_eq!(resp.status(), 200);
    let bundle = EvidenceBundle::from_json(&resp.bytes().await.unwrap()).unwrap();
    let leaf = bundle.reading.leaf_bytes().unwrap();
    bundle
        .reading
        .tlog_proof()
        .unwrap()
        .verify(&leaf, &key)
        .unwrap();
    let DecodedBody::Reading(env) = LogEntry::from_cbor(&leaf).unwrap().decode_body().unwrap()
    else {
        panic!("a reading entry")
    };
    assert_eq!(env.sensor.reading.sensor_id, "SN-0002");

    drop(gateway);
    app.finish().await;
    let _ = std::fs::remove_dir_all(&dir);
}
