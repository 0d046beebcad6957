//! Evidence, the use case: a reading's evidence bundle — its entry and inclusion proof, the
//! complete registry history of every subject that decides it, each proved in the log and in
//! the checkpoint's registry map — as served by `GET /v1/readings/{index}/evidence` and written
//! into per-patient exports. Errors are typed so the handler picks the status and the export
//! worker records the cause.

use crate::db::StorageError;
use crate::state::Shared;
use crate::tiles::TileSet;
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use provenance_core::bundle::{EvidenceBundle, ProvedEntry, SubjectProof, BUNDLE_MEDIA_TYPE};
use provenance_core::cose::GatewayEnvelope;
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::merkle;
use provenance_core::registry_state::RegistryState;
use provenance_core::tlog_proof::TlogProof;

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

/// The evidence bundle of the reading at `index`, proved against the latest published
/// checkpoint.
pub async fn latest(s: &Shared, index: u64) -> Result<EvidenceBundle, EvidenceError> {
    let (leaf, entry) = reading_entry(s, index).await?;
    let cp = s
        .latest_checkpoint()
        .filter(|c| c.size > index)
        .ok_or(EvidenceError::NotYetCheckpointed(index))?;
    let registry = s
        .registry_at(cp.size)
        .await
        .map_err(|e| EvidenceError::Registry {
            size: cp.size,
            detail: format!("{e:#}"),
        })?;
    bundle(s, index, &leaf, &entry, &cp.note, cp.size, &registry).await
}

/// The evidence bundle of the reading logged at `index` (its leaf data and entry), proved
/// against the checkpoint `note` of `size` entries, whose registry is `registry`.
pub async fn bundle(
    s: &Shared,
    index: u64,
    leaf: &[u8],
    entry: &LogEntry,
    note: &str,
    size: u64,
    registry: &RegistryState,
) -> Result<EvidenceBundle, EvidenceError> {
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
    let registry_proofs: Vec<SubjectProof> = registry
        .subjects_for(sensor_id, gateway_id)
        .iter()
        .filter_map(|subject| {
            registry.chain_proof(subject).map(|hashes| SubjectProof {
                subject: subject.name(),
                hashes: hashes.iter().map(|h| B64.encode(h)).collect(),
            })
        })
        .collect();

    let mut set = TileSet::default();
    let reading_proof = TlogProof {
        extra: None,
        index,
        hashes: prove(s, &mut set, index, size).await?,
        checkpoint: note.to_string(),
    };
    let mut registry_entries = Vec::new();
    for i in reg_idx.into_iter().filter(|i| *i < size) {
        let (_, leaf_i) =
            s.db.entry(i)
                .await?
                .ok_or(EvidenceError::RegistryIncomplete {
                    index,
                    size,
                    what: "a logged registry entry",
                })?;
        let p = TlogProof {
            extra: None,
            index: i,
            hashes: prove(s, &mut set, i, size).await?,
            checkpoint: note.to_string(),
        };
        registry_entries.push(ProvedEntry::new(&leaf_i, &p));
    }
    Ok(EvidenceBundle {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        log_vkey: s.log_key.to_vkey(),
        reading: ProvedEntry::new(leaf, &reading_proof),
        registry: registry_entries,
        registry_proofs,
        shard_start: None,
        carried_proofs: Vec::new(),
    })
}

/// An inclusion proof at `size`, reusing the tiles already fetched for the bundle.
async fn prove(
    s: &Shared,
    set: &mut TileSet,
    index: u64,
    size: u64,
) -> Result<Vec<merkle::Hash>, EvidenceError> {
    s.tiles()
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
        let p = proved(m.idx, prove(s, &mut set, m.idx, size).await?);
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
        let p = proved(i, prove(s, &mut set, i, size).await?);
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
