//! `POST /v1/ingest`: a batch of gateway envelopes, each answered on its own. The pipeline is
//! the use case in `crate::ingest`; this module parses the body and renders the outcomes.
//!
//! Body: `application/cbor` (an array of byte strings, each one envelope) or `application/json`
//! (`{"envelopes": ["<base64>", …]}`), at most [`MAX_ITEMS`] envelopes.

use crate::auth::GatewayCaller;
use crate::error::{ApiError, ApiResult};
use crate::ingest::{IngestError, ItemOutcome};
use crate::registry::Reject;
use crate::routes::extract::body_error;
use crate::state::{now_ms, Shared};
use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use provenance_core::batch::BatchError;
use serde::{Deserialize, Serialize};
use serde_json::json;
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

#[utoipa::path(post, path = "/v1/ingest", tag = "ingest", security(("bearer" = [])),
    description = "Submit a batch of gateway envelopes (up to 2000). Body: `application/cbor`, an array of byte strings, or `application/json` as below. Each item is answered: accepted (log index and leaf hash, after the batch is durably committed), duplicate (the earlier receipt) or rejected with a stable reason. If every item is rejected the answer is 422 problem+json carrying the results.",
    request_body(content = JsonBatch, content_type = "application/json"),
    responses((status = 200, description = "Per-item results", body = IngestResponse),
        (status = 400, description = "Malformed body or empty batch", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a gateway token (a gateway token bound to one gateway gets `gateway_not_token_holder` per item for another gateway's envelopes)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 413, description = "Body or batch too large", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 415, description = "Unsupported content type", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Every envelope was rejected", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Storage unavailable; retry", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn ingest(
    State(s): State<Arc<Shared>>,
    GatewayCaller(caller): GatewayCaller,
    Envelopes(items): Envelopes,
) -> ApiResult<Response> {
    let only = caller.bound_gateway().map(str::to_string);
    let outcomes = crate::ingest::ingest(&s, items, now_ms(), only)
        .await
        .map_err(|e| match e {
            IngestError::Sequencer(e) => ApiError::from(e),
            e @ IngestError::Check(_) => ApiError::internal(e),
        })?;
    let results: Vec<ItemResult> = outcomes
        .into_iter()
        .map(|o| match o {
            ItemOutcome::Accepted(r) => ItemResult::Accepted {
                index: r.index,
                leaf_hash: B64.encode(r.leaf_hash),
            },
            ItemOutcome::Duplicate(r) => ItemResult::Duplicate {
                index: r.index,
                leaf_hash: B64.encode(r.leaf_hash),
            },
            ItemOutcome::Rejected { reason, detail } => ItemResult::Rejected {
                reason: reason.code().into(),
                detail,
            },
        })
        .collect();
    let count = |f: fn(&ItemResult) -> bool| results.iter().filter(|r| f(r)).count();
    let body = IngestResponse {
        accepted: count(|r| matches!(r, ItemResult::Accepted { .. })),
        duplicates: count(|r| matches!(r, ItemResult::Duplicate { .. })),
        rejected: count(|r| matches!(r, ItemResult::Rejected { .. })),
        results,
    };
    if body.accepted + body.duplicates == 0 {
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
