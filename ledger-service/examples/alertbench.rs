//! Alert latency benchmark: from sending a reading with a critical value to the clinician's
//! webhook receiving the `alert.opened` message, on loopback (one command):
//!
//! ```sh
//! cargo run --release -p ledger-service --example alertbench -- [--alerts 300] [--rate 50] [--sqlite]
//! ```
//!
//! Starts the service in this process on a fresh PostgreSQL database (or SQLite), enrolls one
//! gateway and one sensor per patient, subscribes a receiver (a real HTTP server in this process),
//! then sends one critical reading per patient at `--rate` readings/s, each in its own ingest
//! request, and prints the distribution of ingest-request-sent → webhook-received.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: fail loudly

mod support;

use ledger_service::now_ms;
use provenance_core::cose::{GatewayEnvelope, SignedReading};
use provenance_core::reading::{Decimal, Measurement, Reading};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let mut alerts = 300usize;
    let mut rate = 50u64;
    let mut sqlite = false;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--alerts" => alerts = it.next().unwrap().parse().unwrap(),
            "--rate" => rate = it.next().unwrap().parse().unwrap(),
            "--sqlite" => sqlite = true,
            other => panic!("unknown flag {other}; flags: --alerts N --rate PER_SECOND --sqlite"),
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(alerts, rate, sqlite));
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(n: usize, rate: u64, sqlite: bool) {
    let bench = support::start("alertbench", sqlite, None).await;
    let (base, client, engine) = (bench.base.clone(), bench.client.clone(), bench.engine);
    let gw_token = bench.gateway.clone();
    let post = |path: String, body: Value| {
        let bench = &bench;
        async move { bench.post(&path, body).await }
    };

    // Devices: one gateway, one sensor per patient.
    let (gw_key, sensors) = support::enroll_ward(&bench, n).await;

    // The receiver: records when each alert's reading index arrives.
    let arrived: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let rec = Arc::clone(&arrived);
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: String| {
            let rec = Arc::clone(&rec);
            async move {
                let at = Instant::now();
                let v: Value = serde_json::from_str(&body).unwrap();
                if v["type"] == "alert.opened" {
                    rec.lock()
                        .unwrap()
                        .insert(v["data"]["reading_index"].as_u64().unwrap(), at);
                }
                "ok"
            }
        }),
    );
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", hook.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(hook, app).await.unwrap() });
    post("/v1/webhooks/endpoints".into(), json!({"url": hook_url})).await;

    // One critical reading per patient, paced.
    let envelopes: Vec<Vec<u8>> = sensors
        .iter()
        .map(|(id, k)| {
            let at = now_ms() - 1000;
            let r = Reading {
                sensor_id: id.clone(),
                seq: 1,
                measured_at_ms: at,
                measurements: vec![Measurement::new("8867-4", Decimal::new(150, 0)).unwrap()],
            };
            GatewayEnvelope::wrap(&SignedReading::sign(&r, k).unwrap(), at + 100, &gw_key)
        })
        .collect();
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (i, env) in envelopes.into_iter().enumerate() {
        let due = start + Duration::from_micros(1_000_000 * i as u64 / rate.max(1));
        tokio::time::sleep_until(due.into()).await;
        let body = provenance_core::batch::encode(&[env]);
        let req = client
            .post(format!("{base}/v1/ingest"))
            .bearer_auth(&gw_token)
            .header("content-type", "application/cbor")
            .body(body);
        let sent = Arc::clone(&sent);
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let v: Value = req.send().await.unwrap().json().await.unwrap();
            let idx = v["results"][0]["index"].as_u64().unwrap();
            sent.lock().unwrap().insert(idx, t);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while arrived.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} alerts arrived",
            arrived.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (sent, arrived) = (
        sent.lock().unwrap().clone(),
        arrived.lock().unwrap().clone(),
    );
    let mut ms: Vec<f64> = sent
        .iter()
        .map(|(idx, t)| arrived[idx].duration_since(*t).as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    println!(
        "{engine}: {n} alerts at {rate} readings/s, ingest sent -> webhook received: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        pct(&ms, 0.5),
        pct(&ms, 0.9),
        pct(&ms, 0.99),
        ms[ms.len() - 1]
    );
    bench.finish().await;
}
