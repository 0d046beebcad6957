//! Ingest load generator and benchmark (one command):
//!
//! ```sh
//! cargo run --release -p ledger-service --example loadgen -- --readings 200000
//! ```
//!
//! Starts the service in this process on a fresh PostgreSQL database (or `--sqlite`), provisions
//! an issuer, many sensors and gateways over the HTTP API, pre-signs every reading (sensor and
//! gateway signatures), measures this machine's Ed25519 batch-verification ceiling, then drives
//! `POST /v1/ingest` over HTTP from concurrent clients and prints the sustained durable ingest
//! rate, the request latency and the ack-to-checkpoint latency distribution.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: fail loudly

mod support;

use ed25519_dalek::SigningKey;
use ledger_service::now_ms;
use provenance_core::cert::{self, CertParams, Role as CertRole};
use provenance_core::cose::{GatewayEnvelope, SignedReading};
use provenance_core::reading::{Decimal, Measurement, Reading};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Args {
    readings: usize,
    sensors: usize,
    gateways: usize,
    batch: usize,
    clients: usize,
    sqlite: bool,
    database_url: String,
    /// Assign the sensors to this many patients (0: none).
    patients: usize,
}

fn args() -> Args {
    let mut a = Args {
        readings: 200_000,
        sensors: 2000,
        gateways: 50,
        patients: 0,
        batch: 500,
        clients: 8,
        sqlite: false,
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().expect("flag value");
        match k.as_str() {
            "--readings" => a.readings = val().parse().unwrap(),
            "--sensors" => a.sensors = val().parse().unwrap(),
            "--gateways" => a.gateways = val().parse().unwrap(),
            "--batch" => a.batch = val().parse().unwrap(),
            "--clients" => a.clients = val().parse().unwrap(),
            "--sqlite" => a.sqlite = true,
            "--patients" => a.patients = val().parse().unwrap(),
            "--database-url" => a.database_url = val(),
            other => panic!("unknown flag {other}; flags: --readings N --sensors N --gateways N --patients N --batch N --clients N --sqlite --database-url URL"),
        }
    }
    a
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let a = args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(a));
}

