//! Security alerts (admin and auditor): equivocation, revoked keys used, runs of bad signatures
//! through one gateway (see `security.rs`).

use crate::auth::{Allowed, SecurityReaders};
use crate::db::security::SecurityAlert;
use crate::error::{ApiError, ApiResult};
use crate::routes::extract::{cursor_of, cursor_param, ApiQuery};
use crate::state::Shared;
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The kinds of security alert.
pub const KINDS: [&str; 4] = [
    "equivocation",
    "revoked_key_used",
    "bad_signatures",
    "split_view",
];

/// The security alert route.
pub fn router() -> Router<Arc<Shared>> {
    Router::new().route("/v1/security-alerts", get(list_security_alerts))
}

/// Which alerts.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SecurityQuery {
    /// Only this kind: equivocation, revoked_key_used, bad_signatures or split_view.
    pub kind: Option<String>,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
}

/// A page of security alerts.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct SecurityPage {
    /// Oldest first.
    pub alerts: Vec<SecurityAlert>,
    /// Pass as `cursor` for the next page (null on the last).
    pub next_cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/security-alerts", tag = "security", security(("bearer" = [])),
    description = "Security alerts, oldest first: `equivocation` (a sensor signed two readings with one sequence number), `revoked_key_used` (an envelope named a revoked key; one alert per key and hour), `bad_signatures` (signatures that do not verify through one gateway key; raised at the fifth in an hour), `split_view` (a witness refused a checkpoint as inconsistent with what it cosigned, or holds a larger tree of this log; one alert per witness and hour). Each counts its occurrences; when raised it is sent once as the webhook event `security.alert`.",
    params(SecurityQuery),
    responses((status = 200, description = "Alerts", body = SecurityPage),
        (status = 403, description = "Not an admin or auditor token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_security_alerts(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<SecurityReaders>,
    ApiQuery(q): ApiQuery<SecurityQuery>,
) -> ApiResult<Json<SecurityPage>> {
    if q.kind.as_deref().is_some_and(|k| !KINDS.contains(&k)) {
        return Err(ApiError::bad_request(
            "invalid-query",
            format!("kind: one of {}", KINDS.join(", ")),
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let after = cursor_param(q.cursor.as_deref())?.map_or(0, |(id, _)| id);
    let alerts =
        s.db.security_alerts(q.kind.as_deref(), after, limit)
            .await?;
    let next = (alerts.len() == limit as usize)
        .then(|| alerts.last().map(|a| cursor_of(a.id, "security")))
        .flatten();
    Ok(Json(SecurityPage {
        alerts,
        next_cursor: next,
    }))
}
