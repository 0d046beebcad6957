//! `Device`, `Provenance` and `Patient` read and search. Devices and patients come from the
//! registry the logged events make (one `Device` per device key; a `Patient` per pseudonym a
//! sensor was ever assigned to, pseudonymous: nothing but the pseudonym); a `Provenance` is a
//! reading's (both original COSE signatures), the same one its Observation contains.

use super::search::{self, Params};
use super::{check_format, search_error, Fhir};
use crate::auth::{Allowed, Readers};
use crate::error::{ApiError, ApiResult};
use crate::routes::extract::ApiPath;
use crate::state::Shared;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use provenance_core::keys::KeyId;
use provenance_core::log_entry::DecodedBody;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The identifier system of patient pseudonyms.
pub const PSEUDONYM_SYSTEM: &str = "urn:vitals-ledger:patient-pseudonym";
/// The identifier systems of devices.
const DEVICE_ID_SYSTEM: &str = "urn:vitals-ledger:device-id";
const KEY_ID_SYSTEM: &str = "urn:vitals-ledger:key-id";

/// The `Patient` id of a pseudonym: itself when it is a FHIR id (and does not look like a
/// hashed one), else `h-` and 40 hex digits of its SHA-256.
pub fn patient_id(pseudonym: &str) -> String {
    if search::valid_id(pseudonym) && !pseudonym.starts_with("h-") {
        pseudonym.to_string()
    } else {
        format!(
            "h-{}",
            &hex::encode(Sha256::digest(pseudonym.as_bytes()))[..40]
        )
    }
}

/// Every pseudonym a sensor was assigned to, sorted by Patient id.
fn pseudonyms(s: &Shared) -> Vec<(String, String)> {
    let registry = s.registry();
    let mut all: Vec<(String, String)> = registry
        .devices()
        .flat_map(|(_, d)| d.assignments.iter().map(|a| a.pseudonym.clone()))
        .map(|p| (patient_id(&p), p))
        .collect();
    all.sort();
    all.dedup();
    all
}

/// The pseudonym of a `Patient` id, if some sensor was assigned to it.
pub fn pseudonym_of(s: &Shared, id: &str) -> Option<String> {
    if !id.starts_with("h-") {
        let registry = s.registry();
        let known = registry
            .devices()
            .any(|(_, d)| d.assignments.iter().any(|a| a.pseudonym == id));
        return known.then(|| id.to_string());
    }
    pseudonyms(s)
        .into_iter()
        .find(|(pid, _)| pid == id)
        .map(|(_, p)| p)
}

/// The key of a `Device` id `key-<hex>` and its device id.
pub fn device_key(s: &Shared, id: &str) -> Option<(KeyId, String)> {
    let hex_id = id.strip_prefix("key-")?;
    let kid = key_of(hex_id)?;
    let registry = s.registry();
    let key = registry.key(&kid)?;
    Some((kid, key.cert.subject_cn.clone()))
}

/// A key id from its lower-case hex (as `Device` ids carry it).
fn key_of(hex_id: &str) -> Option<KeyId> {
    if hex_id.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    KeyId::from_slice(&hex::decode(hex_id).ok()?)
}

fn patient(pseudonym: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "id": patient_id(pseudonym),
        "identifier": [{ "system": PSEUDONYM_SYSTEM, "value": pseudonym }],
        "active": true,
    })
}

