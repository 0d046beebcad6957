//! Archival exports, FHIR Bulk Data style (archivist or admin): kick-off → `202` with
//! `Content-Location` → poll (`202` with `X-Progress` and `Retry-After`, then `200` with the
//! manifest) → streamed NDJSON downloads; `DELETE` cancels (not after acknowledgement). A job
//! belongs to whoever requested it (another archivist gets 404; an admin sees every job). The
//! archive acknowledges a download naming the SHA-256 of the manifest it received (final); a
//! second person, an admin other than the acknowledger, approves pruning, after which readings
//! older than the retention period have their payloads pruned (their leaf hashes stay, so every
//! proof still verifies).

use crate::auth::{AdminCaller, Allowed, Archivists, NamedCaller, Role};
use crate::db::ExportJob;
use crate::error::{ApiError, ApiResult};
use crate::routes::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::{now_ms, Shared};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

/// The export routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/fhir/$export", get(export_kick_off))
        .route("/v1/fhir/export-jobs", get(list_exports))
        .route(
            "/v1/fhir/export-jobs/{id}",
            get(export_status).delete(cancel_export),
        )
        .route(
            "/v1/fhir/export-jobs/{id}/files/{*path}",
            get(download_export_file),
        )
        .route(
            "/v1/fhir/export-jobs/{id}/acknowledge",
            post(acknowledge_export),
        )
        .route(
            "/v1/fhir/export-jobs/{id}/approve-pruning",
            post(approve_pruning),
        )
}

/// Kick-off parameters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    /// Resource types, comma-separated: Observation, Device, Provenance (default all).
    #[serde(rename = "_type")]
    pub types: Option<String>,
    /// Only entries logged after this FHIR instant (give the previous export's
    /// `transactionTime` for an incremental pull that starts exactly where it ended).
    #[serde(rename = "_since")]
    pub since: Option<String>,
    /// `application/fhir+ndjson` (the only format).
    #[serde(rename = "_outputFormat")]
    pub output_format: Option<String>,
    /// Only this patient's readings (evidence as one bundle per reading).
    pub patient: Option<String>,
    /// First log index (default 0).
    pub from_index: Option<u64>,
    /// End of the range (exclusive; default: the latest checkpoint's size).
    pub to_index: Option<u64>,
}

fn bad(detail: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid-export-request", detail)
}

