//! Time-sharded logs (issue #18) on the real service (PostgreSQL when available, real HTTP):
//! shards roll over at their period's end, a reading's evidence verifies in its own shard with
//! `ledger-verify` on either side of a boundary, and a reading that arrives late for a closed
//! shard gets a clear answer and is not stored.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;

use common::{now_ms, Devices, Engine, TestApp};
use provenance_core::archive::{EntryLine, Leaf, MANIFEST_FILE};
use provenance_core::bundle::EvidenceBundle;
use provenance_core::shard::Period;
use serde_json::Value;
use std::path::Path;
use std::process::Command;

/// Shards of this many seconds: short enough to see several roll-overs in a test.
const PERIOD_S: u64 = 3;
/// Readings measured up to this long before a shard's start are still logged in it.
const GRACE_MS: u64 = 2_000;

async fn shards(app: &TestApp) -> Vec<Value> {
    let v: Value = app.get("/v1/log/shards", None).await.json().await.unwrap();
    v["shards"]
        .as_array()
        .unwrap_or_else(|| panic!("{v}"))
        .clone()
}

/// The shard holding ledger position `idx`.
fn shard_of(shards: &[Value], idx: u64) -> Value {
    shards
        .iter()
        .rev()
        .find(|s| s["base"].as_u64().unwrap() <= idx)
        .unwrap()
        .clone()
}

async fn wait_for_shards(app: &TestApp, n: usize) -> Vec<Value> {
    for _ in 0..200 {
        let s = shards(app).await;
        if s.len() >= n {
            return s;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} shards after 10 s");
}

async fn ingest(app: &TestApp, dev: &Devices, seq: &mut u64, n: u64) -> (Vec<Vec<u8>>, Value) {
    let now = now_ms();
    let envs: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            *seq += 1;
            let s = (*seq % 2) as usize;
            dev.envelope(s, s, *seq, now - 1_000 + i, 70)
        })
        .collect();
    let (status, body) = app.ingest(&envs).await;
    assert_eq!(status, 200, "{body}");
    (envs, body)
}

