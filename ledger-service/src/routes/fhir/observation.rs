//! `Observation` read and search. Each Observation is a logged reading (vital-signs profile);
//! it contains its `Provenance` (the sensor's COSE_Sign1 and the gateway's envelope, the
//! original bytes) and links the reading's evidence bundle, so a FHIR client can reach the
//! proof. Search pages are keyset pages over a snapshot of the log taken at the first page (its
//! size then): a reading logged while a client pages is not in that search, and none is lost
//! or repeated across its pages.

use super::resources::{device_key, patient_id, pseudonym_of};
use super::search::{self, Params, Range};
use super::{bundle_entry, check_format, ignored_entry, search_error, searchset, Fhir};
use crate::auth::{Allowed, Readers};
use crate::db::charts::value_index;
use crate::db::fhir::{CodeMatch, ObsFilter, ObsRow};
use crate::error::{ApiError, ApiResult};
use crate::routes::extract::ApiPath;
use crate::state::Shared;
use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use provenance_core::cose::GatewayEnvelope;
use provenance_core::keys::KeyId;
use provenance_core::log_entry::{DecodedBody, LogEntry};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The extension linking an Observation to its reading's evidence bundle.
pub const EVIDENCE_EXTENSION: &str = "urn:vitals-ledger:fhir:evidence-bundle";
/// The LOINC code of the vital-signs panel (a reading of several signs).
const PANEL: &str = "85353-1";
/// A total is counted only up to this many matches (beyond, it is left out).
const TOTAL_CAP: u64 = 100_000;
/// The search parameters of Observation (names without modifiers).
const KNOWN: [&str; 14] = [
    "patient",
    "subject",
    "device",
    "code",
    "component-code",
    "combo-code",
    "date",
    "_lastUpdated",
    "_id",
    "_count",
    "_sort",
    "_include",
    "_cursor",
    "_total",
];

/// The Observation of the reading logged at `idx` (leaf `leaf`), with its contained
/// Provenance and evidence link.
pub fn resource(
    s: &Shared,
    idx: u64,
    entry: &LogEntry,
    env: &GatewayEnvelope,
    patient: Option<&str>,
) -> Value {
    let mut obs = crate::fhir::observation(idx, env, patient, Some(entry.logged_at_ms));
    let mut prov = crate::fhir::provenance(idx, env, &entry.body, entry.logged_at_ms);
    prov["id"] = json!("provenance");
    prov["target"] = json!([{ "reference": "#" }]);
    obs["meta"]["lastUpdated"] = json!(crate::fhir::iso8601(entry.logged_at_ms));
    if let Some(p) = patient {
        obs["subject"]["reference"] = json!(format!("Patient/{}", patient_id(p)));
    }
    obs["contained"] = Value::Array(vec![prov]);
    obs["extension"] = json!([{
        "url": EVIDENCE_EXTENSION,
        "valueUrl": s.url(&format!("/v1/readings/{idx}/evidence")),
    }]);
    obs
}

/// The log index of an Observation id `reading-<index>`.
pub fn index_of(id: &str) -> Option<u64> {
    let n = id.strip_prefix("reading-")?;
    (!n.is_empty() && n.len() <= 19 && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())?
}

/// `GET /fhir/Observation/{id}`.
#[utoipa::path(get, path = "/fhir/Observation/{id}", tag = "fhir", operation_id = "fhir_observation_read", security(("bearer" = [])), description = "A reading as a FHIR R4 Observation (vital-signs profile), containing its Provenance with both original COSE signatures and linking its evidence bundle.", params(("id" = String, Path, description = "reading-<log index>")),
    responses((status = 200, description = "Observation", body = serde_json::Value, content_type = "application/fhir+json"), (status = 400, description = "A bad search (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 401, description = "Missing or unknown token (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 404, description = "No such resource (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json")))]
