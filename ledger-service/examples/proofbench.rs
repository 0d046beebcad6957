//! Inclusion-proof latency at 1 and 10 million entries, over HTTP, with service memory:
//!
//! ```sh
//! cargo run --release -p ledger-service --example proofbench -- --sizes 1000000,10000000
//! ```
//!
//! Fills a fresh PostgreSQL database (at `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) with synthetic log entries and their tiles
//! (written as the sequencer writes them), starts the service on it, and times random
//! `GET /v1/log/proof/inclusion` requests at the full tree size from 4 concurrent clients. Every
//! proof is verified against the checkpoint. Prints p50/p99 latency and the process's resident
//! memory, for each size.
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark: fail loudly

mod support;

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use ed25519_dalek::SigningKey;
use ledger_service::config::Config;
use ledger_service::tooling::SyntheticLog;
use ledger_service::Db;
use provenance_core::checkpoint::Checkpoint;
use provenance_core::merkle;
use provenance_core::note::NoteSigner;
use std::sync::{Arc, Mutex};
use std::time::Instant;

fn leaf(i: u64) -> Vec<u8> {
    // Synthetic leaf data: the proofs do not look inside entries.
    let mut v = b"bench-leaf".to_vec();
    v.extend_from_slice(&i.to_le_bytes());
    v
}

fn main() {
    let mut sizes = vec![1_000_000u64, 10_000_000];
    let mut requests = 5000usize;
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        match k.as_str() {
            "--sizes" => {
                sizes = it
                    .next()
                    .unwrap()
                    .split(',')
                    .map(|s| s.parse().unwrap())
                    .collect()
            }
            "--requests" => requests = it.next().unwrap().parse().unwrap(),
            other => panic!("unknown flag {other}; flags: --sizes N,N --requests N"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(sizes, requests));
}

async fn run(sizes: Vec<u64>, requests: usize) {
    let admin_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let name = format!("ledger_proofbench_{}", std::process::id());
    let admin = sqlx::PgPool::connect(&admin_url).await.unwrap();
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin_url.rsplit_once('/').unwrap().0);
    let db = Db::connect(&url, 8).await.unwrap();
    let signer_seed = [3u8; 32];
    let mut log = SyntheticLog::new();
    println!(
        "{:>12} {:>10} {:>10} {:>10} {:>10} {:>14} {:>14}",
        "entries", "p50 ms", "p90 ms", "p99 ms", "max ms", "RSS start MiB", "RSS end MiB"
    );
    for &size in &sizes {
        let t = Instant::now();
        while log.size() < size {
            let start = log.size();
            let end = (start + 100_000).min(size);
            log.append(&db, (start..end).map(leaf).collect())
                .await
                .unwrap();
        }
        eprintln!(
            "filled to {size} entries in {:.0} s",
            t.elapsed().as_secs_f64()
        );

        // A fresh service process state on this database (its own pool, caches and sequencer).
        let cfg = Config {
            database_url: Some(url.clone().into()),
            data_dir: std::env::temp_dir(),
            listen: "127.0.0.1:0".parse().unwrap(),
            public_url: None,
            log_key_file: None,
            origin: "proofbench.example/log".into(),
            db_connections: 16,
            max_batch: 4096,
            checkpoint_ms: 100,
            shard_period: None,
            shard_grace_ms: 0,
            max_skew_ms: 300_000,
            max_age_ms: 1 << 40,
            log_json: false,
            alerts: Default::default(),
            exports: Default::default(),
            limits: Default::default(),
            outbound: Default::default(),
            witnesses: Default::default(),
            read_node: Default::default(),
        };
        let rss_start = support::rss_mib();
        let sdb = Db::connect(&url, 16).await.unwrap();
        let signer = NoteSigner::new(
            "proofbench.example/log",
            SigningKey::from_bytes(&signer_seed),
        )
        .unwrap();
        let key = signer.verifier();
        let running = ledger_service::start(&cfg, sdb, signer).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let shared = Arc::clone(&running.shared);
        let server = tokio::spawn(async move {
            ledger_service::serve(listener, shared, async {
                let _ = stop_rx.await;
            })
            .await
            .unwrap()
        });
        while running.shared.latest_checkpoint().map_or(0, |c| c.size) < size {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let cp = Checkpoint::open(&running.shared.latest_checkpoint().unwrap().note, &key).unwrap();
        let client = reqwest::Client::new();
        let lat: Arc<Mutex<Vec<f64>>> = Arc::default();
        let mut tasks = Vec::new();
        for c in 0..4u64 {
            let (client, base, lat, root) =
                (client.clone(), base.clone(), Arc::clone(&lat), cp.root);
            tasks.push(tokio::spawn(async move {
                let mut x = 0x2545_f491_4f6c_dd1d_u64 ^ (c + 1);
                for _ in 0..requests / 4 {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    let index = x % size;
                    let t = Instant::now();
                    let r = client
                        .get(format!(
                            "{base}/v1/log/proof/inclusion?index={index}&tree_size={size}"
                        ))
                        .send()
                        .await
                        .unwrap();
                    let v: serde_json::Value = r.json().await.unwrap();
                    lat.lock().unwrap().push(t.elapsed().as_secs_f64() * 1000.0);
                    let hashes: Vec<merkle::Hash> = v["hashes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|h| B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
                        .collect();
                    merkle::verify_inclusion(
                        index,
                        size,
                        &merkle::leaf_hash(&leaf(index)),
                        &hashes,
                        &root,
                    )
                    .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let mut l = lat.lock().unwrap().clone();
        l.sort_by(f64::total_cmp);
        let p = |q: f64| l[((l.len() - 1) as f64 * q) as usize];
        println!(
            "{size:>12} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {rss_start:>14.1} {:>14.1}",
            p(0.5),
            p(0.9),
            p(0.99),
            p(1.0),
            support::rss_mib()
        );
        let _ = stop_tx.send(());
        server.await.unwrap();
        running.sequencer.abort();
        running.shared.db().close().await;
    }
    db.close().await;
    sqlx::query(&format!("DROP DATABASE {name} WITH (FORCE)"))
        .execute(&admin)
        .await
        .unwrap();
}
