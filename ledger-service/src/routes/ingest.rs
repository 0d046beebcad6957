//! `POST /v1/ingest`: a batch of gateway envelopes, each answered on its own.
//!
//! Pipeline per batch: decode every envelope; check it against the registry (keys, binding,
//! revocation, time plausibility); verify all signatures of the survivors in one Ed25519 batch
//! (falling back to single checks to name the bad ones); hand the rest to the sequencer, which
//! answers accepted (index and leaf hash), duplicate (the earlier receipt) or equivocation.
//! Nothing rejected is stored as a reading; every rejection is kept in the audit table.
//!
//! Body: `application/cbor` (an array of byte strings, each one envelope) or `application/json`
//! (`{"envelopes": ["<base64>", …]}`), at most [`MAX_ITEMS`] envelopes.

use crate::auth::GatewayCaller;
use crate::error::{ApiError, ApiResult};
use crate::registry::Reject;
use crate::routes::extract::body_error;
use crate::sequencer::{Candidate, Outcome, Work};
use crate::state::{now_ms, Shared};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use provenance_core::batch::BatchError;
use provenance_core::cose::GatewayEnvelope;
use provenance_core::keys::BatchVerifier;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// Most envelopes in one request.
pub const MAX_ITEMS: usize = provenance_core::batch::MAX_BATCH_ITEMS;
/// Longest item of a CBOR batch (an envelope over `MAX_ENVELOPE_LEN` is then refused on its own).
const MAX_ITEM_LEN: usize = 64 * 1024;
/// Largest request body.
pub const MAX_BODY: usize = 2000 * 4200;

/// The ingest route.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/ingest", post(ingest))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

/// One item's answer.
#[derive(Debug, Serialize, Deserialize, Clone, PartialEq, Eq, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ItemResult {
    /// Logged now.
    Accepted {
        /// Log index.
        index: u64,
        /// RFC 9162 leaf hash, base64.
        leaf_hash: String,
    },
    /// Logged before (same signed reading): the earlier receipt.
    Duplicate {
        /// Log index.
        index: u64,
        /// RFC 9162 leaf hash, base64.
        leaf_hash: String,
    },
    /// Not logged.
    Rejected {
        /// Stable reason code.
        reason: String,
        /// Explanation.
        detail: String,
    },
}

/// The answer to a batch.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct IngestResponse {
    /// One result per envelope, in order.
    pub results: Vec<ItemResult>,
    /// How many were accepted.
    pub accepted: usize,
    /// How many were duplicates.
    pub duplicates: usize,
    /// How many were rejected.
    pub rejected: usize,
}

/// The JSON form of a batch (the CBOR form is an array of byte strings).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonBatch {
    /// Gateway envelopes (tagged COSE_Sign1), base64.
    pub envelopes: Vec<String>,
}

/// The request body, parsed into envelopes.
pub(crate) struct Envelopes(Vec<Vec<u8>>);

impl<S: Send + Sync> FromRequest<S> for Envelopes {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let ct = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        crate::routes::extract::check_declared_length(&req, MAX_BODY)?;
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| body_error(&e.body_text()))?;
        let items: Vec<Vec<u8>> = match ct.as_str() {
            "application/cbor" => {
                // Counted and bounded before anything is allocated (provenance-core::batch).
                match provenance_core::batch::decode(&body, MAX_ITEMS, MAX_ITEM_LEN) {
                    Ok(items) => items.into_iter().map(<[u8]>::to_vec).collect(),
                    Err(BatchError::Empty) => {
                        return Err(ApiError::bad_request("empty-batch", "the batch holds no envelopes"))
                    }
                    Err(e @ BatchError::TooMany { .. }) => {
                        return Err(ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "batch-too-large", e.to_string()))
                    }
                    Err(e) => return Err(ApiError::bad_request("invalid-body", e.to_string())),
                }
            }
            "application/json" => {
                let batch: JsonBatch = serde_json::from_slice(&body)
                    .map_err(|e| ApiError::bad_request("invalid-body", format!("expected {{\"envelopes\": [base64…]}}: {e}")))?;
                batch
                    .envelopes
                    .iter()
                    .map(|s| B64.decode(s).map_err(|_| ApiError::bad_request("invalid-body", "an envelope is not base64")))
                    .collect::<Result<_, _>>()?
            }
            _ => {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported-media-type",
                    "send application/cbor (array of envelopes) or application/json ({\"envelopes\": [...]})",
                ))
            }
        };
        if items.is_empty() {
            return Err(ApiError::bad_request(
                "empty-batch",
                "the batch holds no envelopes",
            ));
        }
        if items.len() > MAX_ITEMS {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "batch-too-large",
                format!("at most {MAX_ITEMS} envelopes per request"),
            ));
        }
        Ok(Envelopes(items))
    }
}

