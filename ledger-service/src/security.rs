//! Security alerts: what ingest outcomes say about an attack or a compromised device.
//!
//! | kind | when | key (one alert per key) | raised at |
//! |---|---|---|---|
//! | `equivocation` | a sensor signed two different readings with one sequence number | sensor, sequence number | the first |
//! | `revoked_key_used` | an envelope names a revoked sensor or gateway key | key id, hour | the first |
//! | `bad_signatures` | signatures that do not verify, through one gateway key | gateway key id, hour | the fifth |
//! | `split_view` | a witness refused a checkpoint as inconsistent with what it cosigned, or holds a larger tree of this log (`witnessing`) | witness, hour | the first |
//!
//! An alert counts its occurrences; it is listed at `GET /v1/security-alerts` and, when raised,
//! sent once as the webhook event `security.alert` to the endpoints subscribed to it. Keys are
//! bounded by what the registry holds (an unknown key is refused before any of these checks),
//! so a flood of hostile envelopes adds to counts, not rows.

use crate::db::security::{Notice, Occurrence};
use crate::registry::Reject;
use crate::state::Shared;
use provenance_core::keys::KeyId;

/// Bad signatures through one gateway key within an hour before an alert is raised.
pub const BAD_SIGNATURE_THRESHOLD: u64 = 5;

const HOUR_MS: u64 = 3_600_000;

/// Who an envelope claims to come from (once decoded).
#[derive(Debug, Clone)]
pub struct Origin {
    /// The gateway's key.
    pub gateway_kid: KeyId,
    /// The sensor's key, id and sequence number; none for a private message (the service
    /// cannot read them).
    pub sensor: Option<(KeyId, String, u64)>,
    /// A private message's number (its gateway's).
    pub msg_seq: Option<u64>,
}

/// The occurrences a batch's outcomes show, one per key (counts summed).
/// `rejected`: per item of the batch, its rejection, if it was rejected.
pub fn occurrences(
    rejected: &[Option<(Reject, &str)>],
    origins: &[Option<Origin>],
    hashes: &[Vec<u8>],
    now: u64,
) -> Vec<Occurrence> {
    let hour = now / HOUR_MS;
    let mut out: Vec<Occurrence> = Vec::new();
    for ((o, origin), hash) in rejected.iter().zip(origins).zip(hashes) {
        let (Some((reason, detail)), Some(origin)) = (o, origin) else {
            continue;
        };
        let (kind, subject, key, threshold) = match (reason, &origin.sensor) {
            (Reject::Equivocation, Some((_, sensor_id, seq))) => (
                "equivocation",
                sensor_id.clone(),
                format!("equivocation:{sensor_id}:{seq}"),
                1,
            ),
            // A private message: the gateway's key and its message number.
            (Reject::Equivocation, None) => {
                let kid = hex::encode(origin.gateway_kid.0);
                (
                    "equivocation",
                    kid.clone(),
                    format!(
                        "equivocation:private:{kid}:{}",
                        origin.msg_seq.unwrap_or_default()
                    ),
                    1,
                )
            }
            (Reject::SensorKeyRevoked, Some((sensor_kid, _, _))) => {
                let kid = hex::encode(sensor_kid.0);
                (
                    "revoked_key_used",
                    kid.clone(),
                    format!("revoked_key_used:{kid}:{hour}"),
                    1,
                )
            }
            (Reject::GatewayKeyRevoked, _) => {
                let kid = hex::encode(origin.gateway_kid.0);
                (
                    "revoked_key_used",
                    kid.clone(),
                    format!("revoked_key_used:{kid}:{hour}"),
                    1,
                )
            }
            (Reject::BadGatewaySignature | Reject::BadSensorSignature, _) => {
                let kid = hex::encode(origin.gateway_kid.0);
                (
                    "bad_signatures",
                    kid.clone(),
                    format!("bad_signatures:{kid}:{hour}"),
                    BAD_SIGNATURE_THRESHOLD,
                )
            }
            _ => continue,
        };
        match out.iter_mut().find(|x| x.key == key) {
            Some(x) => x.n += 1,
            None => out.push(Occurrence {
                kind,
                subject,
                key,
                detail: format!("{}: {detail}", reason.code()),
                at: now,
                n: 1,
                sample_sha256: hash.clone(),
                threshold,
            }),
        }
    }
    out
}

/// The occurrence of a witness showing another view of this log.
pub fn split_view(witness: &str, detail: String, checkpoint: &str, now: u64) -> Occurrence {
    use sha2::{Digest, Sha256};
    Occurrence {
        kind: "split_view",
        subject: witness.to_string(),
        key: format!("split_view:{witness}:{}", now / HOUR_MS),
        detail,
        at: now,
        n: 1,
        sample_sha256: Sha256::digest(checkpoint.as_bytes()).to_vec(),
        threshold: 1,
    }
}

/// Records the occurrences (and queues the webhook message of each alert they raise).
pub async fn record(shared: &Shared, occurrences: Vec<Occurrence>) {
    if occurrences.is_empty() {
        return;
    }
    let endpoints = shared.subscribers("security.alert");
    for o in occurrences {
        tracing::warn!(kind = o.kind, subject = %o.subject, n = o.n, "security alert occurrence");
        let notice = (!endpoints.is_empty()).then(|| {
            let mut id = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
            let payload = serde_json::json!({
                "type": "security.alert",
                "timestamp": crate::fhir::iso8601(o.at),
                "data": {
                    "kind": o.kind,
                    "subject": o.subject,
                    "key": o.key,
                    "detail": o.detail,
                    "count": o.threshold,
                    "alerts": shared.url("/v1/security-alerts"),
                }
            });
            Notice {
                msg_id: format!("msg_{}", hex::encode(id)),
                endpoints: endpoints.clone(),
                payload: payload.to_string(),
            }
        });
        if let Err(e) = shared.db.record_security(&o, notice.as_ref()).await {
            tracing::error!(error = %e, kind = o.kind, "cannot record a security alert");
        } else if notice.is_some() {
            shared.webhook_wake.notify_one();
        }
    }
}
