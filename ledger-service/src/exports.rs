//! Archival export jobs in the FHIR Bulk Data `$export` pattern. A job is cut at a published
//! checkpoint when it is kicked off; a worker on the leading node (jobs are claimed with `FOR
//! UPDATE SKIP LOCKED` and a lease, so a new leader resumes an abandoned one) writes NDJSON files of `Observation` and `Provenance` resources in chunks, each chunk
//! fsynced and its progress recorded before the next, so a restarted service resumes where it
//! stopped (files are cut back to the recorded length). At the end come the `Device` resources
//! and the evidence: for a whole-log or index-range export, a log archive of the range
//! (`ledger-verify export` checks it, completeness included); for a per-patient export, one
//! evidence bundle per reading (other patients' readings never leave). The manifest carries the
//! checkpoint the export was cut at. Downloads are streamed from the files.

use crate::db::ExportJob;
use crate::fhir;
use crate::state::{now_ms, Shared};
use provenance_core::cose::GatewayEnvelope;
use provenance_core::log_entry::LogEntry;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::Digest as _;
use std::collections::{BTreeMap, HashSet};
use std::io::{Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Resource types an export can hold.
pub const TYPES: [&str; 3] = ["Observation", "Device", "Provenance"];
/// Readings per chunk (one fsync and one progress record each).
const CHUNK: u64 = 2000;

/// One output file's progress.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FileProgress {
    /// Resources written.
    pub count: u64,
    /// Bytes written (the file is cut back to this on resume).
    pub bytes: u64,
}

/// A job's progress: per file, and readings skipped because their payload was pruned.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    /// Per output file name.
    pub files: BTreeMap<String, FileProgress>,
    /// Readings whose payload an earlier acknowledged export pruned.
    pub pruned: u64,
}

/// An export request, checked for syntax by the handler.
#[derive(Debug, Clone)]
pub struct Request {
    /// The kick-off request as received.
    pub uri: String,
    /// Token name of the requester.
    pub requested_by: String,
    /// Per-patient export.
    pub patient: Option<String>,
    /// Resource types (some of [`TYPES`]).
    pub types: Vec<String>,
    /// Start of the range (inclusive; default 0).
    pub from_index: Option<u64>,
    /// End of the range (exclusive; default the latest checkpoint's size).
    pub to_index: Option<u64>,
    /// Only entries logged after this time (Unix ms).
    pub since: Option<u64>,
}

/// Why an export cannot be started or acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// No published checkpoint to cut at.
    #[error("the log has no published checkpoint to cut an export at yet")]
    NoCheckpoint,
    /// The range ends beyond the latest checkpoint.
    #[error("to_index {to} is beyond the latest checkpoint ({latest} entries)")]
    BeyondCheckpoint {
        /// Requested end.
        to: u64,
        /// Latest checkpoint size.
        latest: u64,
    },
    /// The range does not end at a published checkpoint.
    #[error("to_index {to} is not the size of a published checkpoint (the latest is {latest})")]
    NotACheckpoint {
        /// Requested end.
        to: u64,
        /// Latest checkpoint size.
        latest: u64,
    },
    /// A bulk export (a log archive) reaches before the shard of its checkpoint.
    #[error("a bulk export is a log archive of one shard: the export's checkpoint is of {origin}, whose entries start at {base}, but from_index is {from}; export each shard on its own (from_index at its base, to_index at its end)")]
    AcrossShards {
        /// Requested start.
        from: u64,
        /// The shard's base.
        base: u64,
        /// The shard's origin.
        origin: String,
    },
    /// The range is the wrong way round.
    #[error("the range [{from}, {to}) is empty the wrong way round")]
    EmptyRange {
        /// Start.
        from: u64,
        /// End.
        to: u64,
    },
    /// Only a complete export can be acknowledged.
    #[error("export {id} is {state}")]
    NotComplete {
        /// Job.
        id: String,
        /// Its state.
        state: String,
    },
    /// No such job.
    #[error("no export job {0}")]
    NoJob(String),
    /// Acknowledged already (an acknowledgement is final).
    #[error("export {0} is acknowledged already")]
    Acknowledged(String),
    /// The digest the archive names is not that of the manifest this service serves.
    #[error("the archive acknowledged a manifest with SHA-256 {given}, but export {id}'s manifest has SHA-256 {actual}: download it again")]
    DigestMismatch {
        /// Job.
        id: String,
        /// What the archive said.
        given: String,
        /// The manifest's digest.
        actual: String,
    },
    /// Pruning needs an acknowledgement first.
    #[error("export {0} is not acknowledged by the archive yet")]
    NotAcknowledged(String),
    /// The approver is who acknowledged (pruning needs two people).
    #[error("pruning needs a second person: {0} acknowledged this export, so another admin must approve")]
    SamePerson(String),
    /// Approved already.
    #[error("pruning of export {0} is approved already")]
    Approved(String),
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] crate::db::StorageError),
}