pub(crate) async fn read(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<Readers>,
    ApiPath(id): ApiPath<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<Fhir> {
    check_format(q.as_deref())?;
    let idx = index_of(&id).ok_or_else(|| {
        ApiError::not_found(format!(
            "no Observation {id:?} (ids are reading-<log index>)"
        ))
    })?;
    let (_, entry) = crate::evidence::reading_entry(&s, idx).await?;
    let Ok(DecodedBody::Reading(env)) = entry.decode_body() else {
        return Err(ApiError::internal("a reading entry that does not decode"));
    };
    let patient = s.db.reading_path(idx).await?.and_then(|p| p.1);
    Ok(Fhir(resource(&s, idx, &entry, &env, patient.as_deref())))
}

/// A search, parsed: the filter, what the storage cannot check (the device key), and paging.
struct Parsed {
    filter: ObsFilter,
    /// Matches nothing (an unknown patient, device or code).
    nothing: bool,
    kid: Option<KeyId>,
    last_updated: Range,
    desc: bool,
    include_device: bool,
    count: u32,
    cursor: Option<String>,
    total: Total,
}

/// `_total`: whether a Bundle states how many readings match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Total {
    /// Never.
    None,
    /// When it is known without counting (every match in this first page, or `_count=0`).
    Estimate,
    /// Counted (up to [`TOTAL_CAP`]) for every page.
    Accurate,
}

fn code_matches(param: &str, v: &str) -> Vec<CodeMatch> {
    search::tokens(v)
        .into_iter()
        .filter(|(sys, _)| sys.is_none_or(|s| s == "http://loinc.org"))
        .filter_map(|(_, code)| match (param, code) {
            ("code" | "combo-code", PANEL) => Some(CodeMatch::Panel),
            ("code", c) => value_index(c).map(CodeMatch::Single),
            ("component-code", c) => value_index(c).map(CodeMatch::Component),
            (_, c) => value_index(c).map(CodeMatch::Any),
        })
        .collect()
}

fn parse(s: &Shared, p: &mut Params) -> Result<Parsed, search::SearchError> {
    let bad = |m: String| search::SearchError {
        detail: m,
        unsupported: false,
    };
    let mut f = ObsFilter::default();
    let mut nothing = false;
    for name in ["patient", "subject"] {
        if let Some(v) = p.one(name)? {
            let id = search::reference_id("Patient", &v).ok_or_else(|| {
                bad(format!(
                    "{name}={v:?}: not a Patient reference (Patient/<id>)"
                ))
            })?;
            match pseudonym_of(s, id) {
                Some(ps) if f.patient.as_ref().is_none_or(|o| *o == ps) => f.patient = Some(ps),
                _ => nothing = true,
            }
        }
    }
    let mut kid = None;
    if let Some(v) = p.one("device")? {
        let id = search::reference_id("Device", &v).ok_or_else(|| {
            bad(format!(
                "device={v:?}: not a Device reference (Device/key-<key id>)"
            ))
        })?;
        match device_key(s, id) {
            // The sensor's readings; those signed with its other keys are left out per page.
            Some((k, sensor_id)) => {
                f.sensor = Some(sensor_id);
                kid = Some(k);
            }
            None => nothing = true,
        }
    }
    for name in ["code", "component-code", "combo-code"] {
        for v in p.all(name) {
            let mut m = code_matches(name, &v);
            // At most a few distinct matches, however many tokens were sent.
            m.sort_by_key(|c| format!("{c:?}"));
            m.dedup();
            nothing |= m.is_empty();
            f.codes.push(m);
        }
    }
    if let Some(v) = p.one("_id")? {
        match index_of(&v) {
            Some(i) => f.positions = Some((i, i.saturating_add(1))),
            None => nothing = true,
        }
    }
    let measured = search::date_range(p, "date")?;
    nothing |= measured.is_empty();
    if measured != Range::ALL {
        f.measured = Some((measured.lo, measured.hi));
    }
    let last_updated = search::date_range(p, "_lastUpdated")?;
    nothing |= last_updated.is_empty();
    let mut desc = false;
    for v in p.all("_sort") {
        match v.as_str() {
            "date" => desc = false,
            "-date" => desc = true,
            other => p.unsupported_value("_sort", other)?,
        }
    }
    let mut include_device = false;
    for v in p.all("_include") {
        match v.as_str() {
            "Observation:device" | "Observation:device:Device" => include_device = true,
            other => p.unsupported_value("_include", other)?,
        }
    }
    let count = search::count(p)?;
    let cursor = p.one("_cursor")?;
    let total = match p.one("_total")?.as_deref() {
        None | Some("estimate") => Total::Estimate,
        Some("none") => Total::None,
        Some("accurate") => Total::Accurate,
        Some(other) => {
            p.unsupported_value("_total", other)?;
            Total::Estimate
        }
    };
    p.finish(&KNOWN)?;
    Ok(Parsed {
        filter: f,
        nothing,
        kid,
        last_updated,
        desc,
        include_device,
        count,
        cursor,
        total,
    })
}

