//! Shared service state: the database, the in-memory registry, the latest checkpoint, the tile
//! cache, metrics and the sequencer's mailbox.

use crate::db::{CheckpointRow, Db};
use crate::mailbox::SequencerHandle;
use crate::registry::TimePolicy;
use crate::tiles::{Recorder, TileSet};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry as MetricsRegistry;
use provenance_core::merkle::{self, Hash, HashReader, ProofError};
use provenance_core::note::NoteVerifier;
use provenance_core::registry_state::RegistryState;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

/// Reads a lock even if a thread panicked while holding it: every value behind these locks is
/// replaced whole, so a poisoned lock still holds a consistent value (and a write is never
/// dropped).
pub(crate) fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Writes a lock even if it is poisoned (see [`read`]).
pub(crate) fn write<T>(lock: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Label set for ingest outcomes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// accepted, duplicate, or a rejection reason.
    pub(crate) outcome: String,
}

/// Label set for witness requests.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WitnessLabel {
    /// The witness's key name.
    pub(crate) witness: String,
    /// cosigned, conflict, inconsistent, ahead or error.
    pub(crate) outcome: String,
}

/// Service metrics (Prometheus).
pub struct Metrics {
    /// The registry rendered at /metrics.
    pub(crate) registry: MetricsRegistry,
    /// Ingest items by outcome.
    pub(crate) ingest_items: Family<OutcomeLabel, Counter>,
    /// Entries per committed batch.
    pub(crate) batch_entries: Histogram,
    /// Commit duration, seconds.
    pub(crate) commit_seconds: Histogram,
    /// Log size.
    pub(crate) log_size: Gauge,
    /// Checkpoints published.
    pub(crate) checkpoints: Counter,
    /// Webhook delivery attempts by result (delivered, retry, dead).
    pub(crate) webhook_attempts: Family<OutcomeLabel, Counter>,
    /// Requests answered 503 because the service was at its limit of requests in progress.
    pub(crate) shed: Counter,
    /// add-checkpoint requests to witnesses by witness and outcome.
    pub(crate) witness_requests: Family<WitnessLabel, Counter>,
    /// Requests to patient data without a valid token (not in the access trail: nobody to name).
    pub(crate) access_unidentified: Counter,
}

impl Metrics {
    fn new() -> Self {
        let mut registry = MetricsRegistry::with_prefix("ledger");
        let ingest_items = Family::<OutcomeLabel, Counter>::default();
        let batch_entries = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        let commit_seconds = Histogram::new(exponential_buckets(0.0005, 2.0, 14));
        let log_size = Gauge::default();
        let checkpoints = Counter::default();
        let webhook_attempts = Family::<OutcomeLabel, Counter>::default();
        let shed = Counter::default();
        let witness_requests = Family::<WitnessLabel, Counter>::default();
        registry.register(
            "witness_requests",
            "add-checkpoint requests to witnesses by witness and outcome",
            witness_requests.clone(),
        );
        let access_unidentified = Counter::default();
        registry.register(
            "access_unidentified",
            "Requests to patient data without a valid token",
            access_unidentified.clone(),
        );
        registry.register(
            "requests_shed",
            "Requests answered 503 at the limit of requests in progress",
            shed.clone(),
        );
        registry.register(
            "webhook_attempts",
            "Webhook delivery attempts by result",
            webhook_attempts.clone(),
        );
        registry.register(
            "ingest_items",
            "Ingest items by outcome",
            ingest_items.clone(),
        );
        registry.register(
            "batch_entries",
            "Entries per committed sequencer batch",
            batch_entries.clone(),
        );
        registry.register(
            "commit_seconds",
            "Duration of a sequencer batch commit",
            commit_seconds.clone(),
        );
        registry.register("log_size", "Entries in the log", log_size.clone());
        registry.register(
            "checkpoints_published",
            "Checkpoints published",
            checkpoints.clone(),
        );
        Self {
            registry,
            ingest_items,
            batch_entries,
            commit_seconds,
            log_size,
            checkpoints,
            webhook_attempts,
            shed,
            witness_requests,
            access_unidentified,
        }
    }

