//! The evidence bundle: one JSON document per reading that an auditor verifies offline with only
//! the issuers' CA certificates and the log's vkey.
//!
//! ```json
//! {
//!   "media_type": "application/vnd.vitals-ledger.evidence+json;version=2",
//!   "log_vkey": "<the log's vkey, for information: the auditor brings their own>",
//!   "reading": { "leaf_data": "<base64 log entry>", "proof": "<tlog-proof text>" },
//!   "registry": [ { "leaf_data": "...", "proof": "..." }, ... ],
//!   "registry_proofs": [ { "subject": "device:SN-0001", "hashes": ["<base64>", ...] }, ... ],
//!   "shard_start": { "leaf_data": "...", "proof": "..." },
//!   "carried_proofs": [ { "subject": "device:SN-0001", "hashes": [...] }, ... ]
//! }
//! ```
//!
//! `registry` holds every registry event of every subject that decides the reading (the
//! sensor, the gateway, every gateway the sensor was bound to, the issuers of all their keys:
//! [`crate::registry_state::RegistryState::subjects_for`]), each with a tlog-proof against the
//! same checkpoint as the reading. `registry_proofs` proves, for each of those subjects, its
//! event chain in the registry map whose root the checkpoint carries ([`crate::smt`]), so leaving
//! out any event fails. Certificates travel inside the enrollment and rotation events only.
//! In a time-sharded log ([`crate::shard`]) `shard_start` is the shard's entry 0, proved against
//! the same checkpoint, registry entries may be carried ones (kind 5), and `carried_proofs`
//! proves each subject's carried events in the previous shard's final registry; both are absent
//! otherwise.
//! Unknown fields and other versions are rejected.

use crate::tlog_proof::{TlogProof, TlogProofError};
use alloc::{string::String, vec::Vec};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use serde::{Deserialize, Serialize};

/// The media type (and version) of evidence bundles.
pub const BUNDLE_MEDIA_TYPE: &str = "application/vnd.vitals-ledger.evidence+json;version=2";
/// Largest bundle accepted.
pub const MAX_BUNDLE_LEN: usize = 1024 * 1024;

/// Why a bundle was rejected.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Over the size limit.
    #[error("bundle is {0} bytes, more than 1 MiB")]
    TooLong(usize),
    /// Not valid JSON of the bundle shape.
    #[error("malformed bundle: {0}")]
    Json(String),
    /// Another media type or version.
    #[error("unsupported bundle media type {0:?}")]
    MediaType(String),
    /// A base64 field is not base64.
    #[error("field {0} is not base64")]
    Base64(&'static str),
    /// A proof is malformed.
    #[error(transparent)]
    Proof(#[from] TlogProofError),
    /// The proofs do not all refer to the same checkpoint.
    #[error("every proof in a bundle must refer to the same checkpoint")]
    MixedCheckpoints,
    /// A registry map proof is malformed.
    #[error("registry proof: {0}")]
    RegistryProof(String),
}

/// A logged entry with its proof, as carried in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProvedEntry {
    /// The leaf data, base64.
    pub leaf_data: String,
    /// The tlog-proof text.
    pub proof: String,
}

impl ProvedEntry {
    /// Builds one from raw leaf data and a proof.
    pub fn new(leaf_data: &[u8], proof: &TlogProof) -> Self {
        Self {
            leaf_data: B64.encode(leaf_data),
            proof: proof.encode(),
        }
    }

    /// The leaf data bytes.
    pub fn leaf_bytes(&self) -> Result<Vec<u8>, BundleError> {
        B64.decode(&self.leaf_data)
            .map_err(|_| BundleError::Base64("leaf_data"))
    }

    /// The parsed proof.
    pub fn tlog_proof(&self) -> Result<TlogProof, BundleError> {
        Ok(TlogProof::parse(&self.proof)?)
    }
}

/// An evidence bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceBundle {
    /// Always [`BUNDLE_MEDIA_TYPE`].
    pub media_type: String,
    /// The log's vkey as the service states it (informational).
    pub log_vkey: String,
    /// The reading's log entry.
    pub reading: ProvedEntry,
    /// Registry-event entries: the complete histories of the reading's subjects.
    pub registry: Vec<ProvedEntry>,
    /// Each subject's event chain proved in the checkpoint's registry map.
    pub registry_proofs: Vec<SubjectProof>,
    /// In a shard of a time-sharded log ([`crate::shard`]): the shard's entry 0, its start,
    /// which gives the shard's period and base. Absent for a log without shards.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard_start: Option<ProvedEntry>,
    /// In a shard: each subject's carried events proved in the registry map of the previous
    /// shard's final checkpoint (the one the shard start holds), so a carried event left out
    /// or changed fails. Empty for a log without shards.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub carried_proofs: Vec<SubjectProof>,
}

/// A subject's map proof, as carried in a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectProof {
    /// `device:<id>` or `issuer:<key id hex>`.
    pub subject: String,
    /// Sibling hashes from the root down, base64.
    pub hashes: Vec<String>,
    /// Present when the proof shows the subject has *no* event in the map: what is where the
    /// subject's path ends (`{}`: an empty subtree; `{"key", "value"}`: the leaf of the one
    /// other key there, base64). In a shard's carried proofs, a subject first registered in
    /// the shard itself is proved absent from the previous shard's final registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absent: Option<AbsentEnd>,
}

