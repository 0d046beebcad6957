//! Asking witnesses to cosign checkpoints (C2SP `tlog-witness`).
//!
//! One worker per configured witness follows the latest checkpoint the log signed
//! (`Shared::signed`); whenever one is newer than what the witness last cosigned, it posts
//! `add-checkpoint` with a consistency proof from the witness's size (read from stored tiles).
//! It learns that size from the witness: it starts from `old 0`, and a `409` answer
//! (`text/x.tlog.size`) names the witness's latest cosigned size, which the worker retries from at
//! once. A `409` without a size (another root for the same size) or a `422` (the witness holds a
//! tree our proof does not extend) means the witness saw another view of this log — a split
//! view, or a database restored from an older backup: logged as an error, counted and raised as
//! the security alert `split_view`, never retried for that checkpoint. Timeouts and other errors back off (1 s doubling to 30 s).
//!
//! In a time-sharded log each shard is a log of its own to a witness (from `old 0`); when a
//! shard closes, its final checkpoint is submitted too (retried with the same backoff until
//! the witness answers), so every shard is cosigned to its end.
//!
//! Each valid cosignature (checked against the witness's vkey before it is kept) goes to one
//! collector, which records the checkpoint's cosignatures (they only grow) and publishes the
//! checkpoint with them: with a quorum `q > 0`, a checkpoint is published only once `q`
//! witnesses cosigned it (readers then see only cosigned checkpoints; evidence for newer
//! readings waits); with `q = 0`, it was published when signed and the cosignatures are added
//! as they arrive. Ingest acknowledgements never wait for witnesses: they are given after the
//! commit, before any checkpoint.

use crate::config::{WitnessSettings, WitnessTarget};
use crate::db::CheckpointRow;
use crate::state::Shared;
use provenance_core::merkle::Hash;
use provenance_core::witness::{self, AddCheckpoint};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The quorum, checked against the witnesses configured.
pub(crate) fn quorum(cfg: &WitnessSettings) -> anyhow::Result<usize> {
    anyhow::ensure!(
        cfg.witness_quorum <= cfg.witnesses.len(),
        "--witness-quorum {} needs at least that many --witness (got {})",
        cfg.witness_quorum,
        cfg.witnesses.len()
    );
    for (i, w) in cfg.witnesses.iter().enumerate() {
        anyhow::ensure!(
            !cfg.witnesses[..i]
                .iter()
                .any(|o| o.vkey.key() == w.vkey.key()),
            "witness {:?} is configured twice",
            w.vkey.name()
        );
    }
    Ok(cfg.witness_quorum)
}

/// Starts one worker per witness and the collector (nothing without witnesses).
pub(crate) fn spawn(shared: &Arc<Shared>, cfg: &WitnessSettings) -> anyhow::Result<()> {
    if cfg.witnesses.is_empty() {
        return Ok(());
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(cfg.witness_timeout_ms.max(1)))
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .pool_max_idle_per_host(2)
        .build()?;
    let (tx, rx) = mpsc::channel(256);
    for (i, w) in cfg.witnesses.iter().enumerate() {
        let worker = Worker {
            shared: Arc::clone(shared),
            target: w.clone(),
            client: client.clone(),
            known: None,
            // The shard closed last before this start gets its final checkpoint submitted.
            shard: shared.open_shard().number.saturating_sub(1),
            finals: Default::default(),
        };
        let tx = tx.clone();
        tokio::spawn(worker.run(i, tx));
    }
    let collector = Collector {
        shared: Arc::clone(shared),
        witnesses: cfg.witnesses.len(),
        pending: BTreeMap::new(),
    };
    tokio::spawn(collector.run(rx));
    Ok(())
}

/// One witness's cosignature of one checkpoint.
struct Cosignature {
    checkpoint: Arc<CheckpointRow>,
    witness: usize,
    lines: String,
}

/// Why a request got no cosignature.
enum Failed {
    /// `409` with the witness's size.
    Behind(u64),
    /// The witness holds another view of the log (`409` without a size, or `422`).
    OtherView(String),
    /// Anything else (network, timeout, 4xx/5xx): retried later.
    Other(String),
}

