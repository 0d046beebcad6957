//! Archival exports end to end: kick-off, polling, streamed downloads of a real service
//! (PostgreSQL, HTTP), checked by `ledger-verify export` (completeness included) and, when
//! `INTEROP_PYTHON` names a Python with `fhir.resources` (as `scripts/test` does), every NDJSON
//! resource validated as FHIR R4 by that independent package. An incremental export starts exactly
//! where the first ended; a patient's export carries only that patient, with a verifiable bundle
//! per reading; cancel removes a job; acknowledging an export prunes payloads while every proof
//! still verifies.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;

use common::now_ms;
use common::{Devices, Engine, TestApp};
use provenance_core::note::NoteVerifier;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use verifier_cli::trust::Trust;

async fn ingest(app: &TestApp, dev: &Devices, seqs: std::ops::Range<u64>) {
    let now = now_ms();
    let envs: Vec<Vec<u8>> = seqs
        .flat_map(|seq| (0..2).map(move |s| (s, seq)))
        .map(|(s, seq)| dev.envelope(s, s % dev.gateways.len(), seq, now - 30_000 + seq * 10, 70))
        .collect();
    let (status, body) = app.ingest(&envs).await;
    assert_eq!(status, 200, "{body}");
    let size = app.shared.committed();
    app.wait_for_checkpoint(size).await;
}

async fn get(app: &TestApp, path: &str, token: &str) -> reqwest::Response {
    app.client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
}

/// Kicks off an export; returns its status URL path.
async fn kick_off(app: &TestApp, token: &str, query: &str) -> String {
    let r = get(app, &format!("/v1/fhir/$export{query}"), token).await;
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    let location = r.headers()["content-location"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        location.starts_with(&format!("{}/v1/fhir/export-jobs/exp_", app.base)),
        "Content-Location {location:?} is not absolute"
    );
    location
}

/// Every URL of a Bulk Data manifest is absolute on the service's base URL (the manifest's
/// fields as the specification names them).
fn assert_absolute(app: &TestApp, m: &Value) {
    let absolute = |what: &str, v: &Value| {
        let u = v.as_str().unwrap_or_else(|| panic!("{what} missing: {m}"));
        assert!(
            u.starts_with(&format!("{}/v1/", app.base)),
            "{what} {u:?} is not absolute"
        );
    };
    absolute("request", &m["request"]);
    assert!(
        m["request"].as_str().unwrap().contains("/v1/fhir/$export"),
        "{m}"
    );
    assert_eq!(m["requiresAccessToken"], true);
    assert!(m["transactionTime"].is_string());
    assert!(m["error"].is_array());
    for o in m["output"].as_array().unwrap() {
        absolute("output url", &o["url"]);
    }
    let ext = &m["extension"]["https://vitals-ledger.example/fhir/export"];
    absolute("evidence url", &ext["evidence"]["url"]);
}

