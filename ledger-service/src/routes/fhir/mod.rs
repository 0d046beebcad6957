//! The FHIR R4 REST facade under `/fhir` (issue #19), read-only, JSON (`application/fhir+json`),
//! for integration engines and EHR clients: `metadata` (the `CapabilityStatement`),
//! `Observation` read and search ([`observation`]), `Device`, `Provenance` and `Patient` read and
//! search ([`resources`]), searchset `Bundle`s paged by an opaque cursor over a snapshot of the
//! log, so paging while readings arrive never loses or repeats one.
//!
//! Every error under `/fhir` — a refused token, an unknown route, a bad search, a rate limit, a
//! panic — is an `OperationOutcome` with the HTTP status the API gives ([`outcomes`], the
//! outermost layer but tracing). Tokens and roles are the REST API's (readers; `metadata` is
//! public), and the access trail records every request ([`crate::access`]).

pub mod observation;
pub mod resources;
pub mod search;

use crate::error::{ApiError, PROBLEM_BASE};
use crate::state::Shared;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::sync::Arc;

/// The FHIR JSON media type, as answered.
pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// The facade's routes.
pub fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/fhir/metadata", get(metadata))
        .route("/fhir/Observation", get(observation::search))
        .route("/fhir/Observation/{id}", get(observation::read))
        .route("/fhir/Device", get(resources::device_search))
        .route("/fhir/Device/{id}", get(resources::device_read))
        .route("/fhir/Provenance", get(resources::provenance_search))
        .route("/fhir/Provenance/{id}", get(resources::provenance_read))
        .route("/fhir/Patient", get(resources::patient_search))
        .route("/fhir/Patient/{id}", get(resources::patient_read))
}

/// A FHIR resource answer.
pub struct Fhir(pub Value);

impl IntoResponse for Fhir {
    fn into_response(self) -> Response {
        let mut resp = (StatusCode::OK, axum::Json(self.0)).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
        resp
    }
}

/// The absolute URL of a search of `kind` with the parameters `used` (and the page `cursor`):
/// the `self` and `next` links of its Bundles.
pub fn search_link(
    s: &Shared,
    kind: &str,
    used: &[(String, String)],
    cursor: Option<&str>,
) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in used {
        q.append_pair(k, v);
    }
    if let Some(c) = cursor {
        q.append_pair("_cursor", c);
    }
    let q = q.finish();
    s.url(&if q.is_empty() {
        format!("/fhir/{kind}")
    } else {
        format!("/fhir/{kind}?{q}")
    })
}

/// `_format`, if given, must ask for JSON (the only format served).
pub fn check_format(query: Option<&str>) -> Result<(), ApiError> {
    let format = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "_format")
            .map(|(_, v)| v.into_owned())
    });
    match format.as_deref() {
        None | Some("json" | "application/json" | "application/fhir+json") => Ok(()),
        Some(f) => Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not-acceptable",
            format!("_format {f:?}: this server answers JSON only (application/fhir+json)"),
        )),
    }
}

/// A search refusal as the API error the outcome layer turns into an `OperationOutcome`.
pub fn search_error(e: search::SearchError) -> ApiError {
    ApiError::bad_request(
        if e.unsupported {
            "unsupported-search"
        } else {
            "invalid-search"
        },
        e.detail,
    )
}

/// The FHIR issue type for an answer's status and problem type.
fn issue_code(status: StatusCode, kind: &str) -> &'static str {
    match (status.as_u16(), kind) {
        (_, "unsupported-search") => "not-supported",
        (401, _) => "login",
        (403, _) => "forbidden",
        (404, _) => "not-found",
        (405 | 406 | 415, _) => "not-supported",
        (410, _) => "deleted",
        (413, _) => "too-costly",
        (429, _) => "throttled",
        (400..=499, _) => "invalid",
        (503, _) => "transient",
        _ => "exception",
    }
}

