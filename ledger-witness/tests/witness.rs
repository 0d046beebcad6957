//! The witness over real HTTP: first contact, growth, the 409 answer and its recovery, 422 with
//! the evidence kept, 400/403/404, state that survives a restart (and a rollback refused after
//! it), a corrupt state that stops the witness, concurrent submissions that never roll back,
//! metrics, the binary — and every cosignature it writes checked by an independent Python
//! implementation written from the C2SP text.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use ed25519_dalek::SigningKey;
use ledger_witness::{app, init, Witness};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::merkle::{self, MemoryTree};
use provenance_core::note::{NoteSigner, NoteVerifier};
use provenance_core::witness::{self, AddCheckpoint};
use std::path::Path;
use std::sync::Arc;

struct Log {
    signer: NoteSigner,
    tree: MemoryTree,
}

impl Log {
    fn new(name: &str, seed: u8) -> Self {
        Self {
            signer: NoteSigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap(),
            tree: MemoryTree::new(),
        }
    }
    fn grow(&mut self, n: u64, tag: u8) {
        for i in 0..n {
            self.tree.push_data(&[tag, i as u8, (i >> 8) as u8]);
        }
    }
    fn note(&self) -> String {
        let size = self.tree.size();
        Checkpoint {
            origin: self.signer.name().into(),
            size,
            root: self.tree.root_at(size).unwrap(),
            extensions: vec![
                "vitals-ledger/registry/v1 0 AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
            ],
        }
        .sign(&self.signer)
        .unwrap()
    }
    fn request(&self, old: u64) -> String {
        let size = self.tree.size();
        let proof = if old == 0 || old == size {
            vec![]
        } else {
            merkle::consistency_proof(&self.tree, old, size).unwrap()
        };
        AddCheckpoint::encode(old, &proof, &self.note())
    }
}

struct Running {
    url: String,
    task: tokio::task::JoinHandle<()>,
    vkey: String,
}

async fn serve(dir: &Path, logs: Vec<NoteVerifier>) -> Running {
    let w = Arc::new(Witness::open(dir, logs).unwrap());
    let vkey = w.vkey();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app(w)).await.unwrap();
    });
    Running { url, task, vkey }
}

