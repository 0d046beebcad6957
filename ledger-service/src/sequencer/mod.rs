//! The sequencer: the one writer of the log. Ingest handlers and registry handlers send it work;
//! it assigns indices in arrival order, writes each batch (entries, reading rows, registry rows,
//! tiles) in one transaction, answers only after that commit, and publishes signed checkpoints.
//!
//! Invariants: an index is acknowledged only after its batch committed; a registry event takes
//! effect (in memory) only after it is logged; a checkpoint is published only for committed sizes,
//! so every checkpoint is consistent with every earlier one.

mod coalesce;
mod load;
mod private;
mod roll;
mod rows;

pub use load::{load_frontier, load_shards};
pub use roll::Sharding;

use crate::alerts::{ActionError, Alert, Engine};
use crate::db::{Batch, CheckpointRow, EntryRow, ReadingRow, ShardRow, SideRow, StorageError};
use crate::mailbox::{
    AlertOutcome, AlertWork, Outcome, Receipt, RegistryRefused, Reply, SequenceError, Work,
};
use crate::registry::Registry;
use crate::state::{now_ms, Shared};
use crate::tiles::Frontier;
use coalesce::coalesce_alert_rows;
use provenance_core::checkpoint::Checkpoint;
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::merkle;
use provenance_core::note::NoteSigner;
use provenance_core::registry_state::{registry_extension, ReadingClaims, RegistryState};
use rows::fail_all;
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// An alert action's reply channel and its outcome, sent once the batch is committed.
type PendingAlertReply = (Reply<AlertOutcome>, Result<Option<Alert>, ActionError>);

/// Tuning.
#[derive(Debug, Clone, Copy)]
pub struct SequencerConfig {
    /// Most readings per transaction.
    pub max_batch: usize,
    /// Least time between two checkpoints.
    pub checkpoint_interval: Duration,
    /// A shard per period (`None`: the log is not sharded).
    pub sharding: Option<Sharding>,
}

/// The sequencer's state.
pub struct Sequencer {
    shared: Arc<Shared>,
    frontier: Frontier,
    /// The open shard's signer: the log key under the shard's origin.
    signer: NoteSigner,
    /// The log key under the log's origin.
    base_signer: NoteSigner,
    /// The open shard (`frontier` is its tree; entry `i` is ledger position `base + i`).
    shard: ShardRow,
    cfg: SequencerConfig,
    last_checkpoint: (u64, Instant),
    engine: Engine,
    /// The authoritative registry: every reading is judged by it at its own log position.
    registry: Registry,
    /// The registry as of the last commit, shared with handlers and checkpoints.
    snapshot: Arc<RegistryState>,
    /// PostgreSQL: the leader's epoch, checked by every batch transaction (fencing).
    fence: Option<i64>,
    /// Logging time of the last committed batch: each batch's is strictly later, so a time
    /// separates the log into what came before and after exactly at a batch boundary (exports'
    /// `transactionTime` and `_since` rely on it).
    last_logged_at: u64,
    /// A batch's commit failed: whether it reached the database is not known (the primary may
    /// have died after writing it, a fail-over may have kept it), so the state in memory can no
    /// longer be trusted. `run` ends, and the node reloads the log's state from storage.
    must_reload: bool,
}

impl Sequencer {
    /// A sequencer over the loaded frontier.
    pub fn new(
        shared: Arc<Shared>,
        frontier: Frontier,
        signer: NoteSigner,
        cfg: SequencerConfig,
        last_size: u64,
        engine: Engine,
        registry: Registry,
    ) -> Self {
        Self {
            shard: ShardRow::first(signer.name()),
            base_signer: signer.clone(),
            shared,
            frontier,
            signer,
            cfg,
            last_checkpoint: (last_size, Instant::now()),
            engine,
            snapshot: Arc::new(registry.state().clone()),
            registry,
            last_logged_at: 0,
            fence: None,
            must_reload: false,
        }
    }

    /// Logs into `shard` (the open one; `frontier` is its tree).
    pub fn in_shard(mut self, shard: ShardRow) -> anyhow::Result<Self> {
        self.signer = self.base_signer.renamed(&shard.origin)?;
        self.shard = shard;
        Ok(self)
    }

    /// The ledger position the next entry gets.
    fn next_index(&self) -> u64 {
        self.shard.base + self.frontier.size()
    }

    /// Commits only while the log's sequencer epoch is `epoch` (PostgreSQL leaders).
    pub fn fenced(mut self, epoch: Option<i64>) -> Self {
        self.fence = epoch;
        self
    }

    /// Sets the logging time of the latest stored entry (at start).
    pub fn after(mut self, last_logged_at: u64) -> Self {
        self.last_logged_at = last_logged_at;
        self
    }

