//! Backlog drain after an outage (one command):
//!
//! ```sh
//! cargo run --release -p gateway-uplink --example drain -- 20000
//! ```
//!
//! Starts the ledger service in this process on a fresh PostgreSQL database (at `DATABASE_URL`,
//! default `postgres://postgres@127.0.0.1:5432/postgres`), enrolls 50 sensors and one gateway,
//! stops the service, feeds the gateway N signed sensor frames (checked, countersigned and
//! fsynced into its spool, as during an outage), brings the service back and times the
//! gateway's uploader draining the spool: readings acknowledged per second.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: fail loudly

use ledger_testkit as common;

use common::now_ms;
use common::{Devices, Engine, TestApp};
use gateway_uplink::{Config, Gateway};
use std::time::{Duration, Instant};

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(20_000, |a| a.parse().expect("number of readings"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n));
}

async fn run(n: u64) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let app = TestApp::spawn_at(Engine::preferred(), &addr).await;
    let sensors = 50usize;
    let dev = Devices::new("Drain Bench", sensors, 1);
    dev.enroll(&app).await;
    let dir = std::env::temp_dir().join(format!("gw-drain-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("gw.key"),
        hex::encode(dev.gateways[0].0.to_bytes()),
    )
    .unwrap();
    let batch = std::env::var("GATEWAY_BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(500);
    let gw = Gateway::open({
        let mut cfg = Config::with_defaults(
            &dev.gateways[0].1.subject_cn,
            &dir.join("gw.key"),
            &app.base,
            &app.gateway,
            &dir.join("spool"),
        );
        cfg.spool_max = 10_000_000;
        cfg.batch = batch;
        cfg.backoff_ms = 50;
        cfg.backoff_max_ms = 1000;
        cfg
    })
    .unwrap();
    gw.sync_registry().await.unwrap();
    let stopped = app.stop().await;

    // The outage: frames arrive, are checked, countersigned and spooled (bursts of 500, one
    // fsync each).
    let now = now_ms();
    let per_sensor = n / sensors as u64;
    let t = Instant::now();
    let mut burst = Vec::new();
    for seq in 0..per_sensor {
        for (i, (k, c)) in dev.sensors.iter().enumerate() {
            let r = provenance_core::reading::Reading {
                sensor_id: c.subject_cn.clone(),
                seq,
                measured_at_ms: now - 3_000_000 + seq * 100 + i as u64,
                measurements: vec![
                    provenance_core::reading::Measurement::new(
                        "8867-4",
                        provenance_core::reading::Decimal::new(70, 0),
                    )
                    .unwrap(),
                    provenance_core::reading::Measurement::new(
                        "2708-6",
                        provenance_core::reading::Decimal::new(97, 0),
                    )
                    .unwrap(),
                ],
            };
            burst.push(provenance_core::cose::SignedReading::sign(&r, k).unwrap());
            if burst.len() == 500 {
                gw.receive(&burst);
                burst.clear();
            }
        }
    }
    gw.receive(&burst);
    let total = gw.stats.frames("accepted");
    println!(
        "outage: {total} readings checked, countersigned and spooled in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The service returns; time the drain.
    let app = stopped.start_again().await;
    let t = Instant::now();
    let up = tokio::spawn(gateway_uplink::uploader::run(std::sync::Arc::clone(&gw)));
    while gw.stats.uploaded.get() < total {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let secs = t.elapsed().as_secs_f64();
    up.abort();
    assert_eq!(
        app.readings().await,
        total,
        "every spooled reading is in the log once"
    );
    println!("drain: {total} readings in {secs:.2} s = {:.0} readings/s (batches of {batch}, one gateway, service + PostgreSQL on the same machine)", total as f64 / secs);
    app.finish().await;
    let _ = std::fs::remove_dir_all(&dir);
}