/// A page position: the direction, the last reading's (measured-at, index), the snapshot size
/// and the search it belongs to. Opaque to clients (`_cursor` of a next link); whatever a client
/// sends instead is decoded with bounds (fuzz target `fhir_search`) and must name this search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    desc: bool,
    after: (u64, u64),
    snapshot: u64,
    search: String,
}

impl Cursor {
    /// The opaque `_cursor` text.
    pub fn encode(&self) -> String {
        let text = format!(
            "o1.{}.{}.{}.{}.{}",
            if self.desc { "d" } else { "a" },
            self.after.0,
            self.after.1,
            self.snapshot,
            self.search
        );
        base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, text)
    }

    /// A cursor from its text, if it is one (any search: the caller checks it is this one).
    pub fn decode(c: &str) -> Option<Self> {
        if c.len() > 200 {
            return None;
        }
        let raw =
            base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, c).ok()?;
        let text = String::from_utf8(raw).ok()?;
        let parts: Vec<&str> = text.split('.').collect();
        let [tag, dir, at, idx, snap, search] = parts.as_slice() else {
            return None;
        };
        (*tag == "o1" && (*dir == "a" || *dir == "d")).then_some(())?;
        Some(Self {
            desc: *dir == "d",
            after: (at.parse().ok()?, idx.parse().ok()?),
            snapshot: snap.parse().ok()?,
            search: search.to_string(),
        })
    }
}

/// What a cursor is bound to: the search's parameters but the page size and the cursor.
fn search_key(used: &[(String, String)]) -> String {
    let mut h = Sha256::new();
    for (k, v) in used.iter().filter(|(k, _)| k != "_count") {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([1]);
    }
    hex::encode(&h.finalize()[..8])
}

fn link(s: &Shared, used: &[(String, String)], cursor: Option<&str>) -> String {
    super::search_link(s, "Observation", used, cursor)
}

