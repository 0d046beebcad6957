//! FHIR search latency at 10 million readings (issue #19), one command:
//!
//! ```sh
//! cargo run --release -p ledger-service --example fhirbench -- [--readings 10000000] [--patients 500] [--days 30] [--requests 2000] [--concurrency 4]
//! ```
//!
//! Starts the service in this process on a fresh PostgreSQL database, enrolls a gateway and a
//! sensor per patient through the API, stops it, appends `--readings` readings spread evenly
//! over the last `--days` days across the patients (entries, tiles and reading rows written as
//! the sequencer writes them; each leaf a real signed reading of its patient's sensor, from a
//! small pool per patient), starts the service again, and times, from `--concurrency` clients
//! with a clinician token, `GET /fhir/Observation?patient=…&date=ge<24 h ago>&_sort=-date&_count=100`
//! (a random patient's last 24 h, newest first, 100 per page) — and, as the peer in the same
//! run, the REST API's `GET /v1/readings?patient=…&from=<24 h ago>&limit=100` on the same rows;
//! and the FHIR search again with `_total=accurate` (a count of every match on every page).
//! Every answer must hold 100 readings. Prints p50/p99 of both.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: fail loudly

mod support;

use ledger_service::tooling::{SyntheticLog, SyntheticReading};
use ledger_service::{create_token, now_ms, Role};
use provenance_core::cose::{GatewayEnvelope, SignedReading};
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::reading::{Decimal, Measurement, Reading};
use std::sync::Arc;
use std::time::Instant;

const DAY: u64 = 24 * 3600 * 1000;
/// Signed envelopes per patient, reused round-robin as leaves.
const POOL: usize = 8;
/// Readings written per batch.
const CHUNK: usize = 50_000;

struct Args {
    readings: u64,
    patients: usize,
    days: u64,
    requests: usize,
    concurrency: usize,
}

fn main() {
    let mut a = Args {
        readings: 10_000_000,
        patients: 500,
        days: 30,
        requests: 2000,
        concurrency: 4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut num = || it.next().unwrap().parse::<u64>().unwrap();
        match k.as_str() {
            "--readings" => a.readings = num(),
            "--patients" => a.patients = num() as usize,
            "--days" => a.days = num(),
            "--requests" => a.requests = num() as usize,
            "--concurrency" => a.concurrency = num() as usize,
            other => panic!("unknown flag {other}; flags: --readings N --patients N --days D --requests N --concurrency C"),
        }
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(a));
}

