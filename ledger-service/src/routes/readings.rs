//! The readings API for hospital systems, and each reading's evidence bundle.

use crate::auth::{Allowed, Readers};
use crate::error::{ApiError, ApiResult};
use crate::routes::extract::{ApiPath, ApiQuery};
use crate::routes::log::decoded_view;
use crate::state::Shared;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use provenance_core::bundle::BUNDLE_MEDIA_TYPE;
use provenance_core::cose::GatewayEnvelope;
use provenance_core::log_entry::LogEntry;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// The readings routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/readings", get(list))
        .route("/v1/readings/{index}", get(one))
        .route("/v1/readings/{index}/evidence", get(evidence))
}

/// Query by patient or sensor and time.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Patient pseudonym.
    pub patient: Option<String>,
    /// Sensor id.
    pub sensor: Option<String>,
    /// From (inclusive), Unix ms.
    pub from: Option<u64>,
    /// To (exclusive), Unix ms.
    pub to: Option<u64>,
    /// At most this many (default 100, at most 1000).
    pub limit: Option<u32>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
}

/// The opaque cursor after a reading: its measured-at and index.
fn cursor_of(measured_at: u64, idx: u64) -> String {
    crate::routes::extract::cursor_of(measured_at, &idx.to_string())
}

fn parse_cursor(c: &str) -> Option<(u64, u64)> {
    let (at, idx) = crate::routes::extract::parse_cursor(c)?;
    Some((at, idx.parse().ok()?))
}

/// Output format.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FormatQuery {
    /// `fhir` for a FHIR R4 Observation.
    pub format: Option<String>,
}

#[utoipa::path(get, path = "/v1/readings", tag = "readings", security(("bearer" = [])), description = "Readings of a patient pseudonym or a sensor in a time range, oldest first (by measured-at, then log index). A full page carries `next_cursor`: pass it as `cursor` for the next page (null on the last).", params(ListQuery),
    responses((status = 200, description = "Readings", body = serde_json::Value), (status = 400, description = "Neither patient nor sensor given", body = crate::error::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<Readers>,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    if q.patient.is_none() && q.sensor.is_none() {
        return Err(ApiError::bad_request(
            "invalid-query",
            "give patient=<pseudonym> or sensor=<id>",
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let after = match &q.cursor {
        Some(c) => Some(parse_cursor(c).ok_or_else(|| {
            ApiError::bad_request("invalid-query", "cursor: not a cursor this service gave")
        })?),
        None => None,
    };
    let page =
        s.db.reading_page(
            q.patient.as_deref(),
            q.sensor.as_deref(),
            q.from.unwrap_or(0),
            q.to.unwrap_or(i64::MAX as u64),
            after,
            limit,
        )
        .await?;
    // A full page may have a next one.
    let next = (page.len() == limit as usize)
        .then(|| page.last().map(|p| cursor_of(p.measured_at, p.idx)))
        .flatten();
    let mut items = Vec::with_capacity(page.len());
    for p in page {
        if p.leaf.is_empty() {
            // Pruned after an acknowledged export: listed, with the export that holds it.
            let export = p.export.unwrap_or_default();
            items.push(json!({ "index": p.idx, "pruned": true, "export": export }));
            continue;
        }
        let e = LogEntry::from_cbor(&p.leaf).map_err(ApiError::internal)?;
        let mut v = decoded_view(&e);
        if let Value::Object(m) = &mut v {
            m.insert("index".into(), json!(p.idx));
        }
        items.push(v);
    }
    Ok(Json(json!({ "readings": items, "next_cursor": next })))
}

#[utoipa::path(get, path = "/v1/readings/{index}", tag = "readings", security(("bearer" = [])), description = "One reading by log index; `format=fhir` gives a FHIR R4 Observation (vital-signs profile).", params(("index" = u64, Path, description = "Log index"), FormatQuery),
    responses((status = 200, description = "Reading", body = serde_json::Value), (status = 404, description = "No reading at that index", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn one(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<Readers>,
    ApiPath(index): ApiPath<u64>,
    ApiQuery(f): ApiQuery<FormatQuery>,
) -> ApiResult<Json<Value>> {
    let (_, e) = crate::evidence::reading_entry(&s, index).await?;
    match f.format.as_deref() {
        None => {
            let mut v = decoded_view(&e);
            let path = s.db.reading_path(index).await?;
            // The checkpoint that proves it: of its own shard, whose tree holds it at `local`.
            let (shard, local) = s.shard_of_index(index);
            let checkpoint = s
                .shard_checkpoint(&shard)
                .await?
                .filter(|cp| cp.size > local)
                .map(|cp| {
                    json!({ "shard": shard.number, "origin": shard.origin, "index_in_shard": local,
                        "size": cp.size, "root": hex::encode(cp.root) })
                });
            if let Value::Object(m) = &mut v {
                m.insert("index".into(), json!(index));
                m.insert("logged_at_ms".into(), json!(e.logged_at_ms));
                m.insert("gateway_id".into(), json!(path.as_ref().map(|p| &p.0)));
                m.insert("patient".into(), json!(path.and_then(|p| p.1)));
                m.insert("checkpoint".into(), json!(checkpoint));
                m.insert(
                    "evidence".into(),
                    json!(s.url(&format!("/v1/readings/{index}/evidence"))),
                );
            }
            Ok(Json(v))
        }
        Some("fhir") => {
            let env = GatewayEnvelope::decode(&e.body).map_err(ApiError::internal)?;
            Ok(Json(crate::fhir::observation(index, &env, None, None)))
        }
        Some(other) => Err(ApiError::bad_request(
            "invalid-query",
            format!("unknown format {other:?}; use format=fhir"),
        )),
    }
}

#[utoipa::path(get, path = "/v1/readings/{index}/evidence", tag = "readings", security(("bearer" = [])), description = "The evidence bundle (application/vnd.vitals-ledger.evidence+json;version=1): everything an auditor needs to verify the reading offline.", params(("index" = u64, Path, description = "Log index")),
    responses((status = 200, description = "Evidence bundle", body = serde_json::Value, content_type = "application/vnd.vitals-ledger.evidence+json;version=1"), (status = 404, description = "No reading at that index", body = crate::error::Problem, content_type = "application/problem+json"), (status = 409, description = "Not yet in a published checkpoint", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn evidence(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<Readers>,
    ApiPath(index): ApiPath<u64>,
) -> ApiResult<Response> {
    let bundle = crate::evidence::latest(&s, index).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, BUNDLE_MEDIA_TYPE)],
        bundle.to_json(),
    )
        .into_response())
}