/// The checkpoint a job is cut at, with the registry as of it.
async fn cut_of(shared: &Shared, job: &ExportJob) -> anyhow::Result<crate::evidence::ProvedBy> {
    let (shard, cp) = shared
        .checkpoint_ending_at(job.to_index)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the checkpoint of size {} is gone", job.to_index))?;
    Ok(crate::evidence::ProvedBy::new(shared, shard, cp.note, cp.size).await?)
}

/// Queues an export cut at a published checkpoint (the latest unless `to_index` names another).
pub async fn kick_off(s: &Shared, r: Request) -> Result<ExportJob, ExportError> {
    let cp = s.latest_checkpoint().ok_or(ExportError::NoCheckpoint)?;
    // Indices are ledger positions: in a time-sharded log, the open shard's base plus its size.
    let latest = s.open_shard().base + cp.size;
    let to = match r.to_index {
        Some(to) if to > latest => return Err(ExportError::BeyondCheckpoint { to, latest }),
        Some(to) => to,
        None => latest,
    };
    let (shard, cut) = s
        .checkpoint_ending_at(to)
        .await?
        .ok_or(ExportError::NotACheckpoint { to, latest })?;
    let mut from = r.from_index.unwrap_or(0);
    if r.patient.is_none() && from < shard.base {
        // A bulk export is a log archive, and an archive is of one shard's tree.
        return Err(ExportError::AcrossShards {
            from,
            base: shard.base,
            origin: shard.origin,
        });
    }
    if let Some(at) = r.since {
        from = from.max(s.db.first_index_after(at).await?.unwrap_or(to));
    }
    if from > to {
        return Err(ExportError::EmptyRange { from, to });
    }
    let mut raw = [0u8; 12];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
    let job = ExportJob {
        id: format!("exp_{}", hex::encode(raw)),
        state: "queued".into(),
        request: r.uri,
        requested_by: r.requested_by,
        patient: r.patient,
        types: r.types,
        from_index: from,
        to_index: to,
        checkpoint: cut.note,
        transaction_time: s.db.logged_before(to).await?,
        next_index: from,
        progress: "{}".into(),
        manifest: None,
        error: None,
        created_at: now_ms(),
        acknowledged_at: None,
        acknowledged_by: None,
        manifest_sha256: None,
        prune_approved_at: None,
        prune_approved_by: None,
    };
    s.db.insert_export(&job).await?;
    Ok(job)
}

/// The manifest of a complete export as served (before any acknowledgement): the exact bytes,
/// and their SHA-256 (hex), which an acknowledgement must name.
pub fn served_manifest(s: &Shared, job: &ExportJob) -> Result<(Vec<u8>, String), ExportError> {
    let stored = job
        .manifest
        .as_deref()
        .ok_or_else(|| ExportError::NotComplete {
            id: job.id.clone(),
            state: job.state.clone(),
        })?;
    let mut manifest: serde_json::Value =
        serde_json::from_str(stored).map_err(|e| crate::db::StorageError::Corrupt {
            table: "export_jobs",
            key: job.id.clone(),
            column: 12,
            detail: format!("the manifest is not JSON: {e}"),
        })?;
    absolute_urls(&mut manifest, |path| s.url(path));
    let bytes = manifest.to_string().into_bytes();
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    Ok((bytes, digest))
}

