//! Private mode in a real browser (issue #17): a household token signs in, pins the log key and
//! the issuers, brings its recipient key; the page fetches the feed and provenance-core in
//! WebAssembly verifies and decrypts every message in the browser, draws the room's temperature
//! and lists the hours and the warm spell. A recipient the cloud enrolls behind the household's
//! back shows as a change, and the messages it could read are not shown until the household
//! accepts it. The page asks nothing of anyone but the service.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit::fantoccini::Locator;
use ledger_testkit::{now_ms, Browser, Devices, Engine, TestApp};
use provenance_core::cose::SignedReading;
use provenance_core::private::{RecipientSecret, Seal};
use provenance_core::reading::{Decimal, Measurement, Reading};
use serde_json::{json, Value};

const HH: &str = "HH-0001";

fn sealed(d: &Devices, seq: u64, at: u64, tenths: i64, to: &[&RecipientSecret]) -> Vec<u8> {
    let (sk, sc) = &d.sensors[0];
    let r = Reading {
        sensor_id: sc.subject_cn.clone(),
        seq,
        measured_at_ms: at,
        measurements: vec![Measurement::new("60832-3", Decimal::new(tenths, -1)).unwrap()],
    };
    Seal {
        gateway: &d.gateways[0].0,
        received_at_ms: at + 200,
        household: HH,
        msg_seq: seq,
    }
    .seal_os(
        &SignedReading::sign(&r, sk).unwrap(),
        &to.iter().map(|s| s.public()).collect::<Vec<_>>(),
    )
    .unwrap()
}

async fn admin_post(app: &TestApp, path: &str, body: Value) -> Value {
    let r = app.post_json(path, Some(&app.admin), &body).await;
    assert_eq!(r.status(), 201, "{path}");
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_household_reads_its_readings_in_the_browser() {
    if !Browser::available("the household page's browser test") {
        return;
    }
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("HomeOrg", 1, 1);
    dev.enroll(&app).await;
    let owner = RecipientSecret::derive(b"browser test: the tenant's key");
    let from = now_ms() - 10 * 86_400_000;
    admin_post(&app, "/v1/registry/recipients", json!({"household": HH, "name": "tenant", "public_key": hex::encode(owner.public().0), "from_ms": from})).await;
    admin_post(
        &app,
        "/v1/registry/household-bindings",
        json!({"gateway_id": dev.gateways[0].1.subject_cn, "household": HH, "from_ms": from}),
    )
    .await;
    let token = admin_post(
        &app,
        "/v1/tokens",
        json!({"role": "household", "name": "tenant browser", "household": HH}),
    )
    .await["token"]
        .as_str()
        .unwrap()
        .to_string();
    // 30 readings a minute apart: 19.0 °C rising to 21.9 (warm above 21).
    let start = now_ms() - 31 * 60_000;
    let batch: Vec<Vec<u8>> = (0..30u64)
        .map(|i| sealed(&dev, i + 1, start + i * 60_000, 190 + i as i64, &[&owner]))
        .collect();
    let (_, v) = app.ingest(&batch).await;
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "accepted"),
        "{v}"
    );
    app.wait_for_checkpoint(app.shared.committed()).await;

    let b = Browser::launch(1280, 900).await;
    let base = app.base.clone();
    b.sign_in(&base, &token).await;
    b.wait_js("document.getElementById('whoami')", 20).await;
    let menu = b
        .js("return [...document.querySelectorAll('#nav a')].map(a => a.textContent)")
        .await;
    assert_eq!(menu, json!(["Home", "Verify"]), "a household's pages");
    let k: Value = app.get("/v1/log/key", None).await.json().await.unwrap();
    let pems = format!("{}{}", dev.ca.to_pem(), dev.fleet.to_pem());
    let pinned = b.pin_trust(&base, k["vkey"].as_str().unwrap(), &pems).await;
    assert!(pinned.contains("2 issuer certificate(s)"), "{pinned}");
    // Without a key, the page offers to make one or bring one.
    b.client.goto(&format!("{base}/app/#/home")).await.unwrap();
    b.wait_js("document.getElementById('home-key-setup')", 20)
        .await;
    b.js(&format!(
        "localStorage.setItem('vitals-ledger.home-key.{HH}', '{}'); return true",
        hex::encode(owner.to_bytes())
    ))
    .await;
    b.client.refresh().await.unwrap();
    b.wait_js(
        "performance.getEntriesByName('home-chart-drawn').length > 0",
        30,
    )
    .await;
    let shown = b
        .js("return document.getElementById('home-status').dataset.shown")
        .await;
    assert_eq!(
        shown,
        json!("30"),
        "every message verified and decrypted in the browser"
    );
    let points = b
        .js("return document.getElementById('home-chart').dataset.points")
        .await;
    assert_eq!(points, json!("30"));
    let key_id = b
        .js("return document.getElementById('home-key-id').textContent")
        .await;
    assert_eq!(key_id, json!(owner.public().key_id().to_hex()));
    let spells = b
        .js("return document.getElementById('home-spells').textContent")
        .await;
    assert!(spells.as_str().unwrap().contains("warm"), "{spells}");
    let hours = b
        .js("return document.querySelectorAll('#home-hours-table tbody tr').length")
        .await;
    assert!(hours.as_u64().unwrap() >= 1);
    // The gateway's binding is a change this browser has not accepted: reported.
    let w = b
        .js("return document.getElementById('home-warnings').textContent")
        .await;
    assert!(
        w.as_str().unwrap().contains("encrypts for the household"),
        "{w}"
    );

    // The cloud enrolls a key of its own; the gateway encrypts to it too.
    let cloud = RecipientSecret::derive(b"browser test: the cloud's key");
    admin_post(&app, "/v1/registry/recipients", json!({"household": HH, "name": "maintenance", "public_key": hex::encode(cloud.public().0), "from_ms": from})).await;
    let more: Vec<Vec<u8>> = (30..33u64)
        .map(|i| sealed(&dev, i + 1, start + i * 60_000, 200, &[&owner, &cloud]))
        .collect();
    let (_, v) = app.ingest(&more).await;
    assert!(
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "accepted"),
        "{v}"
    );
    app.wait_for_checkpoint(app.shared.committed()).await;
    b.js("performance.clearMarks('home-chart-drawn'); return true")
        .await;
    b.client
        .find(Locator::Css("#home-fetch"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_js("document.getElementById('home-refused') && document.getElementById('home-refused').dataset.count === '3'", 30).await;
    let why = b
        .js("return document.getElementById('home-refused').textContent")
        .await;
    assert!(
        why.as_str().unwrap().contains("private.recipients")
            && why.as_str().unwrap().contains("maintenance"),
        "{why}"
    );
    let w = b
        .js("return document.getElementById('home-warnings').textContent")
        .await;
    assert!(w.as_str().unwrap().contains("recipient maintenance"), "{w}");
    // Accepted knowingly: shown.
    b.client
        .find(Locator::Css("#home-accept"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_js("document.getElementById('home-status') && document.getElementById('home-status').dataset.shown === '3'", 30).await;
    let elsewhere = b.requests_elsewhere(&base).await;
    assert!(elsewhere.is_empty(), "{elsewhere:?}");
    b.close().await;
    app.finish().await;
}