/// A searchset of an in-memory list sorted by id: the page after `cursor` (the last id of the
/// previous page), with self and next links.
fn list_bundle(
    s: &Shared,
    kind: &str,
    p: &Params,
    all: Vec<(String, Value)>,
    count: u32,
    cursor: Option<&str>,
) -> Value {
    let total = all.len();
    let page: Vec<(String, Value)> = all
        .into_iter()
        .filter(|(id, _)| cursor.is_none_or(|c| id.as_str() > c))
        .take(count as usize)
        .collect();
    let used = p.used_for_link();
    let link = |extra: Option<&str>| super::search_link(s, kind, &used, extra);
    let mut links = vec![json!({ "relation": "self", "url": link(cursor) })];
    if page.len() == count as usize && count > 0 {
        if let Some((last, _)) = page.last() {
            links.push(json!({ "relation": "next", "url": link(Some(last)) }));
        }
    }
    let mut entries: Vec<Value> = page
        .into_iter()
        .map(|(id, r)| super::bundle_entry(Some(s.url(&format!("/fhir/{kind}/{id}"))), r, "match"))
        .collect();
    entries.extend(super::ignored_entry(&p.ignored()));
    super::searchset(links, entries, Some(total as u64))
}

/// `identifier` token values (comma-separated: any of them): (system if given, value).
type Tokens = Vec<(Option<String>, String)>;

/// Whether `(system, value)` matches one of the `identifier` token values.
fn identifier_matches(wanted: &Tokens, system: &str, value: &str) -> bool {
    wanted
        .iter()
        .any(|(sys, v)| sys.as_deref().is_none_or(|s| s == system) && v == value)
}

fn identifiers(p: &mut Params) -> Result<Option<Tokens>, search::SearchError> {
    Ok(p.one("identifier")?.map(|v| {
        search::tokens(&v)
            .into_iter()
            .map(|(s, c)| (s.map(String::from), c.to_string()))
            .collect()
    }))
}

/// The parameters of a search by `identifier` and `_id`, paged (Device, Patient).
type ByIdentifier = (Option<Tokens>, Option<String>, u32, Option<String>);

fn by_identifier(p: &mut Params) -> Result<ByIdentifier, search::SearchError> {
    let ids = identifiers(p)?;
    let only = p.one("_id")?;
    let count = search::count(p)?;
    let cursor = cursor_param(p)?;
    p.finish(&["identifier", "_id", "_count", "_cursor"])?;
    Ok((ids, only, count, cursor))
}

fn cursor_param(p: &mut Params) -> Result<Option<String>, search::SearchError> {
    let c = p.one("_cursor")?;
    if c.as_deref().is_some_and(|c| !search::valid_id(c)) {
        return Err(search::SearchError {
            detail: "_cursor: not a cursor this server gave".into(),
            unsupported: false,
        });
    }
    Ok(c)
}

/// `GET /fhir/Device/{id}`.
#[utoipa::path(get, path = "/fhir/Device/{id}", tag = "fhir", operation_id = "fhir_device_read", security(("bearer" = [])), description = "A device key as a FHIR Device.", params(("id" = String, Path, description = "key-<key id>")),
    responses((status = 200, description = "Device", body = serde_json::Value, content_type = "application/fhir+json"), (status = 400, description = "A bad search (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 401, description = "Missing or unknown token (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 404, description = "No such resource (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json")))]
pub(crate) async fn device_read(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<Readers>,
    ApiPath(id): ApiPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Fhir> {
    check_format(q.as_deref())?;
    let registry = s.registry();
    let key = id
        .strip_prefix("key-")
        .and_then(key_of)
        .and_then(|kid| registry.key(&kid))
        .ok_or_else(|| ApiError::not_found(format!("no Device {id:?} (ids are key-<key id>)")))?;
    Ok(Fhir(crate::fhir::device(&key.cert)))
}

/// `GET /fhir/Device?…`: by `identifier` (device id or key id), `_id`, paged by key id.
#[utoipa::path(get, path = "/fhir/Device", tag = "fhir", operation_id = "fhir_device_search", security(("bearer" = [])), description = "FHIR search of Devices (one per device key): identifier, _id, _count.", params(("identifier" = Option<String>, Query, description = "urn:vitals-ledger:device-id|<id>")),
    responses((status = 200, description = "searchset Bundle", body = serde_json::Value, content_type = "application/fhir+json"), (status = 400, description = "A bad search (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 401, description = "Missing or unknown token (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 404, description = "No such resource (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json")))]
