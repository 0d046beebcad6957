//! The web app's figures (docs/PERFORMANCE.md):
//!
//! ```text
//! cargo run --release -p system-tests --example webbench [sqlite|postgres]
//! ```
//!
//! - the size of the app's files and of the WebAssembly verifier, raw and gzip-compressed;
//! - time to first paint of the patient view with 7 days of one reading every 5 s (120,960
//!   readings of four vital signs): a full page load of `#/patients/patient-0/7d` in headless
//!   Chromium, from navigation start to the last chart drawn (the app's
//!   `patient-charts-drawn` mark), median of 7 loads; and, beside it, the series request alone
//!   from a client on the same machine;
//! - the browser verifier's time for one bundle, against `ledger-verify bundle` on the same file.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use ledger_testkit::{now_ms, Browser, Devices, Engine, TestApp};
use provenance_core::reading::{Decimal, Measurement};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

const DAY: u64 = 24 * 3600 * 1000;

fn gzip_len(bytes: &[u8]) -> usize {
    let mut child = Command::new("gzip")
        .arg("-9c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    child.wait_with_output().unwrap().stdout.len()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

#[tokio::main]
async fn main() {
    let engine = match std::env::args().nth(1).as_deref() {
        Some("postgres") => Engine::Postgres,
        _ => Engine::Sqlite,
    };
    // Sizes.
    let mut total = (0, 0);
    println!("## the app's files");
    for (path, size) in ledger_service::web_asset_sizes() {
        let bytes = reqwest_free_read(path);
        let gz = gzip_len(&bytes);
        println!("{path:45} {size:>9} B  gzip {gz:>8} B");
        total = (total.0 + size, total.1 + gz);
    }
    println!("{:45} {:>9} B  gzip {:>8} B", "total", total.0, total.1);

    // 7 days of one reading every 5 s for patient-0.
    let app = TestApp::spawn_tuned(engine, |c| {
        c.max_age_ms = 8 * DAY;
    })
    .await;
    let dev = Devices::new("BenchOrg", 1, 1);
    dev.enroll(&app).await;
    let now = now_ms();
    let n: u64 = 7 * DAY / 5000;
    let start = Instant::now();
    let mut seq = 0;
    while seq < n {
        let batch: Vec<Vec<u8>> = (seq..(seq + 2000).min(n))
            .map(|i| {
                let at = now - 7 * DAY + i * 5000;
                let wave = ((i % 720) as f64 / 720.0 * std::f64::consts::TAU).sin();
                let ms = vec![
                    Measurement::new("8867-4", Decimal::new(72 + (wave * 12.0) as i64, 0)).unwrap(),
                    Measurement::new("2708-6", Decimal::new(96 + (i % 3) as i64, 0)).unwrap(),
                    Measurement::new("9279-1", Decimal::new(14 + (i % 4) as i64, 0)).unwrap(),
                    Measurement::new("8310-5", Decimal::new(368 + (wave * 4.0) as i64, -1))
                        .unwrap(),
                ];
                dev.envelope_with(0, 0, i + 1, at, ms)
            })
            .collect();
        let (status, body) = app.ingest(&batch).await;
        assert_eq!(status, 200, "{body}");
        seq += batch.len() as u64;
    }
    println!(
        "\n## data: {n} readings (4 vital signs each) of one patient over 7 days, ingested in {:.1} s ({:.0} readings/s) on {}",
        start.elapsed().as_secs_f64(),
        n as f64 / start.elapsed().as_secs_f64(),
        app.shared.db().engine()
    );
    app.wait_for_checkpoint(app.shared.committed()).await;
    let token = app.reader.clone();
    let clinician = {
        let r = app
            .post_json(
                "/v1/tokens",
                Some(&app.admin),
                &json!({"role": "clinician", "name": "bench"}),
            )
            .await;
        let v: Value = r.json().await.unwrap();
        v["token"].as_str().unwrap().to_string()
    };
    let _ = token;

    // The series request alone (what the page asks for at 1280 px: 1920 buckets).
    let q = format!(
        "/v1/patients/patient-0/series?from={}&to={}&points=1920",
        now - 7 * DAY,
        now + 60_000
    );
    let mut api = Vec::new();
    let mut bytes = 0;
    for _ in 0..7 {
        let t = Instant::now();
        let r = app.get(&q, Some(&clinician)).await;
        bytes = r.bytes().await.unwrap().len();
        api.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    println!(
        "series request (4 vital signs × ≤1920 buckets, {bytes} B): median {:.0} ms of 7",
        median(api.clone())
    );

    // Time to first paint of the patient view, full page loads.
    let b = Browser::launch(1280, 800).await;
    b.sign_in(&app.base, &clinician).await;
    b.wait_js("document.getElementById('ward-rows')", 20).await;
    let url = format!("{}/app/#/patients/patient-0/7d", app.base);
    let mut paint = Vec::new();
    let mut fcp = Vec::new();
    for _ in 0..7 {
        b.client.goto("about:blank").await.unwrap();
        b.client.goto(&url).await.unwrap();
        let v = b
            .wait_js(
                "performance.getEntriesByName('patient-charts-drawn').length > 0 && [performance.getEntriesByName('patient-charts-drawn')[0].startTime, (performance.getEntriesByName('first-contentful-paint')[0] || {startTime: 0}).startTime, document.getElementById('range-summary').dataset.readings]",
                60,
            )
            .await;
        paint.push(v[0].as_f64().unwrap());
        fcp.push(v[1].as_f64().unwrap());
        // The page's 7 days end at its own now: the oldest few readings have left the range.
        let charted: u64 = v[2].as_str().unwrap().parse().unwrap();
        assert!(
            charted * 1000 >= n * 4 * 999,
            "the 7 days charted: {charted} of {}",
            n * 4
        );
    }
    println!(
        "patient view, 7 days, 4 charts: first contentful paint median {:.0} ms, all charts drawn median {:.0} ms (of 7 loads: {:?})",
        median(fcp),
        median(paint.clone()),
        paint.iter().map(|p| p.round()).collect::<Vec<_>>()
    );

    // One bundle: the browser's verifier against ledger-verify.
    let idx = app.shared.committed() - 1;
    let bundle = app
        .get(&format!("/v1/readings/{idx}/evidence"), Some(&clinician))
        .await
        .text()
        .await
        .unwrap();
    let key: Value = app.get("/v1/log/key", None).await.json().await.unwrap();
    let trust = json!({ "log_key": key["vkey"], "issuers": [dev.ca.to_pem(), dev.fleet.to_pem()] });
    let web = b
        .client
        .execute_async(
            "const [bundle, trust, done] = arguments; import('/app/verify.js').then(async m => { await m.verifyBundle(bundle, trust); const t = performance.now(); let r; for (let i = 0; i < 50; i++) r = await m.verifyBundle(bundle, trust); done([r.verified, (performance.now() - t) / 50]); });",
            vec![json!(bundle), trust],
        )
        .await
        .unwrap();
    let dir = std::env::temp_dir().join("webbench");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("b.json"), &bundle).unwrap();
    std::fs::write(dir.join("log.vkey"), key["vkey"].as_str().unwrap()).unwrap();
    std::fs::write(dir.join("ca.pem"), dev.ca.to_pem()).unwrap();
    std::fs::write(dir.join("fleet.pem"), dev.fleet.to_pem()).unwrap();
    let cli = ledger_testkit::binary("verifier-cli", "ledger-verify");
    let t = Instant::now();
    for _ in 0..10 {
        let ok = Command::new(&cli)
            .arg("bundle")
            .arg(dir.join("b.json"))
            .args(["--log-key"])
            .arg(dir.join("log.vkey"))
            .arg("--issuer")
            .arg(dir.join("ca.pem"))
            .arg("--issuer")
            .arg(dir.join("fleet.pem"))
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    println!(
        "one bundle: the browser's verifier {:.2} ms (verified: {}); ledger-verify as a process {:.1} ms",
        web[1].as_f64().unwrap(),
        web[0],
        t.elapsed().as_secs_f64() * 100.0
    );
    b.close().await;
    app.finish().await;
}

/// A file's bytes as the service serves it (from the table compiled into it).
fn reqwest_free_read(path: &str) -> Vec<u8> {
    if path == "web_verifier.wasm" {
        return ledger_service::VERIFIER_WASM.to_vec();
    }
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../ledger-service/web")
            .join(path),
    )
    .unwrap()
}
