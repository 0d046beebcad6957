//! A household's feed (private mode): a page of its private messages and everything the
//! owner's app needs to verify them offline, proved against one checkpoint.
//!
//! ```json
//! {
//!   "media_type": "application/vnd.vitals-ledger.household-feed+json;version=1",
//!   "log_vkey": "<the log's vkey, for information: the app brings its own>",
//!   "household": "HH-0001",
//!   "messages": [ { "leaf_data": "<base64 log entry of kind 3>", "proof": "<tlog-proof>" }, ... ],
//!   "registry": [ { "leaf_data": "...", "proof": "..." }, ... ],
//!   "registry_proofs": [ { "subject": "household:HH-0001", "hashes": [...] }, ... ],
//!   "next_after": 1234
//! }
//! ```
//!
//! `messages` are in log order. `registry` holds every registry event of every subject that
//! decides them ([`crate::registry_state::RegistryState::subjects_for_household`]: the
//! household, every gateway ever bound to it, every sensor ever bound to those gateways and the
//! other gateways those sensors were bound to, the issuers of all their keys), and
//! `registry_proofs` proves each subject's complete chain in the checkpoint's registry map — so
//! the household's recipient history (key transparency) cannot be shown with an event left
//! out. `next_after` is the last message's index when more follow (ask again with
//! `after=next_after`), null on the last page. Unknown fields and other versions are rejected.

use crate::bundle::{BundleError, ProvedEntry, SubjectProof};
use alloc::{string::String, vec::Vec};
use serde::{Deserialize, Serialize};

/// The media type (and version) of household feed pages.
pub const FEED_MEDIA_TYPE: &str = "application/vnd.vitals-ledger.household-feed+json;version=1";
/// Largest feed page accepted.
pub const MAX_FEED_LEN: usize = 4 * 1024 * 1024;
/// Most messages a page carries.
pub const MAX_FEED_MESSAGES: usize = 500;

/// A page of a household's feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HouseholdFeed {
    /// Always [`FEED_MEDIA_TYPE`].
    pub media_type: String,
    /// The log's vkey as the service states it (informational).
    pub log_vkey: String,
    /// The household.
    pub household: String,
    /// Its private messages' log entries, in log order.
    pub messages: Vec<ProvedEntry>,
    /// Registry-event entries: the complete histories of the subjects that decide them.
    pub registry: Vec<ProvedEntry>,
    /// Each subject's event chain proved in the checkpoint's registry map.
    pub registry_proofs: Vec<SubjectProof>,
    /// The last message's index when more follow.
    pub next_after: Option<u64>,
}

impl HouseholdFeed {
    /// Parses and structurally checks a page: media type, base64 fields, proof syntax, one
    /// checkpoint shared by every proof, at most [`MAX_FEED_MESSAGES`]. Signatures and proofs
    /// are not verified here.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_FEED_LEN {
            return Err(BundleError::TooLong(bytes.len()));
        }
        let f: Self =
            serde_json::from_slice(bytes).map_err(|e| BundleError::Json(alloc::format!("{e}")))?;
        if f.media_type != FEED_MEDIA_TYPE {
            return Err(BundleError::MediaType(f.media_type));
        }
        if f.messages.len() > MAX_FEED_MESSAGES {
            return Err(BundleError::Json(alloc::format!(
                "{} messages, more than {MAX_FEED_MESSAGES}",
                f.messages.len()
            )));
        }
        let mut cp: Option<String> = None;
        for e in f.messages.iter().chain(&f.registry) {
            e.leaf_bytes()?;
            let c = e.tlog_proof()?.checkpoint;
            match &cp {
                None => cp = Some(c),
                Some(first) if *first != c => return Err(BundleError::MixedCheckpoints),
                Some(_) => {}
            }
        }
        let mut seen = alloc::collections::BTreeSet::new();
        for p in &f.registry_proofs {
            let (subject, _) = p.parse()?;
            if !seen.insert(subject) {
                return Err(BundleError::RegistryProof(alloc::format!(
                    "two proofs for {}",
                    p.subject
                )));
            }
        }
        Ok(f)
    }

    /// The checkpoint every proof refers to (none on an empty page without registry entries).
    pub fn checkpoint(&self) -> Option<String> {
        self.messages
            .iter()
            .chain(&self.registry)
            .next()
            .and_then(|e| e.tlog_proof().ok())
            .map(|p| p.checkpoint)
    }

    /// Serializes to JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}
