//! The web app in a real browser: Debian's headless Chromium, driven through chromedriver,
//! against a real service with real data (issue #16's "must show").
//!
//! - sign in with a clinician token; the ward overview lists the patients with their latest
//!   values; a patient's chart holds exactly the readings that were ingested (counted), with a
//!   gap where none arrived; acknowledging an alert in the page changes it in the API, with the
//!   clinician's name recorded;
//! - "Verify in this browser" answers VERIFIED for a genuine reading and names the failing step
//!   for a tampered bundle pasted in;
//! - the browser's WebAssembly verifier and `ledger-verify` give the same report (every step,
//!   verdict and detail) on one set of genuine and tampered bundles and trusts, the same files
//!   run through both;
//! - the page asks for nothing but the service's own origin (Chromium's network log), and
//!   nothing leaves 127.0.0.1 (a recording proxy refuses everything else).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit::fantoccini::key::Key;
use ledger_testkit::fantoccini::Locator;
use ledger_testkit::{now_ms, Browser, Devices, Engine, TestApp};
use provenance_core::reading::{Decimal, Measurement};
use serde_json::{json, Value};
use std::process::Command;

const HR: &str = "8867-4";

fn hr(v: i64) -> Vec<Measurement> {
    vec![
        Measurement::new(HR, Decimal::new(v, 0)).unwrap(),
        Measurement::new("2708-6", Decimal::new(97, 0)).unwrap(),
    ]
}

/// A clinician token named `name`.
async fn token(app: &TestApp, role: &str, name: &str) -> String {
    let r = app
        .post_json(
            "/v1/tokens",
            Some(&app.admin),
            &json!({ "role": role, "name": name }),
        )
        .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    v["token"].as_str().unwrap().to_string()
}

