//! What the web app's clinical pages read: who the caller is, the ward overview (every assigned
//! patient with the latest value of each vital sign, the aggregate NEWS2 score and the
//! unresolved alerts) and a patient's chart data (each vital sign's values over a range,
//! decimated into time buckets, with the NEWS2 bands and the alerts of the range).

use crate::alerts::{news2_aggregate, news2_bands, news2_severity, NEWS2};
use crate::auth::{AlertReaders, Allowed, Caller};
use crate::error::{ApiError, ApiResult};
use crate::routes::alerts::AlertOut;
use crate::routes::extract::{ApiPath, ApiQuery};
use crate::state::{now_ms, Shared};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use provenance_core::cert::Role as DeviceRole;
use provenance_core::reading::VITALS;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The ward and chart routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/me", get(me))
        .route("/v1/ward", get(ward))
        .route("/v1/patients/{patient}/series", get(series))
}

#[utoipa::path(get, path = "/v1/me", tag = "app", security(("bearer" = [])),
    description = "The calling token: its role, name and scope (a gateway token's gateway, a household token's household); the web app shows the pages of that role.",
    responses((status = 200, description = "The caller", body = serde_json::Value),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn me(caller: Caller) -> Json<Value> {
    Json(json!({
        "role": caller.role.as_str(),
        "name": caller.name,
        "token_id": caller.token_id,
        "gateway": (caller.role != crate::auth::Role::Household).then_some(&caller.gateway),
        "household": (caller.role == crate::auth::Role::Household).then_some(&caller.gateway),
    }))
}

/// Every patient a sensor is assigned to now, with those sensors (sorted).
pub(crate) fn assigned_patients(s: &Shared, now: u64) -> BTreeMap<String, Vec<String>> {
    let registry = s.registry();
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, d) in registry.devices() {
        if d.role != DeviceRole::Sensor {
            continue;
        }
        // The assignment in force: the last one logged that has started.
        if let Some(a) = d.assignments.iter().rev().find(|a| a.from_ms <= now) {
            out.entry(a.pseudonym.clone()).or_default().push(id.clone());
        }
    }
    out
}

