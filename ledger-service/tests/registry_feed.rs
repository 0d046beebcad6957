//! The public registry feed (`GET /v1/log/registry-entries`) monitors follow: no token, exactly
//! the registry's log entries in `[start, end)`, paged, never past the published checkpoint, and
//! bad ranges refused with problem+json (both engines).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;

use common::{now_ms, Devices, Engine, TestApp};
use serde_json::Value;

async fn feed(engine: Engine) {
    let app = TestApp::spawn(engine).await;
    let dev = Devices::new("Acme Sensors", 2, 1);
    dev.enroll(&app).await;
    let now = now_ms();
    let (st, _) = app.ingest(&[dev.envelope(0, 0, 0, now - 1000, 70)]).await;
    assert_eq!(st, 200);
    let size = app.shared.committed();
    app.wait_for_checkpoint(size).await;
    let all: Value = app
        .get("/v1/log/registry-entries", None)
        .await
        .json()
        .await
        .unwrap();
    let entries = all["entries"].as_array().unwrap();
    // 2 issuers, 2 sensors, 1 gateway, 2 bindings, 2 assignments.
    assert_eq!(entries.len(), 9, "{all}");
    assert_eq!(all["end"], size);
    assert!(all["next"].is_null());
    for e in entries {
        let i = e["index"].as_u64().unwrap();
        let one: Value = app
            .get(&format!("/v1/log/entries/{i}"), Some(&app.reader))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(one["leaf_data"], e["leaf_data"]);
        assert_eq!(one["decoded"]["type"], "registry");
    }
    // Paged.
    let mut seen = Vec::new();
    let mut start = 0;
    loop {
        let page: Value = app
            .get(
                &format!("/v1/log/registry-entries?start={start}&limit=4"),
                None,
            )
            .await
            .json()
            .await
            .unwrap();
        seen.extend(
            page["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["index"].clone()),
        );
        match page["next"].as_u64() {
            Some(n) => start = n,
            None => break,
        }
    }
    assert_eq!(
        seen,
        entries
            .iter()
            .map(|e| e["index"].clone())
            .collect::<Vec<_>>()
    );
    // Bad ranges: 400 problem+json.
    for q in [
        format!("end={}", size + 1),
        "start=5&end=4".to_string(),
        "limit=0".to_string(),
        "limit=1001".to_string(),
        "start=abc".to_string(),
        "start=-1".to_string(),
        "bogus=1".to_string(),
    ] {
        let r = app
            .get(&format!("/v1/log/registry-entries?{q}"), None)
            .await;
        assert_eq!(r.status(), 400, "{q}");
        assert_eq!(
            r.headers()["content-type"],
            "application/problem+json",
            "{q}"
        );
    }
    app.finish().await;
}

#[tokio::test]
async fn registry_feed_sqlite() {
    feed(Engine::Sqlite).await;
}

#[tokio::test]
async fn registry_feed_postgres() {
    if Engine::Postgres.required("registry_feed_postgres") {
        feed(Engine::Postgres).await;
    }
}
