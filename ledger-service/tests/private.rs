//! Private mode at the service, on both engines: what it refuses at ingest (and stores nothing
//! of), the registry routes' bad input, the feed's paging and scope, and that nothing it holds
//! or answers is the plaintext.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_service::create_household_token;
use ledger_testkit::{both_engines, now_ms, Devices, Engine, TestApp};
use provenance_core::cose::SignedReading;
use provenance_core::feed::HouseholdFeed;
use provenance_core::private::{RecipientSecret, Seal};
use provenance_core::reading::{Decimal, Measurement, Reading};
use serde_json::{json, Value};

const HH: &str = "HH-0001";

/// A receiver recording the bodies it gets; returns its URL.
async fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    let got: std::sync::Arc<std::sync::Mutex<Vec<Value>>> = Default::default();
    let rec = std::sync::Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let rec = std::sync::Arc::clone(&rec);
            async move {
                rec.lock()
                    .unwrap()
                    .push(serde_json::from_str(&body).unwrap());
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
    (url, got)
}

fn owner() -> RecipientSecret {
    RecipientSecret::derive(b"service test: the owner's phone")
}

/// Sensor 0's reading `seq`, sealed by gateway `g` for `to`, as message `msg_seq` of `household`.
fn sealed(
    d: &Devices,
    g: usize,
    seq: u64,
    msg_seq: u64,
    household: &str,
    to: &[&RecipientSecret],
) -> Vec<u8> {
    let now = now_ms();
    let (sk, sc) = &d.sensors[0];
    let r = Reading {
        sensor_id: sc.subject_cn.clone(),
        seq,
        measured_at_ms: now - 1000,
        measurements: vec![Measurement::new("60832-3", Decimal::new(214, -1)).unwrap()],
    };
    let inner = SignedReading::sign(&r, sk).unwrap();
    Seal {
        gateway: &d.gateways[g].0,
        received_at_ms: now - 500,
        household,
        msg_seq,
    }
    .seal_os(&inner, &to.iter().map(|s| s.public()).collect::<Vec<_>>())
    .unwrap()
}

async fn post(app: &TestApp, path: &str, body: Value) -> (u16, Value) {
    let r = app.post_json(path, Some(&app.admin), &body).await;
    let status = r.status().as_u16();
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    let v: Value = r.json().await.unwrap();
    if status >= 400 {
        assert_eq!(ct, "application/problem+json", "{v}");
    }
    (status, v)
}

async fn setup(engine: Engine) -> (TestApp, Devices) {
    let app = TestApp::spawn(engine).await;
    let d = Devices::new("Home Devices", 1, 2);
    d.enroll(&app).await;
    let from = now_ms() - 3_600_000;
    let (s, v) = post(&app, "/v1/registry/recipients", json!({"household": HH, "name": "owner-phone", "public_key": hex::encode(owner().public().0), "from_ms": from})).await;
    assert_eq!(s, 201, "{v}");
    assert_eq!(v["event"], "enroll-recipient");
    let (s, v) = post(
        &app,
        "/v1/registry/household-bindings",
        json!({"gateway_id": d.gateways[0].1.subject_cn, "household": HH, "from_ms": from}),
    )
    .await;
    assert_eq!(s, 201, "{v}");
    (app, d)
}

fn outcome(v: &Value, i: usize) -> (String, String) {
    let r = &v["results"][i];
    (
        r["status"].as_str().unwrap_or_default().to_string(),
        r["reason"].as_str().unwrap_or_default().to_string(),
    )
}

