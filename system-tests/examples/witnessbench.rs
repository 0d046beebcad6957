//! Witness and monitor benchmarks (docs/PERFORMANCE.md), one command each:
//!
//! ```sh
//! cargo run --release -p system-tests --example witnessbench -- publication 200
//! cargo run --release -p system-tests --example witnessbench -- monitor 1000000
//! ```
//!
//! `publication N`: the service (in this process, on the preferred engine) with 0, 1 and 3
//! local `ledger-witness` instances (also in this process, over loopback HTTP) and a quorum of
//! all of them; then 1 of 1 witness slowed to 500 ms per answer, and 1 witness down with quorum
//! 0. N single-reading ingests one after another: the ingest acknowledgement latency and the time
//! from the acknowledgement to the first published checkpoint that covers the reading.
//!
//! `monitor N`: a synthetic log of N entries (tiles written as the sequencer writes them), the
//! service started on it, and `ledger-verify monitor`'s catch-up from nothing, timed: entries/s.
//! Beside it, in the same run: fetching the same tiles alone, and hashing N leaf hashes into a
//! root alone (the two parts of the work), so the ratio says which one bounds it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: fail loudly

use ledger_testkit as common;

use common::{now_ms, Devices, Engine, TestApp};
use ledger_service::config::witness_target;
use provenance_core::note::NoteVerifier;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() {
    let mode = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "publication".into());
    let n: u64 = std::env::args()
        .nth(2)
        .map_or(200, |a| a.parse().expect("a number"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    match mode.as_str() {
        "publication" => rt.block_on(publication(n)),
        "monitor" => rt.block_on(monitor(n)),
        other => panic!("unknown mode {other:?}: publication or monitor"),
    }
}

struct Witness {
    dir: std::path::PathBuf,
    addr: String,
    vkey: String,
}

impl Witness {
    fn new(i: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("witnessbench-{}-{i}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let vkey = ledger_witness::init(&dir, &format!("bench.witness/w{i}")).unwrap();
        Self {
            dir,
            addr: common::free_tcp(),
            vkey,
        }
    }

    /// Serves the witness, each answer delayed by `delay` (a slow witness).
    async fn start(&self, log_vkey: &str, delay: Duration) {
        let w = Arc::new(
            ledger_witness::Witness::open(
                &self.dir,
                vec![NoteVerifier::from_vkey(log_vkey).unwrap()],
            )
            .unwrap(),
        );
        let listener = tokio::net::TcpListener::bind(&self.addr).await.unwrap();
        // A slow witness: every answer waits `delay` first.
        let app = ledger_witness::app(w).layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| async move {
                tokio::time::sleep(delay).await;
                next.run(req).await
            },
        ));
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn publication(n: u64) {
    println!(
        "{:<34} {:>9} {:>9} {:>14} {:>14} {:>14}",
        "witnesses", "ack p50", "ack p99", "ack→cp p50", "ack→cp p90", "ack→cp p99"
    );
    // (label, witnesses, quorum, slow, running)
    let cases: [(&str, usize, usize, Duration, bool); 5] = [
        ("0", 0, 0, Duration::ZERO, true),
        ("1 (quorum 1)", 1, 1, Duration::ZERO, true),
        ("3 (quorum 3)", 3, 3, Duration::ZERO, true),
        (
            "1 slow, 500 ms (quorum 1)",
            1,
            1,
            Duration::from_millis(500),
            true,
        ),
        ("1 down (quorum 0)", 1, 0, Duration::ZERO, false),
    ];
    for (label, count, quorum, delay, running) in cases {
        let ws: Vec<Witness> = (0..count).map(Witness::new).collect();
        let targets: Vec<String> = ws
            .iter()
            .map(|w| format!("{} http://{}", w.vkey, w.addr))
            .collect();
        let app = TestApp::spawn_with(Engine::preferred(), move |cfg| {
            cfg.witnesses.witnesses = targets.iter().map(|t| witness_target(t).unwrap()).collect();
            cfg.witnesses.witness_quorum = quorum;
            cfg.witnesses.witness_timeout_ms = 2_000;
        })
        .await;
        let k: serde_json::Value = app.get("/v1/log/key", None).await.json().await.unwrap();
        let vkey = k["vkey"].as_str().unwrap().to_string();
        if running {
            for w in &ws {
                w.start(&vkey, delay).await;
            }
        }
        let dev = Devices::new("Witness Bench", 1, 1);
        dev.enroll(&app).await;
        let (mut ack, mut to_cp) = (Vec::new(), Vec::new());
        let base = now_ms() - 600_000;
        for seq in 0..n {
            let env = dev.envelope(0, 0, seq, base + seq, 70);
            let t = Instant::now();
            let (status, body) = app.ingest(&[env]).await;
            assert_eq!(status, 200, "{body}");
            let acked = Instant::now();
            ack.push((acked - t).as_secs_f64() * 1e3);
            let index = body["results"][0]["index"].as_u64().unwrap();
            loop {
                if app
                    .shared
                    .latest_checkpoint()
                    .is_some_and(|c| c.size > index)
                {
                    break;
                }
                assert!(acked.elapsed() < Duration::from_secs(30), "no checkpoint");
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
            to_cp.push(acked.elapsed().as_secs_f64() * 1e3);
        }
        println!(
            "{:<34} {:>7.2}ms {:>7.2}ms {:>12.1}ms {:>12.1}ms {:>12.1}ms",
            label,
            pct(&mut ack, 0.5),
            pct(&mut ack, 0.99),
            pct(&mut to_cp, 0.5),
            pct(&mut to_cp, 0.9),
            pct(&mut to_cp, 0.99)
        );
        app.finish().await;
    }
}

async fn monitor(n: u64) {
    use ledger_service::tooling::SyntheticLog;
    let storage = common::Storage::fresh(Engine::preferred()).await;
    let db = ledger_service::Db::connect(&storage.url, 8).await.unwrap();
    let mut log = SyntheticLog::new();
    let t = Instant::now();
    while log.size() < n {
        let start = log.size();
        let end = (start + 100_000).min(n);
        log.append(
            &db,
            (start..end)
                .map(|i| {
                    let mut v = b"bench-leaf".to_vec();
                    v.extend_from_slice(&i.to_le_bytes());
                    v
                })
                .collect(),
        )
        .await
        .unwrap();
    }
    eprintln!("filled {n} entries in {:.0} s", t.elapsed().as_secs_f64());
    db.close().await;
    let cfg = common::config(&storage);
    let signer = provenance_core::note::NoteSigner::new(
        "monitorbench.example/log",
        ed25519_dalek::SigningKey::from_bytes(&[5; 32]),
    )
    .unwrap();
    let vkey = signer.verifier().to_vkey();
    let sdb = ledger_service::Db::connect(&storage.url, 8).await.unwrap();
    let running = ledger_service::start(&cfg, sdb, signer).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shared = Arc::clone(&running.shared);
    tokio::spawn(async move {
        ledger_service::serve(listener, shared, std::future::pending())
            .await
            .unwrap()
    });
    while running.shared.latest_checkpoint().map_or(0, |c| c.size) < n {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = std::env::temp_dir().join(format!("monitorbench-{}.json", std::process::id()));
    let _ = std::fs::remove_file(&state);
    let url = base.clone();
    let st = state.clone();
    let (secs, findings) = tokio::task::spawn_blocking(move || {
        let mut m = verifier_cli::monitor::Monitor::open(
            verifier_cli::monitor::Options {
                url,
                state: st,
                ..Default::default()
            },
            verifier_cli::trust::Trust::log_only(NoteVerifier::from_vkey(&vkey).unwrap()),
        )
        .unwrap();
        let t = Instant::now();
        let f = m.poll().unwrap();
        assert_eq!(m.size(), n);
        (t.elapsed().as_secs_f64(), f)
    })
    .await
    .unwrap();
    assert!(findings.is_empty(), "{findings:?}");
    // The parts alone: the same tiles fetched without hashing, and N hashes into a root.
    let url = base.clone();
    let fetch_secs = tokio::task::spawn_blocking(move || {
        let agent = ureq::AgentBuilder::new().build();
        let t = Instant::now();
        let mut tile = 0u64;
        while tile * 256 < n {
            let w = (n - tile * 256).min(256);
            let path = provenance_core::tiles::tile_path(0, tile, (w < 256).then_some(w as usize));
            let mut buf = Vec::new();
            use std::io::Read;
            agent
                .get(&format!("{url}/tile/{path}"))
                .call()
                .unwrap()
                .into_reader()
                .read_to_end(&mut buf)
                .unwrap();
            assert_eq!(buf.len() as u64, w * 32);
            tile += 1;
        }
        t.elapsed().as_secs_f64()
    })
    .await
    .unwrap();
    let t = Instant::now();
    let mut c = provenance_core::merkle::CompactRange::new();
    for i in 0..n {
        let mut h = [0u8; 32];
        h[..8].copy_from_slice(&i.to_le_bytes());
        c.push(h);
    }
    std::hint::black_box(c.root());
    let hash_secs = t.elapsed().as_secs_f64();
    println!("{:<44} {:>10} {:>14}", "", "seconds", "entries/s");
    for (what, s) in [
        ("ledger-verify monitor catch-up (all of it)", secs),
        ("  tiles fetched alone (HTTP, one client)", fetch_secs),
        ("  leaf hashes into the root alone", hash_secs),
    ] {
        println!("{what:<44} {s:>10.2} {:>14.0}", n as f64 / s);
    }
    let _ = std::fs::remove_file(&state);
    storage.drop_all().await;
}
