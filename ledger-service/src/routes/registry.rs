//! Registry writes (admin only). Each change is a registry event appended to the log by the
//! sequencer; it takes effect once logged. Answers `201` with the event's log index.

use crate::auth::{AdminCaller, Allowed, GatewayView};
use crate::error::{ApiError, ApiResult};
use crate::routes::extract::ApiJson;
use crate::routes::extract::ApiPath;
use crate::state::Shared;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use provenance_core::cert::DeviceCert;
use provenance_core::keys::KeyId;
use provenance_core::registry::{IssuerRole, RegistryEvent};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The registry routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/v1/registry/issuers", post(enroll_issuer))
        .route("/v1/registry/sensors", post(enroll_sensor))
        .route("/v1/registry/gateways", post(enroll_gateway))
        .route("/v1/registry/bindings", post(bind))
        .route("/v1/registry/assignments", post(assign))
        .route("/v1/registry/rotations", post(rotate))
        .route("/v1/registry/revocations", post(revoke))
        .route(
            "/v1/registry/gateways/{id}/events",
            axum::routing::get(gateway_events),
        )
}

/// A certificate to enroll.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CertBody {
    /// PEM certificate.
    pub certificate_pem: String,
}

/// An issuer CA certificate to enroll, with the one device role it may issue.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssuerBody {
    /// PEM certificate (self-signed CA, Ed25519).
    pub certificate_pem: String,
    /// `sensor-manufacturer` (issues sensor certificates only) or `gateway-fleet` (gateway
    /// certificates only).
    #[schema(example = "sensor-manufacturer")]
    pub role: String,
}

/// A binding.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BindBody {
    /// Sensor id.
    pub sensor_id: String,
    /// Gateway id.
    pub gateway_id: String,
    /// Start, Unix ms.
    pub from_ms: u64,
    /// End (exclusive), Unix ms.
    pub until_ms: Option<u64>,
}

/// A patient assignment.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    /// Sensor id.
    pub sensor_id: String,
    /// Patient pseudonym.
    pub pseudonym: String,
    /// Start, Unix ms.
    pub from_ms: u64,
}

/// A key rotation.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateBody {
    /// Device id.
    pub device_id: String,
    /// New PEM certificate.
    pub certificate_pem: String,
    /// Effective from, Unix ms.
    pub from_ms: u64,
}

/// A revocation.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    /// KeyId, hex.
    pub key_id: String,
    /// Effective from, Unix ms.
    pub from_ms: u64,
    /// Reason.
    pub reason: String,
}

/// The receipt of a logged registry event.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct RegistryReceipt {
    /// Log index of the event.
    pub index: u64,
    /// Leaf hash, base64.
    pub leaf_hash: String,
    /// Event type.
    pub event: String,
}

fn cert_der(pem: &str) -> ApiResult<Vec<u8>> {
    DeviceCert::from_pem(pem)
        .map(|c| c.der().to_vec())
        .map_err(|e| ApiError::bad_request("invalid-certificate", e.to_string()))
}

pub(crate) async fn submit(
    s: &Shared,
    event: RegistryEvent,
) -> ApiResult<(StatusCode, Json<RegistryReceipt>)> {
    // Structural validation (ids, ranges, certificate roles) before it reaches the sequencer.
    event
        .validate()
        .map_err(|e| ApiError::bad_request("invalid-registry-event", e.to_string()))?;
    let name = event.type_name().to_string();
    let receipt = s.sequencer.registry(event).await?.map_err(|why| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "registry-refused",
            why.to_string(),
        )
    })?;
    Ok((
        StatusCode::CREATED,
        Json(RegistryReceipt {
            index: receipt.index,
            leaf_hash: B64.encode(receipt.leaf_hash),
            event: name,
        }),
    ))
}

type Created = ApiResult<(StatusCode, Json<RegistryReceipt>)>;

