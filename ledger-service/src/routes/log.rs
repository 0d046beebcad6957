//! The log read API (SPEC.md §5): checkpoint, key, proofs, entries, tiles and the registry
//! entries. Checkpoints, tiles and proofs are public (they hold only hashes), and so are the
//! registry's entries (what monitors follow: devices, keys, bindings, patient pseudonyms);
//! other entries (readings) need a token.

use crate::auth::{Allowed, Readers};
use crate::error::{ApiError, ApiResult};
use crate::routes::extract::{ApiPath, ApiQuery};
use crate::state::Shared;
use crate::tiles::{parse_tile_path, TileSet, TILE_WIDTH};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use provenance_core::log_entry::{DecodedBody, LogEntry};
use provenance_core::merkle::{self, Hash, ProofError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

/// The log routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/log/checkpoint", get(checkpoint))
        .route("/v1/log/key", get(key))
        .route("/v1/log/proof/inclusion", get(inclusion))
        .route("/v1/log/proof/consistency", get(consistency))
        .route("/v1/log/entries/{index}", get(entry))
        .route("/v1/log/registry-entries", get(registry_entries))
        .route("/tile/{*path}", get(tile))
        .merge(super::shards::router())
}

#[utoipa::path(get, path = "/v1/log/checkpoint", tag = "log", description = "The latest checkpoint: a C2SP signed note (origin, size, base64 root, signature).",
    responses((status = 200, description = "Signed checkpoint", body = String, content_type = "text/plain"), (status = 503, description = "No checkpoint yet", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn checkpoint(State(s): State<Arc<Shared>>) -> ApiResult<Response> {
    let cp = s
        .latest_checkpoint()
        .ok_or_else(|| ApiError::unavailable("no checkpoint published yet"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        cp.note.clone(),
    )
        .into_response())
}

/// The log's identity.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct LogKey {
    /// Origin (checkpoint first line, key name).
    pub origin: String,
    /// C2SP vkey.
    pub vkey: String,
}

#[utoipa::path(get, path = "/v1/log/key", tag = "log", description = "The log's origin and C2SP vkey.", responses((status = 200, description = "Log identity", body = LogKey)))]
pub(crate) async fn key(State(s): State<Arc<Shared>>) -> Json<LogKey> {
    Json(LogKey {
        origin: s.origin.clone(),
        vkey: s.log_key.to_vkey(),
    })
}

/// Inclusion proof query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct InclusionQuery {
    /// Leaf index (in the shard's tree).
    pub index: u64,
    /// Tree size.
    pub tree_size: u64,
    /// The shard whose tree (default: the open shard; see `/v1/log/shards`).
    pub shard: Option<u32>,
}

/// An inclusion proof.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct InclusionProof {
    /// Leaf index.
    pub index: u64,
    /// Tree size.
    pub tree_size: u64,
    /// Hashes, leaf to root, base64.
    pub hashes: Vec<String>,
}

/// Consistency proof query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// Older size.
    pub from: u64,
    /// Newer size.
    pub to: u64,
    /// The shard whose tree (default: the open shard; see `/v1/log/shards`).
    pub shard: Option<u32>,
}

/// A consistency proof.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct ConsistencyProof {
    /// Older size.
    pub from: u64,
    /// Newer size.
    pub to: u64,
    /// Hashes, base64.
    pub hashes: Vec<String>,
}

fn b64_all(h: &[Hash]) -> Vec<String> {
    h.iter().map(|h| B64.encode(h)).collect()
}

fn proof_error(e: ProofError) -> ApiError {
    match e {
        ProofError::MissingHash { .. } => ApiError::internal(e),
        other => ApiError::bad_request("invalid-proof-request", other.to_string()),
    }
}

/// A shard (default: the open one) and the entries committed in its tree.
pub(crate) fn shard_and_size(s: &Shared, shard: Option<u32>) -> ApiResult<(u32, u64)> {
    let open = s.open_shard();
    let shard = match shard {
        None => open,
        Some(n) => s.shard(n).ok_or_else(|| {
            ApiError::not_found(format!(
                "the log has no shard {n} (its shards are 0 to {})",
                open.number
            ))
        })?,
    };
    let committed = shard
        .final_size
        .unwrap_or_else(|| s.committed().saturating_sub(shard.base));
    Ok((shard.number, committed))
}

