//! Archival export benchmark (one command):
//!
//! ```sh
//! cargo run --release -p ledger-service --example exportbench -- [--readings 1000000] [--sqlite]
//! ```
//!
//! Starts the service in this process on a fresh PostgreSQL database (or SQLite), ingests
//! `--readings` doubly signed readings of 100 patients (signed and sent in chunks, never all in
//! memory), then runs a whole-log FHIR export (Observation, Device, Provenance NDJSON and the log
//! archive) through the HTTP API and prints its duration, throughput, output sizes and the
//! process's resident memory before and at its peak during the export.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: fail loudly

mod support;

use ed25519_dalek::SigningKey;
use ledger_service::now_ms;
use provenance_core::cert::{self, Role as CertRole};
use provenance_core::cose::{GatewayEnvelope, SignedReading};
use provenance_core::reading::{Decimal, Measurement, Reading};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let mut n = 1_000_000u64;
    let mut sqlite = false;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--readings" => n = it.next().unwrap().parse().unwrap(),
            "--sqlite" => sqlite = true,
            other => panic!("unknown flag {other}; flags: --readings N --sqlite"),
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(n, sqlite));
}

async fn run(n: u64, sqlite: bool) {
    let bench = support::start("exportbench", sqlite, None).await;
    let (base, client, engine) = (bench.base.clone(), bench.client.clone(), bench.engine);
    let (admin, gw_token) = (bench.admin.clone(), bench.gateway.clone());
    let (running, dir) = (&bench.running, bench.dir.clone());
    let post = |path: &'static str, body: Value| {
        let bench = &bench;
        async move {
            bench.post(path, body).await;
        }
    };

    // 100 patients, each a sensor, through 10 gateways.
    let now = now_ms();
    let day = 24 * 3600 * 1000;
    let ca_key = SigningKey::from_bytes(&[1; 32]);
    let ca = cert::issue_ca(&ca_key, &support::params("Bench CA", 1, now)).unwrap();
    // A sensor manufacturer CA for the sensors, a gateway fleet CA for the gateways.
    let fleet_key = SigningKey::from_bytes(&[4; 32]);
    let fleet = cert::issue_ca(&fleet_key, &support::params("Bench Fleet CA", 3, now)).unwrap();
    post(
        "/v1/registry/issuers",
        json!({"certificate_pem": ca.to_pem(), "role": "sensor-manufacturer"}),
    )
    .await;
    post(
        "/v1/registry/issuers",
        json!({"certificate_pem": fleet.to_pem(), "role": "gateway-fleet"}),
    )
    .await;
    let mut gateways = Vec::new();
    for g in 0..10u8 {
        let mut seed = [8u8; 32];
        seed[0] = g;
        let k = SigningKey::from_bytes(&seed);
        let id = format!("GW-{g:02}");
        let c = cert::issue_device(
            &fleet_key,
            &fleet,
            CertRole::Gateway,
            &k.verifying_key(),
            &support::params(&id, 2 + u64::from(g), now),
        )
        .unwrap();
        post(
            "/v1/registry/gateways",
            json!({"certificate_pem": c.to_pem()}),
        )
        .await;
        gateways.push(k);
    }
    let mut sensors = Vec::new();
    for s in 0..100u8 {
        let mut seed = [9u8; 32];
        seed[0] = s;
        let k = SigningKey::from_bytes(&seed);
        let id = format!("SN-{s:03}");
        let c = cert::issue_device(
            &ca_key,
            &ca,
            CertRole::Sensor,
            &k.verifying_key(),
            &support::params(&id, 100 + u64::from(s), now),
        )
        .unwrap();
        post(
            "/v1/registry/sensors",
            json!({"certificate_pem": c.to_pem()}),
        )
        .await;
        post("/v1/registry/bindings", json!({"sensor_id": id, "gateway_id": format!("GW-{:02}", s % 10), "from_ms": now - day})).await;
        post(
            "/v1/registry/assignments",
            json!({"sensor_id": id, "pseudonym": format!("patient-{s}"), "from_ms": now - day}),
        )
        .await;
        sensors.push((id, k));
    }
    let (sensors, gateways) = (Arc::new(sensors), Arc::new(gateways));

    // Ingest in chunks, signed on every core.
    let t = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let chunk = 10_000u64;
    let mut first = 0;
    while first < n {
        let last = (first + chunk).min(n);
        let threads = std::thread::available_parallelism().map_or(2, |t| t.get()) as u64;
        let envs: Vec<Vec<u8>> = std::thread::scope(|sc| {
            let hs: Vec<_> = (0..threads)
                .map(|th| {
                    let (sensors, gateways) = (Arc::clone(&sensors), Arc::clone(&gateways));
                    sc.spawn(move || {
                        (first + th..last)
                            .step_by(threads as usize)
                            .map(|i| {
                                let s = (i % 100) as usize;
                                let at = now - day / 2 + i;
                                let r = Reading {
                                    sensor_id: sensors[s].0.clone(),
                                    seq: i / 100,
                                    measured_at_ms: at,
                                    measurements: vec![
                                        Measurement::new(
                                            "8867-4",
                                            Decimal::new(70 + (i % 15) as i64, 0),
                                        )
                                        .unwrap(),
                                        Measurement::new("2708-6", Decimal::new(97, 0)).unwrap(),
                                        Measurement::new("8310-5", Decimal::new(368, -1)).unwrap(),
                                    ],
                                };
                                GatewayEnvelope::wrap(
                                    &SignedReading::sign(&r, &sensors[s].1).unwrap(),
                                    at + 50,
                                    &gateways[s % 10],
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut tasks = Vec::new();
        for part in envs.chunks(1000) {
            let body = provenance_core::batch::encode(part);
            let req = client
                .post(format!("{base}/v1/ingest"))
                .bearer_auth(&gw_token)
                .header("content-type", "application/cbor")
                .body(body);
            let sent = Arc::clone(&sent);
            let k = part.len() as u64;
            tasks.push(tokio::spawn(async move {
                let r = req.send().await.unwrap();
                assert_eq!(r.status(), 200);
                sent.fetch_add(k, Ordering::Relaxed);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        first = last;
    }
    let size = running.shared.committed();
    while running
        .shared
        .latest_checkpoint()
        .is_none_or(|c| c.size < size)
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!(
        "{engine}: ingested {} readings in {:.1} s",
        sent.load(Ordering::Relaxed),
        t.elapsed().as_secs_f64()
    );

    // The export, through the API, sampling resident memory.
    let rss_before = support::rss_mib();
    let t = Instant::now();
    let r = client
        .get(format!("{base}/v1/fhir/$export"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["content-location"]
        .to_str()
        .unwrap()
        .to_string();
    let mut peak = rss_before;
    let manifest: Value = loop {
        let r = client
            .get(&location)
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap();
        peak = peak.max(support::rss_mib());
        if r.status() == 200 {
            break r.json().await.unwrap();
        }
        assert_eq!(r.status(), 202);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let secs = t.elapsed().as_secs_f64();
    let job_dir = dir
        .join("exports")
        .join(location.rsplit('/').next().unwrap());
    let size_of = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len()) as f64 / 1e6;
    let log_mb: f64 = std::fs::read_dir(job_dir.join("log/log"))
        .map(|d| d.filter_map(Result::ok).map(|e| size_of(&e.path())).sum())
        .unwrap_or(0.0);
    println!(
        "export of {n} readings: {secs:.1} s = {:.0} readings/s; Observation {:.0} MB, Provenance {:.0} MB, Device {} resources, log archive {:.0} MB",
        n as f64 / secs,
        size_of(&job_dir.join("Observation.ndjson")),
        size_of(&job_dir.join("Provenance.ndjson")),
        manifest["output"][1]["count"],
        log_mb,
    );
    println!("resident memory: {rss_before:.0} MiB before the export, {peak:.0} MiB at its peak");
    bench.finish().await;
}