#[utoipa::path(get, path = "/v1/ward", tag = "app", security(("bearer" = [])),
    description = "The ward overview: every patient a sensor is assigned to (and every patient with an unresolved alert), by pseudonym, a page at a time (`next_after` continues it), with the latest value of each vital sign and its age, the aggregate NEWS2 score (when all five scored vital signs are recent) and the unresolved alerts, most severe first. Poll it for live updates.",
    params(WardQuery),
    responses((status = 200, description = "The ward", body = serde_json::Value),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin, clinician or auditor token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn ward(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<AlertReaders>,
    ApiQuery(q): ApiQuery<WardQuery>,
) -> ApiResult<Json<Value>> {
    let limit = q.limit.unwrap_or(200);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid-query",
            "`limit` is 1 to 1000",
        ));
    }
    let now = now_ms();
    let patients = assigned_patients(&s, now);
    let mut alerts: BTreeMap<String, Vec<crate::alerts::Alert>> = BTreeMap::new();
    for a in s.db.unresolved_alerts().await? {
        alerts.entry(a.patient.clone()).or_default().push(a);
    }
    // Every patient with a sensor, and every patient whose sensors moved on but whose alerts
    // are still unresolved, by pseudonym; one page of them.
    let names: std::collections::BTreeSet<&String> = patients.keys().chain(alerts.keys()).collect();
    let total = names.len();
    let page: Vec<String> = names
        .into_iter()
        .filter(|p| q.after.as_ref().is_none_or(|a| p.as_str() > a.as_str()))
        .take(limit as usize + 1)
        .cloned()
        .collect();
    let more = page.len() > limit as usize;
    let page = &page[..page.len().min(limit as usize)];
    let mut out = Vec::new();
    for patient in page {
        let Some(sensors) = patients.get(patient) else {
            let open = alerts.remove(patient).unwrap_or_default();
            let worst = open.iter().map(|a| a.severity).max().unwrap_or(0);
            out.push(json!({
                "patient": patient, "sensors": [], "vitals": [],
                "news2": { "score": null, "level": null, "scored": 0 },
                "alert_level": level_name(worst),
                "alerts": open.into_iter().map(|a| AlertOut::new(a, &s)).collect::<Vec<_>>(),
            }));
            continue;
        };
        let mut latest = BTreeMap::new();
        let mut vitals = Vec::new();
        for v in VITALS {
            let Some(l) = s.db.latest_value(patient, v.loinc).await? else {
                continue;
            };
            latest.insert(v.loinc, (l.value, l.measured_at));
            vitals.push(json!({
                "loinc": v.loinc, "name": v.name, "unit": v.unit, "value": l.value,
                "measured_at_ms": l.measured_at, "age_ms": now.saturating_sub(l.measured_at),
                "reading_index": l.idx,
                "news2_subscore": crate::alerts::news2_subscore(v.loinc, l.value),
            }));
        }
        let newest = latest.values().map(|(_, t)| *t).max().unwrap_or(0);
        let score = news2_aggregate(|p| latest.get(p).copied(), newest, s.news2_window_ms);
        let mut open = alerts.remove(patient).unwrap_or_default();
        open.sort_by(|a, b| {
            b.severity
                .cmp(&a.severity)
                .then(a.opened_at.cmp(&b.opened_at))
        });
        let worst = open.iter().map(|a| a.severity).max().unwrap_or(0);
        out.push(json!({
            "patient": patient,
            "sensors": sensors,
            "vitals": vitals,
            "news2": {
                "score": score,
                "level": score.map(|s| level_name(news2_severity(s))),
                "scored": crate::alerts::NEWS2_PARAMS.iter().filter(|p| latest.contains_key(*p)).count(),
            },
            "alert_level": level_name(worst),
            "alerts": open.into_iter().map(|a| AlertOut::new(a, &s)).collect::<Vec<_>>(),
        }));
    }
    Ok(Json(json!({
        "now_ms": now,
        "news2_window_ms": s.news2_window_ms,
        "patients_total": total,
        "next_after": if more { page.last().cloned() } else { None },
        "patients": out,
    })))
}

/// A page of the ward.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WardQuery {
    /// At most this many patients (default 200, 1 to 1000), by pseudonym.
    pub limit: Option<u32>,
    /// The page after this pseudonym (the previous page's `next_after`).
    pub after: Option<String>,
}

/// An alert level's name (severity 2 urgent, 3 emergency; 0 none).
fn level_name(severity: u8) -> &'static str {
    match severity {
        0 => "none",
        1 | 2 => "urgent",
        _ => "emergency",
    }
}

/// A chart range.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SeriesQuery {
    /// From (inclusive), Unix ms.
    pub from: u64,
    /// To (exclusive), Unix ms; after `from`, at most 31 days later.
    pub to: u64,
    /// At most this many buckets per vital sign (default 1500, 10 to 5000): a range with fewer
    /// readings than buckets comes back reading by reading.
    pub points: Option<u32>,
}

/// The longest chart range, ms (31 days).
pub const MAX_RANGE_MS: u64 = 31 * 24 * 3600 * 1000;

/// One vital sign's values over the range, as parallel arrays (what a chart library takes).
#[derive(Serialize, utoipa::ToSchema)]
pub struct SeriesOut {
    /// LOINC code.
    pub loinc: &'static str,
    /// The vital sign's name.
    pub name: &'static str,
    /// UCUM unit.
    pub unit: &'static str,
    /// Each bucket's first measured-at, ms.
    pub t: Vec<u64>,
    /// Mean value.
    pub mean: Vec<f64>,
    /// Smallest value.
    pub min: Vec<f64>,
    /// Largest value.
    pub max: Vec<f64>,
    /// Readings in the bucket.
    pub count: Vec<u64>,
    /// The bucket's last reading's log index.
    pub index: Vec<u64>,
    /// The NEWS2 bands (upper bound, sub-score), low to high; absent for unscored signs.
    pub bands: Option<Vec<(Option<f64>, u8)>>,
    /// Readings in the range.
    pub readings: u64,
}

