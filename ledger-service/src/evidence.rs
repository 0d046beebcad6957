//! Evidence, the use case: a reading's evidence bundle — its entry and inclusion proof, the
//! complete registry history of every subject that decides it, each proved in the log and in
//! the checkpoint's registry map — as served by `GET /v1/readings/{index}/evidence` and written
//! into per-patient exports. Errors are typed so the handler picks the status and the export
//! worker records the cause.

use crate::db::{ShardRow, StorageError};
use crate::state::Shared;
use crate::tiles::TileSet;
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use provenance_core::bundle::{EvidenceBundle, ProvedEntry, SubjectProof, BUNDLE_MEDIA_TYPE};
use provenance_core::cose::GatewayEnvelope;
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::merkle;
use provenance_core::registry_state::RegistryState;
use provenance_core::tlog_proof::TlogProof;
use std::sync::Arc;

/// Why a reading or its evidence cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// No entry at that index.
    #[error("no entry {0}")]
    NoEntry(u64),
    /// The entry is a registry event.
    #[error("entry {0} is not a reading")]
    NotAReading(u64),
    /// The reading's payload was pruned after an acknowledged export.
    #[error("the payload of reading {index} was pruned after export {export} was archived; its leaf hash stays in the log, so proofs still verify")]
    Pruned {
        /// Log index.
        index: u64,
        /// The export that holds it.
        export: String,
    },
    /// Logged, not yet in a published checkpoint.
    #[error("reading {0} is logged but not yet in a published checkpoint")]
    NotYetCheckpointed(u64),
    /// A logged entry does not decode (storage corruption).
    #[error("log entry {index} does not decode: {detail}")]
    CorruptEntry {
        /// Log index.
        index: u64,
        /// The decoder's error.
        detail: String,
    },
    /// The registry as of the checkpoint lacks what the logged reading needs.
    #[error("the registry as of checkpoint {size} lacks {what} of reading {index}")]
    RegistryIncomplete {
        /// Log index.
        index: u64,
        /// Checkpoint size.
        size: u64,
        /// What is missing.
        what: &'static str,
    },
    /// The registry as of the checkpoint could not be rebuilt.
    #[error("rebuilding the registry as of checkpoint {size}: {detail}")]
    Registry {
        /// Checkpoint size.
        size: u64,
        /// Why.
        detail: String,
    },
    /// The stored tiles do not give the proof.
    #[error("inclusion proof of {index} at size {size}: {detail}")]
    Proof {
        /// Log index.
        index: u64,
        /// Tree size.
        size: u64,
        /// Why.
        detail: String,
    },
    /// A household feed of a time-sharded log.
    #[error("household feeds are served from a log without shards only: this log is time-sharded, and the household app verifies one log (docs/SCALING.md)")]
    ShardedFeed,
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// The leaf data and decoded entry of the reading at `index`.
pub async fn reading_entry(s: &Shared, index: u64) -> Result<(Vec<u8>, LogEntry), EvidenceError> {
    let (kind, leaf) =
        s.db.entry(index)
            .await?
            .ok_or(EvidenceError::NoEntry(index))?;
    if kind != EntryKind::Reading as i16 {
        return Err(EvidenceError::NotAReading(index));
    }
    if leaf.is_empty() {
        return Err(pruned(s, index).await?);
    }
    let e = LogEntry::from_cbor(&leaf).map_err(|e| EvidenceError::CorruptEntry {
        index,
        detail: e.to_string(),
    })?;
    Ok((leaf, e))
}

/// The error for a pruned reading, naming the export that holds its payload.
pub async fn pruned(s: &Shared, index: u64) -> Result<EvidenceError, StorageError> {
    let export = s.db.pruned_by(index).await?.unwrap_or_default();
    Ok(EvidenceError::Pruned { index, export })
}

/// The checkpoint a bundle is proved against: a shard's (its tree of `size` entries) with the
/// registry as of it.
pub struct ProvedBy {
    /// The shard.
    pub shard: ShardRow,
    /// The checkpoint, as served.
    pub note: String,
    /// Its size (entries of the shard).
    pub size: u64,
    /// The registry as of it (ledger position `shard.base + size`).
    pub registry: Arc<RegistryState>,
}

impl ProvedBy {
    /// The checkpoint `note` of `size` entries of `shard`, with the registry as of it.
    pub async fn new(
        s: &Shared,
        shard: ShardRow,
        note: String,
        size: u64,
    ) -> Result<Self, EvidenceError> {
        let at = shard.base + size;
        let registry = registry_at(s, at).await?;
        Ok(Self {
            shard,
            note,
            size,
            registry,
        })
    }

