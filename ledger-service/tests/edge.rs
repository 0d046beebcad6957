//! The HTTP edge against hostile clients (issue #14): inputs that used to answer 5xx or be
//! stored as sent, and connections that used to stay open forever. Every answer is
//! problem+json; nothing hostile is stored; slow, idle and stalled connections are closed;
//! beyond the limits the service sheds load with 503 + Retry-After.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;
use ledger_testkit::both_engines;

use common::{Engine, TestApp};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Asserts a problem+json answer with this status and problem type.
async fn problem(r: reqwest::Response, status: u16, kind: &str, what: &str) {
    assert_eq!(r.status().as_u16(), status, "{what}");
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    let v: Value = r.json().await.unwrap();
    let t = v["type"].as_str().unwrap_or_default();
    assert!(
        t.ends_with(&format!("/{kind}")),
        "{what}: type {t}, want {kind}"
    );
}

async fn hostile_input(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let c = &app.client;
    // A tile index whose first hash lies past 2^64 (it wrapped, or panicked, before).
    for path in [
        "/tile/0/x072/x057/x594/x037/x927/936.p/1",
        "/tile/0/x018/x446/x744/x073/x709/551",
        "/tile/7/x999/x999/x999/x999/x999/999",
    ] {
        let r = c.get(app.url(path)).send().await.unwrap();
        problem(r, 404, "not-found", path).await;
    }
    // NUL and other control characters in query and path parameters: refused the same way on
    // both engines (PostgreSQL answered 503, SQLite stored or matched them).
    for path in [
        "/v1/readings?sensor=%00",
        "/v1/readings?patient=a%0Db",
        "/v1/alerts?patient=%00",
        "/v1/webhooks/messages?state=%00",
        "/v1/registry/gateways/GW%00/events",
        "/v1/alerts/alrt_%00",
        "/v1/fhir/$export?patient=%1F",
    ] {
        let r = c
            .get(app.url(path))
            .bearer_auth(&app.admin)
            .send()
            .await
            .unwrap();
        let kind = if path.contains('?') {
            "invalid-query"
        } else {
            "invalid-path"
        };
        problem(r, 400, kind, path).await;
    }
    // A NUL in a JSON body, a URL holding CR LF: refused, nothing stored.
    for body in [
        json!({"url": "http://127.0.0.1:9/hook\u{0}"}),
        json!({"url": "http://127.0.0.1:9/hook\r\nX-Injected: 1"}),
        json!({"url": "http://127.0.0.1:9/ho ok"}),
        json!({"url": "http://127.0.0.1:9/hook", "event_types": ["alert.opened\u{0}"]}),
    ] {
        let r = app
            .post_json("/v1/webhooks/endpoints", Some(&app.admin), &body)
            .await;
        let kind = if body.to_string().contains("\\u0000") {
            "invalid-body"
        } else {
            "invalid-webhook-url"
        };
        problem(r, 400, kind, &body.to_string()).await;
    }
    let list: Value = app
        .get("/v1/webhooks/endpoints", Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["endpoints"], json!([]), "nothing stored");
    // A compressed body is not read as if it were plain.
    let r = c
        .post(app.url("/v1/ingest"))
        .bearer_auth(&app.gateway)
        .header("content-type", "application/cbor")
        .header("content-encoding", "gzip")
        .body(vec![0x1f, 0x8b, 0x08, 0x00])
        .send()
        .await
        .unwrap();
    problem(r, 415, "unsupported-content-encoding", "gzip").await;
    // The Bearer scheme is case-insensitive (RFC 9110 §11.1).
    for scheme in ["bearer", "BEARER", "Bearer"] {
        let r = c
            .get(app.url("/v1/alerts"))
            .header("authorization", format!("{scheme} {}", app.reader))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{scheme}");
    }
    app.finish().await;
}
both_engines!(hostile_input_both, hostile_input);

/// Short limits, so the test sees them act.
fn tight(cfg: &mut ledger_service::config::Config) {
    cfg.limits.header_timeout_ms = 700;
    cfg.limits.request_timeout_ms = 1_000;
    cfg.limits.max_connections = 6;
    cfg.limits.max_concurrent_requests = 2;
}

/// An authorized ingest request whose body stops after 1 of 1,000 bytes.
fn stalled(app: &TestApp) -> Vec<u8> {
    format!(
        "POST /v1/ingest HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/cbor\r\nContent-Length: 1000\r\n\r\nA",
        app.gateway
    )
    .into_bytes()
}

fn connect(app: &TestApp) -> TcpStream {
    let s = TcpStream::connect(app.base.trim_start_matches("http://")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Reads until the server closes the connection (or the 10 s read timeout fails the test);
/// returns what it sent and how long it took.
fn read_to_close(s: &mut TcpStream) -> (String, Duration) {
    let t = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), t.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_stalled_connections_are_closed() {
    let app = TestApp::spawn_tuned(Engine::preferred(), tight).await;
    let host = app.base.trim_start_matches("http://").to_string();
    let stalled_request = stalled(&app);
    tokio::task::spawn_blocking(move || {
        let app_host = host;
        let open = || {
            let s = TcpStream::connect(&app_host).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            s
        };
        // Slowloris: headers that never end.
        let mut slow = open();
        slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .unwrap();
        let (_, took) = read_to_close(&mut slow);
        assert!(took < Duration::from_secs(3), "slow headers held {took:?}");
        // Idle after a request on a kept-alive connection.
        let mut idle = open();
        idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let (got, took) = read_to_close(&mut idle);
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(
            took < Duration::from_secs(3),
            "an idle connection held {took:?}"
        );
        // A body that stops: answered 408 problem+json.
        let mut stalled = open();
        stalled.write_all(&stalled_request).unwrap();
        let (got, took) = read_to_close(&mut stalled);
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
        assert!(got.contains("application/problem+json"), "{got}");
        assert!(
            took < Duration::from_secs(4),
            "a stalled body held {took:?}"
        );
    })
    .await
    .unwrap();
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_limits_the_service_sheds_load() {
    let app = TestApp::spawn_tuned(Engine::preferred(), tight).await;
    // Two requests in progress (stalled bodies) fill the limit: the next is answered 503 at once.
    let mut held: Vec<TcpStream> = (0..2)
        .map(|_| {
            let mut s = connect(&app);
            s.write_all(&stalled(&app)).unwrap();
            s
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    let t = Instant::now();
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(t.elapsed() < Duration::from_millis(500), "not queued");
    assert_eq!(r.headers()["retry-after"], "1");
    problem(r, 503, "overloaded", "a third request").await;
    // Once they time out, requests are served again.
    for s in &mut held {
        let (got, _) = read_to_close(s);
        assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    }
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Open connections are bounded: past the limit a new one is closed at once. (The client's
    // pooled connection counts; some of these may be it.)
    let mut idle: Vec<TcpStream> = (0..8).map(|_| connect(&app)).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let last = idle.last_mut().unwrap();
    last.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 16];
    let closed = matches!(last.read(&mut buf), Ok(0) | Err(_));
    assert!(closed, "a connection past the limit was kept");
    drop(idle);
    app.finish().await;
}