pub(crate) async fn device_search(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<Readers>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Fhir> {
    check_format(q.as_deref())?;
    let mut p =
        Params::parse(q.as_deref(), search::prefers_strict(&headers)).map_err(search_error)?;
    let (ids, only, count, cursor) = by_identifier(&mut p).map_err(search_error)?;
    let registry = s.registry();
    let mut all: Vec<(String, Value)> = registry
        .devices()
        .flat_map(|(_, d)| d.keys.iter().filter_map(|k| registry.key(k)))
        .filter(|k| {
            ids.as_ref().is_none_or(|ids| {
                identifier_matches(ids, DEVICE_ID_SYSTEM, &k.cert.subject_cn)
                    || identifier_matches(ids, KEY_ID_SYSTEM, &k.cert.key_id.to_hex())
            })
        })
        .map(|k| {
            (
                crate::fhir::device_id(&k.cert.key_id),
                crate::fhir::device(&k.cert),
            )
        })
        .filter(|(id, _)| only.as_ref().is_none_or(|o| o == id))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Fhir(list_bundle(
        &s,
        "Device",
        &p,
        all,
        count,
        cursor.as_deref(),
    )))
}

/// The Provenance of the reading `idx`.
async fn provenance_of(s: &Shared, idx: u64) -> ApiResult<Value> {
    let (_, entry) = crate::evidence::reading_entry(s, idx).await?;
    let Ok(DecodedBody::Reading(env)) = entry.decode_body() else {
        return Err(ApiError::internal("a reading entry that does not decode"));
    };
    Ok(crate::fhir::provenance(
        idx,
        &env,
        &entry.body,
        entry.logged_at_ms,
    ))
}

/// `GET /fhir/Provenance/{id}`.
#[utoipa::path(get, path = "/fhir/Provenance/{id}", tag = "fhir", operation_id = "fhir_provenance_read", security(("bearer" = [])), description = "A reading's Provenance: both original COSE signatures.", params(("id" = String, Path, description = "reading-<log index>")),
    responses((status = 200, description = "Provenance", body = serde_json::Value, content_type = "application/fhir+json"), (status = 400, description = "A bad search (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 401, description = "Missing or unknown token (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 404, description = "No such resource (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json")))]
pub(crate) async fn provenance_read(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<Readers>,
    ApiPath(id): ApiPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Fhir> {
    check_format(q.as_deref())?;
    let idx = super::observation::index_of(&id).ok_or_else(|| {
        ApiError::not_found(format!(
            "no Provenance {id:?} (ids are reading-<log index>)"
        ))
    })?;
    Ok(Fhir(provenance_of(&s, idx).await?))
}

/// `GET /fhir/Provenance?target=Observation/reading-<index>` (or `_id`).
#[utoipa::path(get, path = "/fhir/Provenance", tag = "fhir", operation_id = "fhir_provenance_search", security(("bearer" = [])), description = "FHIR search of Provenance by target (Observation/reading-<log index>) or _id.", params(("target" = Option<String>, Query, description = "Observation/reading-<log index>")),
    responses((status = 200, description = "searchset Bundle", body = serde_json::Value, content_type = "application/fhir+json"), (status = 400, description = "A bad search (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 401, description = "Missing or unknown token (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 404, description = "No such resource (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json")))]
