//! Read throughput of protected health information, the path the access trail records (one
//! command):
//!
//! ```sh
//! cargo run --release -p ledger-service --example readbench -- [--readings 20000] [--patients 100] [--seconds 10] [--concurrency 32] [--sqlite]
//! ```
//!
//! Starts the service in this process on a fresh PostgreSQL database (or SQLite), enrolls one
//! gateway and a sensor per patient, ingests `--readings` readings, then for `--seconds` runs
//! `--concurrency` clients with a clinician token, each alternating (or `--only index|patient`) `GET /v1/readings/{i}` (a
//! random reading) and `GET /v1/readings?patient=…&limit=100` (a random patient's page); then
//! the same clients on `GET /healthz` (no token, no storage, nothing recorded) as the peer: the
//! HTTP stack's own ceiling on this machine.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: fail loudly

mod support;

use ledger_service::{create_token, now_ms, Role};
use provenance_core::cose::{GatewayEnvelope, SignedReading};
use provenance_core::reading::{Decimal, Measurement, Reading};
use rand::Rng;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    readings: usize,
    patients: usize,
    seconds: u64,
    concurrency: usize,
    sqlite: bool,
    only: Option<String>,
}

fn main() {
    let mut a = Args {
        readings: 20_000,
        patients: 100,
        seconds: 10,
        concurrency: 32,
        sqlite: false,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut num = || it.next().unwrap().parse::<u64>().unwrap();
        match k.as_str() {
            "--readings" => a.readings = num() as usize,
            "--patients" => a.patients = num() as usize,
            "--seconds" => a.seconds = num(),
            "--concurrency" => a.concurrency = num() as usize,
            "--sqlite" => a.sqlite = true,
            "--only" => a.only = it.next(),
            other => panic!("unknown flag {other}; flags: --readings N --patients N --seconds S --concurrency C --sqlite --only index|patient"),
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(a));
}

/// Runs `concurrency` clients on `pick` for `seconds`: requests per second and p50/p99 ms.
async fn drive(
    a: &Args,
    client: &reqwest::Client,
    token: Option<String>,
    pick: Arc<dyn Fn(u64) -> String + Send + Sync>,
) -> (f64, f64, f64) {
    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..a.concurrency {
        let (client, token, pick) = (client.clone(), token.clone(), Arc::clone(&pick));
        let (stop, failures) = (Arc::clone(&stop), Arc::clone(&failures));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut n = w as u64;
            while !stop.load(Ordering::Relaxed) {
                let mut req = client.get(pick(n));
                if let Some(t) = &token {
                    req = req.bearer_auth(t);
                }
                let t = Instant::now();
                match req.send().await {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    _ => {
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
            }
            lat
        }));
    }
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    assert_eq!(failures.load(Ordering::Relaxed), 0, "failed requests");
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| all[((all.len() - 1) as f64 * p).round() as usize];
    (all.len() as f64 / a.seconds as f64, pct(0.5), pct(0.99))
}

async fn run(a: Args) {
    let bench = support::start("readbench", a.sqlite, None).await;
    let (gw_key, sensors) = support::enroll_ward(&bench, a.patients).await;
    let base = bench.base.clone();
    let t = Instant::now();
    let now = now_ms();
    let per = a.readings.div_ceil(a.patients);
    let mut envelopes = Vec::with_capacity(a.readings);
    for seq in 1..=per as u64 {
        for (id, k) in &sensors {
            let at = now - 3_600_000 + seq * 1000;
            let r = Reading {
                sensor_id: id.clone(),
                seq,
                measured_at_ms: at,
                measurements: vec![Measurement::new("8867-4", Decimal::new(72, 0)).unwrap()],
            };
            envelopes.push(GatewayEnvelope::wrap(
                &SignedReading::sign(&r, k).unwrap(),
                at + 100,
                &gw_key,
            ));
        }
    }
    envelopes.truncate(a.readings);
    for chunk in envelopes.chunks(500) {
        let r = bench
            .client
            .post(format!("{base}/v1/ingest"))
            .bearer_auth(&bench.gateway)
            .header("content-type", "application/cbor")
            .body(provenance_core::batch::encode(chunk))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let size = bench.running.shared.committed();
    eprintln!(
        "{} engine: {} readings ingested in {:.1} s (log size {size})",
        bench.engine,
        a.readings,
        t.elapsed().as_secs_f64()
    );
    let token = create_token(bench.running.shared.db(), Role::Clinician, "readbench")
        .await
        .unwrap();
    let patients = a.patients as u64;
    let first = size - a.readings as u64;
    let reads: Arc<dyn Fn(u64) -> String + Send + Sync> = {
        let base = base.clone();
        let only = a.only.clone();
        Arc::new(move |n| {
            let mut rng = rand::thread_rng();
            let by_index = match only.as_deref() {
                Some("index") => true,
                Some("patient") => false,
                _ => n % 2 == 0,
            };
            if by_index {
                format!(
                    "{base}/v1/readings/{}",
                    first + rng.gen_range(0..size - first)
                )
            } else {
                format!(
                    "{base}/v1/readings?patient=patient-{}&limit=100",
                    rng.gen_range(0..patients)
                )
            }
        })
    };
    let (rps, p50, p99) = drive(&a, &bench.client, Some(token), reads).await;
    let health: Arc<dyn Fn(u64) -> String + Send + Sync> = {
        let base = base.clone();
        Arc::new(move |_| format!("{base}/healthz"))
    };
    let (peer, _, _) = drive(&a, &bench.client, None, health).await;
    println!(
        "{} engine, {} clients, {} s: PHI reads {rps:.0}/s (p50 {p50:.2} ms, p99 {p99:.2} ms); \
         /healthz (peer) {peer:.0}/s; ratio {:.2}",
        bench.engine,
        a.concurrency,
        a.seconds,
        rps / peer
    );
    bench.finish().await;
}