    /// What proves the entry at ledger position `index`: its shard's final checkpoint if the
    /// shard is closed, else the latest published one.
    pub async fn of_index(s: &Shared, index: u64) -> Result<Self, EvidenceError> {
        let (shard, local) = s.shard_of_index(index);
        let cp = s
            .shard_checkpoint(&shard)
            .await?
            .filter(|c| c.size > local)
            .ok_or(EvidenceError::NotYetCheckpointed(index))?;
        Self::new(s, shard, cp.note.clone(), cp.size).await
    }

    /// Whether it proves the entry at ledger position `index`.
    pub fn covers(&self, index: u64) -> bool {
        index >= self.shard.base && index - self.shard.base < self.size
    }
}

async fn registry_at(s: &Shared, at: u64) -> Result<Arc<RegistryState>, EvidenceError> {
    s.registry_at(at)
        .await
        .map_err(|e| EvidenceError::Registry {
            size: at,
            detail: format!("{e:#}"),
        })
}

/// The evidence bundle of the reading at `index`, proved against its shard's final checkpoint
/// (a closed shard) or the latest published one.
pub async fn latest(s: &Shared, index: u64) -> Result<EvidenceBundle, EvidenceError> {
    let (leaf, entry) = reading_entry(s, index).await?;
    let by = ProvedBy::of_index(s, index).await?;
    bundle(s, index, &leaf, &entry, &by).await
}

/// The evidence bundle of the reading logged at ledger position `index` (its leaf data and
/// entry), proved against `by`, which must cover it. In a shard, the registry events logged
/// before it are the carried ones, and the bundle holds the shard start and the carried
/// events' map proofs in the previous shard's final registry.
pub async fn bundle(
    s: &Shared,
    index: u64,
    leaf: &[u8],
    entry: &LogEntry,
    by: &ProvedBy,
) -> Result<EvidenceBundle, EvidenceError> {
    let (base, size, registry) = (by.shard.base, by.size, &by.registry);
    if !by.covers(index) {
        return Err(EvidenceError::NotYetCheckpointed(index));
    }
    let env = GatewayEnvelope::decode(&entry.body).map_err(|e| EvidenceError::CorruptEntry {
        index,
        detail: e.to_string(),
    })?;
    let gk = registry
        .key(&env.kid)
        .ok_or(EvidenceError::RegistryIncomplete {
            index,
            size,
            what: "the gateway key",
        })?;
    // The complete registry history of every subject that decides the reading, and each
    // subject's chain proved in the checkpoint's registry map.
    let sensor_id = &env.sensor.reading.sensor_id;
    let gateway_id = &gk.cert.subject_cn;
    let reg_idx = registry.history_of(sensor_id, gateway_id);
    let subjects = registry.subjects_for(sensor_id, gateway_id);
    // Each subject's chain proved, or (a subject first registered in this shard, in the
    // previous shard's registry) its absence.
    let chain_proofs = |r: &RegistryState| -> Vec<SubjectProof> {
        subjects.iter().map(|s| SubjectProof::of(r, s)).collect()
    };
    let registry_proofs = chain_proofs(registry);

    let mut set = TileSet::default();
    // (index in the shard, leaf data) of every entry to prove: the reading, its registry
    // events, the shard start.
    let mut wanted = vec![(index - base, leaf.to_vec())];
    let sharded = by.shard.has_period();
    let carried = if sharded {
        s.carried_positions(&by.shard).await?
    } else {
        Arc::default()
    };
    for i in reg_idx.into_iter().filter(|i| *i < base + size) {
        // An event of an earlier shard is proved by the entry that carries it into this one.
        let at = if i < base {
            *carried.get(&i).ok_or(EvidenceError::RegistryIncomplete {
                index,
                size,
                what: "the carried entry of a registry event of an earlier shard",
            })?
        } else {
            i
        };
        let (_, leaf_i) =
            s.db.entry(at)
                .await?
                .ok_or(EvidenceError::RegistryIncomplete {
                    index,
                    size,
                    what: "a logged registry entry",
                })?;
        wanted.push((at - base, leaf_i));
    }
    if sharded {
        let (_, start) =
            s.db.entry(base)
                .await?
                .ok_or(EvidenceError::NoEntry(base))?;
        wanted.push((0, start));
    }
    let mut entries = Vec::with_capacity(wanted.len());
    for (local, data) in wanted {
        let p = TlogProof {
            extra: None,
            index: local,
            hashes: prove(s, &mut set, by.shard.number, local, size).await?,
            checkpoint: by.note.clone(),
        };
        entries.push(ProvedEntry::new(&data, &p));
    }
    let shard_start = if sharded { entries.pop() } else { None };
    let mut entries = entries.into_iter();
    let reading = entries.next().ok_or(EvidenceError::NoEntry(index))?;
    let carried_proofs = if sharded {
        chain_proofs(&*registry_at(s, base).await?)
    } else {
        Vec::new()
    };
    Ok(EvidenceBundle {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        log_vkey: s.log_key.to_vkey(),
        reading,
        registry: entries.collect(),
        registry_proofs,
        shard_start,
        carried_proofs,
    })
}