#[utoipa::path(post, path = "/v1/registry/issuers", tag = "registry", security(("bearer" = [])), description = "Enroll an issuer CA certificate (self-signed, Ed25519) with the one device role it may issue. The event is appended to the log before it takes effect.",
    request_body = IssuerBody,
    responses((status = 201, description = "Logged", body = RegistryReceipt),
        (status = 400, description = "Malformed request or certificate", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by the registry rules", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn enroll_issuer(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiJson(b): ApiJson<IssuerBody>,
) -> Created {
    let role = IssuerRole::parse(&b.role).ok_or_else(|| {
        ApiError::bad_request(
            "invalid-registry-event",
            "role must be sensor-manufacturer or gateway-fleet",
        )
    })?;
    submit(
        &s,
        RegistryEvent::EnrollIssuer {
            cert: cert_der(&b.certificate_pem)?,
            role,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/registry/sensors", tag = "registry", security(("bearer" = [])), description = "Enroll a sensor with a certificate that chains to an enrolled issuer. The event is appended to the log before it takes effect.",
    request_body = CertBody,
    responses((status = 201, description = "Logged", body = RegistryReceipt),
        (status = 400, description = "Malformed request or certificate", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by the registry rules", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn enroll_sensor(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiJson(b): ApiJson<CertBody>,
) -> Created {
    submit(
        &s,
        RegistryEvent::EnrollSensor {
            cert: cert_der(&b.certificate_pem)?,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/registry/gateways", tag = "registry", security(("bearer" = [])), description = "Enroll a gateway with a certificate that chains to an enrolled issuer. The event is appended to the log before it takes effect.",
    request_body = CertBody,
    responses((status = 201, description = "Logged", body = RegistryReceipt),
        (status = 400, description = "Malformed request or certificate", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by the registry rules", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn enroll_gateway(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiJson(b): ApiJson<CertBody>,
) -> Created {
    submit(
        &s,
        RegistryEvent::EnrollGateway {
            cert: cert_der(&b.certificate_pem)?,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/registry/bindings", tag = "registry", security(("bearer" = [])), description = "Bind a sensor to a gateway for a time range. The event is appended to the log before it takes effect.",
    request_body = BindBody,
    responses((status = 201, description = "Logged", body = RegistryReceipt),
        (status = 400, description = "Malformed request or certificate", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by the registry rules", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn bind(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiJson(b): ApiJson<BindBody>,
) -> Created {
    submit(
        &s,
        RegistryEvent::Bind {
            sensor_id: b.sensor_id,
            gateway_id: b.gateway_id,
            from_ms: b.from_ms,
            until_ms: b.until_ms,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/registry/assignments", tag = "registry", security(("bearer" = [])), description = "Assign a sensor to a patient pseudonym from a time on. The event is appended to the log before it takes effect.",
    request_body = AssignBody,
    responses((status = 201, description = "Logged", body = RegistryReceipt),
        (status = 400, description = "Malformed request or certificate", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by the registry rules", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn assign(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiJson(b): ApiJson<AssignBody>,
) -> Created {
    submit(
        &s,
        RegistryEvent::AssignPatient {
            sensor_id: b.sensor_id,
            pseudonym: b.pseudonym,
            from_ms: b.from_ms,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/registry/rotations", tag = "registry", security(("bearer" = [])), description = "Rotate a device key: the new certificate is valid from a time on, the old key until then. The event is appended to the log before it takes effect.",
    request_body = RotateBody,
    responses((status = 201, description = "Logged", body = RegistryReceipt),
        (status = 400, description = "Malformed request or certificate", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by the registry rules", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn rotate(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiJson(b): ApiJson<RotateBody>,
) -> Created {
    submit(
        &s,
        RegistryEvent::RotateKey {
            device_id: b.device_id,
            cert: cert_der(&b.certificate_pem)?,
            from_ms: b.from_ms,
        },
    )
    .await
}

#[utoipa::path(post, path = "/v1/registry/revocations", tag = "registry", security(("bearer" = [])), description = "Revoke a key from a time on. The event is appended to the log before it takes effect.",
    request_body = RevokeBody,
    responses((status = 201, description = "Logged", body = RegistryReceipt),
        (status = 400, description = "Malformed request or certificate", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 422, description = "Refused by the registry rules", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn revoke(
    State(s): State<Arc<Shared>>,
    _caller: AdminCaller,
    ApiJson(b): ApiJson<RevokeBody>,
) -> Created {
    let key_id = hex::decode(&b.key_id)
        .ok()
        .and_then(|k| KeyId::from_slice(&k))
        .ok_or_else(|| ApiError::bad_request("invalid-key-id", "key_id must be 40 hex digits"))?;
    submit(
        &s,
        RegistryEvent::Revoke {
            key_id,
            from_ms: b.from_ms,
            reason: b.reason,
        },
    )
    .await
}

/// A logged registry event, as a gateway syncs it.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct LoggedEvent {
    /// Log index.
    pub index: u64,
    /// The log entry's leaf data (a log-entry of kind 2), base64.
    pub leaf_data: String,
}

/// The registry events a gateway replays to check frames itself.
#[derive(Serialize, Deserialize, Debug, utoipa::ToSchema)]
pub struct GatewayEvents {
    /// The gateway.
    pub gateway_id: String,
    /// Every issuer's events, the gateway's own, those of every sensor ever bound to it and of
    /// the other gateways those sensors were bound to, in log order.
    pub events: Vec<LoggedEvent>,
}

#[utoipa::path(get, path = "/v1/registry/gateways/{id}/events", tag = "registry", security(("bearer" = [])),
    description = "The logged registry events a gateway needs to check sensor frames while offline: it replays them through the same registry state machine as the service and the verifier (enrollments, rotations, bindings, assignments, revocations of its sensors and all issuers).",
    params(("id" = String, Path, description = "Gateway id")),
    responses((status = 200, description = "The events, in log order", body = GatewayEvents),
        (status = 400, description = "Not a device id", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or unknown token", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a gateway or admin token, or a gateway token of another gateway", body = crate::error::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such gateway", body = crate::error::Problem, content_type = "application/problem+json")))]
pub(crate) async fn gateway_events(
    State(s): State<Arc<Shared>>,
    Allowed(caller, _): Allowed<GatewayView>,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<GatewayEvents>> {
    if !provenance_core::reading::valid_device_id(&id) {
        return Err(ApiError::bad_request(
            "invalid-device-id",
            "a device id is 1 to 64 letters, digits, '.', '_', ':' or '-'",
        ));
    }
    if !caller.speaks_for(&id) {
        return Err(ApiError::forbidden(format!(
            "this token belongs to another gateway than {id}"
        )));
    }
    let registry = s.registry();
    if !registry
        .device(&id)
        .is_some_and(|d| d.role == provenance_core::cert::Role::Gateway)
    {
        return Err(ApiError::not_found(format!(
            "{id} is not an enrolled gateway"
        )));
    }
    let wanted = registry.gateway_view(&id);
    drop(registry);
    let mut events = Vec::with_capacity(wanted.len());
    for index in wanted {
        let (_, leaf) =
            s.db.entry(index)
                .await?
                .ok_or_else(|| ApiError::internal("a registry entry is missing from the log"))?;
        events.push(LoggedEvent {
            index,
            leaf_data: B64.encode(leaf),
        });
    }
    Ok(Json(GatewayEvents {
        gateway_id: id,
        events,
    }))
}