struct Worker {
    shared: Arc<Shared>,
    target: WitnessTarget,
    client: reqwest::Client,
    /// The witness's latest cosigned size, as far as we know (of the shard `shard`).
    known: Option<u64>,
    /// The shard of the checkpoints submitted last: each shard is a log of its own origin, so
    /// a new shard starts from `old 0`.
    shard: u32,
    /// Closed shards whose final checkpoint this witness has not cosigned yet, oldest first.
    finals: std::collections::VecDeque<u32>,
}

impl Worker {
    async fn run(mut self, index: usize, tx: mpsc::Sender<Cosignature>) {
        let mut rx = self.shared.signed.subscribe();
        let mut backoff = Duration::from_secs(1);
        let mut done: u64 = u64::MAX;
        let name = self.target.vkey.name().to_string();
        loop {
            let latest = rx.borrow_and_update().clone();
            if let Some(c) = latest.as_ref().filter(|c| c.shard > self.shard) {
                // The shards closed since: each one's final checkpoint is owed, then the new
                // shard goes on from `old 0`.
                self.finals.extend(self.shard..c.shard);
                (self.shard, self.known, done) = (c.shard, None, u64::MAX);
            }
            if let Some(&closed) = self.finals.front() {
                if self.finish(closed, index, &tx).await {
                    self.finals.pop_front();
                    backoff = Duration::from_secs(1);
                } else {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                continue;
            }
            let Some(cp) = latest.filter(|c| c.size != done && self.shared.is_leader()) else {
                if rx.changed().await.is_err() {
                    return;
                }
                continue;
            };
            // A witness ahead of us must wait until our log reaches its size.
            if self.known.is_some_and(|k| k > cp.size) {
                done = cp.size;
                continue;
            }
            let mut outcome = self.submit(&cp, self.known).await;
            if let Err(Failed::Behind(size)) = outcome {
                self.known = Some(size);
                if size > cp.size {
                    tracing::error!(witness = %name, witness_size = size, size = cp.size,
                        "the witness cosigned a larger tree of this log than this service has: another view of the log exists, or this database was restored from an older backup");
                    self.count("ahead");
                    self.alert(
                        format!("the witness cosigned size {size} of this log, beyond this service's {}", cp.size),
                        &cp.note,
                    )
                    .await;
                    done = cp.size;
                    continue;
                }
                outcome = self.submit(&cp, self.known).await;
            }
            match outcome {
                Ok(lines) => {
                    self.known = Some(cp.size);
                    done = cp.size;
                    backoff = Duration::from_secs(1);
                    self.count("cosigned");
                    let c = Cosignature {
                        checkpoint: cp,
                        witness: index,
                        lines,
                    };
                    if tx.send(c).await.is_err() {
                        return;
                    }
                }
                Err(Failed::OtherView(why)) => {
                    tracing::error!(witness = %name, size = cp.size, why = %why,
                        "the witness refused this checkpoint as inconsistent with what it cosigned: a split view of this log");
                    // The alert is stored before the outcome is counted: whoever sees the
                    // count finds the alert.
                    self.alert(why, &cp.note).await;
                    self.count("inconsistent");
                    done = cp.size;
                }
                Err(Failed::Behind(size)) => {
                    self.known = Some(size);
                    self.count("conflict");
                    tokio::time::sleep(backoff).await;
                }
                Err(Failed::Other(why)) => {
                    tracing::warn!(witness = %name, size = cp.size, error = %why, retry_in_ms = backoff.as_millis() as u64,
                        "witness did not cosign");
                    self.count("error");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
            }
        }
    }

    /// Submits the final checkpoint of the closed shard `shard` (once the roll-over opened the
    /// next shard it is no longer the latest signed one), so witnesses cosign every shard to
    /// its end and a closed shard's evidence carries their cosignatures. `false`: not done yet
    /// (the witness unreachable or failing; retried with backoff); `true`: cosigned, or refused
    /// for good (a split view, alerted), or nothing to submit.
    async fn finish(&self, shard: u32, index: usize, tx: &mpsc::Sender<Cosignature>) -> bool {
        let Some(row) = self.shared.shard(shard).filter(|s| s.final_size.is_some()) else {
            return true;
        };
        if !self.shared.is_leader() {
            return true;
        }
        let cp = match self.shared.shard_checkpoint(&row).await {
            Ok(Some(cp)) => cp,
            Ok(None) => return true,
            Err(e) => {
                tracing::warn!(shard, error = %e, "cannot read a closed shard's final checkpoint");
                return false;
            }
        };
        let name = self.target.vkey.name().to_string();
        let mut known = None;
        loop {
            match self.submit(&cp, known).await {
                Ok(lines) => {
                    self.count("cosigned");
                    let _ = tx
                        .send(Cosignature {
                            checkpoint: cp,
                            witness: index,
                            lines,
                        })
                        .await;
                    return true;
                }
                Err(Failed::Behind(size)) if size > cp.size => {
                    tracing::error!(witness = %name, shard, witness_size = size, size = cp.size,
                        "the witness cosigned a larger tree of this closed shard than its final checkpoint: another view of the log exists");
                    self.count("ahead");
                    self.alert(
                        format!("the witness cosigned size {size} of the closed shard {shard}, beyond its final size {}", cp.size),
                        &cp.note,
                    )
                    .await;
                    return true;
                }
                // Its size learnt: once more from there (a second 409 is a race: later).
                Err(Failed::Behind(size)) if known != Some(size) => known = Some(size),
                Err(Failed::Behind(_)) => return false,
                Err(Failed::OtherView(why)) => {
                    tracing::error!(witness = %name, shard, size = cp.size, why = %why,
                        "the witness refused a closed shard's final checkpoint as inconsistent with what it cosigned: a split view of this log");
                    self.alert(why, &cp.note).await;
                    self.count("inconsistent");
                    return true;
                }
                Err(Failed::Other(why)) => {
                    tracing::warn!(witness = %name, shard, size = cp.size, error = %why,
                        "witness did not cosign a closed shard's final checkpoint");
                    self.count("error");
                    return false;
                }
            }
        }
    }

    /// A security alert `split_view` (one per witness and hour).
    async fn alert(&self, detail: String, checkpoint: &str) {
        let o = crate::security::split_view(
            self.target.vkey.name(),
            detail,
            checkpoint,
            crate::state::now_ms(),
        );
        crate::security::record(&self.shared, vec![o]).await;
    }

    fn count(&self, outcome: &str) {
        self.shared
            .metrics
            .witness_requests
            .get_or_create(&crate::state::WitnessLabel {
                witness: self.target.vkey.name().to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    async fn proof(&self, shard: u32, old: u64, size: u64) -> Result<Vec<Hash>, Failed> {
        if old == 0 || old >= size {
            return Ok(Vec::new());
        }
        let mut set = crate::tiles::TileSet::default();
        self.shared
            .tiles(shard)
            .with_tiles(&mut set, |r| {
                provenance_core::merkle::consistency_proof(r, old, size)
            })
            .await
            .map_err(|e| Failed::Other(format!("reading tiles: {e}")))?
            .map_err(|e| Failed::Other(format!("consistency proof {old} → {size}: {e}")))
    }

    /// Posts `cp` with a consistency proof from `known` (the witness's size of its shard, as
    /// far as we know; `old 0` if unknown).
    async fn submit(&self, cp: &CheckpointRow, known: Option<u64>) -> Result<String, Failed> {
        let old = known.unwrap_or(0);
        let proof = self.proof(cp.shard, old, cp.size).await?;
        let body = AddCheckpoint::encode(old, &proof, &cp.note);
        let url = format!("{}/add-checkpoint", self.target.url);
        let resp = self
            .client
            .post(&url)
            .body(body)
            .send()
            .await
            .map_err(|e| Failed::Other(format!("POST {url}: {e}")))?;
        let status = resp.status().as_u16();
        let size_body = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|t| t.starts_with(witness::SIZE_CONTENT_TYPE));
        let text = read_limited(resp)
            .await
            .map_err(|e| Failed::Other(format!("reading the answer of {url}: {e}")))?;
        match status {
            200 => self.check(cp, &text),
            409 if size_body => witness::parse_size_body(&text)
                .map(Failed::Behind)
                .map_or_else(
                    || {
                        Err(Failed::Other(format!(
                            "409 with a malformed size {text:.40?}"
                        )))
                    },
                    Err,
                ),
            409 => Err(Failed::OtherView(format!(
                "409: another root for size {}",
                cp.size
            ))),
            422 => Err(Failed::OtherView(format!(
                "422: the consistency proof from {old} to {} does not verify for the witness",
                cp.size
            ))),
            other => Err(Failed::Other(format!("{other}: {:.200}", text.trim_end()))),
        }
    }

    /// Keeps the answer's lines that are this witness's valid cosignatures of `cp`.
    fn check(&self, cp: &CheckpointRow, body: &str) -> Result<String, Failed> {
        let lines = witness::parse_cosignatures(body)
            .map_err(|e| Failed::Other(format!("malformed answer: {e}")))?;
        let prefix = format!("\u{2014} {} ", self.target.vkey.name());
        let ours: String = lines
            .into_iter()
            .filter(|l| l.starts_with(&prefix))
            .collect();
        let signed = cp
            .note
            .strip_suffix(cp.cosignatures.as_str())
            .unwrap_or(&cp.note);
        match witness::cosigned_by(&format!("{signed}{ours}"), &[&self.target.vkey]) {
            Ok(names) if !names.is_empty() => Ok(ours),
            Ok(_) => Err(Failed::Other(
                "the answer holds no cosignature by its key".into(),
            )),
            Err(e) => Err(Failed::Other(format!(
                "the cosignature does not verify: {e}"
            ))),
        }
    }
}

/// Reads an answer of at most 64 KiB.
async fn read_limited(mut resp: reqwest::Response) -> Result<String, String> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
        buf.extend_from_slice(&chunk);
        if buf.len() > 64 * 1024 {
            return Err("answer too long".into());
        }
    }
    String::from_utf8(buf).map_err(|_| "answer is not UTF-8".into())
}

/// A checkpoint's shard and size.
type ShardSize = (u32, u64);

/// Collects cosignatures per checkpoint, records them and publishes.
struct Collector {
    shared: Arc<Shared>,
    witnesses: usize,
    /// Cosignatures of recent checkpoints by size: the checkpoint and each witness's lines.
    pending: BTreeMap<ShardSize, (Arc<CheckpointRow>, BTreeMap<usize, String>)>,
}

impl Collector {
    async fn run(mut self, mut rx: mpsc::Receiver<Cosignature>) {
        while let Some(c) = rx.recv().await {
            let (shard, size) = (c.checkpoint.shard, c.checkpoint.size);
            let entry = self
                .pending
                .entry((shard, size))
                .or_insert_with(|| (Arc::clone(&c.checkpoint), BTreeMap::new()));
            entry.1.insert(c.witness, c.lines);
            let (cp, by) = (Arc::clone(&entry.0), entry.1.clone());
            // Keep the cosignatures of the last few checkpoints only.
            while self.pending.len() > 8 {
                self.pending.pop_first();
            }
            let lines: String = by.values().map(String::as_str).collect();
            let count = by.len() as u64;
            let row = cp.with_cosignatures(lines, count);
            if let Err(e) = self
                .shared
                .db
                .record_cosignatures(shard, size, &row.cosignatures, count)
                .await
            {
                tracing::error!(error = %e, size, "cannot record cosignatures");
                continue;
            }
            let published = self
                .shared
                .latest_checkpoint()
                .map_or((0, 0), |p| (p.shard, p.size));
            let quorum = self.shared.witness_quorum;
            let publish = if quorum == 0 {
                // Published when signed: add the cosignatures if it is still the latest.
                (shard, size) == published
            } else {
                by.len() >= quorum && (shard, size) >= published
            };
            if publish {
                tracing::debug!(
                    size,
                    cosigners = count,
                    of = self.witnesses,
                    "checkpoint cosigned"
                );
                self.shared.set_checkpoint(row);
            }
        }
    }
}