async fn post(url: &str, body: String) -> (u16, String, String) {
    let r = reqwest::Client::new()
        .post(format!("{url}/add-checkpoint"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, ctype, r.text().await.unwrap())
}

#[tokio::test]
async fn cosigns_only_consistent_checkpoints_and_keeps_state() {
    let dir = tempfile::tempdir().unwrap();
    let wvkey = init(dir.path(), "witness.hospital.example/w1").unwrap();
    assert!(
        init(dir.path(), "again").is_err(),
        "init never overwrites a key"
    );
    let mut log = Log::new("ledger.example/log", 1);
    let w = serve(dir.path(), vec![log.signer.verifier()]).await;
    assert_eq!(w.vkey, wvkey);
    let wv = NoteVerifier::from_vkey(&wvkey).unwrap();
    let mut cosigned_notes = Vec::new();

    // First contact: old 0.
    log.grow(10, 0);
    let (st, _, body) = post(&w.url, log.request(0)).await;
    assert_eq!(st, 200, "{body}");
    let lines = witness::parse_cosignatures(&body).unwrap();
    assert_eq!(lines.len(), 1);
    let note = format!("{}{body}", log.note());
    assert_eq!(
        witness::cosigned_by(&note, &[&wv]).unwrap(),
        vec!["witness.hospital.example/w1".to_string()]
    );
    cosigned_notes.push(note);

    // The client forgot the witness's size: 409 with it, as text/x.tlog.size; then it recovers.
    log.grow(7, 0);
    let (st, ctype, body) = post(&w.url, log.request(0)).await;
    assert_eq!(
        (st, ctype.as_str(), body.as_str()),
        (409, "text/x.tlog.size", "10\n")
    );
    let old = witness::parse_size_body(&body).unwrap();
    let (st, _, body) = post(&w.url, log.request(old)).await;
    assert_eq!(st, 200, "{body}");
    cosigned_notes.push(format!("{}{body}", log.note()));

    // A split view: same key, another tree past the common prefix of 10. The proof from the
    // cosigned size 17 cannot verify: 422, and the request is kept as evidence.
    let mut fork = Log::new("ledger.example/log", 1);
    fork.grow(10, 0);
    fork.grow(12, 9);
    let (st, _, _) = post(&w.url, fork.request(17)).await;
    assert_eq!(st, 422);
    // At the cosigned size itself: 409 (a different root), evidence too.
    let mut same = Log::new("ledger.example/log", 1);
    same.grow(10, 0);
    same.grow(7, 9);
    let (st, _, _) = post(&w.url, same.request(17)).await;
    assert_eq!(st, 409);
    assert_eq!(
        std::fs::read_dir(dir.path().join("evidence"))
            .unwrap()
            .count(),
        2
    );
    // Older than the cosigned one (a rollback): 409 with the size.
    let mut old_view = Log::new("ledger.example/log", 1);
    old_view.grow(10, 0);
    let (st, _, body) = post(&w.url, old_view.request(10)).await;
    assert_eq!((st, body.as_str()), (409, "17\n"));

    // 400, 403, 404.
    let (st, _, _) = post(&w.url, "old 1\n\nnot a checkpoint\n".into()).await;
    assert_eq!(st, 400);
    let (st, _, _) = post(&w.url, AddCheckpoint::encode(30, &[], &log.note())).await;
    assert_eq!(st, 400, "old size above the checkpoint's");
    let mut impostor = Log::new("ledger.example/log", 2);
    impostor.grow(20, 0);
    let (st, _, _) = post(&w.url, impostor.request(17)).await;
    assert_eq!(st, 403);
    let stranger = Log::new("other.example/log", 3);
    let (st, _, _) = post(&w.url, stranger.request(0)).await;
    assert_eq!(st, 404);
    let big = format!("old 0\n\n{}", "a".repeat(witness::MAX_REQUEST_LEN + 10));
    let (st, _, _) = post(&w.url, big).await;
    assert_eq!(st, 413);

    // Metrics count the answers and show the cosigned size.
    let m = reqwest::get(format!("{}/metrics", w.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("witness_add_checkpoint_requests_total{status=\"200\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("witness_add_checkpoint_requests_total{status=\"422\"} 1"),
        "{m}"
    );
    assert!(
        m.contains("witness_cosigned_size{origin=\"ledger.example/log\"} 17"),
        "{m}"
    );
    assert!(m.contains("witness_evidence_kept_total 2"), "{m}");

    // Restart: the state is read back; the rollback and the fork are still refused.
    w.task.abort();
    let w = serve(dir.path(), vec![log.signer.verifier()]).await;
    let (st, _, body) = post(&w.url, old_view.request(0)).await;
    assert_eq!((st, body.as_str()), (409, "17\n"));
    let (st, _, _) = post(&w.url, fork.request(17)).await;
    assert_eq!(st, 422);
    log.grow(1, 0);
    let (st, _, body) = post(&w.url, log.request(17)).await;
    assert_eq!(st, 200);
    cosigned_notes.push(format!("{}{body}", log.note()));
    w.task.abort();

    // A state file that does not verify stops the witness instead of starting empty.
    let logs = dir.path().join("logs");
    let state = std::fs::read_dir(&logs)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let text = std::fs::read_to_string(&state).unwrap();
    std::fs::write(&state, text.replacen("\n18\n", "\n19\n", 1)).unwrap();
    let err = Witness::open(dir.path(), vec![log.signer.verifier()]).unwrap_err();
    assert!(
        format!("{err:#}").contains("not signed by the log"),
        "{err:#}"
    );
    std::fs::write(&state, &text).unwrap();
    Witness::open(dir.path(), vec![log.signer.verifier()]).unwrap();
    // The stored state is itself a cosigned checkpoint.
    cosigned_notes.push(text);

    check_with_python(&wvkey, &log.signer.verifier().to_vkey(), &cosigned_notes);
}

#[tokio::test]
async fn concurrent_submissions_never_roll_back() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path(), "w.example/c").unwrap();
    let mut log = Log::new("ledger.example/c", 4);
    let w = serve(dir.path(), vec![log.signer.verifier()]).await;
    log.grow(1, 0);
    assert_eq!(post(&w.url, log.request(0)).await.0, 200);
    // Many requests from old size 1 to different sizes race; exactly one may win, the others
    // get 409 with the winner's size (never a cosignature for a smaller tree after a larger).
    let mut bodies = Vec::new();
    for _ in 0..16 {
        log.grow(3, 0);
        bodies.push((log.tree.size(), log.request(1)));
    }
    let mut tasks = Vec::new();
    for (size, body) in bodies {
        let url = w.url.clone();
        tasks.push(tokio::spawn(async move { (size, post(&url, body).await) }));
    }
    let mut won = Vec::new();
    for t in tasks {
        let (size, (st, _, body)) = t.await.unwrap();
        match st {
            200 => won.push(size),
            409 => assert!(witness::parse_size_body(&body).is_some(), "{body}"),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(won.len(), 1, "exactly one request from old size 1 wins");
    let m = reqwest::get(format!("{}/metrics", w.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains(&format!(
            "witness_cosigned_size{{origin=\"ledger.example/c\"}} {}",
            won[0]
        )),
        "{m}"
    );
}

#[test]
fn the_binary() {
    let exe = env!("CARGO_BIN_EXE_ledger-witness");
    let help = std::process::Command::new(exe)
        .arg("--help")
        .output()
        .unwrap();
    assert!(help.status.success());
    let text = String::from_utf8(help.stdout).unwrap();
    for word in ["init", "vkey", "serve"] {
        assert!(text.contains(word), "{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("w");
    let out = std::process::Command::new(exe)
        .args(["init", "--name", "w.example/bin", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(out.status.success());
    let vkey = String::from_utf8(out.stdout).unwrap();
    NoteVerifier::from_vkey(vkey.trim()).unwrap();
    let key = std::fs::read_to_string(state.join("witness.key")).unwrap();
    assert!(
        !vkey.contains(key.trim()),
        "init prints the public key only"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(state.join("witness.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "the key file is private");
    }
    let out = std::process::Command::new(exe)
        .args(["vkey", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), vkey);
    // serve without a log to follow is a usage error, and says so.
    let out = std::process::Command::new(exe)
        .args(["serve", "--state"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no log to follow"));
}

/// Runs `provenance-core/interop/check_cosignatures.py` on note files.
fn python_check(
    python: &str,
    witness_vkey: &str,
    log_vkey: &str,
    files: &[std::path::PathBuf],
) -> std::process::Output {
    std::process::Command::new(python)
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../provenance-core/interop/check_cosignatures.py"
        ))
        .args([witness_vkey, log_vkey])
        .args(files)
        .output()
        .unwrap()
}

/// Hands the cosigned checkpoints to the independent Python check, and a tampered one, which
/// must fail it.
fn check_with_python(witness_vkey: &str, log_vkey: &str, notes: &[String]) {
    let Some(python) = ledger_testkit::interop_python("the Python cosignature check") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = notes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let p = dir.path().join(format!("{i}.txt"));
            std::fs::write(&p, n).unwrap();
            p
        })
        .collect();
    let out = python_check(&python, witness_vkey, log_vkey, &files);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("ok   ").count(), notes.len(), "{text}");
    // The check can fail: a cosigned checkpoint whose size was changed does not pass it.
    let bad = dir.path().join("tampered.txt");
    let size_line = notes[0].lines().nth(1).unwrap();
    std::fs::write(
        &bad,
        notes[0].replacen(&format!("\n{size_line}\n"), "\n999\n", 1),
    )
    .unwrap();
    let out = python_check(&python, witness_vkey, log_vkey, &[bad]);
    assert!(!out.status.success(), "a tampered checkpoint must fail");
}

/// Time-sharded logs: a shard (origin `<log>/<period>`, the log's key under that name) is a
/// log of its own to the witness; anything else under the log's name, or a shard signed by
/// another key, is not; the shards' state survives a restart and still refuses a rollback.
#[tokio::test]
async fn follows_the_shards_of_a_followed_log() {
    let dir = tempfile::tempdir().unwrap();
    let wvkey = init(dir.path(), "witness.hospital.example/w1").unwrap();
    let wv = NoteVerifier::from_vkey(&wvkey).unwrap();
    let log = Log::new("ledger.example/log", 1);
    let w = serve(dir.path(), vec![log.signer.verifier()]).await;
    let shard_of = |name: &str, seed: u8| {
        let mut l = Log::new(name, seed);
        l.signer = if seed == 1 {
            log.signer.renamed(name).unwrap()
        } else {
            NoteSigner::new(name, SigningKey::from_bytes(&[seed; 32])).unwrap()
        };
        l
    };
    let mut day = shard_of("ledger.example/log/2026-01-05", 1);
    day.grow(5, 1);
    let (st, _, body) = post(&w.url, day.request(0)).await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        witness::cosigned_by(&format!("{}{body}", day.note()), &[&wv])
            .unwrap()
            .len(),
        1
    );
    day.grow(3, 1);
    let (st, _, body) = post(&w.url, day.request(5)).await;
    assert_eq!(st, 200, "{body}");
    // Another shard starts from old 0 on its own.
    let mut next = shard_of("ledger.example/log/2026-01-06", 1);
    next.grow(2, 2);
    let (st, _, body) = post(&w.url, next.request(0)).await;
    assert_eq!(st, 200, "{body}");
    // Not shards of a followed log: a name that is no period, another log's shard, a log
    // whose name merely starts like ours. A shard signed with another key is forbidden.
    for name in [
        "ledger.example/log/extra",
        "ledger.example/log/2026-01-05/x",
        "other.example/log/2026-01-05",
        "ledger.example/logs/2026-01-05",
    ] {
        let mut l = shard_of(name, 1);
        l.grow(1, 3);
        let (st, _, body) = post(&w.url, l.request(0)).await;
        assert_eq!(st, 404, "{name}: {body}");
    }
    let mut forged = shard_of("ledger.example/log/2026-01-07", 9);
    forged.grow(1, 3);
    let (st, _, body) = post(&w.url, forged.request(0)).await;
    assert_eq!(st, 403, "{body}");

    // Restarted: the shards' state is loaded, so the first contact again is a 409 with the
    // size, and a shorter tree of a shard is a rollback.
    w.task.abort();
    let w = serve(dir.path(), vec![log.signer.verifier()]).await;
    let (st, ctype, body) = post(&w.url, day.request(0)).await;
    assert_eq!(
        (st, ctype.as_str(), body.as_str()),
        (409, "text/x.tlog.size", "8\n")
    );
    let mut rolled = shard_of("ledger.example/log/2026-01-05", 1);
    rolled.grow(5, 1);
    let (st, _, _) = post(&w.url, AddCheckpoint::encode(8, &[], &rolled.note())).await;
    assert_eq!(st, 400, "old size above the checkpoint's: refused");
    let (st, _, _) = post(&w.url, rolled.request(0)).await;
    assert_eq!(st, 409);
    // A state file of a shard under another name stops the witness at start.
    w.task.abort();
    let logs = dir.path().join("logs");
    let files: Vec<_> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|f| f.unwrap().path())
        .collect();
    assert_eq!(files.len(), 2, "{files:?}");
    std::fs::rename(&files[0], logs.join("0".repeat(64))).unwrap();
    assert!(Witness::open(dir.path(), vec![log.signer.verifier()]).is_err());
}