fn job_id_ok(id: &str) -> bool {
    id.len() == 28 && id.starts_with("exp_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[utoipa::path(get, path = "/v1/fhir/$export", tag = "exports", security(("bearer" = [])),
    description = "Kick off an export (FHIR Bulk Data). The export is cut at the latest published checkpoint; poll the Content-Location.",
    params(ExportQuery),
    responses((status = 202, description = "Accepted; poll the Content-Location"),
        (status = 400, description = "Bad parameters", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an archivist or admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "No published checkpoint yet", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn export_kick_off(
    State(s): State<Arc<Shared>>,
    Allowed(caller, _): Allowed<Archivists>,
    uri: axum::http::Uri,
    ApiQuery(q): ApiQuery<ExportQuery>,
) -> ApiResult<Response> {
    if let Some(f) = &q.output_format {
        if !["application/fhir+ndjson", "application/ndjson", "ndjson"].contains(&f.as_str()) {
            return Err(bad(format!(
                "_outputFormat {f:?}: only application/fhir+ndjson"
            )));
        }
    }
    let types: Vec<String> = match &q.types {
        None => crate::exports::TYPES
            .iter()
            .map(|t| t.to_string())
            .collect(),
        Some(t) => t.split(',').map(|x| x.trim().to_string()).collect(),
    };
    if types.is_empty()
        || types
            .iter()
            .any(|t| !crate::exports::TYPES.contains(&t.as_str()))
    {
        return Err(bad(format!(
            "_type must list some of {}",
            crate::exports::TYPES.join(", ")
        )));
    }
    if let Some(p) = &q.patient {
        if p.is_empty() || p.chars().count() > 64 || p.chars().any(char::is_control) {
            return Err(bad("patient: a pseudonym of 1 to 64 characters"));
        }
    }
    let since = match &q.since {
        Some(since) => Some(
            crate::fhir::parse_instant(since)
                .ok_or_else(|| bad(format!("_since {since:?} is not a FHIR instant")))?,
        ),
        None => None,
    };
    let request = crate::exports::Request {
        uri: s.url(&uri.to_string()),
        requested_by: caller.name,
        patient: q.patient,
        types,
        from_index: q.from_index,
        to_index: q.to_index,
        since,
    };
    let job = crate::exports::kick_off(&s, request).await?;
    let (from, to) = (job.from_index, job.to_index);
    s.export_wake.notify_one();
    let location = s.url(&format!("/v1/fhir/export-jobs/{}", job.id));
    Ok((
        StatusCode::ACCEPTED,
        [(header::CONTENT_LOCATION, location)],
        Json(json!({ "resourceType": "OperationOutcome", "issue": [{ "severity": "information", "code": "informational",
            "diagnostics": format!("export of log entries [{from}, {to}) queued") }] })),
    )
        .into_response())
}

async fn job_or_404(s: &Shared, id: &str) -> ApiResult<ExportJob> {
    if !job_id_ok(id) {
        return Err(ApiError::not_found(format!("no export job {id:?}")));
    }
    s.db.export_job(id)
        .await?
        .filter(|j| j.state != "cancelled")
        .ok_or_else(|| ApiError::not_found(format!("no export job {id}")))
}

/// The job if the caller requested it or is an admin; 404 otherwise (another archivist's jobs
/// are not even said to exist).
#[utoipa::path(get, path = "/v1/fhir/export-jobs", tag = "exports", security(("bearer" = [])),
    description = "The newest 200 export jobs, newest first, with their progress: the requester's own (an admin sees all).",
    responses((status = 200, description = "Jobs", body = serde_json::Value),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an archivist or admin token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_exports(
    State(s): State<Arc<Shared>>,
    Allowed(caller, _): Allowed<Archivists>,
) -> ApiResult<Json<Value>> {
    let mine = (caller.role != Role::Admin).then_some(caller.name.as_str());
    let jobs: Vec<Value> = s
        .db
        .export_jobs(mine, 200)
        .await?
        .into_iter()
        .map(|j| {
            let total = j.to_index.saturating_sub(j.from_index);
            let done = j.next_index.saturating_sub(j.from_index).min(total);
            json!({
                "id": j.id, "state": j.state, "requested_by": j.requested_by, "patient": j.patient,
                "types": j.types, "from_index": j.from_index, "to_index": j.to_index,
                "entries_done": done, "entries_total": total,
                "created_at_ms": j.created_at, "acknowledged_at_ms": j.acknowledged_at,
                "acknowledged_by": j.acknowledged_by, "prune_approved_at_ms": j.prune_approved_at,
                "error": j.error,
            })
        })
        .collect();
    Ok(Json(json!({ "jobs": jobs })))
}

async fn own_job(s: &Shared, caller: &NamedCaller, id: &str) -> ApiResult<ExportJob> {
    let job = job_or_404(s, id).await?;
    if caller.role == Role::Admin || job.requested_by == caller.name {
        Ok(job)
    } else {
        Err(ApiError::not_found(format!("no export job {id}")))
    }
}

#[utoipa::path(get, path = "/v1/fhir/export-jobs/{id}", tag = "exports", security(("bearer" = [])),
    description = "Export status (the requester's jobs; an admin sees all): 202 with X-Progress and Retry-After while it runs; 200 with the Bulk Data manifest when complete (plus the checkpoint it was cut at and the evidence); 500 with an OperationOutcome if it failed. Until it is acknowledged, the 200 body's SHA-256 (hex, also in `X-Manifest-SHA256`) is what the acknowledgement must name.",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "Complete: the manifest", body = serde_json::Value),
        (status = 202, description = "In progress"),
        (status = 404, description = "No such job, or cancelled", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn export_status(
    State(s): State<Arc<Shared>>,
    Allowed(caller, _): Allowed<Archivists>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Response> {
    let job = own_job(&s, &caller, &id).await?;
    match job.state.as_str() {
        "complete" => {
            let (mut body, digest) = crate::exports::served_manifest(&s, &job)?;
            if let Some(ack) = job.acknowledged_at {
                let mut manifest: Value =
                    serde_json::from_slice(&body).map_err(ApiError::internal)?;
                let ext = &mut manifest["extension"]["https://vitals-ledger.example/fhir/export"];
                ext["acknowledged_at"] = json!(crate::fhir::iso8601(ack));
                ext["acknowledged_by"] = json!(job.acknowledged_by);
                ext["manifest_sha256"] = json!(job.manifest_sha256);
                ext["prune_approved_at"] = json!(job.prune_approved_at.map(crate::fhir::iso8601));
                ext["prune_approved_by"] = json!(job.prune_approved_by);
                body = manifest.to_string().into_bytes();
            }
            let mut r = (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response();
            if let Ok(v) = HeaderValue::from_str(&digest) {
                r.headers_mut().insert("x-manifest-sha256", v);
            }
            Ok(r)
        }
        "failed" => Ok((
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "application/fhir+json")],
            json!({ "resourceType": "OperationOutcome", "issue": [{ "severity": "error", "code": "exception",
                "diagnostics": job.error.unwrap_or_default() }] })
            .to_string(),
        )
            .into_response()),
        _ => {
            let total = job.to_index - job.from_index;
            let done = job.next_index.saturating_sub(job.from_index).min(total);
            let progress: crate::exports::Progress =
                serde_json::from_str(&job.progress).unwrap_or_default();
            let bytes: u64 = progress.files.values().map(|f| f.bytes).sum();
            let resources: u64 = progress.files.values().map(|f| f.count).sum();
            let mut r = StatusCode::ACCEPTED.into_response();
            let h = r.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!(
                "{done} of {total} log entries scanned ({}%), {resources} resources, {bytes} bytes written",
                (done * 100).checked_div(total).unwrap_or(100)
            )) {
                h.insert("x-progress", v);
            }
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            Ok(r)
        }
    }
}

#[utoipa::path(delete, path = "/v1/fhir/export-jobs/{id}", tag = "exports", security(("bearer" = [])),
    description = "Cancel an export (running, or complete and not acknowledged); its files are removed. An acknowledged export cannot be cancelled.",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 202, description = "Cancelled"),
        (status = 409, description = "Acknowledged by the archive", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn cancel_export(
    State(s): State<Arc<Shared>>,
    Allowed(caller, _): Allowed<Archivists>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let job = own_job(&s, &caller, &id).await?;
    if job.acknowledged_at.is_some() {
        return Err(crate::exports::ExportError::Acknowledged(id).into());
    }
    if !s.db.cancel_export(&id, now_ms()).await? {
        // Cancelled or acknowledged in the meantime.
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "export-acknowledged",
            format!("export {id} was cancelled or acknowledged meanwhile"),
        ));
    }
    // A running worker notices at its next chunk and removes what it wrote; a finished job's
    // files go now.
    let _ = std::fs::remove_dir_all(crate::exports::job_dir(&s, &id));
    Ok(StatusCode::ACCEPTED)
}

#[utoipa::path(get, path = "/v1/fhir/export-jobs/{id}/files/{path}", tag = "exports", security(("bearer" = [])),
    description = "Download one output file of a complete export (streamed): NDJSON resources, or the files of the log archive under log/.",
    params(("id" = String, Path, description = "Job id"), ("path" = String, Path, description = "File, e.g. Observation.ndjson or log/manifest.json")),
    responses((status = 200, description = "The file", content_type = "application/fhir+ndjson"),
        (status = 404, description = "No such job or file", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn download_export_file(
    State(s): State<Arc<Shared>>,
    Allowed(caller, _): Allowed<Archivists>,
    ApiPath((id, path)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let job = own_job(&s, &caller, &id).await?;
    if job.state != "complete" {
        return Err(ApiError::not_found("the export is not complete"));
    }
    if !provenance_core::archive::safe_relative_path(&path) {
        return Err(ApiError::not_found(format!("no file {path:?}")));
    }
    let file = tokio::fs::File::open(crate::exports::job_dir(&s, &id).join(&path))
        .await
        .map_err(|_| ApiError::not_found(format!("no file {path:?} in export {id}")))?;
    let len = file.metadata().await.map(|m| m.len()).ok();
    let kind = if path.ends_with(".ndjson") && !path.starts_with("log/") {
        "application/fhir+ndjson"
    } else if path.ends_with(".json") {
        "application/json"
    } else {
        "application/x-ndjson"
    };
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut r = (StatusCode::OK, [(header::CONTENT_TYPE, kind)], body).into_response();
    if let Some(l) = len.and_then(|l| HeaderValue::from_str(&l.to_string()).ok()) {
        r.headers_mut().insert(header::CONTENT_LENGTH, l);
    }
    Ok(r)
}

/// What the archive acknowledges.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckBody {
    /// SHA-256 (64 hex digits) of the manifest body the archive received.
    #[schema(pattern = "^[0-9a-fA-F]{64}$")]
    pub manifest_sha256: String,
}

/// An acknowledgement, as recorded.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct Acknowledged {
    /// The export.
    pub id: String,
    /// When, Unix ms.
    pub acknowledged_at: u64,
    /// Who (token name).
    pub acknowledged_by: String,
    /// The manifest's SHA-256.
    pub manifest_sha256: String,
    /// What happens next: pruning waits for an admin other than the acknowledger.
    pub pruning: String,
}

#[utoipa::path(post, path = "/v1/fhir/export-jobs/{id}/acknowledge", tag = "exports", security(("bearer" = [])),
    description = "The archive confirms it holds the export, naming the SHA-256 of the manifest body it received. Final: an acknowledged export cannot be acknowledged again or cancelled. Nothing is pruned until an admin other than the acknowledger approves (`approve-pruning`).",
    params(("id" = String, Path, description = "Job id")), request_body = AckBody,
    responses((status = 200, description = "Acknowledged", body = Acknowledged),
        (status = 400, description = "Not a SHA-256", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job (of this requester)", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not complete, acknowledged already, or another manifest digest", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn acknowledge_export(
    State(s): State<Arc<Shared>>,
    Allowed(caller, _): Allowed<Archivists>,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<AckBody>,
) -> ApiResult<Json<Acknowledged>> {
    own_job(&s, &caller, &id).await?;
    let d = &body.manifest_sha256;
    if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(
            "invalid-acknowledgement",
            "manifest_sha256: the SHA-256 of the manifest body, 64 hex digits",
        ));
    }
    let job = crate::exports::acknowledge(&s, &id, &caller.name, d, now_ms()).await?;
    tracing::info!(export = %id, by = %caller.token_id, "export acknowledged by the archive");
    Ok(Json(Acknowledged {
        id,
        acknowledged_at: job.acknowledged_at.unwrap_or_default(),
        acknowledged_by: caller.name,
        manifest_sha256: job.manifest_sha256.unwrap_or_default(),
        pruning: "awaiting the approval of an admin other than the acknowledger".into(),
    }))
}

/// What an approval did.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct PruningApproved {
    /// The export.
    pub id: String,
    /// Readings whose payload is now pruned (held by this export, past retention).
    pub pruned: u64,
}

#[utoipa::path(post, path = "/v1/fhir/export-jobs/{id}/approve-pruning", tag = "exports", security(("bearer" = [])),
    description = "The second person: an admin other than the acknowledger approves pruning an acknowledged export. Readings of it measured longer ago than the retention period then have their payloads pruned: they answer 410 naming this export, while their leaf hashes stay and every proof still verifies.",
    params(("id" = String, Path, description = "Job id")),
    responses((status = 200, description = "Approved; what was pruned", body = PruningApproved),
        (status = 403, description = "Not an admin, or the acknowledger", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such job", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not acknowledged, or approved already", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn approve_pruning(
    State(s): State<Arc<Shared>>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<PruningApproved>> {
    job_or_404(&s, &id).await?;
    let pruned = crate::exports::approve_pruning(&s, &id, &caller.name, now_ms()).await?;
    tracing::info!(export = %id, pruned, by = %caller.token_id, "pruning approved");
    Ok(Json(PruningApproved { id, pruned }))
}