async fn private_refusals(engine: Engine) {
    let (app, d) = setup(engine).await;
    let size = |app: &TestApp| app.shared.committed();
    // Registry routes: bad input is 400 problem+json, a rule broken is 422, nothing logged.
    let before = size(&app);
    for (body, why) in [
        (
            json!({"household": HH, "name": "x", "public_key": "zz", "from_ms": 0}),
            "not hex",
        ),
        (
            json!({"household": HH, "name": "x", "public_key": hex::encode([0u8; 32]), "from_ms": 0}),
            "a small-order key",
        ),
        (
            json!({"household": HH, "name": "x", "public_key": hex::encode([7u8; 31]), "from_ms": 0}),
            "31 bytes",
        ),
        (
            json!({"household": "has space", "name": "x", "public_key": hex::encode(RecipientSecret::derive(b"a").public().0), "from_ms": 0}),
            "a bad household id",
        ),
        (
            json!({"household": HH, "name": "x", "public_key": hex::encode(RecipientSecret::derive(b"a").public().0), "from_ms": 0, "extra": 1}),
            "an unknown field",
        ),
        (json!({"household": HH, "name": "x"}), "missing fields"),
    ] {
        let (s, v) = post(&app, "/v1/registry/recipients", body).await;
        assert_eq!(s, 400, "{why}: {v}");
    }
    let (s, v) = post(&app, "/v1/registry/recipients", json!({"household": "HH-0002", "name": "thief", "public_key": hex::encode(owner().public().0), "from_ms": 0})).await;
    assert_eq!(s, 422, "a key enrolled twice: {v}");
    let (s, v) = post(
        &app,
        "/v1/registry/household-bindings",
        json!({"gateway_id": "GW-9999", "household": HH, "from_ms": 0}),
    )
    .await;
    assert_eq!(s, 422, "an unknown gateway: {v}");
    let (s, _) = post(
        &app,
        "/v1/registry/household-bindings",
        json!({"gateway_id": "GW 1", "household": HH, "from_ms": 0}),
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(size(&app), before, "nothing logged");

    // Ingest: each refusal with its reason; nothing stored.
    let stranger = RecipientSecret::derive(b"not a recipient");
    let good = sealed(&d, 0, 1, 10, HH, &[&owner()]);
    let mut bad_sig = good.clone();
    let n = bad_sig.len();
    bad_sig[n - 3] ^= 1;
    let mut truncated = good.clone();
    truncated.truncate(good.len() - 1);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (truncated, "malformed_envelope"),
        (
            sealed(&d, 0, 1, 10, "HH-0002", &[&owner()]),
            "gateway_not_bound_to_household",
        ),
        (
            sealed(&d, 1, 1, 10, HH, &[&owner()]),
            "gateway_not_bound_to_household",
        ),
        (
            sealed(&d, 0, 1, 10, HH, &[&owner(), &stranger]),
            "recipient_not_current",
        ),
        (bad_sig, "bad_gateway_signature"),
    ];
    let (s, v) = app
        .ingest(&cases.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>())
        .await;
    assert_eq!(s, 422, "every one refused: {v}");
    for (i, (_, want)) in cases.iter().enumerate() {
        assert_eq!(
            outcome(&v, i),
            ("rejected".into(), want.to_string()),
            "case {i}: {v}"
        );
    }
    assert_eq!(app.shared.db().count_private().await.unwrap(), 0);

    // Accepted; again: a duplicate with the same receipt; another message with its number:
    // equivocation; a lower number: stale; another gateway's token: refused.
    let (_, v) = app.ingest(std::slice::from_ref(&good)).await;
    assert_eq!(outcome(&v, 0).0, "accepted", "{v}");
    let index = v["results"][0]["index"].as_u64().unwrap();
    let (_, v2) = app.ingest(std::slice::from_ref(&good)).await;
    assert_eq!(outcome(&v2, 0).0, "duplicate");
    assert_eq!(v2["results"][0]["index"], index);
    assert_eq!(v2["results"][0]["leaf_hash"], v["results"][0]["leaf_hash"]);
    let (_, v) = app
        .ingest(&[
            sealed(&d, 0, 2, 10, HH, &[&owner()]),
            sealed(&d, 0, 2, 5, HH, &[&owner()]),
        ])
        .await;
    assert_eq!(
        outcome(&v, 0),
        ("rejected".into(), "equivocation".into()),
        "{v}"
    );
    assert_eq!(
        outcome(&v, 1),
        ("rejected".into(), "stale_sequence".into()),
        "{v}"
    );
    let other = ledger_service::issue_token(
        app.shared.db(),
        &ledger_service::TokenSpec {
            role: ledger_service::Role::Gateway,
            name: "other".into(),
            ttl_days: 1,
            gateway: Some(d.gateways[1].1.subject_cn.clone()),
            created_by: "test".into(),
        },
    )
    .await
    .unwrap()
    .secret;
    let body = provenance_core::batch::encode(&[sealed(&d, 0, 3, 11, HH, &[&owner()])]);
    let (_, v) = app.ingest_raw(body, "application/cbor", Some(&other)).await;
    assert_eq!(
        outcome(&v, 0),
        ("rejected".into(), "gateway_not_token_holder".into()),
        "{v}"
    );
    assert_eq!(app.shared.db().count_private().await.unwrap(), 1);

    // Security alerts see private messages too: the equivocation above, and a run of bad
    // gateway signatures, each one alert on the gateway's key.
    let bad: Vec<Vec<u8>> = (0..6u64)
        .map(|i| {
            let mut b = sealed(&d, 0, 20 + i, 20 + i, HH, &[&owner()]);
            let n = b.len();
            b[n - 3] ^= 1;
            b
        })
        .collect();
    let (_, v) = app.ingest(&bad).await;
    assert!(
        (0..6).all(|i| outcome(&v, i).1 == "bad_gateway_signature"),
        "{v}"
    );
    let gateway_kid = d.gateways[0].1.key_id.to_hex();
    for kind in ["equivocation", "bad_signatures"] {
        let r: Value = app
            .get(
                &format!("/v1/security-alerts?kind={kind}"),
                Some(&app.admin),
            )
            .await
            .json()
            .await
            .unwrap();
        let alerts = r["alerts"].as_array().unwrap();
        assert_eq!(alerts.len(), 1, "{kind}: {r}");
        assert_eq!(alerts[0]["subject"], gateway_kid, "{kind}: {r}");
    }

    // What the service says of it: only what the envelope exposes; a reading's routes know no
    // reading there.
    let e: Value = app
        .get(&format!("/v1/log/entries/{index}"), Some(&app.reader))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(e["decoded"]["type"], "private", "{e}");
    assert_eq!(e["decoded"]["household"], HH);
    assert!(!e.to_string().contains("60832-3"));
    let r = app
        .get(&format!("/v1/readings/{index}/evidence"), Some(&app.reader))
        .await;
    assert!(r.status().is_client_error(), "{}", r.status());
    app.finish().await;
}
both_engines!(private_refusals_and_bad_input, private_refusals);