/// Where an absent subject's path ends in the registry map. Read from a JSON object only
/// (`{}`, or `{"key", "value"}`), never another shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AbsentEnd {
    /// The other key's map key, base64 (absent: an empty subtree).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Its value, base64 (with `key`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl<'de> Deserialize<'de> for AbsentEnd {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut m = alloc::collections::BTreeMap::<String, String>::deserialize(d)?;
        let end = AbsentEnd {
            key: m.remove("key"),
            value: m.remove("value"),
        };
        match m.keys().next() {
            Some(k) => Err(serde::de::Error::unknown_field(k, &["key", "value"])),
            None => Ok(end),
        }
    }
}

/// A subject's map proof, checked for shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapProof {
    /// Its chain is in the map: the sibling hashes.
    Present(Vec<crate::smt::Hash>),
    /// It has no event in the map.
    Absent(crate::smt::AbsenceProof),
}

fn hash_of(h: &str) -> Result<crate::smt::Hash, BundleError> {
    B64.decode(h)
        .ok()
        .and_then(|b| <crate::smt::Hash>::try_from(b.as_slice()).ok())
        .ok_or_else(|| BundleError::RegistryProof("a hash is not 32 bytes of base64".into()))
}

impl SubjectProof {
    /// The subject's proof in `state`'s registry map: of its chain if it has events, else of
    /// its absence.
    pub fn of(
        state: &crate::registry_state::RegistryState,
        subject: &crate::registry_state::Subject,
    ) -> Self {
        let b64 = |hs: &[crate::smt::Hash]| hs.iter().map(|h| B64.encode(h)).collect();
        match state.chain_proof(subject) {
            Some(hashes) => Self {
                subject: subject.name(),
                hashes: b64(&hashes),
                absent: None,
            },
            None => {
                let p = state
                    .absence_proof(subject)
                    .unwrap_or(crate::smt::AbsenceProof {
                        siblings: Vec::new(),
                        other: None,
                    });
                Self {
                    subject: subject.name(),
                    hashes: b64(&p.siblings),
                    absent: Some(AbsentEnd {
                        key: p.other.map(|(k, _)| B64.encode(k)),
                        value: p.other.map(|(_, v)| B64.encode(v)),
                    }),
                }
            }
        }
    }

    /// The subject and its proof, checked for shape.
    pub fn parse(&self) -> Result<(crate::registry_state::Subject, MapProof), BundleError> {
        let subject = crate::registry_state::Subject::parse(&self.subject).ok_or_else(|| {
            BundleError::RegistryProof(alloc::format!("bad subject {:?}", self.subject))
        })?;
        if self.hashes.len() > crate::smt::MAX_PROOF_LEN {
            return Err(BundleError::RegistryProof("too many hashes".into()));
        }
        let hashes = self
            .hashes
            .iter()
            .map(|h| hash_of(h))
            .collect::<Result<Vec<_>, _>>()?;
        let proof = match &self.absent {
            None => MapProof::Present(hashes),
            Some(end) => {
                let other = match (&end.key, &end.value) {
                    (None, None) => None,
                    (Some(k), Some(v)) => Some((hash_of(k)?, hash_of(v)?)),
                    _ => {
                        return Err(BundleError::RegistryProof(
                            "an absence proof's other leaf needs both key and value".into(),
                        ))
                    }
                };
                MapProof::Absent(crate::smt::AbsenceProof {
                    siblings: hashes,
                    other,
                })
            }
        };
        Ok((subject, proof))
    }
}

/// Map proofs checked for shape, one per subject.
fn one_per_subject(proofs: &[SubjectProof], what: &str) -> Result<(), BundleError> {
    let mut seen = alloc::collections::BTreeSet::new();
    for p in proofs {
        let (subject, _) = p.parse()?;
        if !seen.insert(subject) {
            return Err(BundleError::RegistryProof(alloc::format!(
                "two {what} for {}",
                p.subject
            )));
        }
    }
    Ok(())
}

impl EvidenceBundle {
    /// Parses and structurally checks a bundle: media type, base64 fields, proof syntax, and
    /// one checkpoint shared by every proof. Signatures and proofs are not verified here.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_LEN {
            return Err(BundleError::TooLong(bytes.len()));
        }
        let b: Self =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Json(alloc::format!("{e}")))?;
        if b.media_type != BUNDLE_MEDIA_TYPE {
            return Err(BundleError::MediaType(b.media_type));
        }
        let cp = b.reading.tlog_proof()?.checkpoint;
        b.reading.leaf_bytes()?;
        for e in &b.registry {
            e.leaf_bytes()?;
            if e.tlog_proof()?.checkpoint != cp {
                return Err(BundleError::MixedCheckpoints);
            }
        }
        if let Some(start) = &b.shard_start {
            start.leaf_bytes()?;
            if start.tlog_proof()?.checkpoint != cp {
                return Err(BundleError::MixedCheckpoints);
            }
        }
        if b.shard_start.is_none() && !b.carried_proofs.is_empty() {
            return Err(BundleError::RegistryProof(
                "carried proofs without a shard start".into(),
            ));
        }
        one_per_subject(&b.carried_proofs, "carried proofs")?;
        one_per_subject(&b.registry_proofs, "proofs")?;
        Ok(b)
    }

    /// Serializes to pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}
