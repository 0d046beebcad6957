//! The access trail for protected health information (HIPAA §164.312(b)).
//!
//! Every request to a route that reads or changes patient data — readings and their evidence,
//! alerts, patients' alert limits, exports and their files, log entries (which hold readings)
//! — by an identified caller is recorded once its answer is ready: who (token id, name, role),
//! what (method, path, query, the patient it names), when, from where (the client's address),
//! and the status (a refusal is recorded too). A request without a valid token is not (there is
//! nobody to name; it is counted in `ledger_access_unidentified_total`).
//!
//! Records go through a bounded queue to one writer that appends them in batches (at most
//! every 50 ms), so a read costs a queue push, not a database round trip. The queue never drops:
//! when it is full, requests wait for the writer (backpressure). A crash may lose the records of
//! the last batch not yet written (at most ~50 ms of requests). The table is append-only (the
//! engines' triggers refuse updates and deletes); admins read it at `GET /v1/access-log` and
//! export it with `ledger-service export-access-log`.

use crate::auth::CallerSlot;
use crate::db::access::AccessRecord;
use crate::state::{now_ms, Shared};
use crate::trail::clean;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::Arc;

/// The routes whose requests are recorded.
pub fn is_phi(path: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "/v1/ward",
        // A household's feed is ciphertext, but who read whose, and when, is worth the trail.
        "/v1/households/",
        "/v1/access-log",
        "/v1/readings",
        "/v1/alerts",
        "/v1/patients/",
        "/v1/fhir/",
        // The FHIR facade (its metadata too: cheap, and who looked is still worth knowing).
        "/fhir/",
        "/v1/log/entries/",
    ];
    PREFIXES.iter().any(|p| path.starts_with(p))
}

/// The patient a request names: `patient=` in the query, or `/v1/patients/{p}/…`.
fn patient_of(path: &str, query: &str) -> Option<String> {
    // FHIR searches name the patient as a reference (`patient=Patient/p`, `subject=…`).
    let from_query = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "patient" || (path.starts_with("/fhir/") && k == "subject"))
        .map(|(_, v)| {
            let v = v.into_owned();
            match v.rsplit_once("Patient/") {
                Some((_, id)) if path.starts_with("/fhir/") => id.to_string(),
                _ => v,
            }
        });
    let from_path = path
        .strip_prefix("/v1/patients/")
        .or_else(|| path.strip_prefix("/fhir/Patient/"))
        .and_then(|rest| rest.split('/').next())
        .map(|p| {
            percent_encoding::percent_decode_str(p)
                .decode_utf8_lossy()
                .into_owned()
        });
    from_query
        .or(from_path)
        .filter(|p| !p.is_empty())
        .map(|p| clean(&p, 64))
}

/// Records the requests to patient data (see the module documentation).
pub async fn record(State(s): State<Arc<Shared>>, mut req: Request, next: Next) -> Response {
    if !is_phi(req.uri().path()) {
        return next.run(req).await; // ingest and the rest: no allocation, nothing recorded
    }
    let path = req.uri().path().to_string();
    let slot = CallerSlot::default();
    req.extensions_mut().insert(slot.clone());
    let method = req.method().to_string();
    let query = clean(req.uri().query().unwrap_or(""), 2048);
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string());
    let resp = next.run(req).await;
    let Some(caller) = slot.take() else {
        s.metrics.access_unidentified.inc();
        return resp;
    };
    let record = AccessRecord {
        id: 0,
        at: now_ms(),
        token_id: caller.token_id,
        token_name: clean(&caller.name, 128),
        role: caller.role.as_str().into(),
        method,
        patient: patient_of(&path, &query),
        path: clean(&path, 2048),
        query,
        status: resp.status().as_u16(),
        remote,
    };
    s.access.record(record).await;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            patient_of("/v1/readings", "patient=%00x%0D%0A").as_deref(),
            Some("\\u{0}x\\r\\n")
        );
        assert_eq!(clean("abc", 2), "ab");
    }

    #[test]
    fn the_patient_is_found_in_the_query_or_the_path() {
        assert_eq!(
            patient_of("/v1/readings", "patient=p%201&limit=3").as_deref(),
            Some("p 1")
        );
        assert_eq!(
            patient_of("/v1/patients/p%2F2/alert-limits", "").as_deref(),
            Some("p/2")
        );
        assert_eq!(patient_of("/v1/readings/7", ""), None);
        assert_eq!(patient_of("/v1/alerts", "patient="), None);
    }

    #[test]
    fn only_patient_data_routes_are_recorded() {
        for p in [
            "/v1/readings",
            "/v1/readings/1/evidence",
            "/v1/alerts/x",
            "/v1/fhir/$export",
            "/v1/log/entries/3",
            "/v1/patients/p/alert-limits",
            "/v1/households/HH-0001/feed",
        ] {
            assert!(is_phi(p), "{p}");
        }
        for p in [
            "/healthz",
            "/metrics",
            "/v1/log/checkpoint",
            "/tile/0/000",
            "/v1/ingest",
            "/v1/tokens",
        ] {
            assert!(!is_phi(p), "{p}");
        }
    }
}