/// `requests` GETs of `path(i)` from `concurrency` clients: p50 and p99 in ms, and every
/// answer's body checked by `check`.
async fn time(
    a: &Args,
    client: &reqwest::Client,
    token: &str,
    path: Arc<dyn Fn(usize) -> String + Send + Sync>,
    check: Arc<dyn Fn(&serde_json::Value) -> bool + Send + Sync>,
) -> (f64, f64) {
    let mut tasks = Vec::new();
    for c in 0..a.concurrency {
        let (client, token, path, check) = (
            client.clone(),
            token.to_string(),
            Arc::clone(&path),
            Arc::clone(&check),
        );
        let n = a.requests / a.concurrency;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(n);
            for i in 0..n {
                let url = path(c * n + i);
                let t = Instant::now();
                let r = client.get(&url).bearer_auth(&token).send().await.unwrap();
                assert!(r.status().is_success(), "{url}: {}", r.status());
                // Timed to the last byte of the answer; parsing it is the client's cost.
                let body = r.bytes().await.unwrap();
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert!(check(&v), "{url}: not the readings of the last 24 h");
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by(f64::total_cmp);
    let p = |q: f64| all[((all.len() - 1) as f64 * q).round() as usize];
    (p(0.5), p(0.99))
}

/// A FHIR instant (UTC, milliseconds), as the facade writes them.
fn iso(ms: u64) -> String {
    ledger_service::fhir::iso8601(ms)
}

async fn run(a: Args) {
    let mut bench = support::start("fhirbench", false, None).await;
    let (gw_key, sensors) = support::enroll_ward(&bench, a.patients).await;
    let now = now_ms();
    // A pool of real signed readings per patient (the leaves; rows give their times).
    let pools: Vec<Vec<Vec<u8>>> = sensors
        .iter()
        .map(|(id, key)| {
            (0..POOL as u64)
                .map(|k| {
                    let r = Reading {
                        sensor_id: id.clone(),
                        seq: 1 + k,
                        measured_at_ms: now - DAY + k,
                        measurements: vec![
                            Measurement::new("8867-4", Decimal::new(70 + k as i64, 0)).unwrap(),
                            Measurement::new("2708-6", Decimal::new(97, 0)).unwrap(),
                        ],
                    };
                    let s = SignedReading::sign(&r, key).unwrap();
                    let env = GatewayEnvelope::wrap(&s, r.measured_at_ms + 100, &gw_key);
                    LogEntry {
                        kind: EntryKind::Reading,
                        body: env,
                        logged_at_ms: now,
                    }
                    .to_cbor()
                })
                .collect()
        })
        .collect();
    let (readings, patients, span) = (a.readings, a.patients as u64, a.days * DAY);
    let t = Instant::now();
    bench
        .restart_after(|db| async move {
            let mut log = SyntheticLog::resume(&db).await.unwrap();
            let mut i = 0u64;
            while i < readings {
                let end = (i + CHUNK as u64).min(readings);
                let batch = (i..end)
                    .map(|j| {
                        let p = j % patients;
                        let nth = j / patients;
                        let per = readings.div_ceil(patients);
                        SyntheticReading {
                            leaf_data: pools[p as usize][nth as usize % POOL].clone(),
                            sensor_id: format!("SN-{p:05}"),
                            seq: 1000 + nth,
                            gateway_id: "GW-1".into(),
                            measured_at: now - span + nth * span / per,
                            patient: Some(format!("patient-{p}")),
                            values: vec![("8867-4", 70.0), ("2708-6", 97.0)],
                        }
                    })
                    .collect();
                log.append_readings(&db, batch, now).await.unwrap();
                i = end;
                if i % 1_000_000 == 0 {
                    eprintln!("{i} readings written ({:.0} s)", t.elapsed().as_secs_f64());
                }
            }
            db.close().await;
        })
        .await;
    eprintln!(
        "{} readings written in {:.0} s; service restarted",
        a.readings,
        t.elapsed().as_secs_f64()
    );
    let clinician = create_token(bench.running.shared.db(), Role::Clinician, "fhirbench")
        .await
        .unwrap();
    let since = now - DAY;
    let base = bench.base.clone();
    let n = a.patients;
    let pick = move |i: usize| (i * 7919 + 13) % n;
    let fhir = {
        let base = base.clone();
        Arc::new(move |i: usize| {
            format!(
                "{base}/fhir/Observation?patient=patient-{}&date=ge{}&_sort=-date&_count=100",
                pick(i),
                iso(since)
            )
        }) as Arc<dyn Fn(usize) -> String + Send + Sync>
    };
    let counted = {
        let fhir = Arc::clone(&fhir);
        Arc::new(move |i: usize| format!("{}&_total=accurate", fhir(i)))
            as Arc<dyn Fn(usize) -> String + Send + Sync>
    };
    let rest = {
        let base = base.clone();
        Arc::new(move |i: usize| {
            format!(
                "{base}/v1/readings?patient=patient-{}&from={since}&limit=100",
                pick(i)
            )
        }) as Arc<dyn Fn(usize) -> String + Send + Sync>
    };
    let client = reqwest::Client::new();
    // Warm both (connections, and every patient's rows in the caches once), then measure
    // them in turn.
    for warm in [&fhir, &rest] {
        time(
            &Args {
                requests: a.patients.max(a.concurrency),
                ..a
            },
            &client,
            &clinician,
            Arc::clone(warm),
            Arc::new(|_| true),
        )
        .await;
    }
    // A page of 100, or all of a patient's last 24 h when fewer (one more or less at the edge).
    let want = (a.readings / a.patients as u64 / a.days).min(100) as usize;
    let near = move |n: usize| n.abs_diff(want) <= 1;
    let fhir_ok =
        Arc::new(move |v: &serde_json::Value| v["entry"].as_array().is_some_and(|e| near(e.len())))
            as Arc<dyn Fn(&serde_json::Value) -> bool + Send + Sync>;
    let rest_ok = Arc::new(move |v: &serde_json::Value| {
        v["readings"].as_array().is_some_and(|e| near(e.len()))
    });
    let (f50, f99) = time(&a, &client, &clinician, fhir, Arc::clone(&fhir_ok)).await;
    let (c50, c99) = time(&a, &client, &clinician, counted, fhir_ok).await;
    let (r50, r99) = time(&a, &client, &clinician, rest, rest_ok).await;
    println!(
        "{} readings, {} patients over {} days (≈{} per patient per 24 h); {} requests from {} clients",
        a.readings,
        a.patients,
        a.days,
        a.readings / a.patients as u64 / a.days,
        a.requests,
        a.concurrency
    );
    println!("FHIR   Observation?patient&date=ge&_sort=-date&_count=100   p50 {f50:.1} ms   p99 {f99:.1} ms");
    println!("FHIR   … the same with _total=accurate (counted)                p50 {c50:.1} ms   p99 {c99:.1} ms");
    println!("REST   /v1/readings?patient&from&limit=100 (peer)           p50 {r50:.1} ms   p99 {r99:.1} ms");
    println!(
        "ratio FHIR/REST: p50 {:.2}, p99 {:.2}",
        f50 / r50,
        f99 / r99
    );
    bench.finish().await;
}