pub(crate) async fn provenance_search(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<Readers>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Fhir> {
    check_format(q.as_deref())?;
    let mut p =
        Params::parse(q.as_deref(), search::prefers_strict(&headers)).map_err(search_error)?;
    let parsed = (|| {
        let target = p.one("target")?;
        let only = p.one("_id")?;
        let count = search::count(&mut p)?;
        p.finish(&["target", "_id", "_count"])?;
        Ok((target, only, count))
    })();
    let (target, only, count) = parsed.map_err(search_error)?;
    if target.is_none() && only.is_none() {
        return Err(search_error(search::SearchError {
            detail: "give target=Observation/reading-<log index> (or _id): every Provenance at once is not served (search Observation instead: each contains its Provenance)".into(),
            unsupported: true,
        }));
    }
    let mut ids: Vec<String> = Vec::new();
    if let Some(t) = &target {
        if t.split(',').count() > 100 {
            return Err(search_error(search::SearchError {
                detail: "target: at most 100 references in one search".into(),
                unsupported: false,
            }));
        }
        for v in t.split(',') {
            let id = search::reference_id("Observation", v).ok_or_else(|| {
                search_error(search::SearchError {
                    detail: format!("target={v:?}: not an Observation reference"),
                    unsupported: false,
                })
            })?;
            ids.push(id.to_string());
        }
    }
    if let Some(o) = &only {
        if target.is_some() {
            ids.retain(|i| i == o);
        } else {
            ids.push(o.clone());
        }
    }
    ids.sort();
    ids.dedup();
    let mut all = Vec::new();
    for id in ids.into_iter().take(search::MAX_COUNT as usize) {
        let Some(idx) = super::observation::index_of(&id) else {
            continue;
        };
        match provenance_of(&s, idx).await {
            Ok(r) => all.push((id, r)),
            // A target that is no (served) reading matches nothing.
            Err(e) if e.status.is_client_error() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(Fhir(list_bundle(&s, "Provenance", &p, all, count, None)))
}

/// `GET /fhir/Patient/{id}`.
#[utoipa::path(get, path = "/fhir/Patient/{id}", tag = "fhir", operation_id = "fhir_patient_read", security(("bearer" = [])), description = "A pseudonymous Patient (the pseudonym, nothing else).", params(("id" = String, Path, description = "the pseudonym, or h-<hash>")),
    responses((status = 200, description = "Patient", body = serde_json::Value, content_type = "application/fhir+json"), (status = 400, description = "A bad search (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 401, description = "Missing or unknown token (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 404, description = "No such resource (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json")))]
pub(crate) async fn patient_read(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<Readers>,
    ApiPath(id): ApiPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Fhir> {
    check_format(q.as_deref())?;
    let p = search::valid_id(&id)
        .then(|| pseudonym_of(&s, &id))
        .flatten()
        .ok_or_else(|| ApiError::not_found(format!("no Patient {id:?}")))?;
    Ok(Fhir(patient(&p)))
}

/// `GET /fhir/Patient?…`: by `identifier` (the pseudonym) or `_id`, paged by id.
#[utoipa::path(get, path = "/fhir/Patient", tag = "fhir", operation_id = "fhir_patient_search", security(("bearer" = [])), description = "FHIR search of pseudonymous Patients: identifier, _id, _count.", params(("identifier" = Option<String>, Query, description = "urn:vitals-ledger:patient-pseudonym|<pseudonym>")),
    responses((status = 200, description = "searchset Bundle", body = serde_json::Value, content_type = "application/fhir+json"), (status = 400, description = "A bad search (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 401, description = "Missing or unknown token (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 404, description = "No such resource (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json")))]
pub(crate) async fn patient_search(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<Readers>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Fhir> {
    check_format(q.as_deref())?;
    let mut p =
        Params::parse(q.as_deref(), search::prefers_strict(&headers)).map_err(search_error)?;
    let (ids, only, count, cursor) = by_identifier(&mut p).map_err(search_error)?;
    let all: Vec<(String, Value)> = pseudonyms(&s)
        .into_iter()
        .filter(|(id, ps)| {
            ids.as_ref()
                .is_none_or(|ids| identifier_matches(ids, PSEUDONYM_SYSTEM, ps))
                && only.as_ref().is_none_or(|o| o == id)
        })
        .map(|(id, ps)| (id, patient(&ps)))
        .collect();
    Ok(Fhir(list_bundle(
        &s,
        "Patient",
        &p,
        all,
        count,
        cursor.as_deref(),
    )))
}
