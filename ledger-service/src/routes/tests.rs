//! Handlers in-process: the router driven with `tower::ServiceExt::oneshot` (no socket), over a
//! fresh SQLite file — the HTTP edge's answers to bad requests, and that nothing is stored.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use crate::auth::{create_token, Role};
use crate::config::{AlertSettings, Config, ExportSettings, LimitSettings};
use crate::db::Db;
use crate::state::Shared;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use ed25519_dalek::SigningKey;
use provenance_core::note::NoteSigner;
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

struct App {
    shared: Arc<Shared>,
    gateway: String,
    reader: String,
    dir: std::path::PathBuf,
}

async fn app() -> App {
    let mut raw = [0u8; 6];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
    let dir = std::env::temp_dir().join(format!("ledger_oneshot_{}", hex::encode(raw)));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("ledger.sqlite").display());
    let cfg = Config {
        database_url: Some(url.clone().into()),
        data_dir: dir.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
        log_key_file: None,
        origin: "test.example/oneshot".into(),
        db_connections: 4,
        max_batch: 1024,
        checkpoint_ms: 20,
        shard_period: None,
        shard_grace_ms: 0,
        max_skew_ms: 300_000,
        max_age_ms: 30 * 24 * 3600 * 1000,
        log_json: false,
        alerts: AlertSettings::default(),
        exports: ExportSettings {
            export_dir: None,
            retention_days: 0,
            export_lease_ms: 500,
        },
        limits: LimitSettings::default(),
        outbound: Default::default(),
        witnesses: Default::default(),
        read_node: Default::default(),
    };
    let db = Db::connect(&url, 4).await.unwrap();
    let gateway = create_token(&db, Role::Gateway, "gw").await.unwrap();
    let reader = create_token(&db, Role::Auditor, "auditor").await.unwrap();
    let signer = NoteSigner::new(&cfg.origin, SigningKey::from_bytes(&[9; 32])).unwrap();
    let running = crate::start(&cfg, db, signer).await.unwrap();
    App {
        shared: running.shared,
        gateway,
        reader,
        dir,
    }
}

impl App {
    async fn call(&self, req: Request<Body>) -> (StatusCode, Option<String>, Value) {
        let resp = crate::app(Arc::clone(&self.shared))
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status();
        let ct = resp
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        (
            status,
            ct,
            serde_json::from_slice(&body).unwrap_or(Value::Null),
        )
    }

    async fn done(self) {
        self.shared.db().close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn request(
    method: Method,
    uri: &str,
    token: Option<&str>,
    ct: Option<&str>,
    body: Vec<u8>,
) -> Request<Body> {
    let mut r = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        r = r.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if let Some(ct) = ct {
        r = r.header(header::CONTENT_TYPE, ct);
    }
    r.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn bad_requests_get_problem_json_and_store_nothing() {
    let app = app().await;
    let problem = Some("application/problem+json".to_string());
    let ingest = |token: Option<&str>, ct: &str, body: &[u8]| {
        request(Method::POST, "/v1/ingest", token, Some(ct), body.to_vec())
    };
    // (request, status, problem type) — every one answered before anything is stored.
    let cases: Vec<(Request<Body>, StatusCode, &str)> = vec![
        (
            request(Method::GET, "/no/such/route", None, None, vec![]),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            request(Method::DELETE, "/v1/ingest", None, None, vec![]),
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
        ),
        (
            ingest(None, "application/cbor", &[0x80]),
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            ingest(Some(&app.reader), "application/cbor", &[0x81, 0x40]),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            ingest(Some(&app.gateway), "application/cbor", &[0x80]),
            StatusCode::BAD_REQUEST,
            "empty-batch",
        ),
        (
            ingest(Some(&app.gateway), "application/cbor", &[0xff, 0x00]),
            StatusCode::BAD_REQUEST,
            "invalid-body",
        ),
        (
            ingest(
                Some(&app.gateway),
                "application/json",
                b"{\"envelopes\": 5}",
            ),
            StatusCode::BAD_REQUEST,
            "invalid-body",
        ),
        (
            ingest(Some(&app.gateway), "text/plain", b"x"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
        ),
        (
            ingest(
                Some(&app.gateway),
                "application/cbor",
                &[0x81, 0x43, 1, 2, 3],
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "malformed-envelope",
        ),
        (
            request(
                Method::GET,
                "/v1/readings/7/evidence",
                Some(&app.reader),
                None,
                vec![],
            ),
            StatusCode::NOT_FOUND,
            "not-found",
        ),
        (
            request(
                Method::GET,
                "/v1/readings/x",
                Some(&app.reader),
                None,
                vec![],
            ),
            StatusCode::BAD_REQUEST,
            "invalid-path",
        ),
    ];
    for (req, status, kind) in cases {
        let what = format!("{} {}", req.method(), req.uri());
        let (got, ct, body) = app.call(req).await;
        assert_eq!(got, status, "{what}: {body}");
        assert_eq!(ct, problem, "{what}");
        let t = body["type"].as_str().unwrap_or_default();
        assert!(
            t.ends_with(&format!("/{kind}")),
            "{what}: type {t}, want {kind}"
        );
        assert_eq!(body["status"], status.as_u16(), "{what}");
    }
    assert_eq!(app.shared.db().count_readings().await.unwrap(), 0);
    assert_eq!(
        app.shared
            .db()
            .count_rejections("malformed_envelope")
            .await
            .unwrap(),
        1,
        "the rejection is audited"
    );
    app.done().await;
}
