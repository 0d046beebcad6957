//! Security alerts over real HTTP on both engines: equivocation, a revoked key used and a run of
//! bad signatures through one gateway each raise one alert that counts its occurrences (a flood
//! adds to the count, not rows), listed for admins and auditors, sent once as the webhook event
//! `security.alert` to the endpoint that subscribed to it (and not to a clinical one).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit::{both_engines, now_ms, Devices, Engine, TestApp};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A receiver recording the bodies it gets; returns its URL.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let rec = Arc::clone(&got);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let rec = Arc::clone(&rec);
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

async fn alerts(app: &TestApp, query: &str) -> Vec<Value> {
    let r = app
        .get(&format!("/v1/security-alerts{query}"), Some(&app.reader))
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    v["alerts"].as_array().unwrap().clone()
}

both_engines!(raised, alerts_are_raised_once_and_count_on);

async fn alerts_are_raised_once_and_count_on(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let dev = Devices::new("Acme Sensors", 3, 1);
    dev.enroll(&app).await;
    let (security_url, security) = receiver().await;
    let (clinical_url, clinical) = receiver().await;
    for (url, types) in [
        (&security_url, json!(["security.alert"])),
        (&clinical_url, Value::Null),
    ] {
        let mut body = json!({ "url": url });
        if !types.is_null() {
            body["event_types"] = types;
        }
        let r = app
            .post_json("/v1/webhooks/endpoints", Some(&app.admin), &body)
            .await;
        assert_eq!(r.status(), 201);
    }
    let t = now_ms() - 60_000;

    // Bad gateway signatures through GW-0000: raised at the fifth, then counted.
    let bad = |seq: u64| {
        let mut e = dev.envelope(0, 0, seq, t + seq, 70);
        *e.last_mut().unwrap() ^= 1;
        e
    };
    let (status, _) = app.ingest(&(1..=3).map(bad).collect::<Vec<_>>()).await;
    assert_eq!(status, 422);
    assert!(alerts(&app, "?kind=bad_signatures").await.len() == 1);
    let (status, _) = app.ingest(&(4..=400).map(bad).collect::<Vec<_>>()).await;
    assert_eq!(status, 422);
    let a = alerts(&app, "?kind=bad_signatures").await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["count"], 400);
    assert_eq!(a[0]["subject"], dev.gateways[0].1.key_id.to_hex());
    // The audit table: a row per batch and reason, counting every item.
    assert_eq!(
        app.shared
            .db()
            .count_rejections("bad_gateway_signature")
            .await
            .unwrap(),
        400
    );

    // Equivocation: sensor 1 signs two readings with sequence number 1.
    let (status, _) = app.ingest(&[dev.envelope(1, 0, 1, t, 70)]).await;
    assert_eq!(status, 200);
    for hr in [71, 72] {
        let (status, body) = app.ingest(&[dev.envelope(1, 0, 1, t, hr)]).await;
        assert_eq!(status, 422, "{body}");
    }
    let a = alerts(&app, "?kind=equivocation").await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["subject"], "SN-0001");
    assert_eq!(a[0]["count"], 2);

    // A revoked key used.
    let kid = dev.sensors[2].1.key_id.to_hex();
    let r = app
        .post_json(
            "/v1/registry/revocations",
            Some(&app.admin),
            &json!({"key_id": kid, "from_ms": t - 3_600_000, "reason": "lost"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    for seq in 1..=3 {
        let (status, _) = app.ingest(&[dev.envelope(2, 0, seq, t + seq, 70)]).await;
        assert_eq!(status, 422);
    }
    let a = alerts(&app, "?kind=revoked_key_used").await;
    assert_eq!(a.len(), 1, "{a:?}");
    assert_eq!(a[0]["subject"], kid);
    assert_eq!(a[0]["count"], 3);

    // One webhook message per alert, to the security endpoint only.
    let deadline = Instant::now() + Duration::from_secs(20);
    while security.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "three security messages");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = security.lock().unwrap().clone();
    assert_eq!(got.len(), 3, "{got:#?}");
    let mut kinds: Vec<&str> = got
        .iter()
        .map(|m| {
            assert_eq!(m["type"], "security.alert");
            m["data"]["kind"].as_str().unwrap()
        })
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["bad_signatures", "equivocation", "revoked_key_used"]
    );
    assert!(
        clinical
            .lock()
            .unwrap()
            .iter()
            .all(|m| m["type"] != "security.alert"),
        "a clinical endpoint gets no security alerts unless it asks"
    );

    // Paging, roles, bad parameters.
    let all = alerts(&app, "").await;
    assert_eq!(all.len(), 3);
    let v: Value = app
        .get("/v1/security-alerts?limit=2", Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    let c = v["next_cursor"].as_str().unwrap();
    let v: Value = app
        .get(
            &format!("/v1/security-alerts?limit=2&cursor={c}"),
            Some(&app.admin),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(v["alerts"][0]["id"], all[2]["id"]);
    let doctor =
        ledger_service::create_token(app.shared.db(), ledger_service::Role::Clinician, "dr")
            .await
            .unwrap();
    assert_eq!(
        app.get("/v1/security-alerts", Some(&doctor)).await.status(),
        403
    );
    assert_eq!(
        app.get("/v1/security-alerts", Some(&app.gateway))
            .await
            .status(),
        403
    );
    for q in ["?kind=nope", "?cursor=x", "?limit=0x"] {
        assert_eq!(
            app.get(&format!("/v1/security-alerts{q}"), Some(&app.admin))
                .await
                .status(),
            400,
            "{q}"
        );
    }
    app.finish().await;
}