#[utoipa::path(get, path = "/v1/patients/{patient}/series", tag = "app", security(("bearer" = [])),
    description = "A patient's chart data: each vital sign's values measured in [from, to), in at most `points` time buckets of equal width (mean, min, max, count and the last reading's index each; a bucket with no reading is absent, so a gap stays a gap), the NEWS2 bands, and the patient's alerts that were unresolved at some time in the range (with when they opened and were resolved).",
    params(("patient" = String, Path, description = "Patient pseudonym"), SeriesQuery),
    responses((status = 200, description = "The series", body = serde_json::Value),
        (status = 400, description = "A bad range", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin, clinician or auditor token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn series(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<AlertReaders>,
    ApiPath(patient): ApiPath<String>,
    ApiQuery(q): ApiQuery<SeriesQuery>,
) -> ApiResult<Json<Value>> {
    if patient.is_empty() || patient.len() > 128 || patient.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid-patient",
            "a patient pseudonym is 1 to 128 characters without control characters",
        ));
    }
    if q.to <= q.from {
        return Err(ApiError::bad_request(
            "invalid-range",
            "`to` must be after `from`",
        ));
    }
    if q.to - q.from > MAX_RANGE_MS {
        return Err(ApiError::bad_request(
            "invalid-range",
            format!("a chart covers at most {MAX_RANGE_MS} ms (31 days)"),
        ));
    }
    let points = u64::from(q.points.unwrap_or(1500));
    if !(10..=5000).contains(&points) {
        return Err(ApiError::bad_request(
            "invalid-points",
            "`points` is 10 to 5000",
        ));
    }
    let bucket_ms = (q.to - q.from).div_ceil(points).max(1);
    let mut series = Vec::new();
    let mut all = s.db.series(&patient, q.from, q.to, bucket_ms).await?;
    for v in VITALS {
        let Some(k) = crate::db::charts::value_index(v.loinc) else {
            continue;
        };
        let buckets = std::mem::take(&mut all[k]);
        if buckets.is_empty() {
            continue;
        }
        let mut out = SeriesOut {
            loinc: v.loinc,
            name: v.name,
            unit: v.unit,
            t: Vec::with_capacity(buckets.len()),
            mean: Vec::with_capacity(buckets.len()),
            min: Vec::with_capacity(buckets.len()),
            max: Vec::with_capacity(buckets.len()),
            count: Vec::with_capacity(buckets.len()),
            index: Vec::with_capacity(buckets.len()),
            bands: news2_bands(v.loinc).map(<[_]>::to_vec),
            readings: 0,
        };
        for b in buckets {
            out.t.push(b.first_at);
            out.mean.push(b.mean);
            out.min.push(b.min);
            out.max.push(b.max);
            out.count.push(b.count);
            out.index.push(b.idx);
            out.readings += b.count;
        }
        series.push(out);
    }
    // The patient's alerts unresolved at some time in the range (newest 500 changes).
    let alerts: Vec<Value> = s
        .db
        .alerts_page(None, Some(&patient), None, 500)
        .await?
        .into_iter()
        .filter(|a| {
            a.opened_at < q.to
                && (a.status != crate::alerts::Status::Resolved || a.updated_at >= q.from)
        })
        .map(|a| {
            let resolved_at = (a.status == crate::alerts::Status::Resolved).then_some(a.updated_at);
            let mut v = serde_json::to_value(AlertOut::new(a, &s)).unwrap_or_default();
            v["resolved_at_ms"] = json!(resolved_at);
            v
        })
        .collect();
    Ok(Json(json!({
        "patient": patient,
        "from": q.from,
        "to": q.to,
        "bucket_ms": bucket_ms,
        "series": series,
        "alerts": alerts,
        "news2_parameter": NEWS2,
    })))
}