    /// Counts a request answered 503 because the service was at its limit.
    pub fn count_shed(&self) {
        self.shed.inc();
    }

    /// Counts a webhook delivery attempt's result.
    pub fn count_webhook(&self, result: &str) {
        self.webhook_attempts
            .get_or_create(&OutcomeLabel {
                outcome: result.to_string(),
            })
            .inc();
    }

    /// Records a committed batch.
    pub fn observe_commit(&self, entries: usize, took: Duration) {
        self.batch_entries.observe(entries as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// Counts an ingest outcome.
    pub fn count(&self, outcome: &str) {
        self.ingest_items
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

/// Tiles only grow, and a tile's first `W` hashes never change: a bounded cache of tiles (partial
/// ones too, used only up to the width they had) keeps the upper levels hot.
pub struct TileCache {
    tiles: Mutex<HashMap<(u32, u8, u64), Vec<Hash>>>,
    capacity: usize,
}

impl TileCache {
    /// A cache of at most `capacity` tiles (8 KiB each).
    pub fn new(capacity: usize) -> Self {
        Self {
            tiles: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    fn get(&self, key: (u32, u8, u64)) -> Option<Vec<Hash>> {
        self.tiles
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned()
    }

    fn put(&self, key: (u32, u8, u64), hashes: &[Hash]) {
        let mut t = self.tiles.lock().unwrap_or_else(PoisonError::into_inner);
        if t.get(&key).is_some_and(|old| old.len() >= hashes.len()) {
            return;
        }
        if t.len() >= self.capacity {
            // Bounded memory: drop everything rather than track recency; hot tiles return fast.
            t.clear();
        }
        t.insert(key, hashes.to_vec());
    }
}

/// Generates proofs from stored tiles: finds the tiles a proof needs, fetches the missing ones
/// (cache first, then the database), and runs the proof over them.
pub struct TileFetcher<'a> {
    /// Database.
    pub(crate) db: &'a Db,
    /// Optional cache of full tiles.
    pub(crate) cache: Option<&'a TileCache>,
    /// The shard whose tree it reads.
    pub(crate) shard: u32,
}

impl TileFetcher<'_> {
    /// Runs `f` over tiles, fetching what it needs. Errors: storage errors outside, proof errors
    /// (out of range, missing hashes) inside.
    pub async fn with_tiles<T>(
        &self,
        set: &mut TileSet,
        f: impl Fn(&dyn HashReader) -> Result<T, ProofError>,
    ) -> Result<Result<T, ProofError>, crate::db::StorageError> {
        // A cached tile may be a partial one narrower than this proof needs: a tile still
        // missing after the cache supplied it is read from the database.
        let mut from_cache = std::collections::HashSet::new();
        for _ in 0..4 {
            let rec = Recorder::new(set);
            let _ = f(&rec);
            let missing = rec.missing();
            if missing.is_empty() {
                break;
            }
            let mut from_db = Vec::new();
            for key in missing {
                let cached = if from_cache.insert(key) {
                    self.cache.and_then(|c| c.get((self.shard, key.0, key.1)))
                } else {
                    None
                };
                match cached {
                    Some(h) => set.insert(key.0, key.1, h),
                    None => from_db.push(key),
                }
            }
            for row in self.db.tiles(self.shard, &from_db).await? {
                if let Some(c) = self.cache {
                    c.put((self.shard, row.level, row.idx), &row.hashes);
                }
                set.insert(row.level, row.idx, row.hashes);
            }
        }
        Ok(f(set))
    }

    /// The root of the tree of `size` leaves, from stored tiles.
    pub async fn subtree_root(&self, set: &mut TileSet, size: u64) -> anyhow::Result<Hash> {
        Ok(self
            .with_tiles(set, |r| merkle::subtree_root(r, 0, size))
            .await??)
    }
}

/// When each token's last use was last written, so a busy token costs one write a minute.
#[derive(Debug, Default)]
pub struct LastUse(std::sync::Mutex<std::collections::HashMap<Vec<u8>, u64>>);

/// How often a token's last use is written, ms.
const LAST_USE_EVERY_MS: u64 = 60_000;

impl LastUse {
    /// Whether a use at `now` should be written.
    pub(crate) fn due(&self, hash: &[u8], now: u64) -> bool {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match m.get(hash) {
            Some(&at) if now.saturating_sub(at) < LAST_USE_EVERY_MS => false,
            _ => {
                m.insert(hash.to_vec(), now);
                true
            }
        }
    }
}

/// Everything handlers and the sequencer share.
pub struct Shared {
    /// Database.
    pub(crate) db: Db,
    /// The log's origin (checkpoint key name).
    pub(crate) origin: String,
    /// The log's public key.
    pub(crate) log_key: NoteVerifier,
    /// The registry as of the last committed batch (the sequencer's copy is authoritative).
    registry: RwLock<Arc<RegistryState>>,
    /// The registry as of the latest signed checkpoints, with their sizes (what evidence
    /// bundles prove against; a few, as the published one may lag while witnesses cosign).
    checkpoint_registry: RwLock<std::collections::VecDeque<(u64, Arc<RegistryState>)>>,
    /// The latest checkpoint the log signed, for the witnesses to cosign (`witnessing`).
    pub(crate) signed: tokio::sync::watch::Sender<Option<Arc<CheckpointRow>>>,
    /// How many witnesses must cosign a checkpoint before it is published (0: at once).
    pub(crate) witness_quorum: usize,
    /// How recent all five scored vital signs must be for an aggregate NEWS2 score, ms.
    pub(crate) news2_window_ms: u64,
    /// Latest published checkpoint (of the open shard).
    latest: RwLock<Option<Arc<CheckpointRow>>>,
    /// The log's shards, in order; the last is open (`shards.rs`).
    pub(crate) shards: RwLock<Arc<Vec<crate::db::ShardRow>>>,
    /// Per shard: where each carried registry event is (`shards.rs`).
    pub(crate) carried: RwLock<HashMap<u32, Arc<HashMap<u64, u64>>>>,
    /// Entries durably committed.
    pub(crate) committed_size: AtomicU64,
    /// Cache of full tiles.
    pub(crate) tile_cache: TileCache,
    /// Metrics.
    pub(crate) metrics: Metrics,
    /// The sequencer's mailbox.
    pub(crate) sequencer: SequencerHandle,
    /// Ingest time policy.
    pub(crate) time_policy: TimePolicy,
    /// Webhook endpoints, as the sequencer needs them to fill the outbox.
    webhooks: RwLock<Vec<crate::db::EndpointRow>>,
    /// Wakes the webhook delivery workers when the outbox got new messages.
    pub(crate) webhook_wake: tokio::sync::Notify,
    /// After a secret rotation, how long the previous secret also signs, ms.
    pub(crate) webhook_secret_overlap_ms: u64,
    /// Where export jobs write their files.
    pub(crate) export_dir: std::path::PathBuf,
    /// Wakes the export worker when a job is queued.
    pub(crate) export_wake: tokio::sync::Notify,
    /// Readings measured longer ago than this may be pruned once an export holding them is
    /// acknowledged, ms.
    pub(crate) retention_ms: u64,
    /// How long a node holds an export job between two progress records, ms.
    pub(crate) export_lease_ms: u64,
    /// The HTTP edge's limits.
    pub(crate) limits: crate::config::LimitSettings,
    /// Requests in progress (at most `limits.max_concurrent_requests`).
    pub(crate) requests: tokio::sync::Semaphore,
    /// The public base URL every handed-out URL is built on (configured, or set from the
    /// listening address when serving starts).
    pub(crate) public_base: std::sync::OnceLock<String>,
    /// Whether this node runs the log's sequencer (false: a standby, see `election.rs`).
    pub(crate) leader: std::sync::atomic::AtomicBool,
    /// Where webhooks may be sent (registration and delivery both check it).
    pub(crate) outbound: Arc<crate::outbound::Policy>,
    /// When each token's last use was last written.
    pub(crate) token_uses: LastUse,
    /// The access trail of patient data.
    pub(crate) access: crate::trail::AccessTrail,
    /// Set on a read node (`--read-only`, `reader.rs`): its freshness.
    pub reader: std::sync::OnceLock<Arc<Freshness>>,
}

impl Shared {
    /// New shared state.
    pub fn new(
        db: Db,
        log_key: NoteVerifier,
        registry: RegistryState,
        latest: Option<CheckpointRow>,
        committed_size: u64,
        sequencer: SequencerHandle,
        time_policy: TimePolicy,
    ) -> Self {
        let metrics = Metrics::new();
        metrics.log_size.set(committed_size as i64);
        let origin = log_key.name().to_string();
        Self {
            shards: RwLock::new(Arc::new(vec![crate::db::ShardRow::first(&origin)])),
            origin,
            db,
            log_key,
            registry: RwLock::new(Arc::new(registry)),
            checkpoint_registry: RwLock::new(std::collections::VecDeque::new()),
            signed: tokio::sync::watch::Sender::new(None),
            witness_quorum: 0,
            news2_window_ms: 15 * 60 * 1000,
            latest: RwLock::new(latest.map(Arc::new)),
            carried: RwLock::new(HashMap::new()),
            committed_size: AtomicU64::new(committed_size),
            tile_cache: TileCache::new(4096),
            metrics,
            sequencer,
            time_policy,
            webhooks: RwLock::new(Vec::new()),
            webhook_wake: tokio::sync::Notify::new(),
            webhook_secret_overlap_ms: 24 * 3600 * 1000,
            export_dir: std::path::PathBuf::from("exports"),
            export_wake: tokio::sync::Notify::new(),
            retention_ms: u64::MAX,
            export_lease_ms: 15_000,
            limits: crate::config::LimitSettings::default(),
            requests: tokio::sync::Semaphore::new(
                crate::config::LimitSettings::default().max_concurrent_requests,
            ),
            public_base: std::sync::OnceLock::new(),
            leader: std::sync::atomic::AtomicBool::new(true),
            outbound: Arc::new(crate::outbound::Policy::default()),
            token_uses: LastUse::default(),
            access: crate::trail::AccessTrail::default(),
            reader: std::sync::OnceLock::new(),
        }
    }

    /// Waits until the access trail holds every request answered so far.
    pub async fn flush_access_trail(&self) {
        self.access.flush().await;
    }

    /// Replaces the cached webhook endpoints (after any change to them).
    pub fn set_webhooks(&self, endpoints: Vec<crate::db::EndpointRow>) {
        *write(&self.webhooks) = endpoints;
    }

    /// One endpoint (with its secrets), from the cache.
    pub fn endpoint(&self, id: &str) -> Option<crate::db::EndpointRow> {
        read(&self.webhooks).iter().find(|e| e.id == id).cloned()
    }

    /// The endpoints subscribed to an event type (disabled ones too: their messages wait in the
    /// outbox until the endpoint is enabled again).
    pub fn subscribers(&self, event_type: &str) -> Vec<String> {
        read(&self.webhooks)
            .iter()
            .filter(|e| e.event_types.iter().any(|t| t == event_type))
            .map(|e| e.id.clone())
            .collect()
    }

    /// The registry as of the last committed batch.
    pub fn registry(&self) -> Arc<RegistryState> {
        Arc::clone(&read(&self.registry))
    }

    /// Publishes the registry after a commit changed it (or a new leader reloaded it).
    pub fn set_registry(&self, registry: Arc<RegistryState>) {
        *write(&self.registry) = registry;
    }

    /// Records the registry as of a published checkpoint of `size` entries.
    pub fn set_checkpoint_registry(&self, size: u64, registry: Arc<RegistryState>) {
        let mut kept = write(&self.checkpoint_registry);
        if kept.len() == 16 {
            kept.pop_front();
        }
        kept.push_back((size, registry));
    }

    /// The registry as of the checkpoint of `size` entries, if it is one of the latest signed;
    /// otherwise rebuilt from the log.
    pub async fn registry_at(&self, size: u64) -> anyhow::Result<Arc<RegistryState>> {
        let cached = read(&self.checkpoint_registry)
            .iter()
            .rev()
            .find(|(s, _)| *s == size)
            .map(|(_, r)| Arc::clone(r));
        match cached {
            Some(r) => Ok(r),
            None => Ok(Arc::new(crate::registry::state_at(&self.db, size).await?)),
        }
    }

    /// The absolute URL of `path` (`/v1/…`) on the public base URL. (Before serving starts and
    /// with no base configured — in-process tests — `http://localhost`.)
    pub fn url(&self, path: &str) -> String {
        let base = self
            .public_base
            .get()
            .map_or("http://localhost", String::as_str);
        format!("{base}{path}")
    }

    /// The database.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Whether this node runs the sequencer.
    pub fn is_leader(&self) -> bool {
        self.leader.load(Ordering::SeqCst)
    }

    /// The latest checkpoint.
    pub fn latest_checkpoint(&self) -> Option<Arc<CheckpointRow>> {
        read(&self.latest).clone()
    }

    /// A checkpoint the log just signed (and stored): handed to the witnesses, and published
    /// at once unless a quorum of cosignatures must come first.
    pub fn checkpoint_signed(&self, cp: CheckpointRow) {
        if self.witness_quorum == 0 {
            self.set_checkpoint(cp.clone());
        }
        self.signed.send_replace(Some(Arc::new(cp)));
    }

    /// At start or take-over: publishes the latest stored checkpoint that may be published
    /// (with the quorum, the latest cosigned by it) and hands the latest signed one to the
    /// witnesses.
    pub async fn restore_checkpoint(
        &self,
        latest: Option<CheckpointRow>,
    ) -> Result<(), crate::db::StorageError> {
        let published = if self.witness_quorum == 0 {
            latest.clone()
        } else {
            self.db
                .latest_cosigned_checkpoint(self.open_shard().number, self.witness_quorum as u64)
                .await?
        };
        match published {
            Some(cp) => self.set_checkpoint(cp),
            None => *write(&self.latest) = None,
        }
        if let Some(cp) = latest {
            self.signed.send_replace(Some(Arc::new(cp)));
        }
        Ok(())
    }

    /// Publishes a checkpoint.
    pub fn set_checkpoint(&self, cp: CheckpointRow) {
        self.metrics.checkpoints.inc();
        self.metrics.log_size.set(cp.size as i64);
        *write(&self.latest) = Some(Arc::new(cp));
    }

    /// Entries durably committed.
    pub fn committed(&self) -> u64 {
        self.committed_size.load(Ordering::SeqCst)
    }

    /// A proof generator over the tiles of a shard's tree.
    pub fn tiles(&self, shard: u32) -> TileFetcher<'_> {
        TileFetcher {
            db: &self.db,
            cache: Some(&self.tile_cache),
            shard,
        }
    }
}

#[cfg(test)]
mod last_use_tests {
    use super::*;

    #[test]
    fn a_busy_token_writes_its_last_use_once_a_minute() {
        let l = LastUse::default();
        assert!(l.due(b"h", 1000));
        assert!(!l.due(b"h", 1000 + LAST_USE_EVERY_MS - 1));
        assert!(l.due(b"h", 1000 + LAST_USE_EVERY_MS));
        assert!(l.due(b"other", 1000));
    }
}

/// A read node's freshness (`reader.rs`).
#[derive(Debug)]
pub struct Freshness {
    /// The bound, ms.
    pub max_staleness_ms: u64,
    /// When the node last read the latest checkpoint successfully, Unix ms.
    pub(crate) refreshed_at_ms: AtomicU64,
    /// The replica's replay lag at that time, ms.
    pub(crate) replay_lag_ms: AtomicU64,
}

impl Freshness {
    /// How stale this node's answers may be now, ms.
    pub fn staleness_ms(&self) -> u64 {
        now_ms()
            .saturating_sub(self.refreshed_at_ms.load(Ordering::SeqCst))
            .saturating_add(self.replay_lag_ms.load(Ordering::SeqCst))
    }

    /// Whether that is within the bound.
    pub fn fresh(&self) -> bool {
        self.staleness_ms() <= self.max_staleness_ms
    }
}
