//! Private mode (issue #17): households' recipients and gateways in the registry (admin), and
//! a household's feed of messages the service cannot read (the owner's app).

use crate::auth::{AdminCaller, Allowed, HouseholdReaders};
use crate::error::{ApiError, ApiResult};
use crate::routes::extract::{ApiJson, ApiPath, ApiQuery};
use crate::routes::registry::RegistryReceipt;
use crate::state::Shared;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use provenance_core::private::RecipientKey;
use provenance_core::registry::RegistryEvent;
use serde::Deserialize;
use std::sync::Arc;

/// The private-mode routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/registry/recipients", post(enroll_recipient))
        .route("/v1/registry/household-bindings", post(bind_household))
        .route("/v1/households/{household}/feed", get(feed))
}

/// A recipient key for a household.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RecipientBody {
    /// Household id.
    pub household: String,
    /// The recipient's name in the household (a device-id: letters, digits, `.`, `_`, `:`, `-`);
    /// a name already enrolled rotates to the new key.
    pub name: String,
    /// Its X25519 public key, 64 hex digits.
    #[schema(example = "a5922a701eebdf665a7877e32b0651db5d3ad8eb4be792f2dfd9d9ac5d049561")]
    pub public_key: String,
    /// In force from, Unix ms.
    pub from_ms: u64,
}

/// A gateway's binding to a household.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HouseholdBindBody {
    /// Gateway id.
    pub gateway_id: String,
    /// Household id.
    pub household: String,
    /// From, Unix ms.
    pub from_ms: u64,
}

/// Feed paging.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct FeedQuery {
    /// Messages logged after this index (the previous page's `next_after`); from the start
    /// when absent.
    pub after: Option<u64>,
    /// At most this many messages (default 100, at most 500).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<u32>,
}

type Created = ApiResult<(StatusCode, Json<RegistryReceipt>)>;

#[utoipa::path(post, path = "/v1/registry/recipients", tag = "private mode", security(("bearer" = [])),
    description = "Enroll a recipient key (X25519) for a household: from `from_ms` on, its gateway encrypts every reading to it too. Logged like every registry change, so the household's app sees every recipient ever added (key transparency); a name already enrolled rotates to the new key; revoke a recipient key with `POST /v1/registry/revocations` and its KeyId.",
    request_body = RecipientBody,
    responses((status = 201, description = "Logged", body = RegistryReceipt),
        (status = 400, description = "Malformed request or key", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by the registry rules", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn enroll_recipient(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiJson(b): ApiJson<RecipientBody>,
) -> Created {
    let key = hex::decode(&b.public_key)
        .ok()
        .and_then(|k| RecipientKey::from_slice(&k).ok())
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid-recipient-key",
                "public_key must be 64 hex digits of an X25519 public key that is not of small order",
            )
        })?;
    crate::routes::registry::submit(
        &s,
        RegistryEvent::EnrollRecipient {
            household: b.household,
            name: b.name,
            key,
            from_ms: b.from_ms,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/registry/household-bindings", tag = "private mode", security(("bearer" = [])),
    description = "Bind a gateway to a household from a time on: it then encrypts every reading it receives for the household's current recipients (its latest binding counts).",
    request_body = HouseholdBindBody,
    responses((status = 201, description = "Logged", body = RegistryReceipt),
        (status = 400, description = "Malformed request", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by the registry rules", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn bind_household(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiJson(b): ApiJson<HouseholdBindBody>,
) -> Created {
    crate::routes::registry::submit(
        &s,
        RegistryEvent::BindHousehold {
            gateway_id: b.gateway_id,
            household: b.household,
            from_ms: b.from_ms,
        },
    )
    .await
}

#[utoipa::path(get, path = "/v1/households/{household}/feed", tag = "private mode", security(("bearer" = [])),
    description = "A page of the household's private messages (ciphertext the service cannot read), oldest first, with everything its app needs to verify them offline: each message's inclusion proof, the complete registry history of the household (its recipients) and of every gateway, sensor and issuer that decides its messages, each subject proved in the checkpoint's registry map (`application/vnd.vitals-ledger.household-feed+json;version=1`, docs/FORMATS.md). All proofs refer to the latest published checkpoint; newer messages come on a later call. A household token reads only its own household.",
    params(("household" = String, Path, description = "Household id"), FeedQuery),
    responses((status = 200, description = "A feed page", body = serde_json::Value, content_type = "application/vnd.vitals-ledger.household-feed+json;version=1"),
        (status = 400, description = "Bad household id or paging", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a household, auditor or admin token, or another household's token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn feed(
    State(s): State<Arc<Shared>>,
    Allowed(caller, _): Allowed<HouseholdReaders>,
    ApiPath(household): ApiPath<String>,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> ApiResult<Response> {
    if !provenance_core::reading::valid_device_id(&household) {
        return Err(ApiError::bad_request(
            "invalid-household",
            "a household id is 1 to 64 letters, digits, '.', '_', ':' or '-'",
        ));
    }
    if !caller.reads_household(&household) {
        return Err(ApiError::forbidden(format!(
            "this token reads another household than {household}"
        )));
    }
    let limit = q.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid-limit",
            "limit must be 1 to 500",
        ));
    }
    let page = crate::evidence::household_feed(&s, &household, q.after, u64::from(limit)).await?;
    let mut resp = page.to_json().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(provenance_core::feed::FEED_MEDIA_TYPE),
    );
    Ok(resp)
}
