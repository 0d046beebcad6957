//! The access trail's storage side: a bounded queue and the one writer that appends its
//! records in batches (see `access.rs` for what is recorded and why).

use crate::db::access::AccessRecord;
use crate::db::Db;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;

/// Records the queue holds before requests wait.
const QUEUE: usize = 16_384;

/// Records per batch written.
const BATCH: usize = 1024;

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
    pub(crate) async fn record(&self, r: AccessRecord) {
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
pub(crate) fn clean(text: &str, max: usize) -> String {
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