    /// Runs until every sender is dropped (returns `false`) or a batch's commit failed (returns
    /// `true`: the caller reloads the log's state from storage and starts a new sequencer; the
    /// work still queued in `rx` waits for it).
    pub async fn run(mut self, rx: &mut mpsc::Receiver<Work>) -> bool {
        let mut tick = tokio::time::interval(self.cfg.checkpoint_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.roll_due(now_ms()) {
                self.publish().await;
                self.roll().await;
                if self.must_reload {
                    return true;
                }
            }
            tokio::select! {
                work = rx.recv() => {
                    let Some(first) = work else { break };
                    let mut batch = vec![first];
                    let mut n = 0;
                    while n < self.cfg.max_batch {
                        match rx.try_recv() {
                            Ok(w) => {
                                match &w {
                                    Work::Readings(c, _) => n += c.len(),
                                    Work::Private(c, _) => n += c.len(),
                                    _ => {}
                                }
                                batch.push(w);
                            }
                            Err(_) => break,
                        }
                    }
                    self.process(batch).await;
                    if self.must_reload {
                        return true;
                    }
                    if self.last_checkpoint.1.elapsed() >= self.cfg.checkpoint_interval {
                        self.publish().await;
                    }
                }
                _ = tick.tick() => self.publish().await,
            }
        }
        self.publish().await;
        false
    }