/// A searchset `Bundle` entry: the resource moved in, not copied (`json!` would copy a
/// `Value` it is given through serialization, a deep clone per entry).
pub fn bundle_entry(full_url: Option<String>, resource: Value, mode: &str) -> Value {
    let mut e = serde_json::Map::new();
    if let Some(u) = full_url {
        e.insert("fullUrl".into(), Value::String(u));
    }
    e.insert("resource".into(), resource);
    e.insert("search".into(), json!({ "mode": mode }));
    Value::Object(e)
}

/// The outcome entry of a lenient search that ignored parameters (none when it ignored none).
pub fn ignored_entry(ignored: &[String]) -> Option<Value> {
    (!ignored.is_empty()).then(|| {
        let text = format!(
            "ignored (not supported; see /fhir/metadata): {}",
            ignored.join(", ")
        );
        bundle_entry(None, outcome("warning", "not-supported", &text), "outcome")
    })
}

/// A searchset `Bundle` of `entries` with its `links` (moved in) and `total` when known.
pub fn searchset(links: Vec<Value>, entries: Vec<Value>, total: Option<u64>) -> Value {
    let mut b = serde_json::Map::new();
    b.insert("resourceType".into(), json!("Bundle"));
    b.insert("type".into(), json!("searchset"));
    b.insert(
        "timestamp".into(),
        json!(crate::fhir::iso8601(crate::state::now_ms())),
    );
    if let Some(t) = total {
        b.insert("total".into(), json!(t));
    }
    b.insert("link".into(), Value::Array(links));
    b.insert("entry".into(), Value::Array(entries));
    Value::Object(b)
}

/// An `OperationOutcome` of one issue.
pub fn outcome(severity: &str, code: &str, diagnostics: &str) -> Value {
    json!({
        "resourceType": "OperationOutcome",
        "issue": [{ "severity": severity, "code": code, "diagnostics": diagnostics }],
    })
}

