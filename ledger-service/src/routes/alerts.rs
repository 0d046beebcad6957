//! Clinical alerts for clinicians: list, read with every transition, acknowledge, resolve; and a
//! patient's own alert limits. Changes go through the sequencer (the alerts' one writer), which
//! writes them with their webhook messages in one transaction.

use crate::alerts::{ActionError, Alert, Limit};
use crate::auth::{AlertReaders, Allowed, Clinical};
use crate::db::AlertEventOut;
use crate::error::{ApiError, ApiResult};
use crate::mailbox::AlertWork;
use crate::routes::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::Shared;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The alert routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/alerts", get(list_alerts))
        .route("/v1/alerts/{id}", get(get_alert))
        .route("/v1/alerts/{id}/acknowledge", post(acknowledge))
        .route("/v1/alerts/{id}/resolve", post(resolve))
        .route(
            "/v1/patients/{patient}/alert-limits",
            get(get_limits).put(put_limits),
        )
}

/// An alert as the API shows it.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct AlertOut {
    /// `alrt_…`.
    pub id: String,
    /// Patient pseudonym.
    pub patient: String,
    /// LOINC code, or `news2` for the aggregate score.
    pub parameter: String,
    /// The vital sign's name.
    pub name: String,
    /// open | acknowledged | resolved.
    pub state: String,
    /// 2 urgent, 3 emergency.
    pub severity: u8,
    /// Latest abnormal value (or score).
    pub value: f64,
    /// Its unit (UCUM).
    pub unit: String,
    /// The latest reading that raised or kept it.
    pub reading_index: u64,
    /// That reading's evidence bundle.
    pub evidence: String,
    /// Opened, Unix ms.
    pub opened_at_ms: u64,
    /// Last changed, Unix ms.
    pub updated_at_ms: u64,
    /// Every transition (on `GET /v1/alerts/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<AlertEventOut>>,
}

impl AlertOut {
    /// The alert as the API shows it (its evidence link absolute on the public base URL).
    pub(crate) fn new(a: Alert, s: &Shared) -> Self {
        let (name, unit) = provenance_core::reading::vital(&a.parameter)
            .map_or(("NEWS2 aggregate score", "{score}"), |v| (v.name, v.unit));
        Self {
            evidence: s.url(&format!("/v1/readings/{}/evidence", a.reading_index)),
            id: a.id,
            patient: a.patient,
            parameter: a.parameter,
            name: name.into(),
            state: a.status.as_str().into(),
            severity: a.severity,
            value: a.value,
            unit: unit.into(),
            reading_index: a.reading_index,
            opened_at_ms: a.opened_at,
            updated_at_ms: a.updated_at,
            events: None,
        }
    }
}

/// A page of alerts.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlertList {
    /// Newest change first.
    pub alerts: Vec<AlertOut>,
    /// Pass as `cursor` for the next page (null on the last). An alert that changes between
    /// pages moves to the front.
    pub next_cursor: Option<String>,
}

