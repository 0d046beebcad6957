//! Ingest, the use case: a batch of gateway envelopes in, one outcome per envelope out.
//!
//! Pipeline: decode every envelope; check it against the registry as of the last commit (keys,
//! binding, revocation, time plausibility); verify all signatures of the survivors in one
//! Ed25519 batch (falling back to single checks to name the bad ones); hand the rest to the
//! sequencer, which judges each again at its exact log position and answers accepted (index and
//! leaf hash), duplicate (the earlier receipt), refused or equivocation. Nothing rejected is
//! stored as a reading; every rejection is kept in the audit table, every equivocation, revoked key used and run of bad
//! signatures raises a security alert (`security.rs`). The HTTP handler (`routes/ingest.rs`) only parses the body and renders this.

use crate::db::readings::Rejection;
use crate::mailbox::{Candidate, Outcome, PrivateCandidate, Receipt, SequenceError};
use crate::registry::Reject;
use crate::security::Origin;
use crate::state::Shared;
use provenance_core::cose::GatewayEnvelope;
use provenance_core::keys::BatchVerifier;
use provenance_core::private::PrivateEnvelope;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What became of one envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemOutcome {
    /// Logged now.
    Accepted(Receipt),
    /// Logged before (the same signed reading): the earlier receipt.
    Duplicate(Receipt),
    /// Not logged.
    Rejected {
        /// Why.
        reason: Reject,
        /// Explanation.
        detail: String,
    },
}

/// Why a batch could not be answered (then nothing of it was logged).
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The sequencer could not log the batch.
    #[error(transparent)]
    Sequencer(#[from] SequenceError),
    /// The signature check could not run (a panicked worker thread).
    #[error("checking the batch failed: {0}")]
    Check(String),
}

/// A checked item for the sequencer: a reading, or a private message (issue #17).
enum Cand {
    Reading(Candidate),
    Private(PrivateCandidate),
}

/// What a signature covers, and the signature (for the batch).
type SignedData = (Vec<u8>, ed25519_dalek::Signature);

/// One item after the checks: a candidate for the sequencer, or why not.
type Checked = Result<Cand, (Reject, String)>;

/// Decodes and checks a batch, then verifies all signatures together: per item either a
/// candidate for the sequencer or a rejection.
fn check_batch(
    shared: &Shared,
    items: Vec<Vec<u8>>,
    now: u64,
    only_gateway: Option<&str>,
) -> (Vec<Checked>, Vec<Option<Origin>>) {
    let registry = shared.registry();
    let mut out: Vec<Checked> = Vec::with_capacity(items.len());
    let mut origins: Vec<Option<Origin>> = Vec::with_capacity(items.len());
    let mut batch = BatchVerifier::new();
    let mut owners: Vec<(usize, bool)> = Vec::new(); // (item, is_gateway_layer)
    for bytes in items {
        if PrivateEnvelope::is_private(&bytes) {
            let env = match PrivateEnvelope::decode(&bytes) {
                Ok(e) => e,
                Err(e) => {
                    out.push(Err((Reject::MalformedEnvelope, e.to_string())));
                    origins.push(None);
                    continue;
                }
            };
            origins.push(Some(Origin {
                gateway_kid: env.kid,
                sensor: None,
                msg_seq: Some(env.msg_seq),
            }));
            match check_private(shared, &registry, &env, bytes, now, only_gateway) {
                Ok((cand, key, (m, s))) => {
                    batch.push(key, m, s);
                    owners.push((out.len(), true));
                    out.push(Ok(cand));
                }
                Err(e) => out.push(Err(e)),
            }
            continue;
        }
        let env = match GatewayEnvelope::decode(&bytes) {
            Ok(e) => e,
            Err(e) => {
                out.push(Err((Reject::MalformedEnvelope, e.to_string())));
                origins.push(None);
                continue;
            }
        };
        origins.push(Some(Origin {
            gateway_kid: env.kid,
            sensor: Some((
                env.sensor.kid,
                env.sensor.reading.sensor_id.clone(),
                env.sensor.reading.seq,
            )),
            msg_seq: None,
        }));
        let facts = match crate::registry::precheck(&registry, &env, now, shared.time_policy) {
            Ok(f) => f,
            Err(r) => {
                out.push(Err((r, r.description().into())));
                continue;
            }
        };
        if let Some(own) = only_gateway.filter(|g| *g != facts.gateway_id) {
            let detail = format!(
                "countersigned by gateway {}; this token belongs to gateway {own}",
                facts.gateway_id
            );
            out.push(Err((Reject::NotTheTokensGateway, detail)));
            continue;
        }
        let i = out.len();
        let (m, s) = env.signed_data();
        batch.push(facts.gateway_key, m, s);
        owners.push((i, true));
        let (m, s) = env.sensor.signed_data();
        batch.push(facts.sensor_key, m, s);
        owners.push((i, false));
        let r = &env.sensor.reading;
        out.push(Ok(Cand::Reading(Candidate {
            sensor_hash: Sha256::digest(env.sensor_bytes()).into(),
            sensor_id: r.sensor_id.clone(),
            seq: r.seq,
            gateway_kid: env.kid,
            sensor_kid: env.sensor.kid,
            measured_at: r.measured_at_ms,
            received_at: env.received_at_ms,
            vitals: r
                .measurements
                .iter()
                .map(|m| (m.vital.loinc, m.value.to_f64()))
                .collect(),
            envelope: bytes,
        })));
    }
    if let Err(bad) = batch.verify() {
        for b in bad {
            let (item, gateway_layer) = owners[b];
            // A gateway failure wins over a sensor failure for the same item.
            let already_gateway = matches!(out[item], Err((Reject::BadGatewaySignature, _)));
            if gateway_layer {
                out[item] = Err((
                    Reject::BadGatewaySignature,
                    Reject::BadGatewaySignature.description().into(),
                ));
            } else if !already_gateway {
                out[item] = Err((
                    Reject::BadSensorSignature,
                    Reject::BadSensorSignature.description().into(),
                ));
            }
        }
    }
    (out, origins)
}