async fn run(a: Args) {
    let bench = support::start("loadgen", a.sqlite, Some(&a.database_url)).await;
    let url = bench.url.clone();
    let engine = if a.sqlite {
        "SQLite (WAL, synchronous=FULL)"
    } else {
        "PostgreSQL (synchronous_commit on)"
    };
    let (base, client) = (bench.base.clone(), bench.client.clone());
    let (admin, gateway_token, running) = (&bench.admin, &bench.gateway, &bench.running);

    // Provision devices.
    let now = now_ms();
    let t = Instant::now();
    let day = 24 * 3600 * 1000;
    let ca_key = SigningKey::from_bytes(&[1; 32]);
    fn params(cn: &str, serial: u64, now: u64) -> CertParams<'_> {
        let day = 24 * 3600 * 1000;
        CertParams {
            common_name: cn,
            organization: "Bench",
            serial,
            not_before_ms: now - day,
            not_after_ms: now + 365 * day,
        }
    }
    let ca = cert::issue_ca(&ca_key, &params("Bench CA", 1, now)).unwrap();
    let post = |path: &'static str, body: Value| {
        let req = client
            .post(format!("{base}{path}"))
            .bearer_auth(admin)
            .json(&body);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 201, "{path}: {}", r.text().await.unwrap());
        }
    };
    // A sensor manufacturer CA for the sensors, a gateway fleet CA for the gateways.
    let fleet_key = SigningKey::from_bytes(&[4; 32]);
    let fleet = cert::issue_ca(&fleet_key, &params("Bench Fleet CA", 3, now)).unwrap();
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
    for g in 0..a.gateways {
        let k = SigningKey::from_bytes(&seed(2, g));
        let id = format!("GW-{g:05}");
        let c = cert::issue_device(
            &fleet_key,
            &fleet,
            CertRole::Gateway,
            &k.verifying_key(),
            &params(&id, 1000 + g as u64, now),
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
    for s in 0..a.sensors {
        let k = SigningKey::from_bytes(&seed(3, s));
        let id = format!("SN-{s:06}");
        let c = cert::issue_device(
            &ca_key,
            &ca,
            CertRole::Sensor,
            &k.verifying_key(),
            &params(&id, 100_000 + s as u64, now),
        )
        .unwrap();
        post(
            "/v1/registry/sensors",
            json!({"certificate_pem": c.to_pem()}),
        )
        .await;
        post("/v1/registry/bindings", json!({"sensor_id": id, "gateway_id": format!("GW-{:05}", s % a.gateways), "from_ms": now - day})).await;
        if a.patients > 0 {
            // Readings of assigned sensors run the alert rules and store their chart values.
            post("/v1/registry/assignments", json!({"sensor_id": id, "pseudonym": format!("p-{}", s % a.patients), "from_ms": now - day})).await;
        }
        sensors.push((id, k));
    }
    println!(
        "provisioned 1 issuer, {} sensors, {} gateways in {:.1} s",
        a.sensors,
        a.gateways,
        t.elapsed().as_secs_f64()
    );

    // Pre-sign every reading, on all cores.
    let t = Instant::now();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let sensors = Arc::new(sensors);
    let gateways = Arc::new(gateways);
    let chunks: Vec<Vec<(usize, Vec<u8>)>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (sensors, gateways) = (Arc::clone(&sensors), Arc::clone(&gateways));
                let n = a.readings;
                let ns = a.sensors;
                let ng = a.gateways;
                let nc = a.clients.max(1);
                sc.spawn(move || {
                    (t..n)
                        .step_by(threads)
                        .map(|i| {
                            let s = i % ns;
                            let seq = (i / ns) as u64 + 1;
                            let at = now - 120_000 + (i as u64 % 100_000);
                            let r = Reading {
                                sensor_id: sensors[s].0.clone(),
                                seq,
                                measured_at_ms: at,
                                measurements: vec![
                                    Measurement::new(
                                        "8867-4",
                                        Decimal::new(60 + (i % 40) as i64, 0),
                                    )
                                    .unwrap(),
                                    Measurement::new(
                                        "2708-6",
                                        Decimal::new(95 + (i % 5) as i64, 0),
                                    )
                                    .unwrap(),
                                    Measurement::new(
                                        "8310-5",
                                        Decimal::new(365 + (i % 10) as i64, -1),
                                    )
                                    .unwrap(),
                                ],
                            };
                            let inner = SignedReading::sign(&r, &sensors[s].1).unwrap();
                            // Client c uploads for the gateways g with g % clients == c.
                            let client = (s % ng) % nc;
                            (
                                client,
                                GatewayEnvelope::wrap(&inner, at + 150, &gateways[s % ng]),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut envelopes: Vec<(usize, Vec<u8>)> = chunks.into_iter().flatten().collect();
    // Order by (sensor, seq) interleaving as a real fleet would send: sort by measured time.
    envelopes.sort_by_key(|(_, e)| {
        GatewayEnvelope::decode(e)
            .map(|d| d.sensor.reading.measured_at_ms)
            .unwrap_or(0)
    });
    let avg_len = envelopes.iter().map(|(_, e)| e.len()).sum::<usize>() / envelopes.len().max(1);
    println!(
        "pre-signed {} doubly signed readings ({avg_len} bytes each) in {:.1} s",
        envelopes.len(),
        t.elapsed().as_secs_f64()
    );

    // The Ed25519 batch-verification ceiling, same machine, same run, all cores.
    let ceiling = provenance_core::keys::batch_verification_rate(threads);
    println!("Ed25519 batch-verification ceiling on {threads} cores: {ceiling:.0} signatures/s = {:.0} doubly signed readings/s", ceiling / 2.0);

    // Drive the load: each client uploads for its own gateways, in order, one request in flight
    // (as a gateway does), so every sensor's sequence numbers arrive increasing.
    let bodies: Vec<Vec<Vec<u8>>> = (0..a.clients.max(1))
        .map(|c| {
            let mine: Vec<&Vec<u8>> = envelopes
                .iter()
                .filter(|(client, _)| *client == c)
                .map(|(_, e)| e)
                .collect();
            mine.chunks(a.batch)
                .map(provenance_core::batch::encode)
                .collect()
        })
        .collect();
    drop(envelopes);
    let bodies = Arc::new(bodies);
    let acks: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default(); // (highest index in batch, ack time)
    let req_lat: Arc<Mutex<Vec<f64>>> = Arc::default();
    let accepted = Arc::new(AtomicU64::new(0));
    let cp_seen: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (client, base, cp_seen, done) = (
            client.clone(),
            base.clone(),
            Arc::clone(&cp_seen),
            Arc::clone(&done),
        );
        tokio::spawn(async move {
            let mut last = 0;
            while !done.load(Ordering::SeqCst) {
                if let Ok(r) = client.get(format!("{base}/v1/log/checkpoint")).send().await {
                    let text = r.text().await.unwrap_or_default();
                    let size: u64 = text
                        .lines()
                        .nth(1)
                        .and_then(|l| l.parse().ok())
                        .unwrap_or(0);
                    if size > last {
                        last = size;
                        cp_seen.lock().unwrap().push((size, Instant::now()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..a.clients.max(1) {
        let (client, base, token) = (client.clone(), base.clone(), gateway_token.clone());
        let (bodies, acks, req_lat, accepted) = (
            Arc::clone(&bodies),
            Arc::clone(&acks),
            Arc::clone(&req_lat),
            Arc::clone(&accepted),
        );
        tasks.push(tokio::spawn(async move {
            for body in &bodies[c] {
                let sent = Instant::now();
                let r = client
                    .post(format!("{base}/v1/ingest"))
                    .bearer_auth(&token)
                    .header("content-type", "application/cbor")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let v: Value = r.json().await.unwrap();
                let acked = Instant::now();
                assert_eq!(status, 200, "{v}");
                req_lat
                    .lock()
                    .unwrap()
                    .push(acked.duration_since(sent).as_secs_f64() * 1000.0);
                accepted.fetch_add(v["accepted"].as_u64().unwrap(), Ordering::SeqCst);
                let max = v["results"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(|r| r["index"].as_u64())
                    .max()
                    .unwrap_or(0);
                acks.lock().unwrap().push((max, acked));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let wall = t.elapsed().as_secs_f64();
    // Wait for the final checkpoint.
    let final_size = running.shared.committed();
    while running.shared.latest_checkpoint().map_or(0, |c| c.size) < final_size {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    done.store(true, Ordering::SeqCst);
    watcher.await.unwrap();

    let n = accepted.load(Ordering::SeqCst);
    let cps = cp_seen.lock().unwrap().clone();
    let mut to_cp: Vec<f64> = acks
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(idx, at)| {
            cps.iter()
                .find(|(size, _)| *size > *idx)
                .map(|(_, seen)| seen.saturating_duration_since(*at).as_secs_f64() * 1000.0)
        })
        .collect();
    to_cp.sort_by(f64::total_cmp);
    let mut rl = req_lat.lock().unwrap().clone();
    rl.sort_by(f64::total_cmp);
    let bytes_per_reading = running
        .shared
        .db()
        .database_bytes()
        .await
        .map_or(f64::NAN, |b| b as f64 / n as f64);
    println!();
    println!("engine:                     {engine}");
    println!("clients x batch:            {} x {}", a.clients, a.batch);
    println!("accepted:                   {n} readings in {wall:.2} s");
    println!(
        "sustained durable ingest:   {:.0} readings/s",
        n as f64 / wall
    );
    println!(
        "Ed25519 batch ceiling:      {:.0} readings/s (2 signatures each, {threads} cores)",
        ceiling / 2.0
    );
    println!(
        "request latency (ms):       p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        pct(&rl, 0.5),
        pct(&rl, 0.9),
        pct(&rl, 0.99),
        pct(&rl, 1.0)
    );
    println!(
        "ack -> checkpoint (ms):     p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}  ({} batches)",
        pct(&to_cp, 0.5),
        pct(&to_cp, 0.9),
        pct(&to_cp, 0.99),
        pct(&to_cp, 1.0),
        to_cp.len()
    );
    println!("database bytes per reading: {bytes_per_reading:.0} (envelope {avg_len} bytes; includes indexes, tiles, checkpoints)");
    if running.shared.db().engine() == "postgres" {
        println!("(database {url} is kept for inspection; drop it when done)");
    }
    println!(
        "ratio to the ceiling: {:.0} % (sustained durable ingest / Ed25519 batch ceiling, same run)",
        100.0 * (n as f64 / wall) / (ceiling / 2.0)
    );
}

fn seed(kind: u8, i: usize) -> [u8; 32] {
    let mut s = [kind; 32];
    s[..8].copy_from_slice(&(i as u64).to_le_bytes());
    s
}
