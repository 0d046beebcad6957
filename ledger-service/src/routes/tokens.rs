//! API tokens (admin only): create (the secret is shown once), list (never a secret), one by id,
//! revoke (effective on the next request, on every node), rotate (a new token with the same
//! role, name and scope; the old one ends after an overlap).

use crate::auth::{AdminCaller, Role, TokenSpec, DEFAULT_TTL_DAYS};
use crate::db::TokenRow;
use crate::error::{ApiError, ApiResult};
use crate::routes::extract::{cursor_of, cursor_param, ApiJson, ApiPath, ApiQuery};
use crate::state::{now_ms, Shared};
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The token routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/tokens", post(create_token).get(list_tokens))
        .route("/v1/tokens/{id}", get(get_token))
        .route("/v1/tokens/{id}/revoke", post(revoke_token))
        .route("/v1/tokens/{id}/rotate", post(rotate_token))
}

/// A new token.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// admin, clinician, archivist, auditor, gateway, monitor or household.
    #[schema(example = "clinician")]
    pub role: String,
    /// A name to recognise it by (recorded as the actor of what it does), 1 to 128 characters.
    #[schema(min_length = 1, max_length = 128)]
    pub name: String,
    /// Days until it expires (default 90).
    #[schema(minimum = 1, maximum = 3650)]
    pub expires_in_days: Option<u64>,
    /// For a gateway token (required then): the gateway id it may submit for, or `*` for a
    /// relay that may submit for any gateway.
    pub gateway: Option<String>,
    /// For a household token (required then): the household whose feed it reads (private
    /// mode). Stored in the token's scope, listed as its `gateway` column.
    pub household: Option<String>,
}

/// A token as listed (never its secret): what is stored of it and its state now.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenOut {
    /// The stored token.
    #[serde(flatten)]
    pub row: TokenRow,
    /// `active`, `expired` or `revoked`.
    pub state: String,
}

impl TokenOut {
    fn of(row: TokenRow, now: u64) -> Self {
        let state = row.state(now).into();
        Self { row, state }
    }
}

/// A token just made: its secret, shown this once.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct NewTokenOut {
    /// The bearer secret (`vlt_…`). Keep it: it is not shown again.
    pub token: String,
    /// What is stored of it.
    #[serde(flatten)]
    pub info: TokenOut,
}

/// A rotation: the new token and the old one, now ending after the overlap.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct Rotation {
    /// The new token (secret shown once).
    pub token: NewTokenOut,
    /// The old token.
    pub previous: TokenOut,
}

/// Rotation options.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// How long the old token keeps working, hours (default 24).
    #[schema(minimum = 0, maximum = 720)]
    pub overlap_hours: Option<u64>,
}

/// A page of tokens.
#[derive(Serialize, Deserialize, utoipa::ToSchema)]
pub struct TokenList {
    /// Oldest first.
    pub tokens: Vec<TokenOut>,
    /// Pass as `cursor` for the next page (null on the last).
    pub next_cursor: Option<String>,
}

/// Paging.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
    /// Where the previous page ended (its `next_cursor`).
    pub cursor: Option<String>,
}

