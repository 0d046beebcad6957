//! The shards of a time-sharded log (issue #18): the list, and each shard's checkpoint and
//! tiles under its own prefix `/v1/log/shards/{number}` (a C2SP tlog-tiles log of its own
//! origin). A closed shard's checkpoint is its final one and its tiles never change. Proofs
//! take `?shard=` (routes/log.rs); `/tile/` is shard 0's.

use crate::db::ShardRow;
use crate::error::{ApiError, ApiResult};
use crate::routes::extract::ApiPath;
use crate::state::Shared;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The shard routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/log/shards", get(list))
        .route("/v1/log/shards/{number}/checkpoint", get(checkpoint))
        .route("/v1/log/shards/{number}/tile/{*path}", get(tile))
}

/// A shard.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct Shard {
    /// 0, 1, 2, … in log order.
    pub number: u32,
    /// Its origin (the log's for shard 0 of a log started without shards, else
    /// `<origin>/<period>`): the first line of its checkpoints and the name its key signs under.
    pub origin: String,
    /// The period's name (`2027-01`); absent for a shard without a period.
    pub period: Option<String>,
    /// Period start, Unix ms (inclusive).
    pub start_ms: Option<u64>,
    /// Period end, Unix ms (exclusive).
    pub end_ms: Option<u64>,
    /// Readings measured up to this long before the start are logged in it, ms.
    pub grace_ms: u64,
    /// The ledger position of its entry 0 (reading and entry indices are ledger positions; a
    /// shard's proofs use `index - base`).
    pub base: u64,
    /// Closed: no more entries, its checkpoint is final.
    pub closed: bool,
    /// Its published size (the final size once closed).
    pub size: u64,
    /// Where its checkpoint and tiles are served.
    pub prefix: String,
}

/// The shard list.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct Shards {
    /// The log's origin (the verifier's pinned key name).
    pub origin: String,
    /// Every shard, oldest first; the last is open.
    pub shards: Vec<Shard>,
}

fn view(s: &Shared, sh: &ShardRow) -> Shard {
    let published = match sh.final_size {
        Some(f) => f,
        None => s
            .latest_checkpoint()
            .filter(|c| c.shard == sh.number)
            .map_or(0, |c| c.size),
    };
    Shard {
        number: sh.number,
        origin: sh.origin.clone(),
        period: sh.has_period().then(|| sh.name.clone()),
        start_ms: sh.has_period().then_some(sh.start_ms),
        end_ms: sh.has_period().then_some(sh.end_ms),
        grace_ms: sh.grace_ms,
        base: sh.base,
        closed: sh.final_size.is_some(),
        size: published,
        prefix: format!("/v1/log/shards/{}", sh.number),
    }
}

#[utoipa::path(get, path = "/v1/log/shards", tag = "log", operation_id = "shards", description = "The log's shards (issue #18): a time-sharded log has a log per period, each with its own origin `<origin>/<period>`, checkpoints and tiles; a shard's entry 0 commits to the previous shard's final checkpoint and the registry is carried into it, so each verifies on its own. A log without shards has one, shard 0.",
    responses((status = 200, description = "Shards", body = Shards)))]
pub(crate) async fn list(State(s): State<Arc<Shared>>) -> Json<Shards> {
    Json(Shards {
        origin: s.origin.clone(),
        shards: s.shards().iter().map(|sh| view(&s, sh)).collect(),
    })
}

fn shard(s: &Shared, number: &str) -> ApiResult<ShardRow> {
    let n: u32 = number.parse().map_err(|_| {
        ApiError::bad_request(
            "invalid-shard",
            format!("{number:?} is not a shard number (0, 1, 2, …)"),
        )
    })?;
    s.shard(n)
        .ok_or_else(|| ApiError::not_found(format!("the log has no shard {n}")))
}

#[utoipa::path(get, path = "/v1/log/shards/{number}/checkpoint", tag = "log", operation_id = "shard_checkpoint", description = "A shard's latest checkpoint (a closed shard's final one), a C2SP signed note of the shard's origin.",
    params(("number" = u32, Path, description = "Shard number")),
    responses((status = 200, description = "Signed checkpoint", body = String, content_type = "text/plain"),
        (status = 400, description = "Not a shard number", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such shard", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 503, description = "No checkpoint yet", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn checkpoint(
    State(s): State<Arc<Shared>>,
    ApiPath(number): ApiPath<String>,
) -> ApiResult<Response> {
    let sh = shard(&s, &number)?;
    let cp = s
        .shard_checkpoint(&sh)
        .await?
        .ok_or_else(|| ApiError::unavailable("no checkpoint of this shard published yet"))?;
    // A closed shard's final checkpoint never changes (its cosignatures may still grow).
    let cache = if sh.final_size.is_some() {
        "public, max-age=60"
    } else {
        "no-store"
    };
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, cache),
        ],
        cp.note.clone(),
    )
        .into_response())
}

#[utoipa::path(get, path = "/v1/log/shards/{number}/tile/{path}", tag = "log", operation_id = "shard_tile", description = "A shard's C2SP tlog-tiles hash tile (as `/tile/{path}` is shard 0's).",
    params(("number" = u32, Path, description = "Shard number"), ("path" = String, Path, description = "Tile path, e.g. 0/x001/234 or 1/005.p/17")),
    responses((status = 200, description = "Concatenated 32-byte hashes", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 400, description = "Malformed shard number or tile path", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such shard, or tile not in its published tree", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn tile(
    State(s): State<Arc<Shared>>,
    ApiPath((number, path)): ApiPath<(String, String)>,
) -> ApiResult<Response> {
    let sh = shard(&s, &number)?;
    let size = view(&s, &sh).size;
    crate::routes::log::serve_tile(&s, sh.number, size, &path).await
}
