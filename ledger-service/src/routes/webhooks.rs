//! Webhook subscriptions and the delivery log (admin only): endpoints with their event types and
//! `whsec_` secrets (shown when created or rotated, never listed), secret rotation with an overlap,
//! disabling and enabling, messages by state with their attempts, and replay of dead letters.

use crate::auth::AdminCaller;
use crate::db::{AttemptOut, EndpointRow, OutboxItem};
use crate::error::{ApiError, ApiResult};
use crate::routes::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::{now_ms, Shared};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The event types an endpoint can subscribe to.
pub const EVENT_TYPES: [&str; 6] = [
    "alert.opened",
    "alert.escalated",
    "alert.acknowledged",
    "alert.resolved",
    "security.alert",
    // Private mode: a household has a new message (its household and log index, no content).
    "household.message",
];

/// What an endpoint gets when it names no event types: the clinical ones (security alerts go
/// to who asks for them).
pub const DEFAULT_EVENT_TYPES: [&str; 4] = [
    "alert.opened",
    "alert.escalated",
    "alert.acknowledged",
    "alert.resolved",
];

/// The webhook routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/v1/webhooks/endpoints",
            post(create_endpoint).get(list_endpoints),
        )
        .route(
            "/v1/webhooks/endpoints/{id}/rotate-secret",
            post(rotate_secret),
        )
        .route(
            "/v1/webhooks/endpoints/{id}/disable",
            post(disable_endpoint),
        )
        .route("/v1/webhooks/endpoints/{id}/enable", post(enable_endpoint))
        .route("/v1/webhooks/messages", get(list_messages))
        .route("/v1/webhooks/messages/{id}/attempts", get(list_attempts))
        .route("/v1/webhooks/messages/{id}/replay", post(replay_message))
}

/// A new endpoint.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEndpoint {
    /// Where to deliver (`http://` or `https://`).
    pub url: String,
    /// Event types (default: every `alert.*` type).
    pub event_types: Option<Vec<String>>,
}

/// An endpoint as listed (no secret).
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointOut {
    /// `ep_…`.
    pub id: String,
    /// Delivery URL.
    pub url: String,
    /// Subscribed event types.
    pub event_types: Vec<String>,
    /// Why deliveries are stopped (absent: active).
    pub disabled_reason: Option<String>,
    /// Created, Unix ms.
    pub created_at_ms: u64,
    /// The secret (`whsec_…`): only in the answer to creation or rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Until when the previous secret also signs (after a rotation).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_until_ms: Option<u64>,
}

impl EndpointOut {
    fn of(e: EndpointRow, show_secret: bool) -> Self {
        Self {
            id: e.id,
            url: e.url,
            event_types: e.event_types,
            disabled_reason: e.disabled_reason,
            created_at_ms: e.created_at,
            secret: show_secret
                .then(|| secrecy::ExposeSecret::expose_secret(&e.secret).to_string()),
            previous_secret_until_ms: e.previous_until.filter(|_| show_secret),
        }
    }
}

/// Endpoints.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct EndpointList {
    /// Oldest first.
    pub endpoints: Vec<EndpointOut>,
    /// Pass as `cursor` for the next page (null on the last).
    pub next_cursor: Option<String>,
}

/// Paging of the endpoint list.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EndpointQuery {
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
}

fn check_url(s: &Shared, url: &str) -> ApiResult<()> {
    // No whitespace or control characters: the URL parser would silently drop a CR/LF or tab,
    // so what was stored would not be what is used.
    let parsed = (url.len() <= 2048 && !url.chars().any(|c| c.is_control() || c.is_whitespace()))
        .then(|| reqwest::Url::parse(url).ok())
        .flatten()
        .filter(|u| u.host_str().is_some_and(|h| !h.is_empty()))
        .filter(|u| matches!(u.scheme(), "https" | "http"));
    let Some(parsed) = parsed else {
        return Err(ApiError::bad_request(
            "invalid-webhook-url",
            "the URL must be an absolute https:// URL of at most 2048 characters, without spaces or control characters",
        ));
    };
    match s.outbound.refuses_url(&parsed) {
        None => Ok(()),
        Some(why) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "webhook-destination-refused",
            why,
        )),
    }
}

async fn refresh(s: &Shared) -> ApiResult<()> {
    s.set_webhooks(s.db.webhook_endpoints().await?);
    Ok(())
}