#[utoipa::path(post, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])),
    description = "Create a token. The answer carries its secret once. A gateway token names its gateway (it may then submit only that gateway's envelopes and read only that gateway's registry view), or `*` for a relay.",
    request_body = NewToken,
    responses((status = 201, description = "Created", body = NewTokenOut),
        (status = 400, description = "Unknown role, bad name, lifetime or gateway", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn create_token(
    State(s): State<Arc<Shared>>,
    AdminCaller(caller): AdminCaller,
    ApiJson(b): ApiJson<NewToken>,
) -> ApiResult<(StatusCode, Json<NewTokenOut>)> {
    let role = Role::parse(&b.role).ok_or_else(|| {
        ApiError::bad_request(
            "invalid-token-request",
            "role: one of admin, clinician, archivist, auditor, gateway, monitor, household",
        )
    })?;
    let issued = crate::auth::issue_token(
        &s.db,
        &TokenSpec {
            role,
            name: b.name,
            ttl_days: b.expires_in_days.unwrap_or(DEFAULT_TTL_DAYS),
            gateway: match (role, b.gateway, b.household) {
                (Role::Household, None, h) => h,
                (Role::Household, Some(_), _) => {
                    return Err(ApiError::bad_request(
                        "invalid-token-request",
                        "a household token names its household (household), not a gateway",
                    ))
                }
                (_, g, None) => g,
                (_, _, Some(_)) => {
                    return Err(ApiError::bad_request(
                        "invalid-token-request",
                        "household: only a household token names a household",
                    ))
                }
            },
            created_by: caller.name,
        },
    )
    .await?;
    tracing::info!(token = %issued.row.id, role = %issued.row.role, "token created");
    Ok((
        StatusCode::CREATED,
        Json(NewTokenOut {
            token: issued.secret,
            info: TokenOut::of(issued.row, now_ms()),
        }),
    ))
}

#[utoipa::path(get, path = "/v1/tokens", tag = "tokens", security(("bearer" = [])),
    description = "Every token, oldest first, with its state and last use (never a secret).", params(PageQuery),
    responses((status = 200, description = "Tokens", body = TokenList),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn list_tokens(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> ApiResult<Json<TokenList>> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let after = cursor_param(q.cursor.as_deref())?;
    let rows =
        s.db.tokens_page(after.as_ref().map(|(a, k)| (*a, k.as_str())), limit)
            .await?;
    let next = (rows.len() == limit as usize)
        .then(|| rows.last().map(|t| cursor_of(t.created_at, &t.id)))
        .flatten();
    let now = now_ms();
    Ok(Json(TokenList {
        tokens: rows.into_iter().map(|t| TokenOut::of(t, now)).collect(),
        next_cursor: next,
    }))
}

fn check_id(id: &str) -> ApiResult<()> {
    let ok =
        id.len() == 20 && id.starts_with("tok_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(ApiError::not_found(format!(
            "no token {}",
            id.escape_debug()
        )))
    }
}

#[utoipa::path(get, path = "/v1/tokens/{id}", tag = "tokens", security(("bearer" = [])),
    description = "One token.", params(("id" = String, Path, description = "Token id (`tok_…`)")),
    responses((status = 200, description = "The token", body = TokenOut),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn get_token(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TokenOut>> {
    check_id(&id)?;
    let t =
        s.db.token_by_id(&id)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no token {id}")))?;
    Ok(Json(TokenOut::of(t, now_ms())))
}

#[utoipa::path(post, path = "/v1/tokens/{id}/revoke", tag = "tokens", security(("bearer" = [])),
    description = "Revoke a token: refused from the next request on, on every node (revoking a revoked token changes nothing).", params(("id" = String, Path, description = "Token id (`tok_…`)")),
    responses((status = 200, description = "The token, revoked", body = TokenOut),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn revoke_token(
    State(s): State<Arc<Shared>>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<TokenOut>> {
    check_id(&id)?;
    let t = crate::auth::revoke_token(&s.db, &id, &caller.name).await?;
    tracing::info!(token = %t.id, by = %caller.token_id, "token revoked");
    Ok(Json(TokenOut::of(t, now_ms())))
}

#[utoipa::path(post, path = "/v1/tokens/{id}/rotate", tag = "tokens", security(("bearer" = [])),
    description = "Rotate a token: a new one with the same role, name, gateway and lifetime (its secret shown once); the old one keeps working for `overlap_hours` (default 24), then ends.",
    params(("id" = String, Path, description = "Token id (`tok_…`)")), request_body = RotateBody,
    responses((status = 201, description = "The new token and the old one", body = Rotation),
        (status = 400, description = "The token has ended, or a bad overlap", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn rotate_token(
    State(s): State<Arc<Shared>>,
    AdminCaller(caller): AdminCaller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<RotateBody>,
) -> ApiResult<(StatusCode, Json<Rotation>)> {
    check_id(&id)?;
    let overlap = body.overlap_hours.unwrap_or(24);
    let (new, old) = crate::auth::rotate_token(&s.db, &id, overlap, &caller.name).await?;
    tracing::info!(old = %old.id, new = %new.row.id, "token rotated");
    let now = now_ms();
    Ok((
        StatusCode::CREATED,
        Json(Rotation {
            token: NewTokenOut {
                token: new.secret,
                info: TokenOut::of(new.row, now),
            },
            previous: TokenOut::of(old, now),
        }),
    ))
}