/// An inclusion proof at `size`, reusing the tiles already fetched for the bundle.
async fn prove(
    s: &Shared,
    set: &mut TileSet,
    shard: u32,
    index: u64,
    size: u64,
) -> Result<Vec<merkle::Hash>, EvidenceError> {
    s.tiles(shard)
        .with_tiles(set, |r| merkle::inclusion_proof(r, index, size))
        .await?
        .map_err(|e| EvidenceError::Proof {
            index,
            size,
            detail: e.to_string(),
        })
}

/// A page of a household's feed (private mode): its messages logged after `after`, up to
/// `limit`, with the complete registry histories that decide them, all proved against the
/// latest published checkpoint. Messages not yet in a checkpoint wait for the next page.
pub async fn household_feed(
    s: &Shared,
    household: &str,
    after: Option<u64>,
    limit: u64,
) -> Result<provenance_core::feed::HouseholdFeed, EvidenceError> {
    use provenance_core::feed::{HouseholdFeed, FEED_MEDIA_TYPE};
    let empty = || HouseholdFeed {
        media_type: FEED_MEDIA_TYPE.into(),
        log_vkey: s.log_key.to_vkey(),
        household: household.into(),
        messages: Vec::new(),
        registry: Vec::new(),
        registry_proofs: Vec::new(),
        next_after: None,
    };
    let Some(cp) = s.latest_checkpoint() else {
        return Ok(empty());
    };
    if s.open_shard().number != 0 {
        return Err(EvidenceError::ShardedFeed);
    }
    let (note, size) = (cp.note.clone(), cp.size);
    let mut items = s.db.private_feed(household, after, size, limit + 1).await?;
    let more = items.len() as u64 > limit;
    items.truncate(limit as usize);
    let registry = s
        .registry_at(size)
        .await
        .map_err(|e| EvidenceError::Registry {
            size,
            detail: format!("{e:#}"),
        })?;
    let subjects = registry.subjects_for_household(household);
    let mut indices: Vec<u64> = subjects
        .iter()
        .flat_map(|subject| registry.events_of(subject))
        .filter(|i| *i < size)
        .collect();
    indices.sort_unstable();
    indices.dedup();
    let registry_proofs = subjects
        .iter()
        .filter_map(|subject| {
            registry.chain_proof(subject).map(|hashes| SubjectProof {
                subject: subject.name(),
                hashes: hashes.iter().map(|h| B64.encode(h)).collect(),
                absent: None,
            })
        })
        .collect();
    let mut set = TileSet::default();
    let proved = |index: u64, hashes: Vec<merkle::Hash>| TlogProof {
        extra: None,
        index,
        hashes,
        checkpoint: note.clone(),
    };
    let mut messages = Vec::with_capacity(items.len());
    for m in &items {
        let p = proved(m.idx, prove(s, &mut set, 0, m.idx, size).await?);
        messages.push(ProvedEntry::new(&m.leaf, &p));
    }
    let mut registry_entries = Vec::with_capacity(indices.len());
    for i in indices {
        let (_, leaf) =
            s.db.entry(i)
                .await?
                .ok_or(EvidenceError::RegistryIncomplete {
                    index: i,
                    size,
                    what: "a logged registry entry",
                })?;
        let p = proved(i, prove(s, &mut set, 0, i, size).await?);
        registry_entries.push(ProvedEntry::new(&leaf, &p));
    }
    Ok(HouseholdFeed {
        next_after: more.then(|| items.last().map(|m| m.idx)).flatten(),
        messages,
        registry: registry_entries,
        registry_proofs,
        ..empty()
    })
}