/// The checks of a private envelope the service can make without reading it: decoding, the
/// service's time policy and the registry (the gateway's key, its household, every recipient
/// key current), the token's gateway. Its signature is verified with the batch: the candidate
/// comes with the key and signed data to batch.
fn check_private(
    shared: &Shared,
    registry: &provenance_core::registry_state::RegistryState,
    env: &PrivateEnvelope,
    bytes: Vec<u8>,
    now: u64,
    only_gateway: Option<&str>,
) -> Result<(Cand, ed25519_dalek::VerifyingKey, SignedData), (Reject, String)> {
    let verdict = crate::registry::precheck_private(registry, env, now, shared.time_policy)?;
    if let Some(own) = only_gateway.filter(|g| *g != verdict.gateway_id) {
        return Err((
            Reject::NotTheTokensGateway,
            format!(
                "countersigned by gateway {}; this token belongs to gateway {own}",
                verdict.gateway_id
            ),
        ));
    }
    let key = verdict.gateway_key;
    let signed = env.signed_data();
    let cand = Cand::Private(PrivateCandidate {
        envelope_sha256: Sha256::digest(&bytes).into(),
        gateway_id: verdict.gateway_id,
        gateway_kid: env.kid,
        household: env.household.clone(),
        msg_seq: env.msg_seq,
        received_at: env.received_at_ms,
        recipients: env.content.recipient_kids(),
        envelope: bytes,
    });
    Ok((cand, key, signed))
}

/// The sequencer's answer as the item's outcome; `equivocation` says (and logs) what an
/// equivocation with the entry at that index is.
fn item_outcome(outcome: Outcome, equivocation: impl FnOnce(u64) -> String) -> ItemOutcome {
    match outcome {
        Outcome::Accepted(r) => ItemOutcome::Accepted(r),
        Outcome::Duplicate(r) => ItemOutcome::Duplicate(r),
        Outcome::Refused(reason) => ItemOutcome::Rejected {
            reason,
            detail: reason.description().into(),
        },
        Outcome::Late(open) => ItemOutcome::Rejected {
            reason: Reject::ShardClosed,
            detail: format!(
                "measured before {} (the start of the open shard {}, less its grace of {} ms): the shard of its period is closed with its final checkpoint, so it can no longer be logged",
                open.start_ms, open.origin, open.grace_ms
            ),
        },
        Outcome::Equivocation(existing) => ItemOutcome::Rejected {
            reason: Reject::Equivocation,
            detail: equivocation(existing),
        },
    }
}

