//! Health, readiness and metrics.

use crate::state::Shared;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// The operations routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive", body = String, content_type = "text/plain")))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the database answers and the sequencer is running.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "Ready", body = String, content_type = "text/plain"), (status = 503, description = "Not ready", body = String, content_type = "text/plain")))]
pub(crate) async fn readyz(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    if let Some(fresh) = s.reader.get() {
        return match (s.db.ping().await, fresh.fresh()) {
            (Ok(()), true) => (StatusCode::OK, "ready (read node)\n"),
            _ => (StatusCode::SERVICE_UNAVAILABLE, "not ready (read node)\n"),
        };
    }
    if !s.is_leader() {
        return (StatusCode::SERVICE_UNAVAILABLE, "standby\n");
    }
    match (s.db.ping().await, s.sequencer.is_closed()) {
        (Ok(()), false) => (StatusCode::OK, "ready\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "not ready\n"),
    }
}

/// A standby answers only health, readiness, metrics and the API description; everything else
/// gets `503` (problem type `standby`), so a load balancer following `/readyz` sends traffic to
/// the leader.
pub async fn standby_guard(
    State(s): State<Arc<Shared>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    const ALWAYS: [&str; 5] = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"];
    if let Some(fresh) = s.reader.get() {
        if ALWAYS.contains(&req.uri().path()) {
            return next.run(req).await;
        }
        return crate::reader::guard(fresh, req, next).await;
    }
    if s.is_leader() || ALWAYS.contains(&req.uri().path()) {
        return next.run(req).await;
    }
    crate::error::ApiError {
        retry_after: Some(1),
        ..crate::error::ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "standby",
            "this node is a standby: another node runs the log's sequencer (it takes over if that node stops)",
        )
    }
    .into_response()
}

/// Prometheus metrics, text exposition format.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(("bearer" = [])), description = "Prometheus metrics; a `monitor` (or admin) token, as a scraper's bearer credentials.",
    responses((status = 200, description = "Prometheus / OpenMetrics text", body = String, content_type = "application/openmetrics-text"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a monitor or admin token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn metrics(
    State(s): State<Arc<Shared>>,
    _caller: crate::auth::Allowed<crate::auth::Monitors>,
) -> Result<impl IntoResponse, crate::error::ApiError> {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &s.metrics.registry)
        .map_err(crate::error::ApiError::internal)?;
    Ok((
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    ))
}