/// The archive confirms it holds a complete export, naming the SHA-256 of the manifest it
/// received. Final: no second acknowledgement, no cancel after it. Nothing is pruned yet (see
/// [`approve_pruning`]).
pub async fn acknowledge(
    s: &Shared,
    id: &str,
    by: &str,
    manifest_sha256: &str,
    now: u64,
) -> Result<ExportJob, ExportError> {
    let job =
        s.db.export_job(id)
            .await?
            .ok_or_else(|| ExportError::NoJob(id.to_string()))?;
    if job.acknowledged_at.is_some() {
        return Err(ExportError::Acknowledged(id.into()));
    }
    if job.state != "complete" {
        return Err(ExportError::NotComplete {
            id: id.to_string(),
            state: job.state,
        });
    }
    let (_, actual) = served_manifest(s, &job)?;
    let given = manifest_sha256.to_ascii_lowercase();
    if given != actual {
        return Err(ExportError::DigestMismatch {
            id: id.into(),
            given,
            actual,
        });
    }
    if !s.db.acknowledge_export(id, now, by, &actual).await? {
        return Err(ExportError::Acknowledged(id.into()));
    }
    s.db.export_job(id)
        .await?
        .ok_or_else(|| ExportError::NoJob(id.to_string()))
}

/// A second person (an admin who did not acknowledge) approves pruning an acknowledged export:
/// readings of it measured longer ago than the retention period have their payloads pruned.
/// Returns how many.
pub async fn approve_pruning(s: &Shared, id: &str, by: &str, now: u64) -> Result<u64, ExportError> {
    let job =
        s.db.export_job(id)
            .await?
            .ok_or_else(|| ExportError::NoJob(id.to_string()))?;
    let Some(acknowledger) = job.acknowledged_by.clone() else {
        return Err(ExportError::NotAcknowledged(id.into()));
    };
    if job.prune_approved_at.is_some() {
        return Err(ExportError::Approved(id.into()));
    }
    if acknowledger == by {
        return Err(ExportError::SamePerson(acknowledger));
    }
    if !s.db.approve_pruning(id, now, by).await? {
        return Err(ExportError::Approved(id.into()));
    }
    let cutoff = now.saturating_sub(s.retention_ms);
    Ok(s.db.prune_export(&job, cutoff, now).await?)
}

/// Makes every URL of a stored manifest absolute on the public base (the stored manifest keeps
/// paths, so it stays right if the base URL changes): `request`, each `output` and `error`
/// `url`, and the evidence's `url`.
pub fn absolute_urls(manifest: &mut serde_json::Value, url: impl Fn(&str) -> String) {
    let fix = |v: &mut serde_json::Value| {
        if let Some(p) = v.as_str().filter(|p| p.starts_with('/')) {
            *v = serde_json::Value::String(url(p));
        }
    };
    fix(&mut manifest["request"]);
    for list in ["output", "error"] {
        if let Some(items) = manifest[list].as_array_mut() {
            items.iter_mut().for_each(|o| fix(&mut o["url"]));
        }
    }
    fix(&mut manifest["extension"]["https://vitals-ledger.example/fhir/export"]["evidence"]["url"]);
}

/// The folder of a job's files.
pub fn job_dir(shared: &Shared, id: &str) -> PathBuf {
    shared.export_dir.join(id)
}

