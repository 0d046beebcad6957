//! Integration tests over real HTTP against real PostgreSQL and SQLite: enroll → ingest → proofs
//! verify with provenance-core; duplicates; every kind of bad input gets a specific 4xx
//! problem+json and stores no reading; checkpoints stay consistent across a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;
use ledger_testkit::both_engines;

use common::now_ms;
use common::{b64, Devices, Engine, TestApp, DAY};
use provenance_core::bundle::EvidenceBundle;
use provenance_core::checkpoint::Checkpoint;
use provenance_core::cose::GatewayEnvelope;
use provenance_core::log_entry::LogEntry;
use provenance_core::merkle::{self, Hash};
use provenance_core::note::NoteVerifier;
use serde_json::{json, Value};

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|h| b64(h).try_into().unwrap())
        .collect()
}

async fn log_key(app: &TestApp) -> NoteVerifier {
    let k: Value = app.get("/v1/log/key", None).await.json().await.unwrap();
    NoteVerifier::from_vkey(k["vkey"].as_str().unwrap()).unwrap()
}

async fn enroll_ingest_prove(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let dev = Devices::new("Acme Sensors", 3, 2);
    dev.enroll(&app).await;
    let now = now_ms();
    let envs: Vec<Vec<u8>> = (0..30)
        .map(|i| {
            dev.envelope(
                (i % 3) as usize,
                (i % 3) as usize % 2,
                i / 3 + 1,
                now - 60_000 + i * 100,
                60 + i as i64,
            )
        })
        .collect();
    let (status, body) = app.ingest(&envs).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["accepted"], 30, "{body}");
    assert_eq!(app.readings().await, 30);

    // The checkpoint verifies with the published key; every receipt's leaf is included.
    let key = log_key(&app).await;
    let results = body["results"].as_array().unwrap().clone();
    let last = results
        .iter()
        .map(|r| r["index"].as_u64().unwrap())
        .max()
        .unwrap();
    app.wait_for_checkpoint(last + 1).await;
    let note = app
        .get("/v1/log/checkpoint", None)
        .await
        .text()
        .await
        .unwrap();
    let cp = Checkpoint::open(&note, &key).unwrap();
    assert!(cp.size > last);
    for r in &results {
        let index = r["index"].as_u64().unwrap();
        let leaf: Hash = b64(&r["leaf_hash"]).try_into().unwrap();
        let p: Value = app
            .get(
                &format!(
                    "/v1/log/proof/inclusion?index={index}&tree_size={}",
                    cp.size
                ),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        merkle::verify_inclusion(index, cp.size, &leaf, &hashes(&p["hashes"]), &cp.root).unwrap();
        // The entry's leaf data hashes to the receipt's leaf hash and holds the exact envelope.
        let e: Value = app
            .get(&format!("/v1/log/entries/{index}"), Some(&app.reader))
            .await
            .json()
            .await
            .unwrap();
        let leaf_data = b64(&e["leaf_data"]);
        assert_eq!(merkle::leaf_hash(&leaf_data), leaf);
        let entry = LogEntry::from_cbor(&leaf_data).unwrap();
        assert!(
            envs.contains(&entry.body),
            "the stored body is the envelope as received"
        );
    }
    // Consistency between an early and the latest checkpoint.
    let p: Value = app
        .get(
            &format!("/v1/log/proof/consistency?from=5&to={}", cp.size),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    // The root at size 5, from the first five entries' leaf data as the API serves them.
    let old_root = {
        let mut tree = merkle::MemoryTree::new();
        for i in 0..5 {
            let e: Value = app
                .get(&format!("/v1/log/entries/{i}"), Some(&app.reader))
                .await
                .json()
                .await
                .unwrap();
            tree.push_leaf_hash(merkle::leaf_hash(&b64(&e["leaf_data"])));
        }
        tree.root_at(5).unwrap()
    };
    merkle::verify_consistency(5, cp.size, &old_root, &cp.root, &hashes(&p["hashes"])).unwrap();

    // The evidence bundle of a reading verifies offline with the log key.
    let idx = results[7]["index"].as_u64().unwrap();
    let resp = app
        .get(&format!("/v1/readings/{idx}/evidence"), Some(&app.reader))
        .await;
    assert_eq!(resp.status(), 200);
    let bundle = EvidenceBundle::from_json(&resp.bytes().await.unwrap()).unwrap();
    let leaf = bundle.reading.leaf_bytes().unwrap();
    assert_eq!(
        bundle
            .reading
            .tlog_proof()
            .unwrap()
            .verify(&leaf, &key)
            .unwrap()
            .size,
        cp.size
    );
    assert!(
        bundle.registry.len() >= 5,
        "issuer, sensor, gateway enrollments, binding, assignment"
    );
    for e in &bundle.registry {
        e.tlog_proof()
            .unwrap()
            .verify(&e.leaf_bytes().unwrap(), &key)
            .unwrap();
    }
    // A gateway syncs the registry events it needs (sensors 0 and 2 are bound to GW-0000) and
    // replays them through the registry state machine.
    let synced: Value = app
        .get("/v1/registry/gateways/GW-0000/events", Some(&app.gateway))
        .await
        .json()
        .await
        .unwrap();
    let mut state = provenance_core::registry_state::RegistryState::new();
    for e in synced["events"].as_array().unwrap() {
        let leaf = b64(&e["leaf_data"]);
        let entry = provenance_core::log_entry::LogEntry::from_cbor(&leaf).unwrap();
        let provenance_core::log_entry::DecodedBody::Registry(ev) = entry.decode_body().unwrap()
        else {
            panic!("a reading among the registry events")
        };
        state
            .apply(e["index"].as_u64().unwrap(), entry.logged_at_ms, &ev)
            .unwrap();
    }
    let bound: Vec<&String> = state
        .devices()
        .filter(|(_, d)| d.bindings.iter().any(|b| b.gateway_id == "GW-0000"))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(bound, vec!["SN-0000", "SN-0002"]);
    assert!(
        state.device("SN-0001").is_none(),
        "another gateway's sensor"
    );
    let s0 = &dev.sensors[0].1;
    assert_eq!(
        state.check_frame("GW-0000", &s0.key_id, "SN-0000", now_ms(), now_ms()),
        Ok(s0.public_key)
    );
    assert_eq!(
        app.get("/v1/registry/gateways/GW-0000/events", Some(&app.reader))
            .await
            .status(),
        403
    );
    // Not a device id, or not a gateway: problem+json, never a list.
    for (path, want) in [
        (
            format!("/v1/registry/gateways/{}/events", "a".repeat(65)),
            400,
        ),
        ("/v1/registry/gateways/%00/events".to_string(), 400),
        ("/v1/registry/gateways/GW-9999/events".to_string(), 404),
        ("/v1/registry/gateways/SN-0000/events".to_string(), 404),
    ] {
        let r = app.get(&path, Some(&app.gateway)).await;
        assert_eq!(r.status().as_u16(), want, "{path}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    // The API document and its console (Swagger UI, served from the binary, reading it).
    let doc = app.get("/openapi.json", None).await.text().await.unwrap();
    assert_eq!(doc, ledger_service::openapi_json());
    let docs = app.get("/docs/", None).await;
    assert!(docs.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let html = docs.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    let init = app
        .get("/docs/swagger-initializer.js", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    for asset in ["/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css"] {
        assert_eq!(app.get(asset, None).await.status(), 200, "{asset}");
    }
    // Metrics count what happened; they need a monitor (or admin) token, not any reader's.
    assert_eq!(app.get("/metrics", None).await.status(), 401);
    assert_eq!(app.get("/metrics", Some(&app.reader)).await.status(), 403);
    let monitor =
        ledger_service::create_token(app.shared.db(), ledger_service::Role::Monitor, "prometheus")
            .await
            .unwrap();
    let metrics = app
        .get("/metrics", Some(&monitor))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ledger_ingest_items_total{outcome=\"accepted\"} 30"),
        "{metrics}"
    );
    // Tiles: the level-0 tile prefix is the leaf hashes.
    let t = app.get("/tile/0/000.p/3", None).await;
    assert_eq!(t.status(), 200);
    assert_eq!(t.bytes().await.unwrap().len(), 96);
    // Readings API: by patient, by index, as FHIR.
    let list: Value = app
        .get("/v1/readings?patient=patient-1", Some(&app.reader))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["readings"].as_array().unwrap().len(), 10);
    let fhir: Value = app
        .get(
            &format!("/v1/readings/{idx}?format=fhir"),
            Some(&app.reader),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(fhir["resourceType"], "Observation");
    assert_eq!(
        fhir["component"][0]["code"]["coding"][0]["system"],
        "http://loinc.org"
    );
    app.finish().await;
}
both_engines!(enroll_ingest_prove_both, enroll_ingest_prove);

async fn duplicates_and_equivocation(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    let now = now_ms();
    let e = dev.envelope(0, 0, 1, now - 1000, 70);
    let (s1, b1) = app.ingest(std::slice::from_ref(&e)).await;
    assert_eq!(s1, 200, "{b1}");
    let (s2, b2) = app.ingest(std::slice::from_ref(&e)).await;
    assert_eq!(s2, 200, "{b2}");
    assert_eq!(b2["results"][0]["status"], "duplicate");
    assert_eq!(b2["results"][0]["index"], b1["results"][0]["index"]);
    assert_eq!(b2["results"][0]["leaf_hash"], b1["results"][0]["leaf_hash"]);
    // The same item twice in one batch: one accepted, one duplicate of it.
    let e2 = dev.envelope(0, 0, 2, now - 900, 71);
    let (_, b3) = app.ingest(&[e2.clone(), e2]).await;
    assert_eq!(b3["results"][0]["status"], "accepted");
    assert_eq!(b3["results"][1]["status"], "duplicate");
    assert_eq!(b3["results"][1]["index"], b3["results"][0]["index"]);
    // A different reading with a logged sequence number: equivocation, rejected and recorded.
    let forged = dev.envelope(0, 0, 1, now - 800, 120);
    let (s4, b4) = app.ingest(&[forged]).await;
    assert_eq!(s4, 422, "{b4}");
    assert_eq!(
        b4["type"],
        "https://vitals-ledger.example/problems/equivocation"
    );
    assert_eq!(app.readings().await, 2);
    assert_eq!(
        app.shared
            .db()
            .count_rejections("equivocation")
            .await
            .unwrap(),
        1
    );
    app.finish().await;
}
both_engines!(
    duplicates_and_equivocation_both,
    duplicates_and_equivocation
);

/// Every kind of bad input: a specific 4xx problem+json, and no reading stored.
async fn bad_input(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let dev = Devices::new("Acme Sensors", 3, 2);
    dev.enroll(&app).await;
    let other = Devices::new("Rogue Devices", 1, 1); // not enrolled
    let now = now_ms();
    let good = dev.envelope(0, 0, 1, now - 1000, 70);

    let mut bad_gateway_sig = good.clone();
    *bad_gateway_sig.last_mut().unwrap() ^= 1;
    let bad_sensor_sig = {
        let env = provenance_core::cose::GatewayEnvelope::decode(&good).unwrap();
        let mut inner = env.sensor_bytes().to_vec();
        *inner.last_mut().unwrap() ^= 1;
        provenance_core::cose::GatewayEnvelope::wrap(&inner, now - 800, &dev.gateways[0].0)
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("garbage", b"not cbor at all".to_vec(), "malformed-envelope"),
        (
            "truncated",
            good[..good.len() - 3].to_vec(),
            "malformed-envelope",
        ),
        (
            "gateway signature",
            bad_gateway_sig,
            "bad-gateway-signature",
        ),
        ("sensor signature", bad_sensor_sig, "bad-sensor-signature"),
        (
            "unknown sensor",
            other.envelope(0, 0, 1, now - 1000, 70),
            "unknown-gateway-key",
        ),
        (
            "not bound",
            dev.envelope(1, 0, 1, now - 1000, 70),
            "sensor-not-bound-to-gateway",
        ),
        (
            "future",
            dev.envelope(0, 0, 5, now + DAY, 70),
            "implausible-time",
        ),
        (
            "too old",
            dev.envelope(0, 0, 6, now - 60 * DAY, 70),
            "implausible-time",
        ),
        (
            "far future",
            dev.envelope(0, 0, 7, u64::MAX - 100, 70),
            "implausible-time",
        ),
        (
            "huge sequence number",
            dev.envelope(0, 0, u64::MAX, now - 1000, 70),
            "implausible-time",
        ),
    ];
    for (what, env, kind) in cases {
        let (status, body) = app.ingest(&[env]).await;
        assert_eq!(status, 422, "{what}: {body}");
        assert_eq!(
            body["type"],
            format!("https://vitals-ledger.example/problems/{kind}"),
            "{what}: {body}"
        );
    }
    // An unknown sensor key through an enrolled gateway.
    let unknown_sensor = {
        let env = provenance_core::cose::GatewayEnvelope::decode(&other.envelope(
            0,
            0,
            1,
            now - 1000,
            70,
        ))
        .unwrap();
        provenance_core::cose::GatewayEnvelope::wrap(
            env.sensor_bytes(),
            now - 900,
            &dev.gateways[0].0,
        )
    };
    let (status, body) = app.ingest(&[unknown_sensor]).await;
    assert_eq!(
        (status, body["type"].as_str().unwrap()),
        (
            422,
            "https://vitals-ledger.example/problems/unknown-sensor-key"
        )
    );

    // Revoked key: revoke sensor 2 from an hour ago; a reading from 10 minutes ago is refused.
    let kid = dev.sensors[2].1.key_id.to_hex();
    let r = app
        .post_json(
            "/v1/registry/revocations",
            Some(&app.admin),
            &json!({"key_id": kid, "from_ms": now - 3_600_000, "reason": "lost"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let (status, body) = app
        .ingest(&[dev.envelope(2, 0, 1, now - 600_000, 70)])
        .await;
    assert_eq!(
        (status, body["type"].as_str().unwrap()),
        (
            422,
            "https://vitals-ledger.example/problems/sensor-key-revoked"
        ),
        "{body}"
    );

    // Request-level errors.
    let (s, b) = app
        .ingest_raw(b"\xff\xff".to_vec(), "application/cbor", Some(&app.gateway))
        .await;
    assert_eq!(
        (s, b["type"].as_str().unwrap()),
        (400, "https://vitals-ledger.example/problems/invalid-body")
    );
    let (s, _) = app
        .ingest_raw(vec![0x80], "application/cbor", Some(&app.gateway))
        .await;
    assert_eq!(s, 400, "empty batch");
    // A flood of empty byte strings: refused at the batch's first head, before any allocation;
    // an indefinite-length array, a text item, trailing bytes: refused whole.
    let mut flood = vec![0x9a];
    flood.extend_from_slice(&4_000_000u32.to_be_bytes());
    flood.extend(std::iter::repeat_n(0x40u8, 1 << 20));
    let (s, b) = app
        .ingest_raw(flood, "application/cbor", Some(&app.gateway))
        .await;
    assert_eq!(
        (s, b["type"].as_str().unwrap()),
        (
            413,
            "https://vitals-ledger.example/problems/batch-too-large"
        ),
        "{b}"
    );
    for bad in [
        &[0x9f, 0x41, 0x00, 0xff][..],
        &[0x81, 0x61, 0x61],
        &[0x81, 0x40, 0x00],
    ] {
        let (s, b) = app
            .ingest_raw(bad.to_vec(), "application/cbor", Some(&app.gateway))
            .await;
        assert_eq!(
            (s, b["type"].as_str().unwrap()),
            (400, "https://vitals-ledger.example/problems/invalid-body"),
            "{bad:02x?}: {b}"
        );
    }
    let (s, _) = app
        .ingest_raw(b"{}".to_vec(), "text/plain", Some(&app.gateway))
        .await;
    assert_eq!(s, 415);
    let (s, _) = app
        .ingest_raw(
            b"{\"envelopes\": [\"!!\"]}".to_vec(),
            "application/json",
            Some(&app.gateway),
        )
        .await;
    assert_eq!(s, 400);
    let (s, b) = oversized_request(&app).await;
    assert_eq!(
        (s, b["type"].as_str().unwrap()),
        (413, "https://vitals-ledger.example/problems/body-too-large"),
        "{b}"
    );
    let (s, _) = app.ingest_raw(vec![0x80], "application/cbor", None).await;
    assert_eq!(s, 401, "missing token");
    let (s, _) = app
        .ingest_raw(vec![0x80], "application/cbor", Some("vlt_wrong"))
        .await;
    assert_eq!(s, 401, "wrong token");
    let (s, _) = app
        .ingest_raw(vec![0x80], "application/cbor", Some(&app.reader.clone()))
        .await;
    assert_eq!(s, 403, "wrong role");

    // Registry refusals: a certificate that does not chain to an enrolled issuer; a gateway
    // token on an admin route; malformed JSON.
    let r = app
        .post_json(
            "/v1/registry/sensors",
            Some(&app.admin),
            &json!({"certificate_pem": other.sensors[0].1.to_pem()}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["type"],
        "https://vitals-ledger.example/problems/registry-refused"
    );
    let r = app
        .post_json(
            "/v1/registry/sensors",
            Some(&app.gateway),
            &json!({"certificate_pem": "x"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    let r = app
        .post_json(
            "/v1/registry/bindings",
            Some(&app.admin),
            &json!({"sensor_id": "SN-0000"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = app
        .post_json(
            "/v1/registry/bindings",
            Some(&app.admin),
            &json!({"sensor_id": "SN-0000", "gateway_id": "GW-9999", "from_ms": 0}),
        )
        .await;
    assert_eq!(r.status(), 422);
    // Proof requests out of range.
    assert_eq!(
        app.get("/v1/log/proof/inclusion?index=5&tree_size=5", None)
            .await
            .status(),
        400
    );
    assert_eq!(
        app.get("/v1/log/proof/inclusion?index=0&tree_size=999999", None)
            .await
            .status(),
        400
    );
    assert_eq!(
        app.get("/v1/log/proof/inclusion?index=x", None)
            .await
            .status(),
        400
    );
    assert_eq!(
        app.get("/v1/log/proof/consistency?from=0&to=1", None)
            .await
            .status(),
        400
    );
    assert_eq!(app.get("/tile/0/5", None).await.status(), 400);
    assert_eq!(app.get("/v1/log/entries/0", None).await.status(), 401);
    assert_eq!(
        app.get("/v1/readings/0", Some(&app.reader)).await.status(),
        404,
        "entry 0 is a registry event"
    );

    assert_eq!(app.readings().await, 0, "nothing rejected is stored");
    assert!(
        app.shared
            .db()
            .count_rejections("bad_sensor_signature")
            .await
            .unwrap()
            >= 1
    );
    // And a good one still goes through afterwards.
    let (s, _) = app.ingest(&[good]).await;
    assert_eq!(s, 200);
    app.finish().await;
}
both_engines!(bad_input_both, bad_input);

/// Key rotation: readings signed with the old key after the rotation time are refused, the new
/// key is accepted from then on, and earlier readings stay valid.
async fn key_rotation(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    let now = now_ms();
    let rotation = now - 60_000;
    let (s, b) = app
        .ingest(&[dev.envelope(0, 0, 1, rotation - 10_000, 70)])
        .await;
    assert_eq!(s, 200, "{b}");
    // A new key for SN-0000, issued by the same CA.
    let new_key = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let params = provenance_core::cert::CertParams {
        common_name: "SN-0000",
        organization: "Acme Sensors",
        serial: 999,
        not_before_ms: now - DAY,
        not_after_ms: now + DAY,
    };
    let cert = provenance_core::cert::issue_device(
        &dev.ca_key,
        &dev.ca,
        provenance_core::cert::Role::Sensor,
        &new_key.verifying_key(),
        &params,
    )
    .unwrap();
    let r = app
        .post_json(
            "/v1/registry/rotations",
            Some(&app.admin),
            &json!({"device_id": "SN-0000", "certificate_pem": cert.to_pem(), "from_ms": rotation}),
        )
        .await;
    assert_eq!(r.status(), 201);
    // Old key after the rotation: refused.
    let (s, b) = app
        .ingest(&[dev.envelope(0, 0, 2, rotation + 1000, 70)])
        .await;
    assert_eq!(
        (s, b["type"].as_str().unwrap()),
        (
            422,
            "https://vitals-ledger.example/problems/sensor-key-not-valid"
        ),
        "{b}"
    );
    // Old key before the rotation (a late upload): still accepted.
    let (s, b) = app
        .ingest(&[dev.envelope(0, 0, 3, rotation - 5000, 70)])
        .await;
    assert_eq!(s, 200, "{b}");
    // New key after the rotation: accepted.
    let mut rotated = Devices::new("Acme Sensors", 1, 1);
    rotated.sensors[0] = (new_key, cert);
    let (s, b) = app
        .ingest(&[rotated.envelope(0, 0, 4, rotation + 2000, 70)])
        .await;
    assert_eq!(s, 200, "{b}");
    // A rotation to a certificate of another device is refused.
    let r = app.post_json("/v1/registry/rotations", Some(&app.admin), &json!({"device_id": "SN-0000", "certificate_pem": dev.gateways[0].1.to_pem(), "from_ms": now})).await;
    assert_eq!(r.status(), 400);
    // Wrong method: problem+json too.
    let r = app
        .client
        .delete(app.url("/v1/log/checkpoint"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    app.finish().await;
}
both_engines!(key_rotation_both, key_rotation);

/// Announces a 9 MiB body and sends none of it: the service must answer 413 problem+json from
/// the headers alone (a client streaming a huge body would otherwise see the connection close).
async fn oversized_request(app: &TestApp) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = app.base.trim_start_matches("http://");
    let mut sock = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /v1/ingest HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nContent-Type: application/cbor\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        app.gateway,
        9 * 1024 * 1024
    );
    sock.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        sock.read_to_end(&mut buf),
    )
    .await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{text}"
    );
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// Every checkpoint ever published is consistent with every later one, across a restart.
async fn checkpoints_consistent_across_restart(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let dev = Devices::new("Acme Sensors", 2, 1);
    dev.enroll(&app).await;
    let now = now_ms();
    let mut seq = 0;
    let mut app = app;
    for round in 0..3 {
        for _ in 0..4 {
            let envs: Vec<Vec<u8>> = (0..50)
                .map(|_| {
                    seq += 1;
                    dev.envelope(0, 0, seq, now - 100_000 + seq * 10, 70)
                })
                .collect();
            let (s, b) = app.ingest(&envs).await;
            assert_eq!(s, 200, "{b}");
            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        }
        app.wait_for_checkpoint(app.shared.committed()).await;
        if round < 2 {
            app = app.restart().await;
        }
    }
    let key = log_key(&app).await;
    let cps = app.shared.db().checkpoints().await.unwrap();
    assert!(cps.len() >= 4, "{} checkpoints", cps.len());
    let latest = cps.last().unwrap();
    for cp in &cps {
        let parsed = Checkpoint::open(&cp.note, &key).unwrap();
        assert_eq!((parsed.size, parsed.root), (cp.size, cp.root));
        if cp.size == 0 || cp.size == latest.size {
            continue;
        }
        let p: Value = app
            .get(
                &format!(
                    "/v1/log/proof/consistency?from={}&to={}",
                    cp.size, latest.size
                ),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        merkle::verify_consistency(
            cp.size,
            latest.size,
            &cp.root,
            &latest.root,
            &hashes(&p["hashes"]),
        )
        .unwrap();
    }
    app.finish().await;
}
both_engines!(
    checkpoints_consistent_across_restart_both,
    checkpoints_consistent_across_restart
);

/// Regression: a proof at a size whose partial tile was cached narrower (by a proof at an
/// earlier size) reads the wider tile from the database instead of failing.
async fn proofs_after_the_cached_partial_tile_grew(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    let now = now_ms();
    let mut seq = 0;
    for round in 0..3 {
        let envs: Vec<Vec<u8>> = (0..5)
            .map(|_| {
                seq += 1;
                dev.envelope(0, 0, seq, now - 10_000 + seq, 70)
            })
            .collect();
        let (status, _) = app.ingest(&envs).await;
        assert_eq!(status, 200);
        let size = app.shared.committed();
        app.wait_for_checkpoint(size).await;
        let r = app
            .get(
                &format!("/v1/log/proof/inclusion?index=1&tree_size={size}"),
                None,
            )
            .await;
        assert_eq!(r.status(), 200, "round {round}");
        let r = app
            .get(&format!("/v1/log/proof/consistency?from=2&to={size}"), None)
            .await;
        assert_eq!(r.status(), 200, "round {round}");
    }
    app.finish().await;
}

both_engines!(
    proofs_after_the_cached_partial_tile_grew_both,
    proofs_after_the_cached_partial_tile_grew
);

/// Issue #11 at the service's edge: the registry state machine's rules, each refused with a
/// clear 422 and nothing logged — an issuer minting a role it was not enrolled for, an old
/// certificate enrolled again or rotated back to, a revoked sensor key backdating its frame,
/// a revoked issuer, a sequence number going back.
async fn registry_rules(engine: Engine) {
    use provenance_core::cert::{issue_device, CertParams, Role};
    let app = TestApp::spawn(engine).await;
    let dev = Devices::new("Acme Sensors", 2, 1);
    dev.enroll(&app).await;
    let admin = Some(app.admin.as_str());
    let now = now_ms();
    let params = |cn: &'static str, serial| CertParams {
        common_name: cn,
        organization: "Acme Sensors",
        serial,
        not_before_ms: now - DAY,
        not_after_ms: now + DAY,
    };
    let refused = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap();
        (
            status,
            body["type"].as_str().unwrap_or_default().to_string(),
        )
    };
    let registry_refused = (
        422,
        "https://vitals-ledger.example/problems/registry-refused".to_string(),
    );
    // An issuer role is required and must be one of the two.
    let r = app
        .post_json(
            "/v1/registry/issuers",
            admin,
            &json!({"certificate_pem": dev.ca.to_pem()}),
        )
        .await;
    assert_eq!(r.status(), 400);
    let r = app
        .post_json(
            "/v1/registry/issuers",
            admin,
            &json!({"certificate_pem": dev.ca.to_pem(), "role": "anything"}),
        )
        .await;
    assert_eq!(r.status(), 400);
    // The gateway fleet CA cannot mint a sensor.
    let k = ed25519_dalek::SigningKey::from_bytes(&[61; 32]);
    let fleet_sensor = issue_device(
        &dev.fleet_key,
        &dev.fleet,
        Role::Sensor,
        &k.verifying_key(),
        &params("SN-0099", 99),
    )
    .unwrap();
    let r = app
        .post_json(
            "/v1/registry/sensors",
            admin,
            &json!({"certificate_pem": fleet_sensor.to_pem()}),
        )
        .await;
    assert_eq!(
        refused(r).await,
        registry_refused,
        "a sensor from the fleet CA"
    );
    // Rotate SN-0000, then try to bring its old key back either way.
    let k2 = ed25519_dalek::SigningKey::from_bytes(&[62; 32]);
    let new_cert = issue_device(
        &dev.ca_key,
        &dev.ca,
        Role::Sensor,
        &k2.verifying_key(),
        &params("SN-0000", 98),
    )
    .unwrap();
    let r = app
        .post_json(
            "/v1/registry/rotations",
            admin,
            &json!({"device_id": "SN-0000", "certificate_pem": new_cert.to_pem(), "from_ms": now}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let old = dev.sensors[0].1.to_pem();
    let r = app
        .post_json(
            "/v1/registry/sensors",
            admin,
            &json!({"certificate_pem": old}),
        )
        .await;
    assert_eq!(
        refused(r).await,
        registry_refused,
        "the old certificate enrolled again"
    );
    let r = app
        .post_json(
            "/v1/registry/rotations",
            admin,
            &json!({"device_id": "SN-0000", "certificate_pem": old, "from_ms": now + 1000}),
        )
        .await;
    assert_eq!(
        refused(r).await,
        registry_refused,
        "a rotation back to the old key"
    );
    // The old key cannot sign a frame the gateway received after the rotation, whatever it
    // claims as measured-at.
    let late = dev.envelope(0, 0, 1, now - 30_000, 70);
    let env = GatewayEnvelope::decode(&late).unwrap();
    let rewrapped = GatewayEnvelope::wrap(env.sensor_bytes(), now + 1000, &dev.gateways[0].0);
    let (s, b) = app.ingest(&[rewrapped]).await;
    assert_eq!(
        (s, b["type"].as_str().unwrap()),
        (
            422,
            "https://vitals-ledger.example/problems/sensor-key-not-valid"
        ),
        "{b}"
    );
    // SN-0001's key revoked from now: a frame measured an hour ago but received now is refused;
    // one the gateway received before the revocation (a backlog) is accepted.
    let r = app
        .post_json("/v1/registry/revocations", admin, &json!({"key_id": dev.sensors[1].1.key_id.to_hex(), "from_ms": now - 5000, "reason": "stolen"}))
        .await;
    assert_eq!(r.status(), 201);
    let inner = GatewayEnvelope::decode(&dev.envelope(1, 0, 5, now - 3_600_000, 70)).unwrap();
    let backdated = GatewayEnvelope::wrap(inner.sensor_bytes(), now, &dev.gateways[0].0);
    let (s, b) = app.ingest(&[backdated]).await;
    assert_eq!(
        (s, b["type"].as_str().unwrap()),
        (
            422,
            "https://vitals-ledger.example/problems/sensor-key-revoked"
        ),
        "{b}"
    );
    let backlog = dev.envelope(1, 0, 6, now - 10_000, 70); // received at now - 9,800
    let (s, b) = app.ingest(&[backlog]).await;
    assert_eq!(s, 200, "the honest backlog: {b}");
    // A sequence number below the sensor's last is refused, through any gateway.
    let (s, b) = app.ingest(&[dev.envelope(1, 0, 3, now - 9000, 70)]).await;
    assert_eq!(
        (s, b["type"].as_str().unwrap()),
        (422, "https://vitals-ledger.example/problems/stale-sequence"),
        "{b}"
    );
    // A revoked issuer: its remaining sensor's new frames are refused, and it enrolls nothing.
    let r = app
        .post_json("/v1/registry/revocations", admin, &json!({"key_id": dev.ca.key_id.to_hex(), "from_ms": now - 1000, "reason": "CA compromised"}))
        .await;
    assert_eq!(r.status(), 201);
    let rotated = {
        let mut d = Devices::new("Acme Sensors", 1, 1);
        d.sensors[0] = (k2, new_cert);
        d
    };
    let (s, b) = app
        .ingest(&[rotated.envelope(0, 0, 9, now + 500, 70)])
        .await;
    assert_eq!(
        (s, b["type"].as_str().unwrap()),
        (
            422,
            "https://vitals-ledger.example/problems/sensor-key-revoked"
        ),
        "{b}"
    );
    let k3 = ed25519_dalek::SigningKey::from_bytes(&[63; 32]);
    let late_sensor = issue_device(
        &dev.ca_key,
        &dev.ca,
        Role::Sensor,
        &k3.verifying_key(),
        &params("SN-0077", 97),
    )
    .unwrap();
    let r = app
        .post_json(
            "/v1/registry/sensors",
            admin,
            &json!({"certificate_pem": late_sensor.to_pem()}),
        )
        .await;
    assert_eq!(
        refused(r).await,
        registry_refused,
        "a sensor of a revoked issuer"
    );
    // Nothing refused was logged: one reading (the backlog) since the enrollment.
    let stats = app
        .get("/v1/readings?sensor=SN-0001", Some(&app.reader))
        .await;
    let v: Value = stats.json().await.unwrap();
    assert_eq!(v["readings"].as_array().map(Vec::len), Some(1), "{v}");
    app.finish().await;
}
both_engines!(registry_rules_both, registry_rules);

/// More readings of one sensor at the same time than a page holds: following `next_cursor`
/// lists each exactly once (before, a client could not page past 1,000 readings sharing a time
/// range); a cursor the service did not give is 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readings_list_pages_with_a_cursor() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    let at = now_ms() - 60_000;
    let envs: Vec<Vec<u8>> = (1..=7).map(|seq| dev.envelope(0, 0, seq, at, 70)).collect();
    let (status, body) = app.ingest(&envs).await;
    assert_eq!(
        (status, body["accepted"].as_u64()),
        (200, Some(7)),
        "{body}"
    );
    let sensor = &dev.sensors[0].1.subject_cn;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..10 {
        let mut path = format!("/v1/readings?sensor={sensor}&limit=3");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let v: Value = app
            .get(&path, Some(&app.reader))
            .await
            .json()
            .await
            .unwrap();
        seen.extend(
            v["readings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["index"].as_u64().unwrap()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut unique = seen.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!((seen.len(), unique.len()), (7, 7), "{seen:?}");
    let r = app
        .get(
            &format!("/v1/readings?sensor={sensor}&cursor=bm90LWEtY3Vyc29y"),
            Some(&app.reader),
        )
        .await;
    assert_eq!(r.status(), 400);
    app.finish().await;
}