/// Polls until complete; returns the manifest.
async fn manifest(app: &TestApp, token: &str, location: &str) -> Value {
    let t = Instant::now();
    loop {
        let r = get(app, location, token).await;
        match r.status().as_u16() {
            200 => return r.json().await.unwrap(),
            202 => {
                assert!(r.headers().contains_key("x-progress"));
                assert_eq!(r.headers()["retry-after"], "1");
            }
            s => panic!("status {s}: {}", r.text().await.unwrap()),
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "export did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Downloads every output (and the log archive) into `dir`.
async fn download(app: &TestApp, token: &str, m: &Value, dir: &Path) -> Vec<PathBuf> {
    assert_absolute(app, m);
    std::fs::create_dir_all(dir.join("log")).unwrap();
    let mut files = Vec::new();
    for o in m["output"].as_array().unwrap() {
        let url = o["url"].as_str().unwrap();
        let r = get(app, url, token).await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/fhir+ndjson");
        let path = dir.join(format!("{}.ndjson", o["type"].as_str().unwrap()));
        let body = r.bytes().await.unwrap();
        assert_eq!(
            body.split(|b| *b == b'\n')
                .filter(|l| !l.is_empty())
                .count() as u64,
            o["count"].as_u64().unwrap()
        );
        std::fs::write(&path, &body).unwrap();
        files.push(path);
    }
    let ext = &m["extension"]["https://vitals-ledger.example/fhir/export"];
    if ext["evidence"]["type"] == "log-archive" {
        let url = ext["evidence"]["url"].as_str().unwrap();
        let base = url.trim_end_matches("manifest.json");
        let man: Value = get(app, url, token).await.json().await.unwrap();
        std::fs::write(dir.join("log/manifest.json"), man.to_string()).unwrap();
        for f in man["entry_files"].as_array().unwrap() {
            let f = f.as_str().unwrap();
            let body = get(app, &format!("{base}{f}"), token)
                .await
                .bytes()
                .await
                .unwrap();
            std::fs::create_dir_all(dir.join("log").join(f).parent().unwrap()).unwrap();
            std::fs::write(dir.join("log").join(f), body).unwrap();
        }
    }
    files
}

fn validate_fhir(files: &[PathBuf]) {
    let Some(python) = common::interop_python("the fhir.resources validation of the exports")
    else {
        return;
    };
    let out = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../ledger-service/interop/validate_fhir.py"
        ))
        .args(files)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fhir.resources refused the export: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

fn lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_verify_continue_exactly_and_prune_safely() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("Acme Sensors", 2, 1);
    dev.enroll(&app).await;
    let archivist = ledger_service::create_token(
        app.shared.db(),
        ledger_service::Role::Archivist,
        "hospital-archive",
    )
    .await
    .unwrap();
    ingest(&app, &dev, 0..10).await;
    let k: Value = app.get("/v1/log/key", None).await.json().await.unwrap();
    let mut trust = Trust::log_only(NoteVerifier::from_vkey(k["vkey"].as_str().unwrap()).unwrap());
    trust.issuers.push(dev.ca.clone());
    trust.issuers.push(dev.fleet.clone());
    let dir = std::env::temp_dir().join(format!("export-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    // Bad kick-offs: a clear 400 (or 403), and no job.
    for (q, want) in [
        ("?_type=Patient", 400),
        ("?_since=yesterday", 400),
        ("?_outputFormat=text/csv", 400),
        ("?to_index=999999", 400),
        ("?from_index=99&to_index=3", 400),
        ("?color=blue", 400),
    ] {
        let r = get(&app, &format!("/v1/fhir/$export{q}"), &archivist).await;
        assert_eq!(r.status().as_u16(), want, "{q}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(
        get(&app, "/v1/fhir/$export", &app.reader).await.status(),
        403
    );
    assert_eq!(
        get(&app, "/v1/fhir/export-jobs/exp_nope", &archivist)
            .await
            .status(),
        404
    );

    // The whole log: 20 readings, 3 device keys, and a log archive that verifies.
    let first = kick_off(&app, &archivist, "").await;
    let m1 = manifest(&app, &archivist, &first).await;
    let counts: Vec<(String, u64)> = m1["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["type"].as_str().unwrap().into(),
                o["count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [
            ("Observation".into(), 20),
            ("Device".into(), 3),
            ("Provenance".into(), 20)
        ]
    );
    let ext1 = m1["extension"]["https://vitals-ledger.example/fhir/export"].clone();
    let end1 = ext1["log_range"]["end"].as_u64().unwrap();
    assert_eq!(ext1["log_range"]["start"], 0);
    let files = download(&app, &archivist, &m1, &dir.join("one")).await;
    let r = verifier_cli::export::verify_export(&dir.join("one/log"), &trust, false);
    assert!(r.verified, "{}", r.human());
    validate_fhir(&files);
    let obs = lines(&dir.join("one/Observation.ndjson"));
    assert_eq!(obs[0]["component"].as_array().unwrap().len(), 2);
    let prov = lines(&dir.join("one/Provenance.ndjson"));
    assert_eq!(
        prov[0]["signature"].as_array().unwrap().len(),
        2,
        "sensor and gateway"
    );
    assert_eq!(prov[0]["signature"][1]["sigFormat"], "application/cose");

    // Incremental: from the first export's transactionTime, exactly where it ended.
    ingest(&app, &dev, 10..13).await;
    let since = m1["transactionTime"].as_str().unwrap();
    let second = kick_off(&app, &archivist, &format!("?_since={since}")).await;
    let m2 = manifest(&app, &archivist, &second).await;
    let ext2 = &m2["extension"]["https://vitals-ledger.example/fhir/export"];
    assert_eq!(
        ext2["log_range"]["start"].as_u64(),
        Some(end1),
        "no gap, no overlap"
    );
    assert_eq!(m2["output"][0]["count"], 6);
    download(&app, &archivist, &m2, &dir.join("two")).await;
    let r = verifier_cli::export::verify_export(&dir.join("two/log"), &trust, false);
    assert!(r.verified, "{}", r.human());

    // One patient: only their readings, and a verifiable evidence bundle for each.
    let third = kick_off(&app, &archivist, "?patient=patient-1&_type=Observation").await;
    let m3 = manifest(&app, &archivist, &third).await;
    assert_eq!(m3["output"].as_array().unwrap().len(), 1);
    let files = download(&app, &archivist, &m3, &dir.join("three")).await;
    let obs = lines(&files[0]);
    assert_eq!(obs.len(), 13);
    assert!(obs
        .iter()
        .all(|o| o["subject"]["identifier"]["value"] == "patient-1"));
    let ev = &m3["extension"]["https://vitals-ledger.example/fhir/export"]["evidence"];
    assert_eq!(ev["type"], "evidence-bundles");
    let bundles = get(&app, ev["url"].as_str().unwrap(), &archivist)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(bundles.lines().count(), 13);
    for b in bundles.lines() {
        let r = verifier_cli::bundle::verify_bundle(b.as_bytes(), "bundle", &trust);
        assert!(r.verified, "{}", r.human());
        assert!(r.subject.contains("patient-1"));
    }

    // Cancel: the job and its files are gone.
    let fourth = kick_off(&app, &archivist, "").await;
    let r = app
        .client
        .delete(app.url(&fourth))
        .bearer_auth(&archivist)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(get(&app, &fourth, &archivist).await.status(), 404);

    // A job belongs to whoever requested it: another archivist cannot see, download,
    // acknowledge or cancel it.
    let other = ledger_service::create_token(
        app.shared.db(),
        ledger_service::Role::Archivist,
        "another-archive",
    )
    .await
    .unwrap();
    assert_eq!(get(&app, &first, &other).await.status(), 404);
    let file = m1["output"][0]["url"].as_str().unwrap();
    assert_eq!(get(&app, file, &other).await.status(), 404);
    let post = |path: String, token: String, body: Value| {
        let req = app
            .client
            .post(app.url(&path))
            .bearer_auth(token)
            .json(&body);
        async move { req.send().await.unwrap() }
    };
    // The archive acknowledges the first export, naming the SHA-256 of the manifest body it
    // received: checked against the service's.
    let r = get(&app, &first, &archivist).await;
    let header_digest = r.headers()["x-manifest-sha256"]
        .to_str()
        .unwrap()
        .to_string();
    let body = r.bytes().await.unwrap();
    let digest = hex::encode(sha2::Digest::finalize(sha2::Digest::chain_update(
        <sha2::Sha256 as sha2::Digest>::new(),
        &body,
    )));
    assert_eq!(digest, header_digest);
    let ack_path = format!("{first}/acknowledge");
    for (token, d, want) in [
        (&other, digest.clone(), 404),
        (&archivist, "00".repeat(32), 409),
        (&archivist, "not a digest".to_string(), 400),
    ] {
        let r = post(
            ack_path.clone(),
            token.clone(),
            json!({ "manifest_sha256": d }),
        )
        .await;
        assert_eq!(r.status(), want);
    }
    let r = post(
        ack_path.clone(),
        archivist.clone(),
        json!({ "manifest_sha256": digest }),
    )
    .await;
    assert_eq!(r.status(), 200);
    let ack: Value = r.json().await.unwrap();
    assert_eq!(ack["manifest_sha256"], digest.as_str());
    assert_eq!(ack["acknowledged_by"], "hospital-archive");
    // Final: no second acknowledgement, no cancel; nothing pruned before a second person.
    let r = post(
        ack_path.clone(),
        archivist.clone(),
        json!({ "manifest_sha256": digest }),
    )
    .await;
    assert_eq!(r.status(), 409);
    let r = app
        .client
        .delete(app.url(&first))
        .bearer_auth(&archivist)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = app
        .client
        .delete(app.url(&first))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let export_id = first.rsplit('/').next().unwrap();
    let idx = obs_index(&lines(&dir.join("one/Observation.ndjson"))[0]);
    assert_eq!(
        app.get(&format!("/v1/readings/{idx}"), Some(&app.reader))
            .await
            .status(),
        200,
        "not pruned on the archivist's word alone"
    );
    let approve = format!("{first}/approve-pruning");
    let r = post(approve.clone(), archivist.clone(), json!({})).await;
    assert_eq!(r.status(), 403, "an archivist cannot approve");
    // An admin acknowledging its own export could not approve it either.
    let admin_again = ledger_service::create_token(
        app.shared.db(),
        ledger_service::Role::Admin,
        "hospital-archive",
    )
    .await
    .unwrap();
    let r = post(approve.clone(), admin_again, json!({})).await;
    assert_eq!(r.status(), 403, "not the acknowledger's name");
    // A second person approves: the readings' payloads are pruned (retention 0 in tests); they
    // answer 410 naming the export; every proof still verifies.
    let r = post(approve.clone(), app.admin.clone(), json!({})).await;
    assert_eq!(r.status(), 200);
    let ok: Value = r.json().await.unwrap();
    assert_eq!(ok["pruned"], 20);
    let r = post(approve, app.admin.clone(), json!({})).await;
    assert_eq!(r.status(), 409, "approved once");
    let m: Value = get(&app, &first, &archivist).await.json().await.unwrap();
    let ext = &m["extension"]["https://vitals-ledger.example/fhir/export"];
    assert_eq!(ext["manifest_sha256"], digest.as_str());
    assert_eq!(ext["prune_approved_by"], "test admin");
    for path in [
        format!("/v1/readings/{idx}"),
        format!("/v1/readings/{idx}/evidence"),
        format!("/v1/log/entries/{idx}"),
    ] {
        let r = app.get(&path, Some(&app.reader)).await;
        assert_eq!(r.status(), 410, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["export"], export_id, "{path}");
    }
    // A patient's list still answers, each pruned reading marked with its export.
    let list: Value = app
        .get(
            "/v1/readings?patient=patient-0&limit=1000",
            Some(&app.reader),
        )
        .await
        .json()
        .await
        .unwrap();
    let items = list["readings"].as_array().unwrap();
    assert_eq!(items.len(), 13);
    assert_eq!(items.iter().filter(|r| r["pruned"] == true).count(), 10);
    assert!(items
        .iter()
        .filter(|r| r["pruned"] == true)
        .all(|r| r["export"] == export_id));
    let size = app.shared.committed();
    let p: Value = app
        .get(
            &format!("/v1/log/proof/inclusion?index={idx}&tree_size={size}"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    let hashes: Vec<[u8; 32]> = p["hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| common::b64(h).try_into().unwrap())
        .collect();
    let cp = provenance_core::checkpoint::Checkpoint::open(
        &app.wait_for_checkpoint(size).await,
        &trust.log_key,
    )
    .unwrap();
    // The pruned leaf's hash (from the first archive) is still proved by the log.
    let leaf = {
        let man: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("one/log/manifest.json")).unwrap(),
        )
        .unwrap();
        let f = man["entry_files"][0].as_str().unwrap();
        let line = std::fs::read_to_string(dir.join("one/log").join(f))
            .unwrap()
            .lines()
            .nth(idx as usize)
            .unwrap()
            .to_string();
        provenance_core::archive::EntryLine::parse(line.as_bytes())
            .unwrap()
            .1
    };
    provenance_core::merkle::verify_inclusion(
        idx,
        size,
        &provenance_core::merkle::leaf_hash(&leaf),
        &hashes,
        &cp.root,
    )
    .unwrap();
    // The archives downloaded before pruning still verify; the incremental one is untouched.
    let r = verifier_cli::export::verify_export(&dir.join("one/log"), &trust, false);
    assert!(r.verified, "{}", r.human());
    // A new archive of the whole log after pruning: the pruned readings are leaf hashes only,
    // and the log is still proved complete.
    let after = dir.join("after-pruning");
    ledger_service::write_log_archive(app.shared.db(), &after, 0)
        .await
        .unwrap();
    let r = verifier_cli::export::verify_export(&after, &trust, false);
    assert!(r.verified, "{}", r.human());
    assert!(
        r.checks.iter().any(|c| c.step == "readings.decode"
            && c.detail
                .contains("20 pruned readings: content not checked here")),
        "{}",
        r.human()
    );
    let again = kick_off(&app, &archivist, &format!("?from_index={end1}")).await;
    let m5 = manifest(&app, &archivist, &again).await;
    assert_eq!(
        m5["output"][0]["count"], 6,
        "readings after the pruned range are whole"
    );
    let _ = std::fs::remove_dir_all(&dir);
    app.finish().await;
}

fn obs_index(o: &Value) -> u64 {
    o["identifier"][0]["value"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A service stopped right after the kick-off (the job queued or half written) finishes the
/// export when it comes back: every reading once, and the evidence verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_survives_a_restart() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("Acme Sensors", 2, 1);
    dev.enroll(&app).await;
    for chunk in 0..6u64 {
        ingest(&app, &dev, chunk * 500..(chunk + 1) * 500).await;
    }
    let location = kick_off(&app, &app.admin.clone(), "?_type=Observation,Provenance").await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let stopped = app.stop().await;
    let app = stopped.start_again().await;
    let m = manifest(&app, &app.admin, &location).await;
    assert_eq!(m["output"][0]["count"], 6000);
    let dir = std::env::temp_dir().join(format!("export-restart-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    download(&app, &app.admin, &m, &dir).await;
    let ids: std::collections::HashSet<String> = lines(&dir.join("Observation.ndjson"))
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 6000, "no reading twice, none missing");
    let k: Value = app.get("/v1/log/key", None).await.json().await.unwrap();
    let mut trust = Trust::log_only(NoteVerifier::from_vkey(k["vkey"].as_str().unwrap()).unwrap());
    trust.issuers.push(dev.ca.clone());
    trust.issuers.push(dev.fleet.clone());
    let r = verifier_cli::export::verify_export(&dir.join("log"), &trust, false);
    assert!(r.verified, "{}", r.human());
    let _ = std::fs::remove_dir_all(&dir);
    app.finish().await;
}
