//! Screenshots of the web app for the README, from a running system (the quickstart's):
//!
//! ```text
//! cargo run -p system-tests --example webshots -- http://127.0.0.1:8080 <clinician token> \
//!     quickstart-data/log.vkey quickstart-data/factory/ca.pem quickstart-data/fleet/ca.pem docs/screenshots
//! ```
//!
//! It signs in, opens the ward overview, the first patient's charts, a reading with "Verify in
//! this browser", and the log page, saving each at 1280×800 as PNG.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use ledger_testkit::fantoccini::Locator;
use ledger_testkit::Browser;

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let [base, token, vkey, ca1, ca2, out] = &a[..] else {
        panic!("usage: webshots BASE TOKEN LOG_VKEY CA_PEM CA_PEM OUT_DIR");
    };
    std::fs::create_dir_all(out).unwrap();
    let b = Browser::launch(1280, 800).await;
    let c = &b.client;
    let shot = |name: &str| {
        let path = format!("{out}/{name}.png");
        async move {
            let png = c.screenshot().await.unwrap();
            std::fs::write(&path, png).unwrap();
            println!("{path}");
        }
    };
    b.sign_in(base, token).await;
    b.wait_js(
        "document.querySelectorAll('#ward-rows tr[data-patient]').length > 0",
        20,
    )
    .await;
    shot("ward").await;
    // The patient with the most severe alert, over the last few minutes (a fresh quickstart's).
    let patient = b
        .js("const rows = [...document.querySelectorAll('#ward-rows tr[data-patient]')]; const r = rows.find(r => r.dataset.level === 'emergency') || rows.find(r => r.dataset.level === 'urgent') || rows[0]; return r.dataset.patient")
        .await;
    let patient = patient.as_str().unwrap().to_string();
    let reading = b
        .js("return document.querySelector('#ward-rows td.vital a').getAttribute('href')")
        .await;
    let range = b
        .js("return `${Date.now() - 10 * 60000}-${Date.now() + 30000}`")
        .await;
    b.open_patient(base, &patient, range.as_str().unwrap())
        .await;
    shot("patient").await;
    let pem = std::fs::read_to_string(ca1).unwrap() + &std::fs::read_to_string(ca2).unwrap();
    b.pin_trust(base, std::fs::read_to_string(vkey).unwrap().trim(), &pem)
        .await;
    c.goto(&format!("{base}/app/{}", reading.as_str().unwrap()))
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("#verify-here"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait_js("document.getElementById('verdict')", 20).await;
    b.js("document.getElementById('verify-result').scrollIntoView(); return true")
        .await;
    shot("reading-verified").await;
    c.goto(&format!("{base}/app/#/log")).await.unwrap();
    b.wait_js("document.getElementById('log-size')", 10).await;
    shot("log").await;
    let away = b.requests_elsewhere(base).await;
    assert!(
        away.is_empty(),
        "the page asked for other origins: {away:#?}"
    );
    println!(
        "the page made {} requests, all to {base}",
        b.page_requests().await.len()
    );
    b.close().await;
}