async fn feed(engine: Engine) {
    let (app, d) = setup(engine).await;
    let token = create_household_token(app.shared.db(), HH, "owner app")
        .await
        .unwrap();
    let other = create_household_token(app.shared.db(), "HH-0002", "neighbour")
        .await
        .unwrap();
    // The app's push: an endpoint subscribed to household.message hears of each message.
    let (hook_url, pushed) = receiver().await;
    let r = app
        .post_json(
            "/v1/webhooks/endpoints",
            Some(&app.admin),
            &json!({"url": hook_url, "event_types": ["household.message"]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let batch: Vec<Vec<u8>> = (1..=7)
        .map(|i| sealed(&d, 0, i, i, HH, &[&owner()]))
        .collect();
    let (_, v) = app.ingest(&batch).await;
    assert!((0..7).all(|i| outcome(&v, i).0 == "accepted"), "{v}");
    app.wait_for_checkpoint(app.shared.committed()).await;
    // Paged, oldest first; every page proved against the latest checkpoint.
    let mut after: Option<u64> = None;
    let mut seen = Vec::new();
    loop {
        let path = match after {
            Some(a) => format!("/v1/households/{HH}/feed?limit=3&after={a}"),
            None => format!("/v1/households/{HH}/feed?limit=3"),
        };
        let r = app.get(&path, Some(&token)).await;
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"],
            provenance_core::feed::FEED_MEDIA_TYPE
        );
        let page = HouseholdFeed::from_json(&r.bytes().await.unwrap()).unwrap();
        assert!(page.messages.len() <= 3);
        assert!(page
            .registry_proofs
            .iter()
            .any(|p| p.subject == format!("household:{HH}")));
        for m in &page.messages {
            seen.push(m.tlog_proof().unwrap().index);
        }
        match page.next_after {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen.len(), 7);
    assert!(seen.windows(2).all(|w| w[0] < w[1]));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while pushed.lock().unwrap().len() < 7 {
        assert!(std::time::Instant::now() < deadline, "7 pushes");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let got = pushed.lock().unwrap().clone();
    let mut indices: Vec<u64> = got
        .iter()
        .map(|p| p["data"]["index"].as_u64().unwrap())
        .collect();
    indices.sort_unstable();
    assert_eq!(indices, seen);
    for p in &got {
        assert_eq!(p["type"], "household.message");
        assert_eq!(p["data"]["household"], HH);
        assert!(p["data"]["feed"]
            .as_str()
            .unwrap()
            .contains(&format!("/v1/households/{HH}/feed?after=")));
        assert_eq!(
            p["data"].as_object().unwrap().len(),
            3,
            "household, index, feed: nothing else"
        );
    }
    // Scope and bad input.
    let status = |path: String, token: String| {
        let app = &app;
        async move { app.get(&path, Some(&token)).await.status().as_u16() }
    };
    assert_eq!(
        status(format!("/v1/households/{HH}/feed"), other.clone()).await,
        403
    );
    assert_eq!(
        status(format!("/v1/households/{HH}/feed"), app.reader.clone()).await,
        200
    );
    assert_eq!(
        status(format!("/v1/households/{HH}/feed"), app.gateway.clone()).await,
        403
    );
    for q in ["limit=0", "limit=501", "after=x", "bogus=1"] {
        assert_eq!(
            status(format!("/v1/households/{HH}/feed?{q}"), token.clone()).await,
            400,
            "{q}"
        );
    }
    assert_eq!(
        status("/v1/households/has%20space/feed".into(), app.admin.clone()).await,
        400
    );
    // A household nobody bound: an empty page, not an error.
    let r = app
        .get("/v1/households/HH-0009/feed", Some(&app.admin))
        .await;
    let page = HouseholdFeed::from_json(&r.bytes().await.unwrap()).unwrap();
    assert!(page.messages.is_empty());
    app.finish().await;
}
both_engines!(household_feed, feed);
