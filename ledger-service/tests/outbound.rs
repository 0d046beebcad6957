//! The outbound policy for webhooks, over real HTTP: a service with the default policy refuses
//! internal destinations and plain http when they are registered (nothing stored), and a name
//! that resolves to a refused address at delivery time (DNS rebinding, `localhost`) gets no
//! connection at all — a listener on that address counts none — while the attempt log says why.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit::{both_engines, Devices, Engine, TestApp};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

both_engines!(
    internal_destinations_are_refused,
    internal_destinations_are_refused_when_registered
);

async fn internal_destinations_are_refused_when_registered(engine: Engine) {
    // The default policy: https only, no reserved network allowed.
    let app = TestApp::spawn_tuned(engine, |c| c.outbound = Default::default()).await;
    for url in [
        "http://127.0.0.1:5432/",
        "https://127.0.0.1:5432/",
        "https://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "https://[fd00:ec2::254]/latest/meta-data/",
        "https://[::ffff:127.0.0.1]:8080/hook",
        "https://[::ffff:a9fe:a9fe]/",
        "https://[64:ff9b::a9fe:a9fe]/",
        "https://0x7f.1/hook",
        "https://2130706433/hook",
        "https://0177.0.0.1/hook",
        "https://10.1.2.3/hook",
        "https://172.20.0.5/hook",
        "https://192.168.0.10/hook",
        "https://100.100.100.200/hook",
        "https://[fe80::1]/hook",
        "https://224.0.0.251/hook",
        "https://255.255.255.255/hook",
        "https://0.0.0.0:8080/hook",
        "https://[::]/hook",
        "https://[::1]/hook",
        "http://receiver.example/hook",
        "https://user:secret@receiver.example/hook",
        "file:///etc/passwd",
        "gopher://127.0.0.1:5432/",
    ] {
        let r = app
            .post_json(
                "/v1/webhooks/endpoints",
                Some(&app.admin),
                &json!({ "url": url }),
            )
            .await;
        let status = r.status().as_u16();
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        let body: Value = r.json().await.unwrap();
        assert!(status == 422 || status == 400, "{url}: {status} {body}");
        assert_eq!(ct, "application/problem+json", "{url}");
        assert!(body["detail"].as_str().is_some(), "{url}: {body}");
    }
    let v: Value = app
        .get("/v1/webhooks/endpoints", Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["endpoints"], json!([]), "nothing stored");
    // A public https destination is fine (nothing is sent until an alert).
    let r = app
        .post_json(
            "/v1/webhooks/endpoints",
            Some(&app.admin),
            &json!({ "url": "https://receiver.example/hook" }),
        )
        .await;
    assert_eq!(r.status(), 201);
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_at_delivery_gets_no_connection() {
    // Plain http allowed, but no reserved network: `localhost` passes registration (it is a
    // name) and must be refused on the address it resolves to when delivering.
    let app = TestApp::spawn_tuned(Engine::preferred(), |c| {
        c.outbound.webhook_allow_http = true;
        c.outbound.webhook_allow_nets.clear();
    })
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    for url in [
        format!("http://localhost:{port}/hook"),
        format!("http://127.0.0.1:{port}/hook"),
    ] {
        let r = app
            .post_json(
                "/v1/webhooks/endpoints",
                Some(&app.admin),
                &json!({ "url": url }),
            )
            .await;
        let want = if url.contains("localhost") { 201 } else { 422 };
        assert_eq!(r.status(), want, "{url}");
    }
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    let (status, body) = app
        .ingest(&[dev.envelope(0, 0, 1, ledger_testkit::now_ms() - 1000, 150)])
        .await;
    assert_eq!(status, 200, "{body}");
    let attempts = || async {
        let v: Value = app
            .get("/v1/webhooks/messages?state=pending", Some(&app.admin))
            .await
            .json()
            .await
            .unwrap();
        let Some(msg) = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["attempts"].as_u64() >= Some(2))
            .and_then(|m| m["msg_id"].as_str())
            .map(str::to_string)
        else {
            return Vec::new();
        };
        let a: Value = app
            .get(
                &format!("/v1/webhooks/messages/{msg}/attempts"),
                Some(&app.admin),
            )
            .await
            .json()
            .await
            .unwrap();
        a["attempts"].as_array().unwrap().clone()
    };
    let t = std::time::Instant::now();
    let got = loop {
        let got = attempts().await;
        if got.len() >= 2 {
            break got;
        }
        assert!(
            t.elapsed().as_secs() < 30,
            "timed out waiting for two refused attempts"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    for a in &got {
        let err = a["error"].as_str().unwrap();
        assert!(err.contains("outbound policy"), "{a}");
        assert!(a["status"].is_null(), "{a}");
    }
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "no connection opened"
    );
    app.finish().await;
}