/// Decodes and checks a batch, then verifies all signatures together: returns per item either a
/// candidate for the sequencer or a rejection.
fn check_batch(
    shared: &Shared,
    items: Vec<Vec<u8>>,
    now: u64,
) -> Vec<Result<Candidate, (Reject, String)>> {
    let registry = shared.registry();
    let mut out: Vec<Result<Candidate, (Reject, String)>> = Vec::with_capacity(items.len());
    let mut batch = BatchVerifier::new();
    let mut owners: Vec<(usize, bool)> = Vec::new(); // (item, is_gateway_layer)
    for bytes in items {
        let env = match GatewayEnvelope::decode(&bytes) {
            Ok(e) => e,
            Err(e) => {
                out.push(Err((Reject::MalformedEnvelope, e.to_string())));
                continue;
            }
        };
        let facts = match crate::registry::precheck(&registry, &env, now, shared.time_policy) {
            Ok(f) => f,
            Err(r) => {
                out.push(Err((r, r.description().into())));
                continue;
            }
        };
        let i = out.len();
        let (m, s) = env.signed_data();
        batch.push(facts.gateway_key, m, s);
        owners.push((i, true));
        let (m, s) = env.sensor.signed_data();
        batch.push(facts.sensor_key, m, s);
        owners.push((i, false));
        let r = &env.sensor.reading;
        out.push(Ok(Candidate {
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
        }));
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
    out
}

#[utoipa::path(post, path = "/v1/ingest", tag = "ingest", security(("bearer" = [])),
    description = "Submit a batch of gateway envelopes (up to 2000). Body: `application/cbor`, an array of byte strings, or `application/json` as below. Each item is answered: accepted (log index and leaf hash, after the batch is durably committed), duplicate (the earlier receipt) or rejected with a stable reason. If every item is rejected the answer is 422 problem+json carrying the results.",
    request_body(content = JsonBatch, content_type = "application/json"),
    responses((status = 200, description = "Per-item results", body = IngestResponse),
        (status = 400, description = "Malformed body or empty batch", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a gateway token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or batch too large", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Every envelope was rejected", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable; retry", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn ingest(
    State(s): State<Arc<Shared>>,
    _caller: GatewayCaller,
    Envelopes(items): Envelopes,
) -> ApiResult<Response> {
    let now = now_ms();
    let hashes: Vec<Vec<u8>> = items.iter().map(|b| Sha256::digest(b).to_vec()).collect();
    let shared = Arc::clone(&s);
    let checked = tokio::task::spawn_blocking(move || check_batch(&shared, items, now))
        .await
        .map_err(ApiError::internal)?;

    let mut candidates = Vec::new();
    let mut positions = Vec::new();
    let mut results: Vec<Option<ItemResult>> = vec![None; checked.len()];
    let mut rejections = Vec::new();
    for (i, c) in checked.into_iter().enumerate() {
        match c {
            Ok(c) => {
                positions.push(i);
                candidates.push(c);
            }
            Err((reason, detail)) => {
                rejections.push((reason.code().to_string(), detail.clone(), hashes[i].clone()));
                results[i] = Some(ItemResult::Rejected {
                    reason: reason.code().into(),
                    detail,
                });
            }
        }
    }
    if !candidates.is_empty() {
        let keys: Vec<(String, u64)> = candidates
            .iter()
            .map(|c| (c.sensor_id.clone(), c.seq))
            .collect();
        let outcomes = s.sequence(|tx| Work::Readings(candidates, tx)).await?;
        for ((pos, outcome), (sensor, seq)) in positions.into_iter().zip(outcomes).zip(keys) {
            results[pos] = Some(match outcome {
                Outcome::Accepted(r) => ItemResult::Accepted {
                    index: r.index,
                    leaf_hash: B64.encode(r.leaf_hash),
                },
                Outcome::Duplicate(r) => ItemResult::Duplicate {
                    index: r.index,
                    leaf_hash: B64.encode(r.leaf_hash),
                },
                Outcome::Refused(reason) => {
                    rejections.push((
                        reason.code().into(),
                        reason.description().into(),
                        hashes[pos].clone(),
                    ));
                    ItemResult::Rejected {
                        reason: reason.code().into(),
                        detail: reason.description().into(),
                    }
                }
                Outcome::Equivocation(existing) => {
                    tracing::warn!(sensor = %sensor, seq, existing_index = existing, "equivocation: a different reading with a logged sequence number");
                    if let Err(e) =
                        s.db.insert_security_alert(
                            now,
                            "equivocation",
                            &sensor,
                            seq,
                            existing,
                            &hashes[pos],
                        )
                        .await
                    {
                        tracing::error!(error = %e, "cannot record security alert");
                    }
                    let detail = format!("sensor {sensor} already logged a different reading with sequence number {seq} (index {existing})");
                    rejections.push((
                        Reject::Equivocation.code().into(),
                        detail.clone(),
                        hashes[pos].clone(),
                    ));
                    ItemResult::Rejected {
                        reason: Reject::Equivocation.code().into(),
                        detail,
                    }
                }
            });
        }
    }
    if let Err(e) = s.db.insert_rejections(now, &rejections).await {
        tracing::error!(error = %e, "cannot record rejections");
    }
    let results: Vec<ItemResult> = results
        .into_iter()
        .map(|r| {
            r.unwrap_or(ItemResult::Rejected {
                reason: "internal".into(),
                detail: "no result".into(),
            })
        })
        .collect();
    let (mut accepted, mut duplicates, mut rejected) = (0, 0, 0);
    for r in &results {
        match r {
            ItemResult::Accepted { .. } => {
                accepted += 1;
                s.metrics.count("accepted");
            }
            ItemResult::Duplicate { .. } => {
                duplicates += 1;
                s.metrics.count("duplicate");
            }
            ItemResult::Rejected { reason, .. } => {
                rejected += 1;
                s.metrics.count(reason);
            }
        }
    }
    let body = IngestResponse {
        results,
        accepted,
        duplicates,
        rejected,
    };
    if accepted + duplicates == 0 {
        let first = match &body.results[0] {
            ItemResult::Rejected { reason, detail } => format!("{reason}: {detail}"),
            _ => String::new(),
        };
        let kind = match &body.results[0] {
            ItemResult::Rejected { reason, .. } if body.results.len() == 1 => {
                Reject::from_code(reason).map_or("ingest-rejected", Reject::problem_type)
            }
            _ => "ingest-rejected",
        };
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            kind,
            format!("every envelope was rejected; first: {first}"),
        )
        .with(json!({ "results": body.results, "rejected": body.rejected })));
    }
    Ok((StatusCode::OK, Json(body)).into_response())
}
