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

use crate::auth::Caller;
use crate::db::access::AccessRecord;
use crate::db::Db;
use crate::state::{now_ms, Shared};
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// Records the queue holds before requests wait.
const QUEUE: usize = 16_384;

/// Records per batch written.
const BATCH: usize = 1024;

/// The routes whose requests are recorded.
pub fn is_phi(path: &str) -> bool {
    const PREFIXES: [&str; 6] = [
        "/v1/access-log",
        "/v1/readings",
        "/v1/alerts",
        "/v1/patients/",
        "/v1/fhir/",
        "/v1/log/entries/",
    ];
    PREFIXES.iter().any(|p| path.starts_with(p))
}

/// Where the caller's identity is left by the token check for the trail to read.
#[derive(Clone, Default)]
pub struct CallerSlot(Arc<Mutex<Option<Caller>>>);

impl CallerSlot {
    /// Leaves the caller.
    pub fn set(&self, c: &Caller) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(c.clone());
    }

    fn take(&self) -> Option<Caller> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// What the writer is sent.
#[derive(Debug)]
// Records are nearly all of the traffic; boxing them would add an allocation per request.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Record(AccessRecord),
    /// Write what is queued now, then answer.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// The sending side of the trail.
#[derive(Debug)]
pub struct AccessTrail {
    tx: mpsc::Sender<Msg>,
    rx: Mutex<Option<mpsc::Receiver<Msg>>>,
}

impl Default for AccessTrail {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
        }
    }
}

impl AccessTrail {
    /// Queues a record (waits while the queue is full).
    async fn record(&self, r: AccessRecord) {
        if self.tx.send(Msg::Record(r)).await.is_err() {
            tracing::error!("the access trail writer has stopped: a record is lost");
        }
    }

    /// Waits until everything queued before now is written (at shutdown, and for tests), at
    /// most 10 s.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let done = async {
            if self.tx.send(Msg::Flush(tx)).await.is_ok() {
                let _ = rx.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), done)
            .await
            .is_err()
        {
            tracing::error!("the access trail did not drain within 10 s");
        }
    }

    /// Starts the writer (once).
    pub fn spawn_writer(&self, db: Db) -> Option<tokio::task::JoinHandle<()>> {
        let rx = self.rx.lock().unwrap_or_else(|p| p.into_inner()).take()?;
        Some(tokio::spawn(write_loop(db, rx)))
    }
}

async fn write_loop(db: Db, mut rx: mpsc::Receiver<Msg>) {
    let mut msgs = Vec::with_capacity(BATCH);
    let mut batch = Vec::with_capacity(BATCH);
    let mut waiting = Vec::new();
    loop {
        if rx.recv_many(&mut msgs, BATCH).await == 0 {
            return; // every sender is gone
        }
        // Let a batch gather for a moment under load (not when asked to flush).
        let flush_now = msgs.iter().any(|m| matches!(m, Msg::Flush(_)));
        if msgs.len() < BATCH && !flush_now {
            tokio::time::sleep(Duration::from_millis(50)).await;
            while msgs.len() < BATCH {
                match rx.try_recv() {
                    Ok(m) => msgs.push(m),
                    Err(_) => break,
                }
            }
        }
        for m in msgs.drain(..) {
            match m {
                Msg::Record(r) => batch.push(r),
                Msg::Flush(done) => waiting.push(done),
            }
        }
        write(&db, &mut batch).await;
        for done in waiting.drain(..) {
            let _ = done.send(());
        }
    }
}

/// Writes the trail from `from` (ms) as NDJSON to `out` (which must not exist); returns how
/// many records.
pub async fn export_access_log(db: &Db, out: &std::path::Path, from: u64) -> anyhow::Result<u64> {
    use std::io::Write;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(out)
        .map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    let mut w = std::io::BufWriter::new(file);
    let mut filter = crate::db::access::AccessFilter {
        from,
        to: i64::MAX as u64,
        ..Default::default()
    };
    let mut n = 0;
    loop {
        let page = db.access_page(&filter, 1000).await?;
        for r in &page {
            serde_json::to_writer(&mut w, r)?;
            w.write_all(b"\n")?;
        }
        n += page.len() as u64;
        match page.last() {
            Some(r) if page.len() == 1000 => filter.after = Some(r.id),
            _ => break,
        }
    }
    w.into_inner()?.sync_all()?;
    Ok(n)
}

/// Writes a batch: retried while storage is unavailable (the queue fills meanwhile and
/// requests wait); a batch the database refuses for its content is written row by row, and a
/// row it still refuses goes to the service's log instead (so one odd record can never stop
/// the trail).
async fn write(db: &Db, batch: &mut Vec<AccessRecord>) {
    let mut wait = Duration::from_millis(100);
    loop {
        match db.insert_access(batch).await {
            Ok(()) => break,
            // Unreachable storage (not an answer of the database's): retried.
            Err(crate::db::StorageError::Unavailable(e))
                if !matches!(e, sqlx::Error::Database(_)) =>
            {
                tracing::error!(error = %e, records = batch.len(), "cannot write the access trail; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => {
                tracing::error!(error = %e, records = batch.len(), "the access trail refused a batch; writing it row by row");
                for r in batch.iter() {
                    if let Err(e) = db.insert_access(std::slice::from_ref(r)).await {
                        tracing::error!(error = %e, record = ?r, "an access record could not be stored; logged here instead");
                    }
                }
                break;
            }
        }
    }
    batch.clear();
}

/// Text for the trail: control characters escaped (a NUL cannot be stored by PostgreSQL, and
/// a CR or LF would forge lines in an export), at most `max` characters.
fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
        if out.len() >= max {
            break;
        }
    }
    out
}

/// The patient a request names: `patient=` in the query, or `/v1/patients/{p}/…`.
fn patient_of(path: &str, query: &str) -> Option<String> {
    let from_query = form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "patient")
        .map(|(_, v)| v.into_owned());
    let from_path = path
        .strip_prefix("/v1/patients/")
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
    let path = req.uri().path().to_string();
    if !is_phi(&path) {
        return next.run(req).await;
    }
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
