//! Read nodes (`--read-only`, issue #18): on the log's database — a replica in production, the
//! same PostgreSQL here (`system-tests/tests/ha.rs` runs one on a Patroni standby) — a read node
//! serves the checkpoint, tiles and proofs the leader serves, each answer stating its staleness;
//! it refuses every write and every other route with 421 problem+json, stores nothing, and stops
//! answering reads once it is staler than its bound.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;

use common::{now_ms, Devices, Engine, TestApp};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::note::NoteVerifier;
use serde_json::Value;

async fn read_node(app: &TestApp, tune: impl Fn(&mut ledger_service::config::Config)) -> String {
    let mut cfg = common::config(&app.storage);
    cfg.read_node.read_only = true;
    tune(&mut cfg);
    let shared = ledger_service::reader::start(&cfg, &app.storage.url)
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(ledger_service::serve(
        listener,
        shared,
        std::future::pending(),
    ));
    base
}

#[tokio::test]
async fn a_read_node_serves_the_public_log_and_nothing_else() {
    if !Engine::Postgres.required("a_read_node_serves_the_public_log_and_nothing_else") {
        return;
    }
    let app = TestApp::spawn(Engine::Postgres).await;
    let dev = Devices::new("Read Node Sensors", 2, 1);
    dev.enroll(&app).await;
    let now = now_ms();
    let envs: Vec<Vec<u8>> = (1..=300)
        .map(|i| dev.envelope((i % 2) as usize, 0, i, now - 60_000 + i, 70))
        .collect();
    let (st, _) = app.ingest(&envs).await;
    assert_eq!(st, 200);
    let size = app.shared.committed();
    let leader_cp = app.wait_for_checkpoint(size).await;
    let base = read_node(&app, |c| c.read_node.read_refresh_ms = 50).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        let http = http.clone();
        async move { http.get(path).send().await.unwrap() }
    };

    // The same checkpoint as the leader's, with its staleness stated.
    let mut cp_text = String::new();
    for _ in 0..100 {
        let r = get(format!("{base}/v1/log/checkpoint")).await;
        assert_eq!(r.status(), 200);
        let staleness: u64 = r.headers()["ledger-staleness-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(staleness <= 5_000, "{staleness}");
        cp_text = r.text().await.unwrap();
        if cp_text == leader_cp {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        cp_text, leader_cp,
        "the read node serves the leader's checkpoint"
    );
    let key: Value = get(format!("{base}/v1/log/key"))
        .await
        .json()
        .await
        .unwrap();
    let verifier = NoteVerifier::from_vkey(key["vkey"].as_str().unwrap()).unwrap();
    let cp = Checkpoint::open(&cp_text, &verifier).unwrap();
    assert_eq!(cp.size, size);

    // Tiles and proofs from the read node verify against it.
    let tile = get(format!("{base}/tile/0/000")).await;
    assert_eq!(tile.status(), 200);
    assert_eq!(
        tile.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let hashes = tile.bytes().await.unwrap();
    assert_eq!(hashes.len(), 256 * 32);
    let leader_tile = app.get("/tile/0/000", None).await.bytes().await.unwrap();
    assert_eq!(hashes, leader_tile);
    let proof: Value = get(format!(
        "{base}/v1/log/proof/consistency?from=100&to={size}"
    ))
    .await
    .json()
    .await
    .unwrap();
    let leader_proof: Value = app
        .get(
            &format!("/v1/log/proof/consistency?from=100&to={size}"),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(proof, leader_proof);
    let inclusion = get(format!(
        "{base}/v1/log/proof/inclusion?index=7&tree_size={size}"
    ))
    .await;
    assert_eq!(inclusion.status(), 200);
    // Past the published tree: nothing.
    let past = get(format!(
        "{base}/v1/log/proof/consistency?from=1&to={}",
        size + 1
    ))
    .await;
    assert_eq!(past.status(), 400);

    // Hostile input on the routes it serves: 4xx problem+json, never a server error.
    let hostile = [
        "/tile/abc".to_string(),
        "/tile/0/x999999999999999999999/999".into(),
        "/tile/99/000".into(),
        "/tile/0/000.p/0".into(),
        "/tile/0/000.p/999".into(),
        "/tile/0/001".into(),
        format!("/tile/0/{}", "x123/".repeat(200)),
        "/v1/log/proof/inclusion?index=-1&tree_size=x".into(),
        "/v1/log/proof/inclusion?index=99999999999999999999999&tree_size=5".into(),
        format!("/v1/log/proof/inclusion?index={size}&tree_size={size}"),
        "/v1/log/proof/inclusion".into(),
        "/v1/log/proof/consistency?from=0&to=5".into(),
        "/v1/log/proof/consistency?from=9&to=5".into(),
        "/v1/log/proof/consistency?from=1&to=18446744073709551615".into(),
        "/v1/log/proof/consistency?from=1&to=5&evil=1".into(),
        "/v1/log/proof/nothing".into(),
        "/v1/log/registry-entries?start=abc".into(),
        "/v1/log/registry-entries?limit=0".into(),
        "/v1/log/registry-entries?limit=100000".into(),
        format!("/v1/log/registry-entries?start={}", size + 10),
    ];
    for path in &hostile {
        let r = get(format!("{base}{path}")).await;
        let status = r.status().as_u16();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or("").to_string());
        let shown: String = path.chars().take(80).collect();
        assert!((400..500).contains(&status), "{shown}: {status}");
        assert_eq!(ct.as_deref(), Some("application/problem+json"), "{shown}");
    }
    // A route without parameters ignores a long query string, as on the leading node.
    let long = get(format!("{base}/v1/log/checkpoint?{}", "a=b&".repeat(2000))).await;
    assert!(long.status().as_u16() < 500);

    // Everything else: 421 problem+json (this node never serves it), nothing stored.
    let before = app.readings().await;
    let writes = [
        http.post(format!("{base}/v1/ingest"))
            .header("content-type", "application/cbor")
            .body(provenance_core::batch::encode(&[envs[0].as_slice()]))
            .bearer_auth(&app.admin),
        http.post(format!("{base}/v1/registry/issuers"))
            .bearer_auth(&app.admin)
            .json(&dev.issuer_bodies()[0]),
        http.get(format!("{base}/v1/readings?limit=5"))
            .bearer_auth(&app.admin),
        http.get(format!("{base}/v1/log/entries/3"))
            .bearer_auth(&app.admin),
        http.post(format!("{base}/v1/log/checkpoint")),
    ];
    for w in writes {
        let r = w.send().await.unwrap();
        assert_eq!(r.status(), 421);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        let body: Value = r.json().await.unwrap();
        assert!(
            body["type"].as_str().unwrap().ends_with("/read-only"),
            "{body}"
        );
    }
    assert_eq!(app.readings().await, before);
    assert_eq!(get(format!("{base}/readyz")).await.status(), 200);
    assert_eq!(get(format!("{base}/healthz")).await.status(), 200);
    // Metrics for a scraper's token (read from the replica; its last use is not written).
    let m = http
        .get(format!("{base}/metrics"))
        .bearer_auth(&app.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(m.status(), 200);
    assert_eq!(
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );

    // A node staler than its bound answers no read and is not ready.
    let stale = read_node(&app, |c| {
        c.read_node.read_refresh_ms = 10_000;
        c.read_node.read_max_staleness_ms = 1;
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let r = get(format!("{stale}/v1/log/checkpoint")).await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(body["type"].as_str().unwrap().ends_with("/stale"), "{body}");
    assert_eq!(get(format!("{stale}/readyz")).await.status(), 503);
    app.finish().await;
}

/// A read node needs a log: on an empty database it refuses to start, with a clear message.
#[tokio::test]
async fn a_read_node_on_a_database_without_a_log_refuses_to_start() {
    if !Engine::Postgres.required("a_read_node_on_a_database_without_a_log_refuses_to_start") {
        return;
    }
    let fresh = common::Storage::fresh(Engine::Postgres).await;
    let mut cfg = common::config(&fresh);
    cfg.read_node.read_only = true;
    let err = ledger_service::reader::start(&cfg, &fresh.url)
        .await
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("no log"), "{err:#}");
    fresh.drop_all().await;
}