/// Alert filters.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// open | acknowledged | resolved.
    pub state: Option<String>,
    /// Patient pseudonym.
    pub patient: Option<String>,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/alerts", tag = "alerts", security(("bearer" = [])), description = "Alerts, newest change first, by state and patient.", params(AlertQuery),
    responses((status = 200, description = "Alerts", body = AlertList),
        (status = 400, description = "Bad filter", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_alerts(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<AlertReaders>,
    ApiQuery(q): ApiQuery<AlertQuery>,
) -> ApiResult<Json<AlertList>> {
    if let Some(st) = &q.state {
        if crate::alerts::Status::parse(st).is_none() {
            return Err(ApiError::bad_request(
                "invalid-query",
                "state must be open, acknowledged or resolved",
            ));
        }
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let after = crate::routes::extract::cursor_param(q.cursor.as_deref())?;
    let alerts =
        s.db.alerts_page(
            q.state.as_deref(),
            q.patient.as_deref(),
            after.as_ref().map(|(at, id)| (*at, id.as_str())),
            limit,
        )
        .await?;
    let next = (alerts.len() == limit as usize)
        .then(|| {
            alerts
                .last()
                .map(|a| crate::routes::extract::cursor_of(a.updated_at, &a.id))
        })
        .flatten();
    Ok(Json(AlertList {
        alerts: alerts.into_iter().map(|a| AlertOut::new(a, &s)).collect(),
        next_cursor: next,
    }))
}

fn check_id(id: &str) -> ApiResult<()> {
    let ok =
        id.len() == 29 && id.starts_with("alrt_") && id[5..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("no alert {id:?}")))
    }
}

#[utoipa::path(get, path = "/v1/alerts/{id}", tag = "alerts", security(("bearer" = [])), description = "One alert with every transition (who, when).",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, description = "The alert", body = AlertOut),
        (status = 404, description = "No such alert", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_alert(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<AlertReaders>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AlertOut>> {
    check_id(&id)?;
    let a =
        s.db.alert(&id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no alert {id}")))?;
    let mut out = AlertOut::new(a, &s);
    out.events = Some(s.db.alert_events(&id).await?);
    Ok(Json(out))
}

async fn act(s: &Shared, work: AlertWork) -> ApiResult<Json<AlertOut>> {
    let outcome = s.sequencer.alert(work).await?;
    match outcome {
        Ok(Some(a)) => Ok(Json(AlertOut::new(a, s))),
        Ok(None) => Err(ApiError::internal("the alert action changed no alert")),
        Err(ActionError::NotFound(id)) => {
            Err(ApiError::not_found(format!("no unresolved alert {id}")))
        }
        Err(e @ ActionError::AlreadyAcknowledged(_)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "alert-already-acknowledged",
            e.to_string(),
        )),
    }
}

#[utoipa::path(post, path = "/v1/alerts/{id}/acknowledge", tag = "alerts", security(("bearer" = [])), description = "A clinician has seen the alert (recorded with the token's name). Webhook event `alert.acknowledged`.",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, description = "Acknowledged", body = AlertOut),
        (status = 403, description = "Not a clinician or admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No unresolved alert with that id", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already acknowledged", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn acknowledge(
    State(s): State<Arc<Shared>>,
    Allowed(caller, _): Allowed<Clinical>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AlertOut>> {
    check_id(&id)?;
    act(
        &s,
        AlertWork::Acknowledge {
            id,
            actor: caller.name,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/alerts/{id}/resolve", tag = "alerts", security(("bearer" = [])), description = "A clinician closes the alert. Webhook event `alert.resolved`.",
    params(("id" = String, Path, description = "Alert id")),
    responses((status = 200, description = "Resolved", body = AlertOut),
        (status = 403, description = "Not a clinician or admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No unresolved alert with that id", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn resolve(
    State(s): State<Arc<Shared>>,
    Allowed(caller, _): Allowed<Clinical>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AlertOut>> {
    check_id(&id)?;
    act(
        &s,
        AlertWork::Resolve {
            id,
            actor: caller.name,
        },
    )
    .await
}

/// One vital sign's limits for a patient.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitOut {
    /// LOINC code.
    pub loinc: String,
    /// Alarm at or below (none: no lower limit).
    pub low: Option<f64>,
    /// Alarm at or above (none: no upper limit).
    pub high: Option<f64>,
}

/// A patient's own limits (vital signs not listed follow NEWS2).
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Limits per vital sign. In a `PUT`, a vital sign with neither bound goes back to NEWS2.
    pub limits: Vec<LimitOut>,
}

fn check_patient(p: &str) -> ApiResult<()> {
    if p.is_empty() || p.chars().count() > 64 || p.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid-patient",
            "a patient pseudonym is 1 to 64 characters without control characters",
        ));
    }
    Ok(())
}

#[utoipa::path(get, path = "/v1/patients/{patient}/alert-limits", tag = "alerts", security(("bearer" = [])), description = "A patient's own alert limits.",
    params(("patient" = String, Path, description = "Patient pseudonym")),
    responses((status = 200, description = "Limits", body = Limits)))]
pub(crate) async fn get_limits(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<AlertReaders>,
    ApiPath(patient): ApiPath<String>,
) -> ApiResult<Json<Limits>> {
    check_patient(&patient)?;
    let limits =
        s.db.alert_limits()
            .await?
            .into_iter()
            .filter(|(p, _, _)| *p == patient)
            .map(|(_, loinc, l)| LimitOut {
                loinc,
                low: l.low,
                high: l.high,
            })
            .collect();
    Ok(Json(Limits { limits }))
}

#[utoipa::path(put, path = "/v1/patients/{patient}/alert-limits", tag = "alerts", security(("bearer" = [])), description = "Set a patient's own limits for some vital signs: outside them is an emergency alert, replacing the NEWS2 bands for that vital sign. A vital sign with neither bound goes back to NEWS2.",
    params(("patient" = String, Path, description = "Patient pseudonym")),
    request_body = Limits,
    responses((status = 200, description = "The patient's limits now", body = Limits),
        (status = 400, description = "Unknown vital sign, bounds out of order or not finite", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a clinician or admin token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn put_limits(
    State(s): State<Arc<Shared>>,
    Allowed(caller, _): Allowed<Clinical>,
    ApiPath(patient): ApiPath<String>,
    ApiJson(body): ApiJson<Limits>,
) -> ApiResult<Json<Limits>> {
    check_patient(&patient)?;
    if body.limits.is_empty() || body.limits.len() > 16 {
        return Err(ApiError::bad_request(
            "invalid-limits",
            "give limits for 1 to 16 vital signs",
        ));
    }
    let mut limits = Vec::new();
    for l in body.limits {
        let vital = provenance_core::reading::vital(&l.loinc).ok_or_else(|| {
            ApiError::bad_request(
                "invalid-limits",
                format!("{} is not a vital sign of this system", l.loinc),
            )
        })?;
        if [l.low, l.high].iter().flatten().any(|v| !v.is_finite()) {
            return Err(ApiError::bad_request(
                "invalid-limits",
                "limits must be finite numbers",
            ));
        }
        if let (Some(lo), Some(hi)) = (l.low, l.high) {
            if lo >= hi {
                return Err(ApiError::bad_request(
                    "invalid-limits",
                    format!("{}: low must be below high", vital.loinc),
                ));
            }
        }
        let limit = (l.low.is_some() || l.high.is_some()).then_some(Limit {
            low: l.low,
            high: l.high,
        });
        limits.push((vital.loinc.to_string(), limit));
    }
    s.sequencer
        .alert(AlertWork::Limits {
            patient: patient.clone(),
            limits,
            actor: caller.name.clone(),
        })
        .await?
        .map_err(|e| ApiError::internal(e.to_string()))?;
    get_limits(
        State(s),
        Allowed(caller, std::marker::PhantomData),
        ApiPath(patient),
    )
    .await
}