/// Runs export jobs until the process ends.
pub async fn run(shared: Arc<Shared>) {
    loop {
        let wake = shared.export_wake.notified();
        if !shared.is_leader() {
            // A standby's registry copy is stale; exports run on the leader.
            let _ = tokio::time::timeout(Duration::from_millis(500), wake).await;
            continue;
        }
        match shared
            .db
            .claim_export(now_ms(), shared.export_lease_ms)
            .await
        {
            Ok(Some(job)) => {
                let id = job.id.clone();
                if let Err(e) = process(&shared, job).await {
                    tracing::error!(job = %id, error = %e, "export failed");
                    let _ = shared
                        .db
                        .finish_export(&id, None, Some(&format!("{e:#}")), now_ms())
                        .await;
                }
            }
            Ok(None) => {
                let _ = tokio::time::timeout(Duration::from_millis(500), wake).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "export jobs unavailable");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Opens an output file for appending, cut back to what the progress record says was written.
fn open_at(dir: &Path, name: &str, p: &FileProgress) -> std::io::Result<std::fs::File> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(name))?;
    f.set_len(p.bytes)?;
    f.seek(SeekFrom::End(0))?;
    Ok(f)
}

async fn process(shared: &Arc<Shared>, job: ExportJob) -> anyhow::Result<()> {
    let dir = job_dir(shared, &job.id);
    std::fs::create_dir_all(&dir)?;
    let mut progress: Progress = serde_json::from_str(&job.progress).unwrap_or_default();
    let wants = |t: &str| job.types.iter().any(|x| x == t);
    let mut outputs: Vec<&str> = Vec::new();
    if wants("Observation") {
        outputs.push("Observation.ndjson");
    }
    if wants("Provenance") {
        outputs.push("Provenance.ndjson");
    }
    if job.patient.is_some() {
        outputs.push("Evidence.ndjson");
    }
    let mut files = Vec::new();
    for name in &outputs {
        let p = progress.files.entry(name.to_string()).or_default();
        files.push((name.to_string(), open_at(&dir, name, p)?));
    }
    // Patient exports carry a bundle per reading, proved against the checkpoint the export was
    // cut at: the registry as of that checkpoint.
    let cut = match job.patient {
        Some(_) => Some(cut_of(shared, &job).await?),
        None => None,
    };
    let mut closed: BTreeMap<u32, crate::evidence::ProvedBy> = BTreeMap::new();
    let mut next = job.next_index;
    loop {
        let rows = shared
            .db
            .export_rows(next, job.to_index, job.patient.as_deref(), CHUNK)
            .await?;
        let Some(last) = rows.last().map(|r| r.0) else {
            break;
        };
        let mut lines: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        for (idx, patient, leaf, logged_at) in rows {
            if leaf.is_empty() {
                progress.pruned += 1;
                continue;
            }
            let entry = LogEntry::from_cbor(&leaf)?;
            let env = GatewayEnvelope::decode(&entry.body)?;
            let mut put = |name: &str, v: serde_json::Value| {
                let buf = lines.entry(name.to_string()).or_default();
                buf.extend_from_slice(v.to_string().as_bytes());
                buf.push(b'\n');
                *counts.entry(name.to_string()).or_default() += 1;
            };
            if wants("Observation") {
                put(
                    "Observation.ndjson",
                    fhir::observation(idx, &env, patient.as_deref(), Some(logged_at)),
                );
            }
            if wants("Provenance") {
                put(
                    "Provenance.ndjson",
                    fhir::provenance(idx, &env, &entry.body, logged_at),
                );
            }
            if let Some(cut) = &cut {
                // A reading of a closed shard is proved by that shard's final checkpoint.
                let by = match cut.covers(idx) {
                    true => cut,
                    false => {
                        let (shard, _) = shared.shard_of_index(idx);
                        if let std::collections::btree_map::Entry::Vacant(e) =
                            closed.entry(shard.number)
                        {
                            e.insert(crate::evidence::ProvedBy::of_index(shared, idx).await?);
                        }
                        &closed[&shard.number]
                    }
                };
                let bundle = crate::evidence::bundle(shared, idx, &leaf, &entry, by)
                    .await
                    .map_err(|e| anyhow::anyhow!("evidence of reading {idx}: {e}"))?;
                put("Evidence.ndjson", serde_json::to_value(&bundle)?);
            }
        }
        for (name, f) in files.iter_mut() {
            if let Some(buf) = lines.get(name.as_str()) {
                f.write_all(buf)?;
            }
            f.sync_data()?;
            let p = progress.files.entry(name.clone()).or_default();
            p.bytes = f.stream_position()?;
            p.count += counts.get(name.as_str()).copied().unwrap_or(0);
        }
        next = last + 1;
        let still = shared
            .db
            .export_progress(
                &job.id,
                next,
                &serde_json::to_string(&progress)?,
                now_ms(),
                shared.export_lease_ms,
            )
            .await?;
        if !still {
            // Cancelled meanwhile: nothing of it stays.
            drop(files);
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(());
        }
    }
    drop(files);

    // The devices of the exported readings, every key of each.
    let mut device_lines = Vec::new();
    if wants("Device") {
        let ids = shared
            .db
            .export_devices(job.from_index, job.to_index, job.patient.as_deref())
            .await?;
        let registry = shared.registry();
        let mut seen = HashSet::new();
        for id in ids {
            for k in registry.device_keys(&id) {
                if seen.insert(k.cert.key_id) {
                    device_lines.extend_from_slice(fhir::device(&k.cert).to_string().as_bytes());
                    device_lines.push(b'\n');
                }
            }
        }
        let path = dir.join("Device.ndjson");
        std::fs::write(&path, &device_lines)?;
        std::fs::File::open(&path)?.sync_all()?;
        progress.files.insert(
            "Device.ndjson".into(),
            FileProgress {
                count: seen.len() as u64,
                bytes: device_lines.len() as u64,
            },
        );
    }

    // The evidence.
    let base = format!("/v1/fhir/export-jobs/{}/files", job.id);
    let evidence = if job.patient.is_some() {
        json!({ "type": "evidence-bundles", "url": format!("{base}/Evidence.ndjson"),
                "count": progress.files.get("Evidence.ndjson").map_or(0, |p| p.count) })
    } else {
        let (shard, cp) = shared
            .checkpoint_ending_at(job.to_index)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the checkpoint of size {} is gone", job.to_index))?;
        let log = dir.join("log");
        if log.exists() {
            std::fs::remove_dir_all(&log)?; // an interrupted earlier attempt
        }
        let start = job.from_index.saturating_sub(shard.base);
        crate::archive::write_log_archive_at(&shared.db, &log, start, &cp).await?;
        json!({ "type": "log-archive", "url": format!("{base}/log/manifest.json"),
                "verify": "ledger-verify export <folder> --log-key <vkey> --issuer <ca.pem>…" })
    };
    let output: Vec<_> = ["Observation", "Device", "Provenance"]
        .iter()
        .filter(|t| wants(t))
        .map(|t| {
            let name = format!("{t}.ndjson");
            json!({ "type": t, "url": format!("{base}/{name}"),
                    "count": progress.files.get(&name).map_or(0, |p| p.count) })
        })
        .collect();
    let manifest = json!({
        "transactionTime": fhir::iso8601(job.transaction_time),
        "request": job.request,
        "requiresAccessToken": true,
        "output": output,
        "error": [],
        "extension": {
            "https://vitals-ledger.example/fhir/export": {
                "checkpoint": job.checkpoint,
                "log_range": { "start": job.from_index, "end": job.to_index },
                "evidence": evidence,
                "pruned_readings_skipped": progress.pruned,
                "bytes": progress.files.iter().map(|(k, v)| (k.clone(), v.bytes)).collect::<BTreeMap<_, _>>(),
            }
        }
    });
    shared
        .db
        .export_progress(
            &job.id,
            job.to_index,
            &serde_json::to_string(&progress)?,
            now_ms(),
            shared.export_lease_ms,
        )
        .await?;
    if !shared
        .db
        .finish_export(&job.id, Some(&manifest.to_string()), None, now_ms())
        .await?
    {
        let _ = std::fs::remove_dir_all(&dir); // cancelled at the last moment
    }
    Ok(())
}
