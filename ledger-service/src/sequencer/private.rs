//! Private messages in the sequencer (issue #17): each judged again at its exact log position
//! (the gateway's key at logged-at, its household and every recipient at received-at, the
//! gateway's message number above its last), logged as a kind-3 entry with its query row. The
//! content is never opened: the service holds no key that could.

use super::Sequencer;
use crate::db::private::PrivateRow;
use crate::db::{Batch, EntryRow, SideRow};
use crate::mailbox::{Outcome, PrivateCandidate, Receipt};
use crate::registry::SeqUndo;
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::merkle;
use provenance_core::registry_state::PrivateClaims;
use std::collections::{BTreeSet, HashMap};

/// Logged private messages by (gateway, message number): (index, envelope hash).
pub(super) type Existing = HashMap<(String, u64), (u64, [u8; 32])>;

/// The batch's private messages already logged (duplicates and equivocations), in one lookup.
pub(super) async fn existing(
    shared: &crate::state::Shared,
    work: &[crate::mailbox::Work],
) -> Result<Existing, crate::db::StorageError> {
    let keys: Vec<(String, u64)> = work
        .iter()
        .filter_map(|w| match w {
            crate::mailbox::Work::Private(c, _) => Some(c),
            _ => None,
        })
        .flatten()
        .map(|c| (c.gateway_id.clone(), c.msg_seq))
        .collect();
    shared.db.existing_private(&keys).await
}

/// What a batch's private messages share with the rest of it.
pub(super) struct Into<'a> {
    pub batch: &'a mut Batch,
    pub dirty: &'a mut BTreeSet<(u8, u64)>,
    pub seq_undo: &'a mut Vec<SeqUndo>,
    pub in_batch: &'a mut HashMap<(String, u64), ([u8; 32], Receipt)>,
}

/// The webhook event of a household's new message.
pub const HOUSEHOLD_MESSAGE: &str = "household.message";

impl Sequencer {
    /// The push a household's app may subscribe to (through an endpoint an admin registers):
    /// which household, which log index and where its feed continues — nothing of the message,
    /// which the service cannot read anyway. Written with the batch, sent by the outbox.
    fn notify_household(&self, household: &str, idx: u64, now: u64, batch: &mut Batch) {
        let subscribers = self.shared.subscribers(HOUSEHOLD_MESSAGE);
        if subscribers.is_empty() {
            return;
        }
        let payload = serde_json::json!({
            "type": HOUSEHOLD_MESSAGE,
            "timestamp": crate::fhir::iso8601(now),
            "data": {
                "household": household,
                "index": idx,
                "feed": self.shared.url(&format!("/v1/households/{household}/feed?after={}", idx.saturating_sub(1))),
            }
        })
        .to_string();
        let mut id = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        let msg_id = format!("msg_{}", hex::encode(id));
        for endpoint_id in subscribers {
            batch.side.push(SideRow::Outbox {
                msg_id: msg_id.clone(),
                endpoint_id,
                event_type: HOUSEHOLD_MESSAGE.into(),
                payload: payload.clone(),
                at: now,
            });
        }
    }

    /// One outcome per candidate; duplicates of earlier batches come back as (outcome position,
    /// index) to complete with their leaf hash after the commit.
    pub(super) fn log_private(
        &mut self,
        cands: Vec<PrivateCandidate>,
        now: u64,
        existing: &Existing,
        into: Into<'_>,
    ) -> (Vec<Outcome>, Vec<(usize, u64)>) {
        let mut outcomes = Vec::with_capacity(cands.len());
        let mut earlier = Vec::new();
        for c in cands {
            let key = (c.gateway_id.clone(), c.msg_seq);
            if let Some((idx, hash)) = existing.get(&key) {
                if *hash == c.envelope_sha256 {
                    earlier.push((outcomes.len(), *idx));
                    outcomes.push(Outcome::Duplicate(Receipt {
                        index: *idx,
                        leaf_hash: [0; 32],
                    }));
                } else {
                    outcomes.push(Outcome::Equivocation(*idx));
                }
                continue;
            }
            if let Some((h, r)) = into.in_batch.get(&key) {
                outcomes.push(if *h == c.envelope_sha256 {
                    Outcome::Duplicate(*r)
                } else {
                    Outcome::Equivocation(r.index)
                });
                continue;
            }
            let idx = self.next_index();
            let claims = PrivateClaims {
                gateway_kid: c.gateway_kid,
                household: &c.household,
                received_at_ms: c.received_at,
                recipients: c.recipients.clone(),
            };
            let verdict = match self.registry.admit_private(idx, now, &claims, c.msg_seq) {
                Ok((v, undo)) => {
                    into.seq_undo.push(undo);
                    v
                }
                Err(r) => {
                    outcomes.push(Outcome::Refused(r));
                    continue;
                }
            };
            let leaf_data = LogEntry {
                kind: EntryKind::Private,
                body: c.envelope,
                logged_at_ms: now,
            }
            .to_cbor();
            let leaf_hash = merkle::leaf_hash(&leaf_data);
            self.frontier.push(leaf_hash, into.dirty);
            let receipt = Receipt {
                index: idx,
                leaf_hash,
            };
            into.in_batch.insert(key, (c.envelope_sha256, receipt));
            into.batch.entries.push(EntryRow {
                idx,
                kind: EntryKind::Private as i16,
                leaf_data,
                logged_at: now,
            });
            self.notify_household(&c.household, idx, now, into.batch);
            into.batch.side.push(SideRow::Private(PrivateRow {
                idx,
                household: c.household,
                gateway_id: verdict.gateway_id,
                msg_seq: c.msg_seq,
                received_at: c.received_at,
                envelope_sha256: c.envelope_sha256,
            }));
            outcomes.push(Outcome::Accepted(receipt));
        }
        (outcomes, earlier)
    }
}