/// `GET /fhir/Observation?…`.
#[utoipa::path(get, path = "/fhir/Observation", tag = "fhir", operation_id = "fhir_observation_search", security(("bearer" = [])), description = "FHIR search of Observations: patient, subject, device, code, component-code, combo-code, date, _lastUpdated (prefixes eq ge gt le lt sa eb), _id, _count, _sort=date|-date, _include=Observation:device, _total=none|estimate|accurate (estimate, the default: a total when the first page holds every match or _count=0; accurate: counted, up to 100,000). A searchset Bundle paged by its next link; unknown parameters are ignored unless Prefer: handling=strict.", params(("patient" = Option<String>, Query, description = "Patient/<id> or <id>"), ("code" = Option<String>, Query, description = "LOINC code, e.g. 8867-4"), ("date" = Option<String>, Query, description = "e.g. ge2026-12-01"), ("_count" = Option<u32>, Query, description = "0 to 1000")),
    responses((status = 200, description = "searchset Bundle", body = serde_json::Value, content_type = "application/fhir+json"), (status = 400, description = "A bad search (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 401, description = "Missing or unknown token (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json"), (status = 404, description = "No such resource (OperationOutcome)", body = serde_json::Value, content_type = "application/fhir+json")))]
pub(crate) async fn search(
    State(s): State<Arc<Shared>>,
    _caller: Allowed<Readers>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> ApiResult<Fhir> {
    check_format(q.as_deref())?;
    let mut p =
        Params::parse(q.as_deref(), search::prefers_strict(&headers)).map_err(search_error)?;
    let mut parsed = parse(&s, &mut p).map_err(search_error)?;
    let used = p.used_for_link();
    let key = search_key(&used);
    let (snapshot, after) = match &parsed.cursor {
        None => (s.committed(), None),
        Some(c) => {
            let c = Cursor::decode(c)
                .filter(|c| c.search == key && c.desc == parsed.desc)
                .ok_or_else(|| {
                    search_error(search::SearchError {
                        detail: "_cursor: not a cursor this server gave for this search (keep every other parameter of the next link)".into(),
                        unsupported: false,
                    })
                })?;
            // A snapshot is never past what is committed (a forged cursor cannot see further).
            (c.snapshot.min(s.committed()), Some(c.after))
        }
    };
    // The snapshot, and _lastUpdated as log positions (logging times never go back).
    let mut positions = parsed.filter.positions.unwrap_or((0, snapshot));
    positions.1 = positions.1.min(snapshot);
    let lu = parsed.last_updated;
    if lu.lo > 0 {
        positions.0 = positions
            .0
            .max(s.db.first_logged_after(lu.lo - 1, snapshot).await?);
    }
    if lu.hi < Range::ALL.hi {
        positions.1 = positions
            .1
            .min(s.db.first_logged_after(lu.hi - 1, snapshot).await?);
    }
    parsed.nothing |= positions.0 >= positions.1;
    parsed.filter.positions = Some(positions);

    let f = &parsed.filter;
    // One row more than the page: whether there is a next page, without an empty last one.
    let mut rows: Vec<ObsRow> = if parsed.nothing || parsed.count == 0 {
        Vec::new()
    } else {
        s.db.observation_page(f, parsed.desc, after, parsed.count + 1)
            .await?
    };
    let more = rows.len() > parsed.count as usize;
    rows.truncate(parsed.count as usize);
    // Counted only when asked for (a count reads every match: at 10 M readings it was most of
    // a page's cost); else stated when this first page holds every match.
    let complete = parsed.cursor.is_none() && !more;
    let counted = match (parsed.total, parsed.nothing) {
        (Total::None, _) => false,
        (_, true) => false,
        (Total::Accurate, false) => true,
        (Total::Estimate, false) => parsed.count == 0,
    };
    let total = if counted {
        s.db.observation_count(f, TOTAL_CAP).await?
    } else {
        None
    };
    let next = more.then(|| rows.last()).flatten().map(|last| {
        Cursor {
            desc: parsed.desc,
            after: (last.measured_at, last.idx),
            snapshot,
            search: key.clone(),
        }
        .encode()
    });

    let mut entries = Vec::with_capacity(rows.len());
    let mut devices: Vec<KeyId> = Vec::new();
    for row in &rows {
        let entry = LogEntry::from_cbor(&row.leaf).map_err(ApiError::internal)?;
        let Ok(DecodedBody::Reading(env)) = entry.decode_body() else {
            return Err(ApiError::internal("a reading entry that does not decode"));
        };
        // A device search names one key: readings its sensor signed with another are not it.
        if parsed.kid.is_some_and(|k| k != env.sensor.kid) {
            continue;
        }
        if !devices.contains(&env.sensor.kid) {
            devices.push(env.sensor.kid);
        }
        entries.push(bundle_entry(
            Some(s.url(&format!("/fhir/Observation/reading-{}", row.idx))),
            resource(&s, row.idx, &entry, &env, row.patient.as_deref()),
            "match",
        ));
    }
    let total = match parsed.total {
        Total::None => None,
        _ if parsed.nothing => Some(0),
        // Every match is in this page (a device search's other keys left out above).
        _ if complete && !counted => Some(entries.len() as u64),
        _ => total,
    };
    if parsed.include_device {
        let registry = s.registry();
        for kid in devices {
            if let Some(k) = registry.key(&kid) {
                entries.push(bundle_entry(
                    Some(s.url(&format!("/fhir/Device/{}", crate::fhir::device_id(&kid)))),
                    crate::fhir::device(&k.cert),
                    "include",
                ));
            }
        }
    }
    entries.extend(ignored_entry(&p.ignored()));
    let mut self_params = used.clone();
    if let Some(c) = &parsed.cursor {
        self_params.push(("_cursor".into(), c.clone()));
    }
    let mut links = vec![json!({ "relation": "self", "url": link(&s, &self_params, None) })];
    if let Some(c) = &next {
        links.push(json!({ "relation": "next", "url": link(&s, &used, Some(c)) }));
    }
    Ok(Fhir(searchset(links, entries, total)))
}