/// Inclusion proof of `index` in a shard's tree of `size` leaves, from stored tiles.
pub async fn inclusion_hashes(
    s: &Shared,
    shard: Option<u32>,
    index: u64,
    size: u64,
) -> ApiResult<Vec<Hash>> {
    let (shard, committed) = shard_and_size(s, shard)?;
    if size > committed {
        return Err(ApiError::bad_request(
            "invalid-proof-request",
            format!("tree_size {size} is beyond the log's {committed} entries"),
        ));
    }
    if index >= size {
        return Err(ApiError::bad_request(
            "invalid-proof-request",
            format!("index {index} is not below tree_size {size}"),
        ));
    }
    let mut set = TileSet::default();
    s.tiles(shard)
        .with_tiles(&mut set, |r| merkle::inclusion_proof(r, index, size))
        .await?
        .map_err(proof_error)
}

#[utoipa::path(get, path = "/v1/log/proof/inclusion", tag = "log", description = "RFC 9162 inclusion proof of a leaf in the tree of a given size.", params(InclusionQuery),
    responses((status = 200, description = "Proof", body = InclusionProof), (status = 400, description = "Index or size out of range", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn inclusion(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<InclusionQuery>,
) -> ApiResult<Json<InclusionProof>> {
    let hashes = inclusion_hashes(&s, q.shard, q.index, q.tree_size).await?;
    Ok(Json(InclusionProof {
        index: q.index,
        tree_size: q.tree_size,
        hashes: b64_all(&hashes),
    }))
}

#[utoipa::path(get, path = "/v1/log/proof/consistency", tag = "log", description = "RFC 9162 consistency proof between two tree sizes.", params(ConsistencyQuery),
    responses((status = 200, description = "Proof", body = ConsistencyProof), (status = 400, description = "Sizes out of range", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn consistency(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> ApiResult<Json<ConsistencyProof>> {
    let (shard, committed) = shard_and_size(&s, q.shard)?;
    if q.to > committed || q.from > q.to || q.from == 0 {
        return Err(ApiError::bad_request(
            "invalid-proof-request",
            format!(
                "need 0 < from <= to <= {committed} (the log's size); got from={} to={}",
                q.from, q.to
            ),
        ));
    }
    let mut set = TileSet::default();
    let hashes = s
        .tiles(shard)
        .with_tiles(&mut set, |r| merkle::consistency_proof(r, q.from, q.to))
        .await?
        .map_err(proof_error)?;
    Ok(Json(ConsistencyProof {
        from: q.from,
        to: q.to,
        hashes: b64_all(&hashes),
    }))
}

/// Registry entries query.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RegistryEntriesQuery {
    /// First index to look at (in the shard's tree; default 0).
    #[serde(default)]
    pub start: u64,
    /// End of the range (exclusive); at most, and by default, the shard's published size (a
    /// closed shard's final size).
    pub end: Option<u64>,
    /// The shard whose tree (default: the latest published checkpoint's; see
    /// `/v1/log/shards`). A shard's entries include its start (entry 0) and the registry
    /// events carried into it.
    pub shard: Option<u32>,
    /// Most entries returned (1–1000, default 1000).
    pub limit: Option<u32>,
}

/// One registry entry: its log index and leaf data.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct RegistryEntry {
    /// Log index.
    pub index: u64,
    /// The leaf data (deterministic CBOR), base64.
    pub leaf_data: String,
}

/// A page of registry entries.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct RegistryEntries {
    /// The range looked at: `[start, end)`.
    pub start: u64,
    /// End of the range (exclusive).
    pub end: u64,
    /// The registry entries in it, in log order.
    pub entries: Vec<RegistryEntry>,
    /// Where the next page starts, if the range holds more.
    pub next: Option<u64>,
}

#[utoipa::path(get, path = "/v1/log/registry-entries", tag = "log", description = "The registry's log entries (public, for monitors) with index in `[start, end)` of a shard's tree (default: the latest published checkpoint's shard; a log without shards has shard 0 only), at most `end` = its published size. In a time-sharded log a shard's entries include its start (entry 0) and the carried registry events. A monitor checks each against the leaf hashes of the public tiles and replays them to the checkpoint's registry commitment, so a missing or altered one is caught.", params(RegistryEntriesQuery),
    responses((status = 200, description = "Registry entries", body = RegistryEntries), (status = 400, description = "Range out of the published tree or bad limit", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn registry_entries(
    State(s): State<Arc<Shared>>,
    ApiQuery(q): ApiQuery<RegistryEntriesQuery>,
) -> ApiResult<Json<RegistryEntries>> {
    let latest = s.latest_checkpoint();
    let number = q
        .shard
        .or(latest.as_ref().map(|c| c.shard))
        .unwrap_or_default();
    let shard = s.shard(number).ok_or_else(|| {
        ApiError::not_found(format!(
            "the log has no shard {number} (its shards are 0 to {})",
            s.open_shard().number
        ))
    })?;
    let published = shard
        .final_size
        .unwrap_or_else(|| latest.filter(|c| c.shard == number).map_or(0, |c| c.size));
    let end = q.end.unwrap_or(published);
    let limit = q.limit.unwrap_or(1000);
    if end > published || q.start > end || !(1..=1000).contains(&limit) {
        return Err(ApiError::bad_request(
            "invalid-range",
            format!(
                "need start <= end <= {published} (the published checkpoint's size) and 1 <= limit <= 1000; got start={} end={end} limit={limit}",
                q.start
            ),
        ));
    }
    let rows =
        s.db.registry_entries_in(shard.base + q.start, shard.base + end, u64::from(limit) + 1)
            .await?;
    let rows: Vec<(u64, Vec<u8>)> = rows
        .into_iter()
        .map(|(i, leaf)| (i - shard.base, leaf))
        .collect();
    let next = rows.get(limit as usize).map(|(i, _)| *i);
    let entries = rows
        .into_iter()
        .take(limit as usize)
        .map(|(index, leaf)| RegistryEntry {
            index,
            leaf_data: B64.encode(leaf),
        })
        .collect();
    Ok(Json(RegistryEntries {
        start: q.start,
        end,
        entries,
        next,
    }))
}

/// The decoded view of a log entry, for humans and tools.
pub fn decoded_view(entry: &LogEntry) -> Value {
    match entry.decode_body() {
        Ok(DecodedBody::Reading(env)) => {
            let r = &env.sensor.reading;
            json!({
                "type": "reading",
                "sensor_id": r.sensor_id,
                "seq": r.seq,
                "measured_at_ms": r.measured_at_ms,
                "received_at_ms": env.received_at_ms,
                "sensor_kid": env.sensor.kid.to_hex(),
                "gateway_kid": env.kid.to_hex(),
                "measurements": r.measurements.iter().map(|m| json!({
                    "loinc": m.vital.loinc, "name": m.vital.name, "value": m.value.to_string(), "unit": m.vital.unit,
                })).collect::<Vec<_>>(),
            })
        }
        Ok(DecodedBody::Registry(e)) => {
            json!({ "type": "registry", "event": e.type_name(), "detail": format!("{e:?}") })
        }
        // What the cloud can see of a private message, and nothing more.
        Ok(DecodedBody::Private(env)) => json!({
            "type": "private",
            "household": env.household,
            "msg_seq": env.msg_seq,
            "received_at_ms": env.received_at_ms,
            "gateway_kid": env.kid.to_hex(),
            "recipient_kids": env.content.recipient_kids().iter().map(|k| k.to_hex()).collect::<Vec<_>>(),
            "ciphertext_bytes": env.content.ciphertext_len(),
        }),
        Ok(DecodedBody::ShardStart(st)) => json!({
            "type": "shard_start",
            "period": st.name,
            "start_ms": st.start_ms,
            "end_ms": st.end_ms,
            "grace_ms": st.grace_ms,
            "base": st.base,
            "previous_origin": st.previous_origin,
            "previous_checkpoint": st.previous_checkpoint,
        }),
        Ok(DecodedBody::Carried(position, _, e)) => json!({
            "type": "carried",
            "position": position,
            "event": e.type_name(),
            "detail": format!("{e:?}"),
        }),
        Err(e) => json!({ "type": "undecodable", "error": e.to_string() }),
    }
}

#[utoipa::path(get, path = "/v1/log/entries/{index}", tag = "log", security(("bearer" = [])), description = "A log entry: its leaf data (base64) and a decoded view.", params(("index" = u64, Path, description = "Log index")),
    responses((status = 200, description = "Entry", body = serde_json::Value), (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"), (status = 404, description = "No such entry", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn entry(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<Readers>,
    ApiPath(index): ApiPath<u64>,
) -> ApiResult<Json<Value>> {
    let (_, leaf) =
        s.db.entry(index)
            .await?
            .ok_or_else(|| ApiError::not_found(format!("no entry {index}")))?;
    if leaf.is_empty() {
        return Err(crate::evidence::pruned(&s, index).await?.into());
    }
    let e = LogEntry::from_cbor(&leaf).map_err(ApiError::internal)?;
    Ok(Json(json!({
        "index": index,
        "leaf_data": B64.encode(&leaf),
        "leaf_hash": B64.encode(merkle::leaf_hash(&leaf)),
        "logged_at_ms": e.logged_at_ms,
        "decoded": decoded_view(&e),
    })))
}

#[utoipa::path(get, path = "/tile/{path}", tag = "log", description = "C2SP tlog-tiles hash tile: `<L>/<N>` (full, 256 hashes) or `<L>/<N>.p/<W>` (partial), N in x-prefixed 3-digit groups.", params(("path" = String, Path, description = "Tile path, e.g. 0/x001/234 or 1/005.p/17")),
    responses((status = 200, description = "Concatenated 32-byte hashes", body = Vec<u8>, content_type = "application/octet-stream"), (status = 400, description = "Malformed tile path", body = crate::error::Problem, content_type = "application/problem+json"), (status = 404, description = "Tile not in the published tree", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn tile(
    State(s): State<Arc<Shared>>,
    ApiPath(path): ApiPath<String>,
) -> ApiResult<Response> {
    let size = match s.shard(0).and_then(|sh| sh.final_size) {
        Some(f) => f,
        None if s.open_shard().number == 0 => s.latest_checkpoint().map_or(0, |c| c.size),
        None => 0,
    };
    serve_tile(&s, 0, size, &path).await
}

/// A tile of shard `shard`'s tree of `size` entries (its published tree).
pub(crate) async fn serve_tile(
    s: &Shared,
    shard: u32,
    size: u64,
    path: &str,
) -> ApiResult<Response> {
    let (level, idx, width) = parse_tile_path(path).ok_or_else(|| {
        ApiError::bad_request(
            "invalid-tile-path",
            "expected /tile/<L>/<N>[.p/<W>] (C2SP tlog-tiles)",
        )
    })?;
    // Only tiles inside the published tree are served.
    let row_len = size >> (8 * u32::from(level));
    // An index past any tree this log could have is simply not there (no overflow).
    let first = idx.saturating_mul(TILE_WIDTH as u64);
    let avail = row_len.saturating_sub(first).min(TILE_WIDTH as u64) as usize;
    let want = width.unwrap_or(TILE_WIDTH);
    if avail < want || (width.is_none() && avail < TILE_WIDTH) {
        return Err(ApiError::not_found(
            "that tile is not (yet) in the published tree",
        ));
    }
    let rows = s.db.tiles(shard, &[(level, idx)]).await?;
    let t = rows
        .first()
        .filter(|t| t.hashes.len() >= want)
        .ok_or_else(|| ApiError::internal("tile missing from storage"))?;
    let body: Vec<u8> = t.hashes[..want].concat();
    let cache = if width.is_none() {
        "public, max-age=31536000, immutable"
    } else {
        "no-store"
    };
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (header::CACHE_CONTROL, cache),
        ],
        body,
    )
        .into_response())
}
