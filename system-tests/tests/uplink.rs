//! The gateway against the real service on real PostgreSQL: it keeps spooling while the service
//! is down and, when it returns, every spooled reading is in the log exactly once and in order;
//! a `kill -9` of the gateway mid-upload loses and duplicates nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;
use ledger_testkit as support;

use common::now_ms;
use common::{free_tcp, wait_for};
use common::{Devices, Engine, TestApp};
use gateway_uplink::{Config, Gateway};
use serde_json::Value;
use std::net::UdpSocket;
use std::path::Path;
use std::time::{Duration, Instant};
use support::{free_udp, metric, Child};

fn config(app: &TestApp, dir: &Path, listen: &str, dev: &Devices) -> Config {
    let key_file = dir.join("gateway.key");
    if !key_file.exists() {
        std::fs::write(&key_file, hex::encode(dev.gateways[0].0.to_bytes())).unwrap();
    }
    let mut cfg = Config::with_defaults(
        &dev.gateways[0].1.subject_cn,
        &key_file,
        &app.base,
        &app.gateway,
        &dir.join("spool"),
    );
    cfg.listen = listen.into();
    cfg.spool_max = 100_000;
    cfg.batch = 100;
    cfg.backoff_ms = 20;
    cfg.backoff_max_ms = 300;
    cfg
}

/// Sensor frames from every sensor, interleaved, `per_sensor` each, numbered from `first`.
fn frames(dev: &Devices, per_sensor: u64, first: u64) -> Vec<Vec<u8>> {
    let now = now_ms();
    let mut out = Vec::new();
    for seq in first..first + per_sensor {
        for (i, (k, c)) in dev.sensors.iter().enumerate() {
            let r = provenance_core::reading::Reading {
                sensor_id: c.subject_cn.clone(),
                seq,
                measured_at_ms: now - 60_000 + seq * 10 + i as u64,
                measurements: vec![provenance_core::reading::Measurement::new(
                    "8867-4",
                    provenance_core::reading::Decimal::new(70, 0),
                )
                .unwrap()],
            };
            out.push(provenance_core::cose::SignedReading::sign(&r, k).unwrap());
        }
    }
    out
}

fn send(frames: &[Vec<u8>], to: &str) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for (i, f) in frames.iter().enumerate() {
        sock.send_to(f, to).unwrap();
        // Do not overrun the gateway's socket buffer, even when the machine is busy with other
        // tests (a datagram dropped there never reaches the spool).
        if i % 10 == 9 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Checks the log holds each (sensor, seq) exactly once, and per sensor in sequence order.
async fn check_log(app: &TestApp, dev: &Devices, per_sensor: u64) {
    assert_eq!(
        app.readings().await,
        per_sensor * dev.sensors.len() as u64,
        "exactly once"
    );
    for (_, c) in &dev.sensors {
        let v: Value = app
            .get(
                &format!("/v1/readings?sensor={}&limit=1000", c.subject_cn),
                Some(&app.reader),
            )
            .await
            .json()
            .await
            .unwrap();
        let items = v["readings"].as_array().unwrap();
        let seqs: Vec<u64> = items.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
        assert_eq!(
            seqs,
            (0..per_sensor).collect::<Vec<_>>(),
            "{}: every reading, once",
            c.subject_cn
        );
        let idx: Vec<u64> = items.iter().map(|r| r["index"].as_u64().unwrap()).collect();
        assert!(
            idx.windows(2).all(|w| w[0] < w[1]),
            "{}: logged in order",
            c.subject_cn
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spools_while_the_service_is_down_then_drains_exactly_once_in_order() {
    let app = TestApp::spawn_at(Engine::preferred(), &free_tcp()).await;
    let dev = Devices::new("Acme Sensors", 4, 1);
    dev.enroll(&app).await;
    let dir = std::env::temp_dir().join(format!("gw-uplink-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listen = free_udp();
    let gw = Gateway::open(config(&app, &dir, &listen, &dev)).unwrap();
    let task = tokio::spawn(gateway_uplink::serve(std::sync::Arc::clone(&gw)));
    wait_for("registry sync", 10, || {
        dir.join("spool")
            .join(gateway_uplink::REGISTRY_CACHE)
            .exists()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    // The service goes down; sensors keep sending; the gateway keeps spooling.
    let stopped = app.stop().await;
    let f = frames(&dev, 100, 0);
    send(&f, &listen);
    let t = Instant::now();
    while gw.stats.frames("accepted") < 400 && t.elapsed() < Duration::from_secs(20) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        gw.stats.frames("accepted"),
        400,
        "{}",
        gateway_uplink::metrics_text(&gw)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gw.stats.uploaded.get(), 0);
    assert!(gw.stats.upload_retries.get() > 0, "it kept retrying");

    // The service returns: the backlog drains, in order, exactly once.
    let app = stopped.start_again().await;
    wait_for("the backlog to drain", 60, || {
        gw.stats.uploaded.get() == 400
    })
    .await;
    check_log(&app, &dev, 100).await;
    task.abort();
    app.finish().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_of_the_gateway_mid_upload_loses_and_duplicates_nothing() {
    let app = TestApp::spawn_at(Engine::preferred(), &free_tcp()).await;
    let dev = Devices::new("Acme Sensors", 4, 1);
    dev.enroll(&app).await;
    let dir = std::env::temp_dir().join(format!("gw-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listen = free_udp();
    let cfg = config(&app, &dir, &listen, &dev);
    let metrics = free_tcp();
    let spawn = || {
        std::process::Command::new(ledger_testkit::binary("gateway-uplink", "gateway-uplink"))
            .env("GATEWAY_ID", &cfg.gateway_id)
            .env("GATEWAY_KEY_FILE", &cfg.key_file)
            .env("GATEWAY_LISTEN", &listen)
            .env("GATEWAY_SERVICE_URL", &cfg.service_url)
            .env(
                "GATEWAY_TOKEN",
                secrecy::ExposeSecret::expose_secret(&cfg.token),
            )
            .env("GATEWAY_SPOOL_DIR", &cfg.spool_dir)
            .env("GATEWAY_BATCH", "20")
            .env("GATEWAY_BACKOFF_MS", "20")
            .env("GATEWAY_BACKOFF_MAX_MS", "200")
            .env("GATEWAY_METRICS_LISTEN", &metrics)
            .env("RUST_LOG", "error")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(Child)
            .unwrap()
    };
    let spooled = || metric(&metrics, "gateway_spooled");
    let mut child = spawn();
    wait_for("registry sync", 10, || {
        dir.join("spool")
            .join(gateway_uplink::REGISTRY_CACHE)
            .exists()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Build a backlog while the service is down.
    let stopped = app.stop().await;
    send(&frames(&dev, 100, 0), &listen);
    wait_for("400 spooled", 30, || spooled() == Some(400)).await;
    // The service returns; kill -9 the gateway while it uploads.
    let app = stopped.start_again().await;
    let t = Instant::now();
    loop {
        let n = app.readings().await;
        if n > 0 {
            assert!(
                n < 400,
                "the kill must land mid-upload ({n} uploaded already)"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "upload never started"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill9();
    drop(child);
    // The gateway comes back on the same spool and finishes.
    let child = spawn();
    wait_for("the backlog to drain", 60, || spooled() == Some(0)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    check_log(&app, &dev, 100).await;
    drop(child);
    app.finish().await;
    let _ = std::fs::remove_dir_all(&dir);
}