/// Ingests a batch received at `now`: one outcome per envelope, in order, each accepted one
/// durably committed. Rejections are recorded (and counted in the metrics) before it returns.
/// With `only_gateway` (a gateway token bound to its gateway), an envelope countersigned by
/// another gateway is rejected (`gateway_not_token_holder`).
pub async fn ingest(
    shared: &Arc<Shared>,
    items: Vec<Vec<u8>>,
    now: u64,
    only_gateway: Option<String>,
) -> Result<Vec<ItemOutcome>, IngestError> {
    let hashes: Vec<Vec<u8>> = items.iter().map(|b| Sha256::digest(b).to_vec()).collect();
    let checker = Arc::clone(shared);
    let (checked, origins) = tokio::task::spawn_blocking(move || {
        check_batch(&checker, items, now, only_gateway.as_deref())
    })
    .await
    .map_err(|e| IngestError::Check(e.to_string()))?;

    let mut candidates = Vec::new();
    let mut positions = Vec::new();
    let mut private = Vec::new();
    let mut private_positions = Vec::new();
    let mut results: Vec<Option<ItemOutcome>> = vec![None; checked.len()];
    for (i, c) in checked.into_iter().enumerate() {
        match c {
            Ok(Cand::Reading(c)) => {
                positions.push(i);
                candidates.push(c);
            }
            Ok(Cand::Private(c)) => {
                private_positions.push(i);
                private.push(c);
            }
            Err((reason, detail)) => results[i] = Some(ItemOutcome::Rejected { reason, detail }),
        }
    }
    if !private.is_empty() {
        let keys: Vec<(String, u64)> = private
            .iter()
            .map(|c| (c.gateway_id.clone(), c.msg_seq))
            .collect();
        let outcomes = shared.sequencer.private(private).await?;
        for ((pos, outcome), (gateway, seq)) in
            private_positions.into_iter().zip(outcomes).zip(keys)
        {
            results[pos] = Some(item_outcome(outcome, |existing| {
                tracing::warn!(gateway = %gateway, msg_seq = seq, existing_index = existing, "equivocation: a different private message with a logged message number");
                format!("gateway {gateway} already logged a different private message with number {seq} (index {existing})")
            }));
        }
    }
    if !candidates.is_empty() {
        let keys: Vec<(String, u64)> = candidates
            .iter()
            .map(|c| (c.sensor_id.clone(), c.seq))
            .collect();
        let outcomes = shared.sequencer.readings(candidates).await?;
        for ((pos, outcome), (sensor, seq)) in positions.into_iter().zip(outcomes).zip(keys) {
            results[pos] = Some(item_outcome(outcome, |existing| {
                tracing::warn!(sensor = %sensor, seq, existing_index = existing, "equivocation: a different reading with a logged sequence number");
                format!("sensor {sensor} already logged a different reading with sequence number {seq} (index {existing})")
            }));
        }
    }
    let results: Vec<ItemOutcome> = results
        .into_iter()
        .map(|r| {
            // Every position is filled above: a candidate's by the sequencer's answer (one per
            // candidate), every other's by its rejection.
            r.unwrap_or(ItemOutcome::Rejected {
                reason: Reject::MalformedEnvelope,
                detail: "no result".into(),
            })
        })
        .collect();
    let mut rejections = Vec::new();
    for (r, hash) in results.iter().zip(&hashes) {
        match r {
            ItemOutcome::Accepted(_) => shared.metrics.count("accepted"),
            ItemOutcome::Duplicate(_) => shared.metrics.count("duplicate"),
            ItemOutcome::Rejected { reason, detail } => {
                shared.metrics.count(reason.code());
                rejections.push(Rejection {
                    reason: reason.code().to_string(),
                    detail: detail.clone(),
                    envelope_sha256: hash.clone(),
                });
            }
        }
    }
    let rejected: Vec<Option<(Reject, &str)>> = results
        .iter()
        .map(|r| match r {
            ItemOutcome::Rejected { reason, detail } => Some((*reason, detail.as_str())),
            _ => None,
        })
        .collect();
    crate::security::record(
        shared,
        crate::security::occurrences(&rejected, &origins, &hashes, now),
    )
    .await;
    if let Err(e) = shared.db.insert_rejections(now, &rejections).await {
        tracing::error!(error = %e, "cannot record rejections");
    }
    Ok(results)
}