    async fn publish(&mut self) {
        let size = self.frontier.size();
        if size == self.last_checkpoint.0 && size != 0 {
            return;
        }
        if size == 0 && (self.shared.latest_checkpoint().is_some() || self.last_checkpoint.0 == 0) {
            return;
        }
        let root = self.frontier.root();
        // The registry commitment of this size: the sequencer publishes only between batches,
        // so the snapshot is the registry of exactly these `size` entries.
        let registry = Arc::clone(&self.snapshot);
        let cp = Checkpoint {
            origin: self.signer.name().to_string(),
            size,
            root,
            extensions: vec![registry_extension(
                registry.event_count(),
                &registry.registry_root(),
            )],
        };
        let note = match cp.sign(&self.signer) {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot sign checkpoint");
                return;
            }
        };
        let row = CheckpointRow::signed(self.shard.number, size, root, note);
        if let Err(e) = self.shared.db.insert_checkpoint(&row, now_ms()).await {
            tracing::error!(error = %e, "cannot store checkpoint");
            return;
        }
        self.last_checkpoint = (size, Instant::now());
        self.shared
            .set_checkpoint_registry(self.shard.base + size, registry);
        self.shared.checkpoint_signed(row);
    }

    async fn process(&mut self, work: Vec<Work>) {
        let saved = self.frontier.clone();
        self.engine.begin();
        let now = now_ms().max(self.last_logged_at + 1);
        let mut alert_replies: Vec<PendingAlertReply> = Vec::new();
        let mut batch = Batch {
            fence: self.fence,
            shard: self.shard.number,
            ..Batch::default()
        };
        let mut dirty = BTreeSet::new();
        let mut reading_replies = Vec::new();
        let mut registry_replies = Vec::new();
        // What to undo if the batch does not commit: the whole registry when the batch changes
        // it, else the sequence numbers its readings recorded.
        let saved_registry = work
            .iter()
            .any(|w| matches!(w, Work::Registry(..)))
            .then(|| self.registry.clone());
        let mut seq_undo = Vec::new();

        // Duplicates and equivocations against what is already logged, in one query.
        let keys: Vec<(String, u64)> = work
            .iter()
            .filter_map(|w| {
                if let Work::Readings(c, _) = w {
                    Some(c)
                } else {
                    None
                }
            })
            .flatten()
            .map(|c| (c.sensor_id.clone(), c.seq))
            .collect();
        let existing = match self.shared.db.existing_readings(&keys).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot look up existing readings");
                self.engine.rollback();
                fail_all(work, &SequenceError::Storage(Arc::new(e)));
                return;
            }
        };
        let existing_private = match private::existing(&self.shared, &work).await {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(error = %e, "cannot look up existing private messages");
                self.engine.rollback();
                fail_all(work, &SequenceError::Storage(Arc::new(e)));
                return;
            }
        };
        let mut duplicates_to_hash: Vec<(usize, usize, u64)> = Vec::new();
        let mut in_batch: HashMap<(String, u64), ([u8; 32], Receipt)> = HashMap::new();
        let mut private_in_batch = HashMap::new();

        for w in work {
            match w {
                Work::Readings(cands, reply) => {
                    let mut outcomes = Vec::with_capacity(cands.len());
                    for c in cands {
                        let key = (c.sensor_id.clone(), c.seq);
                        if let Some(e) = existing.get(&key) {
                            if e.sensor_hash == c.sensor_hash {
                                duplicates_to_hash.push((
                                    reading_replies.len(),
                                    outcomes.len(),
                                    e.idx,
                                ));
                                outcomes.push(Outcome::Duplicate(Receipt {
                                    index: e.idx,
                                    leaf_hash: [0; 32],
                                }));
                            } else {
                                outcomes.push(Outcome::Equivocation(e.idx));
                            }
                            continue;
                        }
                        if let Some((h, r)) = in_batch.get(&key) {
                            outcomes.push(if *h == c.sensor_hash {
                                Outcome::Duplicate(*r)
                            } else {
                                Outcome::Equivocation(r.index)
                            });
                            continue;
                        }
                        if !self.shard.takes(c.measured_at) {
                            outcomes.push(Outcome::Late(self.shard.clone()));
                            continue;
                        }
                        let idx = self.next_index();
                        let claims = ReadingClaims {
                            gateway_kid: c.gateway_kid,
                            sensor_kid: c.sensor_kid,
                            sensor_id: &c.sensor_id,
                            seq: c.seq,
                            measured_at_ms: c.measured_at,
                            received_at_ms: c.received_at,
                        };
                        let verdict = match self.registry.admit(idx, now, &claims) {
                            Ok((v, undo)) => {
                                seq_undo.push(undo);
                                v
                            }
                            Err(r) => {
                                outcomes.push(Outcome::Refused(r));
                                continue;
                            }
                        };
                        let entry = LogEntry {
                            kind: EntryKind::Reading,
                            body: c.envelope,
                            logged_at_ms: now,
                        };
                        let leaf_data = entry.to_cbor();
                        let leaf_hash = merkle::leaf_hash(&leaf_data);
                        self.frontier.push(leaf_hash, &mut dirty);
                        let receipt = Receipt {
                            index: idx,
                            leaf_hash,
                        };
                        in_batch.insert(key, (c.sensor_hash, receipt));
                        batch.entries.push(EntryRow {
                            idx,
                            kind: EntryKind::Reading as i16,
                            leaf_data,
                            logged_at: now,
                        });
                        let values = if verdict.patient.is_some() {
                            c.vitals.clone()
                        } else {
                            Vec::new()
                        };
                        if let Some(p) = &verdict.patient {
                            let changes =
                                self.engine
                                    .on_reading(p, idx, c.measured_at, &c.vitals, now);
                            let mut rows = Vec::new();
                            for ch in &changes {
                                self.change_rows(ch, now, Some(idx), &mut rows);
                            }
                            batch.side.extend(rows);
                        }
                        batch.readings.push(ReadingRow {
                            idx,
                            sensor_id: c.sensor_id,
                            seq: c.seq,
                            sensor_hash: c.sensor_hash.to_vec(),
                            gateway_id: verdict.gateway_id,
                            measured_at: c.measured_at,
                            received_at: c.received_at,
                            patient: verdict.patient,
                            values,
                        });
                        outcomes.push(Outcome::Accepted(receipt));
                    }
                    reading_replies.push((reply, outcomes));
                }
                Work::Private(cands, reply) => {
                    let (outcomes, earlier) = self.log_private(
                        cands,
                        now,
                        &existing_private,
                        private::Into {
                            batch: &mut batch,
                            dirty: &mut dirty,
                            seq_undo: &mut seq_undo,
                            in_batch: &mut private_in_batch,
                        },
                    );
                    for (pos, idx) in earlier {
                        duplicates_to_hash.push((reading_replies.len(), pos, idx));
                    }
                    reading_replies.push((reply, outcomes));
                }
                Work::Alert(action, reply) => {
                    let outcome = match action {
                        AlertWork::Acknowledge { id, actor } => {
                            self.engine.acknowledge(&id, &actor, now).map(Some)
                        }
                        AlertWork::Resolve { id, actor } => {
                            self.engine.resolve(&id, &actor, now).map(Some)
                        }
                        AlertWork::Limits {
                            patient,
                            limits,
                            actor,
                        } => {
                            for (loinc, limit) in limits {
                                self.engine.set_limit(&patient, &loinc, limit);
                                batch.side.push(SideRow::Limit {
                                    patient: patient.clone(),
                                    loinc,
                                    limit,
                                    set_by: actor.clone(),
                                    at: now,
                                });
                            }
                            Ok(None)
                        }
                    };
                    let reply_alert = match outcome {
                        Ok(Some(change)) => {
                            let mut rows = Vec::new();
                            self.change_rows(&change, now, None, &mut rows);
                            batch.side.extend(rows);
                            Ok(Some(change.alert))
                        }
                        Ok(None) => Ok(None),
                        Err(e) => Err(e),
                    };
                    alert_replies.push((reply, reply_alert));
                }
                Work::Registry(event, reply) => {
                    let idx = self.next_index();
                    let body = match event.to_cbor() {
                        Ok(b) => b,
                        Err(e) => {
                            registry_replies
                                .push((reply, Err(RegistryRefused::Encoding(e.to_string()))));
                            continue;
                        }
                    };
                    if let Err(why) = self.registry.apply(idx, now, &event) {
                        registry_replies.push((reply, Err(RegistryRefused::Rule(why))));
                        continue;
                    }
                    let entry = LogEntry {
                        kind: EntryKind::Registry,
                        body,
                        logged_at_ms: now,
                    };
                    let leaf_data = entry.to_cbor();
                    let leaf_hash = merkle::leaf_hash(&leaf_data);
                    self.frontier.push(leaf_hash, &mut dirty);
                    batch.entries.push(EntryRow {
                        idx,
                        kind: EntryKind::Registry as i16,
                        leaf_data,
                        logged_at: now,
                    });
                    registry_replies.push((
                        reply,
                        Ok(Receipt {
                            index: idx,
                            leaf_hash,
                        }),
                    ));
                }
            }
        }

        batch.tiles = self.frontier.take_dirty(&mut dirty);

        coalesce_alert_rows(&mut batch.side);
        let wake_webhooks = batch
            .side
            .iter()
            .any(|r| matches!(r, SideRow::Outbox { .. }));
        if !batch.is_empty() {
            let started = Instant::now();
            if let Err(e) = self.shared.db.commit_batch(&batch).await {
                tracing::error!(error = %e, entries = batch.entries.len(), "batch commit failed; nothing acknowledged; reloading the log's state");
                self.must_reload = true;
                self.frontier = saved;
                self.engine.rollback();
                match saved_registry {
                    Some(r) => self.registry = r,
                    None => self.registry.undo(seq_undo),
                }
                let err = SequenceError::Storage(Arc::new(e));
                for (reply, _) in alert_replies {
                    let _ = reply.send(Err(err.clone()));
                }
                for (reply, _) in reading_replies {
                    let _ = reply.send(Err(err.clone()));
                }
                for (reply, _) in registry_replies {
                    let _ = reply.send(Err(err.clone()));
                }
                return;
            }
            self.shared
                .metrics
                .observe_commit(batch.entries.len(), started.elapsed());
            self.shared
                .committed_size
                .store(self.next_index(), Ordering::SeqCst);
            if !batch.entries.is_empty() {
                self.last_logged_at = now;
            }
            if saved_registry.is_some() {
                self.snapshot = Arc::new(self.registry.state().clone());
                self.shared.set_registry(Arc::clone(&self.snapshot));
            }
            if wake_webhooks {
                self.shared.webhook_wake.notify_waiters();
                self.shared.webhook_wake.notify_one();
            }
        }
        self.engine.commit();
        for (reply, outcome) in alert_replies {
            let _ = reply.send(Ok(outcome));
        }

        // Receipts of earlier duplicates need their leaf hash, read back from the log; a reply
        // whose receipt cannot be completed fails rather than carry a zero hash.
        let mut unreadable: HashMap<usize, SequenceError> = HashMap::new();
        for (reply_i, outcome_i, idx) in duplicates_to_hash {
            let leaf = match self.shared.db.entry(idx).await {
                Ok(Some((_, leaf))) => leaf,
                Ok(None) => {
                    let e = StorageError::Corrupt {
                        table: "entries",
                        key: idx.to_string(),
                        column: 0,
                        detail: "a logged reading's or private message's entry is missing".into(),
                    };
                    unreadable.insert(reply_i, SequenceError::Storage(Arc::new(e)));
                    continue;
                }
                Err(e) => {
                    unreadable.insert(reply_i, SequenceError::Storage(Arc::new(e)));
                    continue;
                }
            };
            if let Some(Outcome::Duplicate(r)) = reading_replies
                .get_mut(reply_i)
                .and_then(|(_, o)| o.get_mut(outcome_i))
            {
                r.leaf_hash = merkle::leaf_hash(&leaf);
            }
        }
        for (i, (reply, outcomes)) in reading_replies.into_iter().enumerate() {
            let _ = reply.send(match unreadable.remove(&i) {
                Some(e) => Err(e),
                None => Ok(outcomes),
            });
        }
        for (reply, result) in registry_replies {
            let _ = reply.send(Ok(result));
        }
    }
}
