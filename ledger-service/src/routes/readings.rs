//! The readings API for hospital systems, and each reading's evidence bundle.

use crate::auth::{Caller, READERS};
use crate::error::{ApiError, ApiResult};
use crate::routes::extract::{ApiPath, ApiQuery};
use crate::routes::log::decoded_view;
use crate::state::Shared;
use crate::tiles::TileSet;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use provenance_core::bundle::{EvidenceBundle, ProvedEntry, SubjectProof, BUNDLE_MEDIA_TYPE};
use provenance_core::cose::GatewayEnvelope;
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::merkle;
use provenance_core::registry_state::RegistryState;
use provenance_core::tlog_proof::TlogProof;
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
}

/// Output format.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FormatQuery {
    /// `fhir` for a FHIR R4 Observation.
    pub format: Option<String>,
}

/// 410 Gone for a reading whose payload was pruned, naming the export that holds it.
pub async fn pruned(s: &Shared, index: u64) -> ApiError {
    let export =
        s.db.pruned_by(index)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
    ApiError::new(
        StatusCode::GONE,
        "reading-pruned",
        format!(
            "the payload of reading {index} was pruned after export {export} was archived; \
             its leaf hash stays in the log, so proofs still verify"
        ),
    )
    .with(serde_json::json!({ "export": export }))
}

async fn reading_entry(s: &Shared, index: u64) -> ApiResult<(Vec<u8>, LogEntry)> {
    let (kind, leaf) =
        s.db.entry(index)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no entry {index}")))?;
    if kind != EntryKind::Reading as i16 {
        return Err(ApiError::not_found(format!(
            "entry {index} is not a reading"
        )));
    }
    if leaf.is_empty() {
        return Err(pruned(s, index).await);
    }
    let e = LogEntry::from_cbor(&leaf).map_err(ApiError::internal)?;
    Ok((leaf, e))
}

#[utoipa::path(get, path = "/v1/readings", tag = "readings", security(("bearer" = [])), description = "Readings of a patient pseudonym or a sensor in a time range, oldest first.", params(ListQuery),
    responses((status = 200, description = "Readings", body = serde_json::Value), (status = 400, description = "Neither patient nor sensor given", body = crate::error::Problem, content_type = "application/problem+json"), (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list(
    State(s): State<Arc<Shared>>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    if q.patient.is_none() && q.sensor.is_none() {
        return Err(ApiError::bad_request(
            "invalid-query",
            "give patient=<pseudonym> or sensor=<id>",
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let idx =
        s.db.reading_indices(
            q.patient.as_deref(),
            q.sensor.as_deref(),
            q.from.unwrap_or(0),
            q.to.unwrap_or(i64::MAX as u64),
            limit,
        )
        .await?;
    let mut items = Vec::with_capacity(idx.len());
    for i in idx {
        let (_, leaf) =
            s.db.entry(i)
                .await?
                .ok_or_else(|| ApiError::internal(format!("indexed reading {i} has no entry")))?;
        if leaf.is_empty() {
            // Pruned after an acknowledged export: listed, with the export that holds it.
            let export = s.db.pruned_by(i).await?.unwrap_or_default();
            items.push(json!({ "index": i, "pruned": true, "export": export }));
            continue;
        }
        let e = LogEntry::from_cbor(&leaf).map_err(ApiError::internal)?;
        let mut v = decoded_view(&e);
        if let Value::Object(m) = &mut v {
            m.insert("index".into(), json!(i));
        }
        items.push(v);
    }
    Ok(Json(json!({ "readings": items })))
}

#[utoipa::path(get, path = "/v1/readings/{index}", tag = "readings", security(("bearer" = [])), description = "One reading by log index; `format=fhir` gives a FHIR R4 Observation (vital-signs profile).", params(("index" = u64, Path, description = "Log index"), FormatQuery),
    responses((status = 200, description = "Reading", body = serde_json::Value), (status = 404, description = "No reading at that index", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn one(
    State(s): State<Arc<Shared>>,
    caller: Caller,
    ApiPath(index): ApiPath<u64>,
    ApiQuery(f): ApiQuery<FormatQuery>,
) -> ApiResult<Json<Value>> {
    caller.require(READERS)?;
    let (_, e) = reading_entry(&s, index).await?;
    match f.format.as_deref() {
        None => {
            let mut v = decoded_view(&e);
            if let Value::Object(m) = &mut v {
                m.insert("index".into(), json!(index));
                m.insert(
                    "evidence".into(),
                    json!(format!("/v1/readings/{index}/evidence")),
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
    caller: Caller,
    ApiPath(index): ApiPath<u64>,
) -> ApiResult<Response> {
    caller.require(READERS)?;
    let (leaf, entry) = reading_entry(&s, index).await?;
    let cp = s
        .latest_checkpoint()
        .filter(|c| c.size > index)
        .ok_or_else(|| ApiError {
            retry_after: Some(1),
            ..ApiError::new(
                StatusCode::CONFLICT,
                "not-yet-checkpointed",
                "the reading is logged but not yet in a published checkpoint",
            )
        })?;
    let registry = s.registry_at(cp.size).await.map_err(ApiError::internal)?;
    let bundle = evidence_bundle(&s, index, &leaf, &entry, &cp.note, cp.size, &registry).await?;
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, BUNDLE_MEDIA_TYPE)],
        bundle.to_json(),
    )
        .into_response())
}

/// The evidence bundle of the reading logged at `index` (its leaf data and entry), proved
/// against the checkpoint `note` of `size` entries.
pub async fn evidence_bundle(
    s: &Shared,
    index: u64,
    leaf: &[u8],
    entry: &LogEntry,
    note: &str,
    size: u64,
    registry: &RegistryState,
) -> ApiResult<EvidenceBundle> {
    let env = GatewayEnvelope::decode(&entry.body).map_err(ApiError::internal)?;
    let Some(gk) = registry.key(&env.kid) else {
        return Err(ApiError::internal(
            "a logged reading's gateway key is missing from the registry",
        ));
    };
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
                .ok_or_else(|| ApiError::internal("registry entry missing"))?;
        let p = TlogProof {
            extra: None,
            index: i,
            hashes: prove(s, &mut set, i, size).await?,
            checkpoint: note.to_string(),
        };
        registry_entries.push(ProvedEntry::new(&leaf_i, &p));
    }
    let bundle = EvidenceBundle {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        log_vkey: s.log_key.to_vkey(),
        reading: ProvedEntry::new(leaf, &reading_proof),
        registry: registry_entries,
        registry_proofs,
    };
    Ok(bundle)
}

/// An inclusion proof at `size`, reusing the tiles already fetched for the bundle.
async fn prove(
    s: &Shared,
    set: &mut TileSet,
    index: u64,
    size: u64,
) -> ApiResult<Vec<merkle::Hash>> {
    s.tiles()
        .with_tiles(set, |r| merkle::inclusion_proof(r, index, size))
        .await?
        .map_err(ApiError::internal)
}
