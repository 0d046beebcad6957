//! What the web app's auditor and admin pages read: the log's status (size, ingest rate, the
//! latest checkpoint's age and cosignatures) and the device registry with every device's full
//! history, as the logged registry events make it.

use crate::auth::{Allowed, Readers, SecurityReaders};
use crate::error::ApiResult;
use crate::state::{now_ms, Shared};
use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use provenance_core::cert::DeviceCert;
use provenance_core::log_entry::{DecodedBody, LogEntry};
use provenance_core::registry::RegistryEvent;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The status routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/log/status", get(log_status))
        .route("/v1/registry/devices", get(devices))
}

#[utoipa::path(get, path = "/v1/log/status", tag = "log", security(("bearer" = [])),
    description = "The log's status: entries committed, entries logged in the last minute, the latest published checkpoint (its shard and origin, size, root, age, witness cosignatures), the open shard of a time-sharded log (else null) and the witness quorum.",
    responses((status = 200, description = "Status", body = serde_json::Value),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn log_status(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<Readers>,
) -> ApiResult<Json<Value>> {
    let now = now_ms();
    let size = s.committed();
    let last_minute =
        s.db.entries_logged_since(now.saturating_sub(60_000), size)
            .await?;
    let checkpoint = match s.latest_checkpoint() {
        Some(cp) => {
            let published = s.db.checkpoint_published_at(cp.shard, cp.size).await?;
            json!({
                "shard": cp.shard,
                "origin": s.shard(cp.shard).map_or_else(|| s.origin.clone(), |sh| sh.origin),
                "size": cp.size,
                "root": hex::encode(cp.root),
                "published_at_ms": published,
                "age_ms": published.map(|p| now.saturating_sub(p)),
                "cosigners": cp.cosigners,
                "note": cp.note,
            })
        }
        None => Value::Null,
    };
    // A time-sharded log: the shard that takes readings now.
    let open = s.open_shard();
    let shard = open.has_period().then(|| {
        json!({ "number": open.number, "name": open.name, "origin": open.origin,
            "start_ms": open.start_ms, "end_ms": open.end_ms, "grace_ms": open.grace_ms,
            "base": open.base, "shards": s.shards().len() })
    });
    Ok(Json(json!({
        "origin": s.origin,
        "shard": shard,
        "log_key": s.log_key.to_vkey(),
        "engine": s.db.engine(),
        "size": size,
        "entries_last_minute": last_minute,
        "ingest_per_second": last_minute as f64 / 60.0,
        "checkpoint": checkpoint,
        "witness_quorum": s.witness_quorum,
        "leader": s.is_leader(),
        "registry_events": s.registry().event_count(),
        "now_ms": now,
    })))
}

/// One logged registry event as the registry page lists it.
fn event_view(idx: u64, logged_at: u64, ev: &RegistryEvent) -> Value {
    let cert = |der: &[u8]| {
        DeviceCert::from_der(der).map_or_else(
            |e| json!({ "error": e.to_string() }),
            |c| {
                json!({ "subject": c.subject_cn, "key_id": c.key_id.to_hex(),
                    "not_before_ms": c.not_before_ms, "not_after_ms": c.not_after_ms })
            },
        )
    };
    let (summary, detail) = match ev {
        RegistryEvent::EnrollIssuer { cert: c, role } => (
            format!("issuer enrolled ({})", role.as_str()),
            json!({ "certificate": cert(c) }),
        ),
        RegistryEvent::EnrollSensor { cert: c } => (
            "sensor enrolled".to_string(),
            json!({ "certificate": cert(c) }),
        ),
        RegistryEvent::EnrollGateway { cert: c } => (
            "gateway enrolled".to_string(),
            json!({ "certificate": cert(c) }),
        ),
        RegistryEvent::Bind {
            sensor_id,
            gateway_id,
            from_ms,
            until_ms,
        } => (
            format!("sensor {sensor_id} bound to gateway {gateway_id}"),
            json!({ "sensor_id": sensor_id, "gateway_id": gateway_id, "from_ms": from_ms, "until_ms": until_ms }),
        ),
        RegistryEvent::AssignPatient {
            sensor_id,
            pseudonym,
            from_ms,
        } => (
            format!("sensor {sensor_id} assigned to patient {pseudonym}"),
            json!({ "sensor_id": sensor_id, "patient": pseudonym, "from_ms": from_ms }),
        ),
        RegistryEvent::RotateKey {
            device_id,
            cert: c,
            from_ms,
        } => (
            format!("{device_id} rotated to a new key"),
            json!({ "device_id": device_id, "certificate": cert(c), "from_ms": from_ms }),
        ),
        RegistryEvent::Revoke {
            key_id,
            from_ms,
            reason,
        } => (
            format!("key {} revoked", key_id.to_hex()),
            json!({ "key_id": key_id.to_hex(), "from_ms": from_ms, "reason": reason }),
        ),
        RegistryEvent::EnrollRecipient {
            household,
            name,
            key,
            from_ms,
        } => (
            format!("recipient {name} of household {household} enrolled"),
            json!({ "household": household, "name": name, "key": hex::encode(key.0),
                "key_id": key.key_id().to_hex(), "from_ms": from_ms }),
        ),
        RegistryEvent::BindHousehold {
            gateway_id,
            household,
            from_ms,
        } => (
            format!("gateway {gateway_id} encrypts for household {household}"),
            json!({ "gateway_id": gateway_id, "household": household, "from_ms": from_ms }),
        ),
    };
    json!({ "index": idx, "logged_at_ms": logged_at, "type": ev.type_name(), "summary": summary, "detail": detail })
}

#[utoipa::path(get, path = "/v1/registry/devices", tag = "registry", security(("bearer" = [])),
    description = "The device registry as the logged registry events make it: the issuers, and every sensor and gateway with its keys (issuer, validity, retirement, revocations), bindings, patient assignments and its full history (every logged event about it, in log order, with its log index).",
    responses((status = 200, description = "The registry", body = serde_json::Value),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin or auditor token", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn devices(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<SecurityReaders>,
) -> ApiResult<Json<Value>> {
    let registry = s.registry();
    let end = registry.last_index().map_or(0, |i| i + 1);
    let mut events: HashMap<u64, Value> = HashMap::new();
    for (idx, leaf) in s.db.registry_entries_before(end).await? {
        let view = match LogEntry::from_cbor(&leaf).and_then(|e| {
            let at = e.logged_at_ms;
            e.decode_body().map(|b| (at, b))
        }) {
            Ok((at, DecodedBody::Registry(ev))) => event_view(idx, at, &ev),
            Ok(_) => json!({ "index": idx, "error": "not a registry event" }),
            Err(e) => json!({ "index": idx, "error": e.to_string() }),
        };
        events.insert(idx, view);
    }
    let history = |idxs: &[u64]| -> Vec<Value> {
        idxs.iter()
            .map(|i| {
                events
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| json!({ "index": i }))
            })
            .collect()
    };
    let revs = |r: &[provenance_core::registry_state::Revocation]| -> Vec<Value> {
        r.iter()
            .map(|r| json!({ "index": r.index, "from_ms": r.from_ms }))
            .collect()
    };
    let issuers: Vec<Value> = registry
        .issuers()
        .map(|(kid, i)| {
            json!({
                "key_id": kid.to_hex(), "name": i.cert.subject_cn, "role": i.role.as_str(),
                "index": i.index, "revocations": revs(&i.revocations),
                "history": history(&[i.index].into_iter().chain(i.revocations.iter().map(|r| r.index)).collect::<Vec<_>>()),
            })
        })
        .collect();
    let devices: Vec<Value> = registry
        .devices()
        .map(|(id, d)| {
            let keys: Vec<Value> = d
                .keys
                .iter()
                .filter_map(|kid| registry.key(kid).map(|k| (kid, k)))
                .map(|(kid, k)| {
                    json!({
                        "key_id": kid.to_hex(), "issuer": k.issuer.to_hex(), "index": k.index,
                        "valid_from_ms": k.valid_from, "not_after_ms": k.cert.not_after_ms,
                        "retired": k.retired.map(|(i, at)| json!({ "index": i, "until_ms": at })),
                        "revocations": revs(&k.revocations),
                    })
                })
                .collect();
            json!({
                "id": id,
                "role": match d.role { provenance_core::cert::Role::Sensor => "sensor", provenance_core::cert::Role::Gateway => "gateway", provenance_core::cert::Role::Issuer => "issuer" },
                "keys": keys,
                "bindings": d.bindings.iter().map(|b| json!({ "index": b.index, "gateway_id": b.gateway_id, "from_ms": b.from_ms, "until_ms": b.until_ms })).collect::<Vec<_>>(),
                "assignments": d.assignments.iter().map(|a| json!({ "index": a.index, "patient": a.pseudonym, "from_ms": a.from_ms })).collect::<Vec<_>>(),
                "history": history(&d.events),
            })
        })
        .collect();
    Ok(Json(json!({
        "registry_events": registry.event_count(),
        "last_index": registry.last_index(),
        "issuers": issuers,
        "devices": devices,
    })))
}