/// Ingests the ward's data: patient-0 40 readings 5 s apart ending in a heart rate of 135 (an
/// emergency), patient-1 25 normal readings, patient-2 10 readings half an hour ago and 10
/// recent ones (a gap between). Returns patient-0's last reading's index and the log size.
async fn ward(app: &TestApp, dev: &Devices) -> (u64, u64) {
    let now = now_ms();
    let mut envs = Vec::new();
    for i in 0..40u64 {
        let v = if i == 39 { 135 } else { 70 + (i % 5) as i64 };
        envs.push(dev.envelope_with(0, 0, i + 1, now - (40 - i) * 5000, hr(v)));
    }
    for i in 0..25u64 {
        envs.push(dev.envelope_with(1, 0, i + 1, now - (25 - i) * 5000, hr(80)));
    }
    for i in 0..20u64 {
        let at = if i < 10 {
            now - 1_800_000 - (10 - i) * 5000
        } else {
            now - (20 - i) * 5000
        };
        envs.push(dev.envelope_with(2, 0, i + 1, at, hr(66)));
    }
    let (status, body) = app.ingest(&envs).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["status"] == "accepted"), "{body}");
    let last = results[39]["index"].as_u64().unwrap();
    let size = app.shared.committed();
    app.wait_for_checkpoint(size).await;
    (last, size)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_app_in_a_real_browser() {
    if !Browser::available("the web app's browser test") {
        return;
    }
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("WebOrg", 3, 1);
    dev.enroll(&app).await;
    let (last, _) = ward(&app, &dev).await;
    let clinician = token(&app, "clinician", "Dr. Test").await;
    let b = Browser::launch(1280, 800).await;
    let base = app.base.clone();

    // Sign in: the menu is the clinician's.
    b.sign_in(&base, &clinician).await;
    b.wait_js(
        "document.querySelectorAll('#ward-rows tr[data-patient]').length === 3",
        20,
    )
    .await;
    let who = b
        .js("return document.getElementById('whoami').textContent")
        .await;
    assert_eq!(who, "Dr. Test (clinician)");
    let menu = b
        .js("return [...document.querySelectorAll('#nav a')].map(a => a.textContent)")
        .await;
    assert_eq!(
        menu,
        json!(["Ward", "Verify", "Log"]),
        "a clinician's pages"
    );

    // The ward lists each patient's latest values.
    let latest = b
        .js("return Object.fromEntries([...document.querySelectorAll('#ward-rows tr[data-patient]')].map(r => [r.dataset.patient, r.querySelector('td[data-loinc=\"8867-4\"]').dataset.value]))")
        .await;
    assert_eq!(
        latest,
        json!({ "patient-0": "135", "patient-1": "80", "patient-2": "66" })
    );
    let level = b
        .js("return document.querySelector('tr[data-patient=\"patient-0\"]').dataset.level")
        .await;
    assert_eq!(level, "emergency");
    let badge = b
        .js("return document.querySelector('tr[data-patient=\"patient-0\"] .badge').textContent")
        .await;
    assert!(
        badge.as_str().unwrap().contains("EMERGENCY"),
        "a word, not colour alone: {badge}"
    );

    // Acknowledging the alert in the page acknowledges it in the API, by Dr. Test.
    let alert_id = b
        .js("return document.querySelector('tr[data-patient=\"patient-0\"] li[data-alert]').dataset.alert")
        .await;
    let alert_id = alert_id.as_str().unwrap().to_string();
    // From the keyboard alone: Tab to the alert's Acknowledge button, Enter presses it.
    let mut reached = false;
    for _ in 0..80 {
        b.client
            .active_element()
            .await
            .unwrap()
            .send_keys(&Key::Tab.to_string())
            .await
            .unwrap();
        let on = b
            .js("const a = document.activeElement; return a && a.dataset.action === 'acknowledge' ? a.closest('li').dataset.alert : null")
            .await;
        if on == json!(alert_id) {
            reached = true;
            break;
        }
    }
    assert!(reached, "Tab reaches the Acknowledge button");
    b.client
        .active_element()
        .await
        .unwrap()
        .send_keys(&Key::Enter.to_string())
        .await
        .unwrap();
    b.wait_js(
        &format!("document.querySelector(\"li[data-alert='{alert_id}']\")?.dataset.state === 'acknowledged'"),
        20,
    )
    .await;
    let a: Value = app
        .get(&format!("/v1/alerts/{alert_id}"), Some(&clinician))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["state"], "acknowledged", "{a}");
    let events = a["events"].as_array().unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["transition"] == "acknowledged" && e["actor"] == "Dr. Test"),
        "{a}"
    );

    // A patient's chart holds every reading ingested: 40 heart rates; patient-2's has a gap.
    b.open_patient(&base, "patient-0", "1h").await;
    let chart = b
        .js("const c = document.querySelector('.chart[data-loinc=\"8867-4\"]'); return [c.dataset.points, c.dataset.readings, c.dataset.gaps, c.querySelectorAll('canvas').length]")
        .await;
    assert_eq!(
        chart,
        json!(["40", "40", "0", 1]),
        "points, readings, gaps, canvas"
    );
    let alerts_row = b
        .js("return document.querySelectorAll('#patient-alerts tr[data-alert]').length")
        .await;
    assert_eq!(alerts_row, 1, "the alert is listed with the chart");
    b.client
        .goto(&format!("{base}/app/#/patients/patient-2/1h"))
        .await
        .unwrap();
    b.wait_js(
        "document.querySelector('.chart[data-loinc=\"8867-4\"]')?.dataset.readings === '20'",
        20,
    )
    .await;
    let gaps = b
        .js("return document.querySelector('.chart[data-loinc=\"8867-4\"]').dataset.gaps")
        .await;
    assert_eq!(gaps, "1", "half an hour without readings is a gap");

    // Verify in this browser: VERIFIED for the genuine reading.
    let key: Value = app.get("/v1/log/key", None).await.json().await.unwrap();
    let vkey = key["vkey"].as_str().unwrap().to_string();
    let issuers = format!("{}{}", dev.ca.to_pem(), dev.fleet.to_pem());
    let msg = b.pin_trust(&base, &vkey, &issuers).await;
    assert!(msg.contains("2 issuer certificate(s)"), "{msg}");
    b.client
        .goto(&format!("{base}/app/#/readings/{last}"))
        .await
        .unwrap();
    b.client
        .wait()
        .for_element(Locator::Css("#verify-here"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let verdict = b
        .wait_js(
            "document.querySelector('#verify-result #verdict')?.dataset.verdict",
            30,
        )
        .await;
    assert_eq!(verdict, "VERIFIED");
    let steps = b
        .js("return [...document.querySelectorAll('#verify-result tr[data-step]')].map(r => r.dataset.step)")
        .await;
    assert!(
        steps.as_array().unwrap().len() >= 10,
        "every step is shown: {steps}"
    );

    // A tampered bundle, pasted in: NOT VERIFIED, with the failing step named.
    let bundle: Value = app
        .get(&format!("/v1/readings/{last}/evidence"), Some(&clinician))
        .await
        .json()
        .await
        .unwrap();
    let tampered = flip_leaf(&bundle, "reading").to_string();
    b.client
        .execute(
            "document.getElementById('bundle-text').value = arguments[0]; return true;",
            vec![json!(tampered)],
        )
        .await
        .unwrap();
    b.client
        .find(Locator::Css("#verify-pasted"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let failed = b
        .wait_js(
            "document.querySelector('#verify-other-result #verdict')?.dataset.failedStep",
            30,
        )
        .await;
    assert_eq!(failed, "reading.inclusion");

    // On a tablet (800 px wide): no page wider than the screen, the ward and charts still there.
    b.client.set_window_size(800, 1100).await.unwrap();
    for (route, ready) in [
        (
            "#/ward",
            "document.querySelectorAll('#ward-rows tr[data-patient]').length === 3",
        ),
        (
            "#/patients/patient-0/1h",
            "performance.getEntriesByName('patient-charts-drawn').length > 0",
        ),
    ] {
        b.client.goto(&format!("{base}/app/{route}")).await.unwrap();
        b.wait_js(ready, 20).await;
        let fits = b
            .js("return document.documentElement.scrollWidth <= window.innerWidth + 1")
            .await;
        assert_eq!(fits, true, "{route} fits a tablet's width");
    }

    // The page asked for nothing but its own origin, and the proxy saw its requests.
    let elsewhere = b.requests_elsewhere(&base).await;
    assert!(elsewhere.is_empty(), "the page asked for: {elsewhere:#?}");
    let page = b.page_requests().await;
    for must in [
        "/app/",
        "/app/app.js",
        "/app/web_verifier.wasm",
        "/v1/ward",
        "/v1/me",
    ] {
        assert!(
            page.iter().any(|u| u.starts_with(&format!("{base}{must}"))),
            "the page's requests include {must}: {page:#?}"
        );
    }
    let proxied = b.proxied();
    assert!(
        proxied
            .iter()
            .any(|r| r.starts_with(&format!("forwarded GET {base}/v1/ward"))),
        "the page's requests went through the recording proxy: {proxied:#?}"
    );
    for r in proxied.iter().filter(|r| r.starts_with("forwarded ")) {
        assert!(
            r.contains(" http://127.0.0.1:"),
            "forwarded off loopback: {r}"
        );
    }
    // What Chromium itself tried (its update and account services), refused at the proxy.
    let refused: Vec<&String> = proxied
        .iter()
        .filter(|r| r.starts_with("refused "))
        .collect();
    eprintln!("the browser's own requests, refused: {refused:#?}");
    b.close().await;
    app.finish().await;
}

/// The bundle with one base64 character of an entry's leaf data changed (`reading`, or
/// `registry:<i>`).
fn flip_leaf(bundle: &Value, which: &str) -> Value {
    let mut b = bundle.clone();
    let entry = match which.strip_prefix("registry:") {
        Some(i) => &mut b["registry"][i.parse::<usize>().unwrap()],
        None => &mut b["reading"],
    };
    let leaf = entry["leaf_data"].as_str().unwrap().to_string();
    let mut chars: Vec<char> = leaf.chars().collect();
    let at = chars.len() / 2;
    chars[at] = if chars[at] == 'A' { 'B' } else { 'A' };
    entry["leaf_data"] = json!(chars.into_iter().collect::<String>());
    b
}

/// The bundle with the log's signature on its checkpoint changed (one bit of the Ed25519
/// signature, still valid base64), in every proof alike (they must name one checkpoint).
fn flip_checkpoint_signature(bundle: &Value) -> Value {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let flip = |proof: &str| -> String {
        let at = proof.rfind("\n— ").unwrap() + "\n— ".len();
        let line_end = proof[at..].find('\n').map_or(proof.len(), |e| at + e);
        let (name, sig) = proof[at..line_end].rsplit_once(' ').unwrap();
        let mut raw = b64.decode(sig).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1; // the signature's last byte (after the 4-byte key id)
        format!(
            "{}{name} {}{}",
            &proof[..at],
            b64.encode(raw),
            &proof[line_end..]
        )
    };
    let mut b = bundle.clone();
    b["reading"]["proof"] = json!(flip(b["reading"]["proof"].as_str().unwrap()));
    for e in b["registry"].as_array_mut().unwrap() {
        e["proof"] = json!(flip(e["proof"].as_str().unwrap()));
    }
    if let Some(p) = b["shard_start"]["proof"].as_str().map(flip) {
        b["shard_start"]["proof"] = json!(p);
    }
    b
}

/// What an auditor pins, for both verifiers: the log key, issuer PEMs, witness vkeys and quorum,
/// kept checkpoints.
struct TrustCase {
    name: &'static str,
    key: String,
    issuers: Vec<String>,
    witnesses: Vec<String>,
    quorum: usize,
    kept: Vec<String>,
}

impl TrustCase {
    fn new(name: &'static str, key: &str, issuers: Vec<String>) -> Self {
        Self {
            name,
            key: key.to_string(),
            issuers,
            witnesses: Vec::new(),
            quorum: 0,
            kept: Vec::new(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_browser_verifier_and_ledger_verify_agree() {
    if !Browser::available("the verifier agreement test") {
        return;
    }
    // A time-sharded log (issue #18): the bundles are of today's shard, whose devices were
    // enrolled in it, so they carry a shard start and absence proofs for the carry.
    let app = TestApp::spawn_with(Engine::preferred(), |c| {
        c.shard_period = Some(provenance_core::shard::Period::Day);
    })
    .await;
    let dev = Devices::new("AgreeOrg", 3, 1);
    dev.enroll(&app).await;
    let (last, _) = ward(&app, &dev).await;
    let genuine: Value = app
        .get(&format!("/v1/readings/{last}/evidence"), Some(&app.reader))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        genuine["shard_start"].is_object(),
        "a shard's bundle: {genuine}"
    );
    let mut uncarried = genuine.clone();
    uncarried["carried_proofs"] = json!([]);
    let mut dropped = genuine.clone();
    dropped["registry"].as_array_mut().unwrap().remove(1);
    let mut swapped = genuine.clone();
    swapped["reading"] = genuine["registry"][0].clone();
    // The device-key holder: a reading signed with the sensor's (and gateway's) real keys, put
    // in place of the logged one under its proof.
    let mut unlogged = genuine.clone();
    {
        let forged = provenance_core::log_entry::LogEntry {
            kind: provenance_core::log_entry::EntryKind::Reading,
            body: dev.envelope_with(0, 0, 10_000, now_ms() - 1000, hr(72)),
            logged_at_ms: now_ms(),
        };
        use base64::Engine as _;
        unlogged["reading"]["leaf_data"] =
            json!(base64::engine::general_purpose::STANDARD.encode(forged.to_cbor()));
    }
    let mut bad_smt = genuine.clone();
    if let Some(h) = bad_smt["registry_proofs"][0]["hashes"][0].as_str() {
        let mut h = h.to_string();
        h.replace_range(0..2, if h.starts_with("00") { "11" } else { "00" });
        bad_smt["registry_proofs"][0]["hashes"][0] = json!(h);
    }
    let bundles: Vec<(&str, String)> = vec![
        ("genuine", genuine.to_string()),
        (
            "reading leaf changed",
            flip_leaf(&genuine, "reading").to_string(),
        ),
        (
            "registry leaf changed",
            flip_leaf(&genuine, "registry:2").to_string(),
        ),
        (
            "checkpoint signature changed",
            flip_checkpoint_signature(&genuine).to_string(),
        ),
        ("a registry entry left out", dropped.to_string()),
        ("a registry entry as the reading", swapped.to_string()),
        ("registry proof changed", bad_smt.to_string()),
        ("carried proofs left out", uncarried.to_string()),
        ("not JSON", "{\"media_type\": ".to_string()),
        (
            "a reading the sensor's key signed that the log never held",
            unlogged.to_string(),
        ),
    ];
    let key: Value = app.get("/v1/log/key", None).await.json().await.unwrap();
    let vkey = key["vkey"].as_str().unwrap().to_string();
    let other_key = {
        let k = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        provenance_core::note::NoteSigner::new("test.example/vitals", k)
            .unwrap()
            .verifier()
            .to_vkey()
    };
    let dir = std::env::temp_dir().join(format!("web-agree-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // The operator with the log key forks: a checkpoint of the same size with another root,
    // which the auditor kept.
    let genuine_bundle =
        provenance_core::bundle::EvidenceBundle::from_json(genuine.to_string().as_bytes()).unwrap();
    let signed = genuine_bundle.reading.tlog_proof().unwrap().checkpoint;
    let cp = provenance_core::checkpoint::Checkpoint::from_text(
        provenance_core::note::split(&signed).unwrap().text,
    )
    .unwrap();
    let fork = provenance_core::checkpoint::Checkpoint {
        root: [7u8; 32],
        ..cp.clone()
    }
    .sign(
        &provenance_core::note::NoteSigner::from_skey(&app.log_skey)
            .unwrap()
            .renamed(&cp.origin)
            .unwrap(),
    )
    .unwrap();
    let witness = provenance_core::note::NoteSigner::new(
        "witness.example/w1",
        ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]),
    )
    .unwrap()
    .verifier()
    .to_vkey();
    let both = || vec![dev.ca.to_pem(), dev.fleet.to_pem()];
    let trusts = vec![
        TrustCase::new("pinned", &vkey, both()),
        TrustCase::new("another log key", &other_key, both()),
        TrustCase::new("no sensor issuer", &vkey, vec![dev.fleet.to_pem()]),
        TrustCase {
            witnesses: vec![witness],
            quorum: 1,
            ..TrustCase::new(
                "a witness quorum the operator cannot meet alone",
                &vkey,
                both(),
            )
        },
        TrustCase {
            kept: vec![fork],
            ..TrustCase::new("a kept fork signed with the log key", &vkey, both())
        },
    ];
    let b = Browser::launch(1280, 800).await;
    b.client.goto(&format!("{}/app/", app.base)).await.unwrap();
    b.wait_js("document.readyState === 'complete'", 20).await;
    let verify_cli = ledger_testkit::binary("verifier-cli", "ledger-verify");
    let mut outcomes = Vec::new();
    for t in &trusts {
        let tname = t.name;
        let key_file = write("log.vkey", &t.key);
        let issuer_files: Vec<_> = t
            .issuers
            .iter()
            .enumerate()
            .map(|(i, pem)| write(&format!("issuer-{i}.pem"), pem))
            .collect();
        let kept_files: Vec<_> = t
            .kept
            .iter()
            .enumerate()
            .map(|(i, c)| write(&format!("kept-{i}.cp"), c))
            .collect();
        for (bname, text) in &bundles {
            let file = write("bundle.json", text);
            let mut cmd = Command::new(&verify_cli);
            cmd.arg("--json")
                .arg("bundle")
                .arg(&file)
                .arg("--log-key")
                .arg(&key_file)
                .arg("--quorum")
                .arg(t.quorum.to_string());
            for f in &issuer_files {
                cmd.arg("--issuer").arg(f);
            }
            for w in &t.witnesses {
                cmd.arg("--witness").arg(w);
            }
            for f in &kept_files {
                cmd.arg("--checkpoint").arg(f);
            }
            let out = cmd.output().unwrap();
            let cli: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                panic!(
                    "{bname}/{tname}: ledger-verify printed no JSON ({e}): {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
            assert_eq!(
                out.status.code(),
                Some(if cli["verified"] == true { 0 } else { 1 }),
                "{bname}/{tname}"
            );
            let trust = json!({ "log_key": t.key, "issuers": t.issuers, "witnesses": t.witnesses,
                "quorum": t.quorum, "checkpoints": t.kept });
            let web = b
                .client
                .execute_async(
                    "const [bundle, trust, done] = arguments; import('/app/verify.js').then(m => m.verifyBundle(bundle, trust)).then(done, e => done({ crashed: String(e) }));",
                    vec![json!(text), trust],
                )
                .await
                .unwrap();
            assert_eq!(
                web["verified"], cli["verified"],
                "{bname}/{tname}: {web} vs {cli}"
            );
            assert_eq!(
                web["checks"], cli["checks"],
                "{bname}/{tname}: the same steps, verdicts and details"
            );
            let first_failed = cli["checks"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| c["ok"] == false)
                .map(|c| c["step"].as_str().unwrap().to_string());
            outcomes.push(format!("{bname} / {tname}: {first_failed:?}"));
        }
    }
    // The set covers a genuine bundle and failures at distinct steps.
    let joined = outcomes.join("\n");
    assert!(joined.contains("genuine / pinned: None"), "{joined}");
    for (case, step) in [
        ("reading leaf changed / pinned", "reading.inclusion"),
        ("registry leaf changed / pinned", "registry.inclusion"),
        (
            "checkpoint signature changed / pinned",
            "checkpoint.signature",
        ),
        ("registry proof changed / pinned", "registry.complete"),
        ("carried proofs left out / pinned", "shard.carried"),
        ("not JSON / pinned", "bundle.format"),
        (
            "a reading the sensor's key signed that the log never held / pinned",
            "reading.inclusion",
        ),
        ("genuine / another log key", "checkpoint.signature"),
        ("genuine / no sensor issuer", "sensor.certificate"),
        (
            "genuine / a witness quorum the operator cannot meet alone",
            "checkpoint.witnesses",
        ),
        (
            "genuine / a kept fork signed with the log key",
            "checkpoint.fork",
        ),
    ] {
        assert!(
            joined.contains(&format!("{case}: Some(\"{step}\")")),
            "{case} fails first at {step}:\n{joined}"
        );
    }
    for step in [
        "reading.inclusion",
        "registry.inclusion",
        "checkpoint.signature",
        "bundle.format",
        "registry.complete",
        "checkpoint.witnesses",
        "checkpoint.fork",
        "sensor.certificate",
    ] {
        assert!(joined.contains(step), "a case fails at {step}:\n{joined}");
    }
    eprintln!("{joined}");
    b.close().await;
    let _ = std::fs::remove_dir_all(&dir);
    app.finish().await;
}