#[utoipa::path(post, path = "/v1/webhooks/endpoints", tag = "webhooks", security(("bearer" = [])), description = "Subscribe an endpoint. The answer carries its `whsec_` secret (Standard Webhooks); keep it: it is not shown again.",
    request_body = NewEndpoint,
    responses((status = 201, description = "Created", body = EndpointOut),
        (status = 400, description = "Bad URL or event type", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "The outbound policy refuses the destination: not https (unless allowed), or an IP literal that is loopback, private, link-local, multicast or otherwise reserved. A name is checked at each delivery on the addresses it resolves to.", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_endpoint(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiJson(b): ApiJson<NewEndpoint>,
) -> ApiResult<(StatusCode, Json<EndpointOut>)> {
    check_url(&s, &b.url)?;
    let types = b
        .event_types
        .unwrap_or_else(|| DEFAULT_EVENT_TYPES.iter().map(|t| t.to_string()).collect());
    if types.is_empty() || types.iter().any(|t| !EVENT_TYPES.contains(&t.as_str())) {
        return Err(ApiError::bad_request(
            "invalid-event-type",
            format!("event types are some of {}", EVENT_TYPES.join(", ")),
        ));
    }
    let mut id = [0u8; 12];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
    let e = EndpointRow {
        id: format!("ep_{}", hex::encode(id)),
        url: b.url,
        event_types: types,
        secret: crate::webhooks::new_secret().into(),
        previous_secret: None,
        previous_until: None,
        disabled_reason: None,
        created_at: now_ms(),
    };
    s.db.insert_endpoint(&e).await?;
    refresh(&s).await?;
    Ok((StatusCode::CREATED, Json(EndpointOut::of(e, true))))
}

#[utoipa::path(get, path = "/v1/webhooks/endpoints", tag = "webhooks", security(("bearer" = [])), description = "Every endpoint (without secrets), oldest first, in pages.", params(EndpointQuery),
    responses((status = 200, description = "Endpoints", body = EndpointList)))]
pub(crate) async fn list_endpoints(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiQuery(q): ApiQuery<EndpointQuery>,
) -> ApiResult<Json<EndpointList>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000) as usize;
    let after = crate::routes::extract::cursor_param(q.cursor.as_deref())?;
    let mut all = s.db.webhook_endpoints().await?;
    all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    let page: Vec<EndpointRow> = all
        .into_iter()
        .filter(|e| {
            after
                .as_ref()
                .is_none_or(|(at, id)| (e.created_at, &e.id) > (*at, id))
        })
        .take(limit)
        .collect();
    let next_cursor = (page.len() == limit)
        .then(|| {
            page.last()
                .map(|e| crate::routes::extract::cursor_of(e.created_at, &e.id))
        })
        .flatten();
    Ok(Json(EndpointList {
        endpoints: page
            .into_iter()
            .map(|e| EndpointOut::of(e, false))
            .collect(),
        next_cursor,
    }))
}

/// After a change to endpoint `id` (`changed`: whether it exists), the cache reloaded and the
/// endpoint as it is now.
async fn changed(
    s: &Shared,
    id: &str,
    changed: bool,
    show_secret: bool,
) -> ApiResult<Json<EndpointOut>> {
    if !changed {
        return Err(ApiError::not_found(format!("no webhook endpoint {id:?}")));
    }
    refresh(s).await?;
    let e = s
        .endpoint(id)
        .ok_or_else(|| ApiError::not_found(format!("no webhook endpoint {id:?}")))?;
    Ok(Json(EndpointOut::of(e, show_secret)))
}