/// Turns every error answer under `/fhir` into an `OperationOutcome` (same status and headers;
/// the problem's detail as diagnostics, its type as a coding).
pub async fn outcomes(req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let fhir = path == "/fhir" || path.starts_with("/fhir/");
    let resp = next.run(req).await;
    let status = resp.status();
    let is_fhir_body = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/fhir+json"));
    if !fhir || status.as_u16() < 400 || is_fhir_body {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let problem: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let kind = problem["type"]
        .as_str()
        .and_then(|t| t.strip_prefix(PROBLEM_BASE))
        .unwrap_or_default()
        .to_string();
    let detail = match problem["detail"].as_str() {
        Some(d) => d.to_string(),
        None if status.is_server_error() => "the server failed to answer".to_string(),
        None => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let code = issue_code(status, &kind);
    let mut o = outcome("error", code, &detail);
    if !kind.is_empty() {
        o["issue"][0]["details"] = json!({ "coding": [{ "system": PROBLEM_BASE, "code": kind }] });
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    let body = serde_json::to_vec(&o).unwrap_or_default();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// The search parameters each resource supports, as the `CapabilityStatement` states them.
pub const OBSERVATION_PARAMS: [(&str, &str, &str); 11] = [
    ("patient", "reference", "The patient pseudonym: Patient/<id> or <id>"),
    ("subject", "reference", "The same as patient (Patient/<id>)"),
    ("device", "reference", "The sensor key that signed the reading: Device/key-<key id>"),
    ("code", "token", "LOINC code of the Observation (one vital sign, or 85353-1 for a reading of several); comma-separated: any of them"),
    ("component-code", "token", "LOINC code of a component of a multi-sign reading"),
    ("combo-code", "token", "LOINC code of the Observation or of a component"),
    ("date", "date", "When measured (effectiveDateTime); prefixes eq, ge, gt, le, lt, sa, eb; repeat to AND"),
    ("_lastUpdated", "date", "When logged (meta.lastUpdated); prefixes as for date"),
    ("_id", "token", "reading-<log index>"),
    ("_count", "number", "Results per page, 0 to 1000 (default 100; 0: the total only)"),
    ("_total", "token", "none; estimate (the default: the total when the first page holds every match, or with _count=0); accurate (counted on every page, up to 100,000)"),
];

#[utoipa::path(get, path = "/fhir/metadata", tag = "fhir", operation_id = "fhir_metadata", description = "The FHIR R4 CapabilityStatement of the facade: every resource, interaction and search parameter supported (public).",
    responses((status = 200, description = "CapabilityStatement", body = serde_json::Value, content_type = "application/fhir+json")))]
pub(crate) async fn metadata(State(s): State<Arc<Shared>>) -> Fhir {
    let param = |(name, kind, doc): &(&str, &str, &str)| json!({ "name": name, "type": kind, "documentation": doc });
    let count = param(&(
        "_count",
        "number",
        "Results per page, 0 to 1000 (default 100)",
    ));
    let observation = json!({
        "type": "Observation",
        "profile": "http://hl7.org/fhir/StructureDefinition/Observation",
        "supportedProfile": ["http://hl7.org/fhir/StructureDefinition/vitalsigns"],
        "interaction": [{ "code": "read" }, { "code": "search-type" }],
        "searchInclude": ["Observation:device"],
        "searchParam": OBSERVATION_PARAMS.iter().map(param).collect::<Vec<_>>(),
        "documentation": "One Observation per logged reading (vital-signs profile, LOINC, UCUM). Each contains its Provenance with both original COSE signatures and links its evidence bundle (extension urn:vitals-ledger:fhir:evidence-bundle). _sort: date, -date (default date). Paging: the next link's _cursor (a snapshot of the log at the first page). Pruned readings are not served (their export holds them).",
    });
    let device = json!({
        "type": "Device",
        "interaction": [{ "code": "read" }, { "code": "search-type" }],
        "searchParam": [
            { "name": "identifier", "type": "token", "documentation": "urn:vitals-ledger:device-id|<id> or urn:vitals-ledger:key-id|<hex>" },
            { "name": "_id", "type": "token", "documentation": "key-<key id>" },
            count.clone(),
        ],
        "documentation": "One Device per device key (sensor or gateway) enrolled in the registry.",
    });
    let provenance = json!({
        "type": "Provenance",
        "interaction": [{ "code": "read" }, { "code": "search-type" }],
        "searchParam": [
            { "name": "target", "type": "reference", "documentation": "Observation/reading-<log index>" },
            { "name": "_id", "type": "token", "documentation": "reading-<log index>" },
        ],
    });
    let patient = json!({
        "type": "Patient",
        "interaction": [{ "code": "read" }, { "code": "search-type" }],
        "searchParam": [
            { "name": "identifier", "type": "token", "documentation": "urn:vitals-ledger:patient-pseudonym|<pseudonym>" },
            { "name": "_id", "type": "token", "documentation": "The pseudonym (or h-<hash> for one that is not a FHIR id)" },
            count,
        ],
        "documentation": "Pseudonymous: a pseudonym some sensor was assigned to, and nothing else.",
    });
    Fhir(json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": crate::fhir::iso8601(crate::state::now_ms()).get(..10).unwrap_or("2026-01-01"),
        "publisher": "vitals-ledger",
        "kind": "instance",
        "software": { "name": "ledger-service", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "The provenance ledger's FHIR R4 facade (read-only)", "url": s.url("/fhir") },
        "fhirVersion": "4.0.1",
        "format": ["json", "application/fhir+json"],
        "rest": [{
            "mode": "server",
            "documentation": "Read-only. Unknown search parameters are ignored (and listed in the Bundle's OperationOutcome) unless Prefer: handling=strict, which refuses them (400).",
            "security": {
                "description": "Bearer tokens of the ledger's API (Authorization: Bearer …), role reader or above; every request is recorded in the access trail.",
            },
            "resource": [observation, device, provenance, patient],
        }],
    }))
}
