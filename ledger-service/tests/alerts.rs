//! Clinical alerts and clinician webhooks, over real HTTP with a real receiver: the lifecycle
//! through the API, bad input refused with nothing stored, every delivery signed per Standard
//! Webhooks (checked by the independent `standardwebhooks` Python package when
//! `INTEROP_PYTHON` names a Python that has it, as `scripts/test` does), a receiver that is
//! down and comes back gets every alert once per webhook-id, a service restart in the middle of
//! retries loses nothing, `Retry-After` and `410 Gone` are honoured, dead letters replay.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;
use ledger_testkit::both_engines;

use axum::http::{HeaderMap, StatusCode};
use common::now_ms;
use common::{free_tcp, wait_for, Devices, Engine, TestApp};
use ledger_service::{create_token, Role};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the receiver answers.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Ok,
    Status(u16),
    RetryAfter(u64),
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Delivery {
    headers: HashMap<String, String>,
    body: String,
    answered: u16,
    at: Instant,
}

/// A webhook receiver: a real HTTP server recording every request.
struct Receiver {
    mode: Mutex<Mode>,
    got: Mutex<Vec<Delivery>>,
}

impl Receiver {
    fn set(&self, m: Mode) {
        *self.mode.lock().unwrap() = m;
    }

    fn deliveries(&self) -> Vec<Delivery> {
        self.got.lock().unwrap().clone()
    }

    /// Bodies answered 2xx, by webhook-id.
    fn accepted(&self) -> HashMap<String, Vec<Delivery>> {
        let mut out: HashMap<String, Vec<Delivery>> = HashMap::new();
        for d in self.deliveries().into_iter().filter(|d| d.answered < 300) {
            out.entry(d.headers["webhook-id"].clone())
                .or_default()
                .push(d);
        }
        out
    }
}