#[utoipa::path(post, path = "/v1/webhooks/endpoints/{id}/rotate-secret", tag = "webhooks", security(("bearer" = [])), description = "A new secret; the previous one keeps signing (a second signature in `webhook-signature`) for the configured overlap.",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "The new secret", body = EndpointOut),
        (status = 404, description = "No such endpoint", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn rotate_secret(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EndpointOut>> {
    let until = now_ms() + s.webhook_secret_overlap_ms;
    let ok =
        s.db.rotate_endpoint_secret(&id, &crate::webhooks::new_secret(), until)
            .await?;
    changed(&s, &id, ok, true).await
}

#[utoipa::path(post, path = "/v1/webhooks/endpoints/{id}/disable", tag = "webhooks", security(("bearer" = [])), description = "Stop deliveries to an endpoint (its messages wait).",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "Disabled", body = EndpointOut),
        (status = 404, description = "No such endpoint", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn disable_endpoint(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EndpointOut>> {
    let ok =
        s.db.set_endpoint_disabled(&id, Some("disabled by an admin"))
            .await?;
    changed(&s, &id, ok, false).await
}

#[utoipa::path(post, path = "/v1/webhooks/endpoints/{id}/enable", tag = "webhooks", security(("bearer" = [])), description = "Resume deliveries to an endpoint (after a 410 Gone or a disable); replay its dead messages separately.",
    params(("id" = String, Path, description = "Endpoint id")),
    responses((status = 200, description = "Enabled", body = EndpointOut),
        (status = 404, description = "No such endpoint", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn enable_endpoint(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EndpointOut>> {
    let ok = s.db.set_endpoint_disabled(&id, None).await?;
    s.webhook_wake.notify_one();
    changed(&s, &id, ok, false).await
}

/// A message for one endpoint.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageOut {
    /// The `webhook-id`.
    pub msg_id: String,
    /// Endpoint.
    pub endpoint_id: String,
    /// Event type.
    pub event_type: String,
    /// pending | delivered | dead.
    pub state: String,
    /// Attempts so far.
    pub attempts: u32,
    /// Created, Unix ms.
    pub created_at_ms: u64,
    /// Last HTTP status.
    pub last_status: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
}

impl From<OutboxItem> for MessageOut {
    fn from(m: OutboxItem) -> Self {
        Self {
            msg_id: m.msg_id,
            endpoint_id: m.endpoint_id,
            event_type: m.event_type,
            state: m.state,
            attempts: m.attempts,
            created_at_ms: m.created_at,
            last_status: m.last_status,
            last_error: m.last_error,
        }
    }
}

/// Messages.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct MessageList {
    /// Oldest first.
    pub messages: Vec<MessageOut>,
    /// Pass as `cursor` for the next page (null on the last).
    pub next_cursor: Option<String>,
}

/// Message filter.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessageQuery {
    /// pending | delivered | dead.
    pub state: Option<String>,
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u64>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/webhooks/messages", tag = "webhooks", security(("bearer" = [])), description = "Outbox messages by state (`dead`: the dead letters).", params(MessageQuery),
    responses((status = 200, description = "Messages", body = MessageList),
        (status = 400, description = "Bad state", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_messages(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiQuery(q): ApiQuery<MessageQuery>,
) -> ApiResult<Json<MessageList>> {
    if q.state
        .as_deref()
        .is_some_and(|st| !["pending", "delivered", "dead"].contains(&st))
    {
        return Err(ApiError::bad_request(
            "invalid-query",
            "state must be pending, delivered or dead",
        ));
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let after = crate::routes::extract::cursor_param(q.cursor.as_deref())?;
    let messages =
        s.db.outbox_page(
            q.state.as_deref(),
            after.as_ref().map(|(at, k)| (*at, k.as_str())),
            limit,
        )
        .await?;
    let next_cursor = (messages.len() == limit as usize)
        .then(|| {
            messages.last().map(|m| {
                crate::routes::extract::cursor_of(
                    m.created_at,
                    &format!("{} {}", m.msg_id, m.endpoint_id),
                )
            })
        })
        .flatten();
    Ok(Json(MessageList {
        messages: messages.into_iter().map(MessageOut::from).collect(),
        next_cursor,
    }))
}

/// Delivery attempts.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct AttemptList {
    /// By endpoint, in order.
    pub attempts: Vec<AttemptOut>,
}

#[utoipa::path(get, path = "/v1/webhooks/messages/{id}/attempts", tag = "webhooks", security(("bearer" = [])), description = "Every delivery attempt of a message.",
    params(("id" = String, Path, description = "The webhook-id")),
    responses((status = 200, description = "Attempts", body = AttemptList)))]
pub(crate) async fn list_attempts(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<AttemptList>> {
    Ok(Json(AttemptList {
        attempts: s.db.attempts(&id).await?,
    }))
}

/// How many endpoint copies went back to the queue.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct Replayed {
    /// Copies re-queued.
    pub requeued: u64,
}

#[utoipa::path(post, path = "/v1/webhooks/messages/{id}/replay", tag = "webhooks", security(("bearer" = [])), description = "Send a dead (or delivered) message again, with the same webhook-id and body: delivered once more (its attempts numbered on, the retry budget afresh).",
    params(("id" = String, Path, description = "The webhook-id")),
    responses((status = 200, description = "Re-queued", body = Replayed),
        (status = 404, description = "No such message, or it is still pending", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn replay_message(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Replayed>> {
    let requeued = s.db.replay_message(&id, now_ms()).await?;
    if requeued == 0 {
        return Err(ApiError::not_found(format!(
            "no dead or delivered message {id:?}"
        )));
    }
    s.webhook_wake.notify_one();
    Ok(Json(Replayed { requeued }))
}