fn cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(ledger_testkit::binary("verifier-cli", "ledger-verify"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_roll_over_evidence_verifies_across_the_boundary_and_late_readings_are_refused() {
    // The service's log lines, with RUST_LOG set (the roll-overs are logged at info).
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let app = TestApp::spawn_with(Engine::preferred(), |c| {
        c.shard_period = Some(Period::Seconds(PERIOD_S));
        c.shard_grace_ms = GRACE_MS;
    })
    .await;
    // The log started without a period's shard: shard 0 is closed at once, shard 1 opened.
    let first = wait_for_shards(&app, 2).await;
    assert_eq!(first[0]["closed"], true, "{first:?}");
    // Just after a roll-over (so the shard has most of its period left), the devices are
    // enrolled and send readings in the same shard: the previous shard's registry proves
    // them absent. Then readings in the next shard, whose carried registry holds them, and
    // after a further roll-over.
    let fresh = wait_for_shards(&app, first.len() + 1).await.len();
    let dev = Devices::new("Acme Sensors", 2, 2);
    dev.enroll(&app).await;
    let mut seq = 0;
    let (_, same) = ingest(&app, &dev, &mut seq, 2).await;
    assert_eq!(
        shards(&app).await.len(),
        fresh,
        "enrolling and two readings took longer than a {PERIOD_S} s shard"
    );
    wait_for_shards(&app, fresh + 1).await;
    let (before_envs, before) = ingest(&app, &dev, &mut seq, 4).await;
    let open = shards(&app).await.len();
    let after_roll = wait_for_shards(&app, open + 1).await;
    let (_, after) = ingest(&app, &dev, &mut seq, 4).await;
    let index = |b: &Value, i: usize| b["results"][i]["index"].as_u64().unwrap();
    let (own, early, late) = (index(&same, 1), index(&before, 1), index(&after, 1));
    let size = app.shared.committed();
    app.wait_for_checkpoint(size).await;
    let all = shards(&app).await;
    let (so, se, sl) = (
        shard_of(&all, own),
        shard_of(&all, early),
        shard_of(&all, late),
    );
    assert_ne!(so["number"], se["number"], "{all:?}");
    assert_ne!(se["number"], sl["number"], "{all:?}");
    assert_eq!(
        se["closed"], true,
        "the earlier reading's shard is closed: {all:?}"
    );
    assert!(after_roll.len() > open);

    // Each reading's evidence verifies with ledger-verify, pinned to the log's own key only.
    let dir = std::env::temp_dir().join(format!("ledger-shards-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.pem");
    let fleet = dir.join("fleet.pem");
    std::fs::write(&ca, dev.ca.to_pem()).unwrap();
    std::fs::write(&fleet, dev.fleet.to_pem()).unwrap();
    let k: Value = app.get("/v1/log/key", None).await.json().await.unwrap();
    let vkey = k["vkey"].as_str().unwrap().to_string();
    for (idx, shard) in [(own, &so), (early, &se), (late, &sl)] {
        let resp = app
            .get(&format!("/v1/readings/{idx}/evidence"), Some(&app.reader))
            .await;
        assert_eq!(resp.status(), 200);
        let bytes = resp.bytes().await.unwrap();
        let b = EvidenceBundle::from_json(&bytes).unwrap();
        assert!(b.shard_start.is_some(), "a shard's bundle holds its start");
        // The devices enrolled in the reading's own shard are absent from the previous
        // shard's registry; those carried into it are present.
        let absent = b
            .carried_proofs
            .iter()
            .filter(|p| p.absent.is_some())
            .count();
        if idx == own {
            assert!(absent >= 2, "sensor and gateway proved absent: {b:?}");
        } else {
            assert_eq!(absent, 0, "{b:?}");
        }
        let file = dir.join(format!("evidence-{idx}.json"));
        std::fs::write(&file, &bytes).unwrap();
        let (code, out) = cli(&[
            "bundle",
            file.to_str().unwrap(),
            "--log-key",
            &vkey,
            "--issuer",
            ca.to_str().unwrap(),
            "--issuer",
            fleet.to_str().unwrap(),
        ]);
        assert_eq!(code, 0, "reading {idx} in shard {shard}: {out}");
        for step in [
            "shard.start",
            "shard.period",
            "shard.carried",
            "registry.complete",
        ] {
            assert!(out.contains(&format!("ok    {step}")), "{step}: {out}");
        }
        // Left without the carried events' proofs, or its start, it fails.
        let mut cut = b.clone();
        cut.carried_proofs.clear();
        let file = dir.join("cut.json");
        std::fs::write(&file, cut.to_json()).unwrap();
        let (code, out) = cli(&[
            "bundle",
            file.to_str().unwrap(),
            "--log-key",
            &vkey,
            "--issuer",
            ca.to_str().unwrap(),
            "--issuer",
            fleet.to_str().unwrap(),
        ]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("FAIL  shard.carried"), "{out}");
    }

    // The closed shard's log archive verifies with `ledger-verify export`, from entry 0 and
    // from within its carried entries (its start and the first carried ones in the prelude);
    // an archive short of its start or of a carried event fails.
    check_shard_archives(&app, &se, &dir, &vkey, &ca, &fleet).await;

    // What the web pages read: the reading's checkpoint is its own shard's (a closed one's
    // final), with its index in the shard's tree; the status names the open shard.
    for (idx, shard) in [(early, &se), (late, &sl)] {
        let r: Value = app
            .get(&format!("/v1/readings/{idx}"), Some(&app.reader))
            .await
            .json()
            .await
            .unwrap();
        let cp = &r["checkpoint"];
        assert_eq!(cp["shard"], shard["number"], "{r}");
        assert_eq!(cp["origin"], shard["origin"], "{r}");
        assert_eq!(
            cp["index_in_shard"].as_u64(),
            Some(idx - shard["base"].as_u64().unwrap()),
            "{r}"
        );
        if shard["closed"] == true {
            assert_eq!(cp["size"], shard["size"], "the final checkpoint: {r}");
        }
    }
    let status: Value = app
        .get("/v1/log/status", Some(&app.reader))
        .await
        .json()
        .await
        .unwrap();
    let open = shards(&app).await.last().unwrap().clone();
    assert!(
        status["shard"]["number"].as_u64() >= open["number"].as_u64(),
        "{status}"
    );
    assert!(
        status["shard"]["origin"]
            .as_str()
            .unwrap()
            .starts_with(status["origin"].as_str().unwrap()),
        "{status}"
    );

    // The public registry feed of a closed shard: its own indices, from its start (entry 0)
    // and the carried events on, up to its final size.
    let feed: Value = app
        .get(
            &format!("/v1/log/registry-entries?shard={}", se["number"]),
            None,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(feed["end"], se["size"], "{feed}");
    let kinds: Vec<provenance_core::log_entry::EntryKind> = feed["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            use base64::Engine as _;
            let leaf = base64::engine::general_purpose::STANDARD
                .decode(e["leaf_data"].as_str().unwrap())
                .unwrap();
            provenance_core::log_entry::LogEntry::from_cbor(&leaf)
                .unwrap()
                .kind
        })
        .collect();
    assert_eq!(feed["entries"][0]["index"], 0, "{feed}");
    assert_eq!(kinds[0], provenance_core::log_entry::EntryKind::ShardStart);
    assert!(kinds[1..]
        .iter()
        .all(|k| *k == provenance_core::log_entry::EntryKind::Carried));

    // Proofs and tiles of a closed shard stay served under its number.
    let n = se["number"].as_u64().unwrap();
    let base = se["base"].as_u64().unwrap();
    let final_size = se["size"].as_u64().unwrap();
    let p = app
        .get(
            &format!(
                "/v1/log/proof/inclusion?shard={n}&index={}&tree_size={final_size}",
                early - base
            ),
            None,
        )
        .await;
    assert_eq!(p.status(), 200);
    let cp = app
        .get(&format!("/v1/log/shards/{n}/checkpoint"), None)
        .await;
    assert_eq!(cp.status(), 200);
    let note = cp.text().await.unwrap();
    assert!(note.starts_with(se["origin"].as_str().unwrap()), "{note}");
    for (path, status) in [
        ("/v1/log/shards/x/checkpoint".to_string(), 400),
        ("/v1/log/shards/4000000000/checkpoint".to_string(), 404),
        (
            "/v1/log/proof/inclusion?shard=999&index=0&tree_size=1".to_string(),
            404,
        ),
        (
            format!(
                "/v1/log/proof/inclusion?shard={n}&index=0&tree_size={}",
                final_size + 1
            ),
            400,
        ),
        ("/v1/log/registry-entries?shard=999".to_string(), 404),
        ("/v1/log/registry-entries?shard=-1".to_string(), 400),
        (
            format!("/v1/log/registry-entries?shard={n}&end={}", final_size + 1),
            400,
        ),
    ] {
        let r = app.get(&path, None).await;
        assert_eq!(r.status().as_u16(), status, "{path}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json",
            "{path}"
        );
    }

    // A reading measured before the open shard began arrives late: its shard is closed. It is
    // refused per item with a clear reason, and not stored; a resubmitted logged reading is
    // still answered as the duplicate it is.
    let open = shards(&app).await.last().unwrap().clone();
    let start = open["start_ms"].as_u64().unwrap();
    let stored = app.readings().await;
    let late_env = dev.envelope(0, 0, 1_000, start - GRACE_MS - 500, 70);
    let (status, body) = app.ingest(&[late_env, before_envs[1].clone()]).await;
    assert_eq!(status, 200, "{body}");
    let r = &body["results"][0];
    assert_eq!(r["status"], "rejected", "{body}");
    assert_eq!(r["reason"], "shard_closed", "{body}");
    assert!(
        r["detail"].as_str().unwrap().contains("closed"),
        "the answer says why: {body}"
    );
    assert_eq!(body["results"][1]["status"], "duplicate", "{body}");
    assert_eq!(body["results"][1]["index"].as_u64(), Some(early), "{body}");
    assert_eq!(app.readings().await, stored, "nothing stored");

    let _ = std::fs::remove_dir_all(&dir);
    app.finish().await;
}

async fn check_shard_archives(
    app: &TestApp,
    shard: &Value,
    dir: &Path,
    vkey: &str,
    ca: &Path,
    fleet: &Path,
) {
    let (n, size) = (
        shard["number"].as_u64().unwrap(),
        shard["size"].as_u64().unwrap(),
    );
    let cp = app
        .shared
        .db()
        .checkpoints()
        .await
        .unwrap()
        .into_iter()
        .find(|c| u64::from(c.shard) == n && c.size == size)
        .expect("the closed shard's final checkpoint");
    let verify = |archive: &Path| {
        cli(&[
            "export",
            archive.to_str().unwrap(),
            "--log-key",
            vkey,
            "--issuer",
            ca.to_str().unwrap(),
            "--issuer",
            fleet.to_str().unwrap(),
        ])
    };
    let write = |start: u64, name: &str| {
        let archive = dir.join(name);
        let cp = cp.clone();
        async move {
            let m = ledger_service::write_log_archive_at(app.shared.db(), &archive, start, &cp)
                .await
                .unwrap();
            (archive, m)
        }
    };
    let (from0, m0) = write(0, "archive-0").await;
    let (from3, m3) = write(3, "archive-3").await;
    assert!(m0.registry_prelude.is_empty());
    assert_eq!(
        m3.registry_prelude.len(),
        3,
        "the start and two carried events"
    );
    for archive in [&from0, &from3] {
        let (code, out) = verify(archive);
        assert_eq!(code, 0, "{out}");
        for step in [
            "shard.start",
            "shard.carried",
            "shard.period",
            "registry.complete",
        ] {
            assert!(out.contains(&format!("ok    {step}")), "{step}: {out}");
        }
    }
    // Cut from the prelude (each entry there is proved on its own, so leaving one out does
    // not touch the tree): the start, then a carried event.
    let cut = |drop: usize, name: &str| {
        let mut m = m3.clone();
        m.registry_prelude.remove(drop);
        let to = dir.join(name);
        let _ = std::fs::remove_dir_all(&to);
        std::fs::create_dir_all(&to).unwrap();
        for f in std::fs::read_dir(&from3).unwrap() {
            let f = f.unwrap().path();
            if f.is_file() {
                std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
            } else {
                std::fs::create_dir_all(to.join(f.file_name().unwrap())).unwrap();
            }
        }
        std::fs::write(to.join(MANIFEST_FILE), m.to_json()).unwrap();
        verify(&to)
    };
    let (code, out) = cut(0, "no-start");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  shard.start"), "{out}");
    let (code, out) = cut(1, "no-carried");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  shard.carried"), "{out}");
    // A carried event replaced by its leaf hash in the range: the tree is whole, the registry
    // is not.
    let file = from0.join(&m0.entry_files[0]);
    let text = std::fs::read_to_string(&file).unwrap();
    let lines: Vec<String> = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 1 {
                match EntryLine::parse_leaf(l.as_bytes()).unwrap() {
                    (idx, Leaf::Data(leaf)) => {
                        EntryLine::encode_pruned(idx, &provenance_core::merkle::leaf_hash(&leaf))
                    }
                    other => panic!("{other:?}"),
                }
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let (code, out) = verify(&from0);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("ok    archive.completeness"), "{out}");
    assert!(out.contains("FAIL  shard.carried"), "{out}");
}