/// Starts a receiver on `addr`.
async fn receiver_at(addr: &str, mode: Mode) -> Arc<Receiver> {
    let r = Arc::new(Receiver {
        mode: Mutex::new(mode),
        got: Mutex::new(Vec::new()),
    });
    let state = Arc::clone(&r);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let r = Arc::clone(&state);
            async move {
                let mode = *r.mode.lock().unwrap();
                let (status, retry_after) = match mode {
                    Mode::Ok => (200, None),
                    Mode::Status(s) => (s, None),
                    Mode::RetryAfter(secs) => (429, Some(secs)),
                };
                r.got.lock().unwrap().push(Delivery {
                    headers: headers
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                        .collect(),
                    body,
                    answered: status,
                    at: Instant::now(),
                });
                let mut resp = axum::response::Response::new(axum::body::Body::empty());
                *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                if let Some(s) = retry_after {
                    resp.headers_mut()
                        .insert("retry-after", s.to_string().parse().unwrap());
                }
                resp
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    r
}

/// Subscribes `url`; returns (endpoint id, secret).
async fn subscribe(app: &TestApp, url: &str) -> (String, String) {
    let r = app
        .post_json(
            "/v1/webhooks/endpoints",
            Some(&app.admin),
            &json!({"url": url}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let v: Value = r.json().await.unwrap();
    (
        v["id"].as_str().unwrap().into(),
        v["secret"].as_str().unwrap().into(),
    )
}

/// Ingests one reading of sensor `s` with heart rate `hr`.
async fn reading(app: &TestApp, dev: &Devices, s: usize, seq: u64, hr: i64) -> u64 {
    let (status, body) = app
        .ingest(&[dev.envelope(s, 0, seq, now_ms() - 1000 + seq, hr)])
        .await;
    assert_eq!(status, 200, "{body}");
    body["results"][0]["index"].as_u64().unwrap()
}

async fn alerts_of(app: &TestApp, patient: &str) -> Vec<Value> {
    let v: Value = app
        .get(&format!("/v1/alerts?patient={patient}"), Some(&app.reader))
        .await
        .json()
        .await
        .unwrap();
    v["alerts"].as_array().unwrap().clone()
}

async fn post(app: &TestApp, path: &str, token: &str) -> (u16, Value) {
    let r = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// PUTs JSON with a token.
async fn put(app: &TestApp, path: &str, token: &str, body: &Value) -> reqwest::Response {
    app.client
        .put(app.url(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Checks each delivery's signature with our signer, and with `standardwebhooks` when available.
fn verify_signatures(deliveries: &[Delivery], secrets: &[&str]) {
    for d in deliveries {
        let (id, ts) = (&d.headers["webhook-id"], &d.headers["webhook-timestamp"]);
        let sigs: Vec<&str> = d.headers["webhook-signature"].split(' ').collect();
        for s in secrets {
            let want = ledger_service::sign_webhook(s, id, ts.parse().unwrap(), &d.body).unwrap();
            assert!(
                sigs.contains(&want.as_str()),
                "{id}: signed with every live secret"
            );
        }
        assert_eq!(d.headers["content-type"], "application/json");
    }
    let Some(python) = common::interop_python("the standardwebhooks check of the deliveries")
    else {
        return;
    };
    let input: Vec<Value> = deliveries
        .iter()
        .map(|d| json!({"secrets": secrets, "headers": d.headers, "body": d.body}))
        .collect();
    let mut child = std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/interop/verify_webhooks.py"
        ))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(serde_json::to_string(&input).unwrap().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "standardwebhooks refused our deliveries: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&out.stdout).trim());
}

async fn lifecycle(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let dev = Devices::new("Acme Sensors", 1, 1);
    dev.enroll(&app).await;
    let doctor = create_token(app.shared.db(), Role::Clinician, "dr-grey")
        .await
        .unwrap();
    let addr = free_tcp();
    let rx = receiver_at(&addr, Mode::Ok).await;
    let (_, secret) = subscribe(&app, &format!("http://{addr}/hook")).await;

    // Heart rate 120: NEWS2 sub-score 2, an urgent alert.
    assert!(alerts_of(&app, "patient-0").await.is_empty());
    reading(&app, &dev, 0, 1, 80).await;
    let idx = reading(&app, &dev, 0, 2, 120).await;
    let a = &alerts_of(&app, "patient-0").await[0];
    assert_eq!(
        (
            a["state"].as_str(),
            a["severity"].as_u64(),
            a["parameter"].as_str()
        ),
        (Some("open"), Some(2), Some("8867-4"))
    );
    assert_eq!(a["reading_index"], idx);
    // The evidence link is absolute (on the service's base URL) and fetches.
    assert_eq!(
        a["evidence"],
        format!("{}/v1/readings/{idx}/evidence", app.base)
    );
    app.wait_for_checkpoint(idx + 1).await;
    let r = app
        .client
        .get(a["evidence"].as_str().unwrap())
        .bearer_auth(&app.reader)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = a["id"].as_str().unwrap().to_string();

    // Acknowledge: a clinician may, an auditor may not; twice is a conflict.
    let (s, _) = post(&app, &format!("/v1/alerts/{id}/acknowledge"), &app.reader).await;
    assert_eq!(s, 403);
    let (s, v) = post(&app, &format!("/v1/alerts/{id}/acknowledge"), &doctor).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("acknowledged")));
    let (s, v) = post(&app, &format!("/v1/alerts/{id}/acknowledge"), &doctor).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(
        v["type"],
        "https://vitals-ledger.example/problems/alert-already-acknowledged"
    );
    for bad in ["nope", "alrt_000000000000000000000000"] {
        let (s, _) = post(&app, &format!("/v1/alerts/{bad}/acknowledge"), &doctor).await;
        assert_eq!(s, 404, "{bad}");
    }
    // Worse: escalated to an emergency, open again.
    reading(&app, &dev, 0, 3, 140).await;
    let a = &alerts_of(&app, "patient-0").await[0];
    assert_eq!(
        (
            a["id"].as_str(),
            a["state"].as_str(),
            a["severity"].as_u64()
        ),
        (Some(id.as_str()), Some("open"), Some(3))
    );
    // Resolve; then it is gone from the unresolved ones.
    let (s, v) = post(&app, &format!("/v1/alerts/{id}/resolve"), &doctor).await;
    assert_eq!((s, v["state"].as_str()), (200, Some("resolved")));
    let (s, _) = post(&app, &format!("/v1/alerts/{id}/resolve"), &doctor).await;
    assert_eq!(s, 404);
    let full: Value = app
        .get(&format!("/v1/alerts/{id}"), Some(&app.reader))
        .await
        .json()
        .await
        .unwrap();
    let trail: Vec<(String, String)> = full["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["transition"].as_str().unwrap().into(),
                e["actor"].as_str().unwrap().into(),
            )
        })
        .collect();
    let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
    assert_eq!(
        trail,
        vec![
            pair("opened", "system"),
            pair("acknowledged", "dr-grey"),
            pair("escalated", "system"),
            pair("resolved", "dr-grey")
        ]
    );

    // Patient limits: bad input refused, nothing stored; then they replace NEWS2.
    let limits = "/v1/patients/patient-0/alert-limits";
    for (body, why) in [
        (
            json!({"limits": [{"loinc": "1234-5", "low": 1.0, "high": 2.0}]}),
            "unknown vital sign",
        ),
        (
            json!({"limits": [{"loinc": "8867-4", "low": 100.0, "high": 50.0}]}),
            "bounds out of order",
        ),
        (json!({"limits": []}), "empty"),
        (
            json!({"limits": [{"loinc": "8867-4", "low": 1.0, "extra": 1}]}),
            "unknown field",
        ),
        (json!({"limits": "8867-4"}), "not a list"),
    ] {
        let r = put(&app, limits, &doctor, &body).await;
        assert_eq!(r.status(), 400, "{why}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
    }
    let got: Value = app
        .get(limits, Some(&app.reader))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(got["limits"], json!([]), "nothing stored");
    let hr = json!({"limits": [{"loinc": "8867-4", "low": 50.0, "high": 100.0}]});
    assert_eq!(put(&app, limits, &app.reader, &hr).await.status(), 403);
    assert_eq!(put(&app, limits, &doctor, &hr).await.status(), 200);
    reading(&app, &dev, 0, 4, 105).await; // NEWS2 1, but above this patient's 100
    let a = &alerts_of(&app, "patient-0").await[0];
    assert_eq!(
        (a["state"].as_str(), a["severity"].as_u64()),
        (Some("open"), Some(3))
    );
    assert_ne!(a["id"].as_str(), Some(id.as_str()), "a new alert");

    // Webhook endpoints: bad input refused, nothing stored.
    for (body, want) in [
        (json!({"url": "ftp://example.org/x"}), 400),
        (json!({"url": "not a url"}), 400),
        (
            json!({"url": "http://example.org/x", "event_types": ["alert.exploded"]}),
            400,
        ),
        (
            json!({"url": "http://example.org/x", "secret": "mine"}),
            400,
        ),
    ] {
        let r = app
            .post_json("/v1/webhooks/endpoints", Some(&app.admin), &body)
            .await;
        assert_eq!(r.status().as_u16(), want, "{body}");
    }
    let r = app
        .post_json(
            "/v1/webhooks/endpoints",
            Some(&doctor),
            &json!({"url": "http://example.org/x"}),
        )
        .await;
    assert_eq!(r.status(), 403);
    let list: Value = app
        .get("/v1/webhooks/endpoints", Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["endpoints"].as_array().unwrap().len(), 1);
    assert!(
        list["endpoints"][0].get("secret").is_none(),
        "secrets are not listed"
    );

    // The receiver got every transition once, signed. Deliveries run concurrently, so they may
    // arrive in any order; each alert's transitions are ordered by their `sequence`.
    wait_for("five deliveries", 20, || rx.accepted().len() == 5).await;
    let got = rx.deliveries();
    let mut by_alert: std::collections::BTreeMap<(u64, String), Vec<(u64, String)>> =
        std::collections::BTreeMap::new();
    for d in &got {
        let v: Value = serde_json::from_str(&d.body).unwrap();
        let data = &v["data"];
        by_alert
            .entry((
                data["opened_at_ms"].as_u64().unwrap(),
                data["alert_id"].as_str().unwrap().into(),
            ))
            .or_default()
            .push((
                data["sequence"].as_u64().unwrap(),
                v["type"].as_str().unwrap().into(),
            ));
    }
    let trails: Vec<Vec<String>> = by_alert
        .into_values()
        .map(|mut t| {
            t.sort();
            assert!(t
                .iter()
                .enumerate()
                .all(|(i, (seq, _))| *seq == i as u64 + 1));
            t.into_iter().map(|(_, ty)| ty).collect()
        })
        .collect();
    assert_eq!(
        trails,
        [
            vec![
                "alert.opened",
                "alert.acknowledged",
                "alert.escalated",
                "alert.resolved"
            ],
            vec!["alert.opened"]
        ]
    );
    let got: Vec<Delivery> = {
        let mut g = got;
        g.sort_by_key(|d| {
            let v: Value = serde_json::from_str(&d.body).unwrap();
            (
                v["data"]["opened_at_ms"].as_u64().unwrap(),
                v["data"]["sequence"].as_u64().unwrap(),
            )
        });
        g
    };
    let first: Value = serde_json::from_str(&got[0].body).unwrap();
    assert_eq!(first["data"]["patient"], "patient-0");
    assert_eq!(first["data"]["reading_index"], idx);
    assert!(
        first["data"].get("sensor_id").is_none(),
        "no more patient data than needed"
    );
    verify_signatures(&got, &[&secret]);
    app.finish().await;
}

both_engines!(lifecycle_both, lifecycle);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_then_back_gets_every_alert_once() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("Acme Sensors", 3, 1);
    dev.enroll(&app).await;
    // The receiver's port is known but nothing listens yet.
    let addr = free_tcp();
    let (_, secret) = subscribe(&app, &format!("http://{addr}/hook")).await;
    for s in 0..3 {
        reading(&app, &dev, s, 1, 150).await;
    }
    // Deliveries fail and are retried.
    let failing = || async {
        let v: Value = app
            .get("/v1/webhooks/messages?state=pending", Some(&app.admin))
            .await
            .json()
            .await
            .unwrap();
        v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["attempts"].as_u64() >= Some(2))
            .count()
    };
    let t = Instant::now();
    while failing().await < 3 {
        assert!(t.elapsed() < Duration::from_secs(20), "retries");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The receiver comes back: every alert arrives, each webhook-id answered 2xx exactly once.
    let rx = receiver_at(&addr, Mode::Ok).await;
    wait_for("three deliveries", 30, || rx.accepted().len() == 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.accepted().values().all(|d| d.len() == 1), "once per id");
    let v: Value = app
        .get("/v1/webhooks/messages?state=delivered", Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["messages"].as_array().unwrap().len(), 3);
    let msg = v["messages"][0]["msg_id"].as_str().unwrap();
    let attempts: Value = app
        .get(
            &format!("/v1/webhooks/messages/{msg}/attempts"),
            Some(&app.admin),
        )
        .await
        .json()
        .await
        .unwrap();
    let a = attempts["attempts"].as_array().unwrap();
    assert!(a.len() >= 3, "{attempts}");
    assert!(
        a[0]["error"].as_str().unwrap().contains("connection"),
        "{attempts}"
    );
    assert_eq!(a.last().unwrap()["status"], 200);
    verify_signatures(&rx.deliveries(), &[&secret]);
    // Both lists page with a cursor: pages of one see each item once.
    for (path, key, id) in [
        ("/v1/alerts?limit=1", "alerts", "id"),
        ("/v1/webhooks/messages?limit=1", "messages", "msg_id"),
    ] {
        let mut seen = Vec::new();
        let mut next = path.to_string();
        loop {
            let v: Value = app.get(&next, Some(&app.admin)).await.json().await.unwrap();
            seen.extend(v[key].as_array().unwrap().iter().map(|x| x[id].clone()));
            match v["next_cursor"].as_str() {
                Some(c) => next = format!("{path}&cursor={c}"),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort_by_key(|v| v.to_string());
        unique.dedup();
        assert_eq!((seen.len(), unique.len()), (3, 3), "{path}: {seen:?}");
    }
    assert_eq!(
        app.get("/v1/alerts?cursor=%%%", Some(&app.admin))
            .await
            .status(),
        400
    );
    // So does the endpoint list.
    for url in ["http://127.0.0.1:9/a", "http://127.0.0.1:9/b"] {
        subscribe(&app, url).await;
    }
    let v: Value = app
        .get("/v1/webhooks/endpoints?limit=2", Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 2);
    let c = v["next_cursor"].as_str().unwrap();
    let v: Value = app
        .get(
            &format!("/v1/webhooks/endpoints?limit=2&cursor={c}"),
            Some(&app.admin),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 1);
    assert_eq!(v["endpoints"][0]["url"], "http://127.0.0.1:9/b");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_restart_in_the_middle_of_retries_loses_nothing() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("Acme Sensors", 2, 1);
    dev.enroll(&app).await;
    let addr = free_tcp();
    let rx = receiver_at(&addr, Mode::Status(503)).await;
    subscribe(&app, &format!("http://{addr}/hook")).await;
    reading(&app, &dev, 0, 1, 150).await;
    reading(&app, &dev, 1, 1, 30).await;
    wait_for("failed attempts", 20, || rx.deliveries().len() >= 4).await;
    // The service stops mid-retry and comes back; the receiver recovers meanwhile.
    let stopped = app.stop().await;
    rx.set(Mode::Ok);
    let app = stopped.start_again().await;
    wait_for("both alerts delivered", 30, || rx.accepted().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.accepted().values().all(|d| d.len() == 1), "once per id");
    app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_gone_dead_letters_replay_and_secret_rotation() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("Acme Sensors", 3, 1);
    dev.enroll(&app).await;
    let addr = free_tcp();
    let rx = receiver_at(&addr, Mode::RetryAfter(1)).await;
    let (ep, secret) = subscribe(&app, &format!("http://{addr}/hook")).await;

    // 429 with Retry-After: 1 — the next attempt waits at least a second.
    reading(&app, &dev, 0, 1, 150).await;
    wait_for("a first attempt", 10, || !rx.deliveries().is_empty()).await;
    rx.set(Mode::Ok);
    wait_for("the delivery", 10, || rx.accepted().len() == 1).await;
    let d = rx.deliveries();
    let gap = d[1].at.duration_since(d[0].at);
    assert!(gap >= Duration::from_millis(950), "waited {gap:?}");

    // 410 Gone: the message is dead and the endpoint disabled; later alerts wait.
    rx.set(Mode::Status(410));
    reading(&app, &dev, 1, 1, 150).await;
    let dead = || async {
        let v: Value = app
            .get("/v1/webhooks/messages?state=dead", Some(&app.admin))
            .await
            .json()
            .await
            .unwrap();
        v["messages"].as_array().unwrap().clone()
    };
    let t = Instant::now();
    while dead().await.is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let list: Value = app
        .get("/v1/webhooks/endpoints", Some(&app.admin))
        .await
        .json()
        .await
        .unwrap();
    assert!(list["endpoints"][0]["disabled_reason"]
        .as_str()
        .unwrap()
        .contains("410"));
    let before = rx.deliveries().len();
    reading(&app, &dev, 2, 1, 150).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rx.deliveries().len(),
        before,
        "nothing sent to a gone endpoint"
    );

    // The receiver is back: enable, replay the dead letter; both arrive. A rotated secret
    // signs beside the new one during the overlap.
    rx.set(Mode::Ok);
    let r = app
        .client
        .post(app.url(&format!("/v1/webhooks/endpoints/{ep}/rotate-secret")))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    let rotated: Value = r.json().await.unwrap();
    let new_secret = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new_secret, secret);
    let (s, _) = post(
        &app,
        &format!("/v1/webhooks/endpoints/{ep}/enable"),
        &app.admin,
    )
    .await;
    assert_eq!(s, 200);
    let msg = dead().await[0]["msg_id"].as_str().unwrap().to_string();
    let (s, v) = post(
        &app,
        &format!("/v1/webhooks/messages/{msg}/replay"),
        &app.admin,
    )
    .await;
    assert_eq!((s, v["requeued"].as_u64()), (200, Some(1)));
    let (s, _) = post(&app, "/v1/webhooks/messages/msg_nope/replay", &app.admin).await;
    assert_eq!(s, 404);
    for path in ["rotate-secret", "disable", "enable"] {
        let (s, v) = post(
            &app,
            &format!("/v1/webhooks/endpoints/ep_nope/{path}"),
            &app.admin,
        )
        .await;
        assert_eq!(s, 404, "{path}: {v}");
    }
    wait_for("all three alerts", 10, || rx.accepted().len() == 3).await;
    let after: Vec<Delivery> = rx
        .deliveries()
        .into_iter()
        .filter(|d| d.answered == 200)
        .skip(1)
        .collect();
    verify_signatures(&after, &[&new_secret, &secret]);
    assert!(dead().await.is_empty());
    app.finish().await;
}

/// A replayed message — delivered, or dead-lettered — is delivered exactly once more, with the
/// same `webhook-id` and body, and then stays delivered: the receiver's deliveries are counted
/// over longer than a claim lease (`2 × webhook timeout + 1 s` = 5 s here), so a message left
/// pending by a failed attempt record would be seen again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_delivers_exactly_once_more() {
    let app = TestApp::spawn(Engine::preferred()).await;
    let dev = Devices::new("Acme Sensors", 2, 1);
    dev.enroll(&app).await;
    let addr = free_tcp();
    let rx = receiver_at(&addr, Mode::Ok).await;
    let (ep, _) = subscribe(&app, &format!("http://{addr}/hook")).await;
    let lease = Duration::from_millis(5_000 + 1_000);
    let messages = |state: &'static str| {
        let app = &app;
        async move {
            let v: Value = app
                .get(
                    &format!("/v1/webhooks/messages?state={state}"),
                    Some(&app.admin),
                )
                .await
                .json()
                .await
                .unwrap();
            v["messages"].as_array().unwrap().clone()
        }
    };
    let of = |id: &str| -> Vec<Delivery> {
        rx.deliveries()
            .into_iter()
            .filter(|d| d.headers["webhook-id"] == id)
            .collect()
    };

    // Delivered, then replayed.
    reading(&app, &dev, 0, 1, 150).await;
    wait_for("the first delivery", 10, || rx.accepted().len() == 1).await;
    let id = rx.deliveries()[0].headers["webhook-id"].clone();
    let body: Value = serde_json::from_str(&rx.deliveries()[0].body).unwrap();
    let evidence = body["data"]["evidence"].as_str().unwrap();
    assert!(
        evidence.starts_with(&format!("{}/v1/readings/", app.base)),
        "the payload's evidence link {evidence:?} is absolute"
    );
    // The receiver has it; the service records the delivery just after the 2xx.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while !messages("delivered")
        .await
        .iter()
        .any(|m| m["msg_id"] == id.as_str())
    {
        assert!(
            std::time::Instant::now() < until,
            "{id} never recorded as delivered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (s, v) = post(
        &app,
        &format!("/v1/webhooks/messages/{id}/replay"),
        &app.admin,
    )
    .await;
    assert_eq!((s, v["requeued"].as_u64()), (200, Some(1)), "{v}");
    wait_for("the replayed delivery", 10, || of(&id).len() == 2).await;
    tokio::time::sleep(lease).await;
    let got = of(&id);
    assert_eq!(
        got.len(),
        2,
        "delivered exactly once more, not again after the lease"
    );
    assert_eq!(got[0].body, got[1].body, "the same body");
    assert!(messages("pending").await.is_empty(), "nothing left pending");
    let delivered = messages("delivered").await;
    let m = delivered
        .iter()
        .find(|m| m["msg_id"] == id.as_str())
        .unwrap();
    assert_eq!(m["attempts"], 2, "{m}");
    let attempts: Value = app
        .get(
            &format!("/v1/webhooks/messages/{id}/attempts"),
            Some(&app.admin),
        )
        .await
        .json()
        .await
        .unwrap();
    let numbers: Vec<u64> = attempts["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(numbers, [1, 2], "{attempts}");

    // Dead-lettered (410), the endpoint enabled again, then replayed.
    rx.set(Mode::Status(410));
    reading(&app, &dev, 1, 1, 150).await;
    let t = Instant::now();
    while messages("dead").await.is_empty() {
        assert!(t.elapsed() < Duration::from_secs(10), "dead letter");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dead = messages("dead").await[0]["msg_id"]
        .as_str()
        .unwrap()
        .to_string();
    rx.set(Mode::Ok);
    let (s, _) = post(
        &app,
        &format!("/v1/webhooks/endpoints/{ep}/enable"),
        &app.admin,
    )
    .await;
    assert_eq!(s, 200);
    let (s, v) = post(
        &app,
        &format!("/v1/webhooks/messages/{dead}/replay"),
        &app.admin,
    )
    .await;
    assert_eq!((s, v["requeued"].as_u64()), (200, Some(1)), "{v}");
    wait_for("the replayed dead letter", 10, || {
        of(&dead).iter().filter(|d| d.answered == 200).count() == 1
    })
    .await;
    tokio::time::sleep(lease).await;
    let got = of(&dead);
    assert_eq!(got.len(), 2, "one 410, then exactly one delivery");
    assert_eq!(got[0].body, got[1].body);
    assert!(messages("pending").await.is_empty());
    assert!(messages("dead").await.is_empty());
    app.finish().await;
}
