//! Tokens that end, over real HTTP on both engines: created through the admin API (secret shown
//! once, never listed), listed with state and last use, revoked (401 from the next request on),
//! rotated (the old one works for the overlap, then ends); a gateway token bound to its gateway
//! submits only that gateway's envelopes (the others rejected per item) and reads only that
//! gateway's registry view; bad requests are 4xx problem+json with nothing stored; the CLI does
//! the same.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit::{both_engines, now_ms, Devices, Engine, TestApp};
use serde_json::{json, Value};

async fn create(app: &TestApp, body: Value) -> (u16, Value) {
    let r = app.post_json("/v1/tokens", Some(&app.admin), &body).await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

async fn tokens(app: &TestApp) -> Vec<Value> {
    let v: Value = app
        .get("/v1/tokens", Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    v["tokens"].as_array().unwrap().clone()
}

both_engines!(lifecycle, token_lifecycle);

async fn token_lifecycle(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let before = tokens(&app).await.len();
    let (status, made) = create(
        &app,
        json!({"role": "clinician", "name": "dr-grey", "expires_in_days": 7}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    let secret = made["token"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("vlt_") && id.starts_with("tok_"),
        "{made}"
    );
    assert_eq!(made["state"], "active");
    let week = 7 * 24 * 3600 * 1000;
    let expires = made["expires_at"].as_u64().unwrap();
    assert!(expires > now_ms() + week - 60_000 && expires <= now_ms() + week);
    assert_eq!(made["created_by"], "test admin");
    // It works, and its use is recorded.
    assert_eq!(app.get("/v1/alerts", Some(&secret)).await.status(), 200);
    let listed = tokens(&app).await;
    assert_eq!(listed.len(), before + 1);
    let row = listed.iter().find(|t| t["id"] == id.as_str()).unwrap();
    assert!(row["last_used_at"].as_u64().is_some(), "{row}");
    assert!(
        row.get("token").is_none(),
        "never a secret in a list: {row}"
    );
    let all = serde_json::to_string(&listed).unwrap();
    assert!(!all.contains(&secret) && !all.contains("vlt_"), "{all}");

    // Rotated with an overlap: both work; the new one has the same role and name.
    let r = app
        .post_json(
            &format!("/v1/tokens/{id}/rotate"),
            Some(&app.admin),
            &json!({"overlap_hours": 1}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let rot: Value = r.json().await.unwrap();
    let new_secret = rot["token"]["token"].as_str().unwrap().to_string();
    let new_id = rot["token"]["id"].as_str().unwrap().to_string();
    assert_eq!(rot["token"]["role"], "clinician");
    assert_eq!(rot["token"]["name"], "dr-grey");
    assert!(rot["previous"]["expires_at"].as_u64().unwrap() <= now_ms() + 3600 * 1000);
    assert_eq!(app.get("/v1/alerts", Some(&secret)).await.status(), 200);
    assert_eq!(app.get("/v1/alerts", Some(&new_secret)).await.status(), 200);
    // Rotated again without overlap: the old one has ended at once.
    let r = app
        .post_json(
            &format!("/v1/tokens/{new_id}/rotate"),
            Some(&app.admin),
            &json!({"overlap_hours": 0}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let third: Value = r.json().await.unwrap();
    let r = app.get("/v1/alerts", Some(&new_secret)).await;
    assert_eq!(r.status(), 401);
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("expired"), "{p}");
    // An ended token cannot be rotated.
    let r = app
        .post_json(
            &format!("/v1/tokens/{new_id}/rotate"),
            Some(&app.admin),
            &json!({}),
        )
        .await;
    assert_eq!(r.status(), 400);

    // Revoked: refused from the next request on; revoking again changes nothing.
    let third_secret = third["token"]["token"].as_str().unwrap();
    let third_id = third["token"]["id"].as_str().unwrap();
    assert_eq!(
        app.get("/v1/alerts", Some(third_secret)).await.status(),
        200
    );
    for _ in 0..2 {
        let r = app
            .post_json(
                &format!("/v1/tokens/{third_id}/revoke"),
                Some(&app.admin),
                &json!({}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let t: Value = r.json().await.unwrap();
        assert_eq!(t["state"], "revoked");
        assert_eq!(t["revoked_by"], "test admin");
    }
    let r = app.get("/v1/alerts", Some(third_secret)).await;
    assert_eq!(r.status(), 401);
    let p: Value = r.json().await.unwrap();
    assert!(p["detail"].as_str().unwrap().contains("revoked"), "{p}");
    let one: Value = app
        .get(&format!("/v1/tokens/{third_id}"), Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["state"], "revoked");

    // Paging: pages of one see every token once.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tokens?limit=1&cursor={c}"),
            None => "/v1/tokens?limit=1".into(),
        };
        let v: Value = app.get(&path, Some(&app.admin)).await.json().await.unwrap();
        seen.extend(
            v["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].clone()),
        );
        match v["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let all: Vec<Value> = tokens(&app).await.iter().map(|t| t["id"].clone()).collect();
    assert_eq!(seen, all);
    app.finish().await;
}

both_engines!(bad_requests, bad_token_requests_store_nothing);

async fn bad_token_requests_store_nothing(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let before = tokens(&app).await.len();
    for body in [
        json!({"role": "root", "name": "x"}),
        json!({"role": "gateway", "name": "x"}),
        json!({"role": "gateway", "name": "x", "gateway": "GW 1"}),
        json!({"role": "clinician", "name": "x", "gateway": "GW-0001"}),
        json!({"role": "clinician", "name": ""}),
        json!({"role": "clinician", "name": "a\u{0}b"}),
        json!({"role": "clinician", "name": "x".repeat(129)}),
        json!({"role": "clinician", "name": "x", "expires_in_days": 0}),
        json!({"role": "clinician", "name": "x", "expires_in_days": 3651}),
        json!({"role": "clinician", "name": "x", "expires_in_days": -1}),
        json!({"role": "clinician", "name": "x", "extra": 1}),
        json!({"name": "x"}),
    ] {
        let (status, p) = create(&app, body.clone()).await;
        assert_eq!(status, 400, "{body}: {p}");
        assert!(p["detail"].as_str().is_some(), "{p}");
    }
    // Only an admin manages tokens.
    for path in ["/v1/tokens", "/v1/tokens/tok_0000000000000000"] {
        assert_eq!(app.get(path, Some(&app.reader)).await.status(), 403);
        assert_eq!(app.get(path, Some(&app.gateway)).await.status(), 403);
        assert_eq!(app.get(path, None).await.status(), 401);
    }
    let r = app
        .post_json(
            "/v1/tokens",
            Some(&app.reader),
            &json!({"role": "admin", "name": "escalate"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    for id in ["tok_0000000000000000", "nope", "tok_%00"] {
        let r = app
            .post_json(
                &format!("/v1/tokens/{id}/revoke"),
                Some(&app.admin),
                &json!({}),
            )
            .await;
        assert!(
            matches!(r.status().as_u16(), 400 | 404),
            "{id}: {}",
            r.status()
        );
    }
    assert_eq!(
        app.get("/v1/tokens?cursor=bm9wZQ", Some(&app.admin))
            .await
            .status(),
        400
    );
    assert_eq!(tokens(&app).await.len(), before, "nothing stored");
    app.finish().await;
}

both_engines!(bound_gateways, a_gateway_token_speaks_only_for_its_gateway);

async fn a_gateway_token_speaks_only_for_its_gateway(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    // Sensor 0 is bound to GW-0000, sensor 1 to GW-0001.
    let dev = Devices::new("Acme Sensors", 2, 2);
    dev.enroll(&app).await;
    let (status, made) = create(
        &app,
        json!({"role": "gateway", "name": "ward 7 gateway", "gateway": "GW-0000"}),
    )
    .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["gateway"], "GW-0000");
    let own = made["token"].as_str().unwrap().to_string();
    let t = now_ms() - 1000;
    let batch = provenance_core::batch::encode(&[
        dev.envelope(0, 0, 1, t, 70),
        dev.envelope(1, 1, 1, t, 70),
    ]);
    let (status, body) = app
        .ingest_raw(batch.clone(), "application/cbor", Some(&own))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["status"], "accepted", "{body}");
    assert_eq!(body["results"][1]["status"], "rejected", "{body}");
    assert_eq!(
        body["results"][1]["reason"], "gateway_not_token_holder",
        "{body}"
    );
    assert!(
        body["results"][1]["detail"]
            .as_str()
            .unwrap()
            .contains("GW-0001"),
        "{body}"
    );
    // Only another gateway's envelopes: 422, nothing logged.
    let size = app.readings().await;
    let (status, body) = app
        .ingest_raw(
            provenance_core::batch::encode(&[dev.envelope(1, 1, 2, t + 1, 70)]),
            "application/cbor",
            Some(&own),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(app.readings().await, size);
    // The registry view: its own gateway's only.
    let r = app
        .get("/v1/registry/gateways/GW-0000/events", Some(&own))
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .get("/v1/registry/gateways/GW-0001/events", Some(&own))
        .await;
    assert_eq!(r.status(), 403);
    let p: Value = r.json().await.unwrap();
    assert!(
        p["detail"].as_str().unwrap().contains("another gateway"),
        "{p}"
    );
    // A relay's token ("*") may submit for both.
    let (_, relay) = create(
        &app,
        json!({"role": "gateway", "name": "relay", "gateway": "*"}),
    )
    .await;
    let (status, body) = app
        .ingest_raw(
            provenance_core::batch::encode(&[dev.envelope(1, 1, 3, t + 2, 70)]),
            "application/cbor",
            relay["token"].as_str(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_lists_rotates_and_revokes() {
    let storage = ledger_testkit::Storage::fresh(Engine::Sqlite).await;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_ledger-service"))
            .env("DATABASE_URL", &storage.url)
            .env("RUST_LOG", "warn")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, _, err) = run(&["create-token", "--role", "gateway", "--name", "GW-0001"]);
    assert!(!ok && err.contains("names its gateway"), "{err}");
    let (ok, secret, err) = run(&[
        "create-token",
        "--role",
        "gateway",
        "--name",
        "GW-0001",
        "--gateway",
        "GW-0001",
        "--expires-in-days",
        "30",
    ]);
    assert!(ok, "{err}");
    let secret = secret.trim().to_string();
    assert!(secret.starts_with("vlt_"));
    let id = err.split_whitespace().nth(1).unwrap().to_string();
    assert!(id.starts_with("tok_"), "{err}");
    let (ok, list, _) = run(&["list-tokens"]);
    assert!(ok);
    assert!(
        list.contains(&id) && list.contains("GW-0001") && list.contains("active"),
        "{list}"
    );
    assert!(!list.contains(&secret), "{list}");
    let (ok, rotated, err) = run(&["rotate-token", "--id", &id, "--overlap-hours", "0"]);
    assert!(ok, "{err}");
    assert!(rotated.trim().starts_with("vlt_") && rotated.trim() != secret);
    let (ok, list, _) = run(&["list-tokens"]);
    assert!(ok);
    let line = list.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(line.contains("expired"), "{line}");
    let (ok, _, err) = run(&["revoke-token", "--id", &id]);
    assert!(ok, "{err}");
    let (ok, list, _) = run(&["list-tokens"]);
    assert!(ok);
    let line = list.lines().find(|l| l.starts_with(&id)).unwrap();
    assert!(line.contains("revoked"), "{line}");
    let (ok, _, err) = run(&["revoke-token", "--id", "tok_0000000000000000"]);
    assert!(!ok && err.contains("no token"), "{err}");
    storage.drop_all().await;
}
