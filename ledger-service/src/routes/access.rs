//! The access trail, for admins: who read or changed which patient data, when, from where (see
//! `access.rs`). Reading it is itself recorded.

use crate::auth::AdminCaller;
use crate::db::access::{AccessFilter, AccessRecord};
use crate::error::{ApiError, ApiResult};
use crate::routes::extract::{cursor_of, cursor_param, ApiQuery};
use crate::state::Shared;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The access trail route.
pub fn router() -> Router<Arc<Shared>> {
    Router::new().route("/v1/access-log", get(list_access))
}

/// Which records.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AccessQuery {
    /// From (inclusive), Unix ms.
    pub from: Option<u64>,
    /// To (exclusive), Unix ms.
    pub to: Option<u64>,
    /// Only requests naming this patient pseudonym.
    pub patient: Option<String>,
    /// Only requests with this token (`tok_…`).
    pub token: Option<String>,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
}

/// A page of the trail.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct AccessPage {
    /// Oldest first.
    pub records: Vec<AccessRecord>,
    /// Pass as `cursor` for the next page (null on the last).
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/access-log", tag = "access", security(("bearer" = [])),
    description = "The access trail of patient data (HIPAA §164.312(b)), oldest first: every request by an identified caller to readings, evidence, alerts, patients' limits, exports and log entries — who (token id, name, role), what (method, path, query, patient), when, from where, and the status. Append-only. Records are written within ~50 ms of the answer.",
    params(AccessQuery),
    responses((status = 200, description = "Records", body = AccessPage),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_access(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiQuery(q): ApiQuery<AccessQuery>,
) -> ApiResult<Json<AccessPage>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let after = cursor_param(q.cursor.as_deref())?.map(|(id, _)| id);
    for (name, v) in [("patient", &q.patient), ("token", &q.token)] {
        if v.as_ref()
            .is_some_and(|v| v.is_empty() || v.chars().count() > 64)
        {
            return Err(ApiError::bad_request(
                "invalid-query",
                format!("{name}: 1 to 64 characters"),
            ));
        }
    }
    let filter = AccessFilter {
        from: q.from.unwrap_or(0),
        to: q.to.unwrap_or(i64::MAX as u64).min(i64::MAX as u64),
        patient: q.patient,
        token_id: q.token,
        after,
    };
    let records = s.db.access_page(&filter, limit).await?;
    let next = (records.len() == limit as usize)
        .then(|| records.last().map(|r| cursor_of(r.id, "access")))
        .flatten();
    Ok(Json(AccessPage {
        records,
        next_cursor: next,
    }))
}
