//! Export jobs: their rows, claims (contract 5), progress, the readings they export and the
//! pruning an acknowledged export allows.

use super::{pg, sqlite, Cols, Db, DbResult, DbRow, Sql};

/// An export job as stored.
#[derive(Debug, Clone)]
pub struct ExportJob {
    /// `exp_…`.
    pub id: String,
    /// queued | running | complete | failed | cancelled.
    pub state: String,
    /// The kick-off request.
    pub request: String,
    /// Token name of the requester.
    pub requested_by: String,
    /// Per-patient export.
    pub patient: Option<String>,
    /// Resource types.
    pub types: Vec<String>,
    /// First log index considered.
    pub from_index: u64,
    /// The cut (checkpoint size).
    pub to_index: u64,
    /// The checkpoint note.
    pub checkpoint: String,
    /// Logging time of the last entry before the cut.
    pub transaction_time: u64,
    /// Resume point.
    pub next_index: u64,
    /// JSON progress.
    pub progress: String,
    /// The manifest, once complete.
    pub manifest: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// Created.
    pub created_at: u64,
    /// The archive confirmed the download.
    pub acknowledged_at: Option<u64>,
    /// Who acknowledged it (token name).
    pub acknowledged_by: Option<String>,
    /// SHA-256 (hex) of the manifest the archive acknowledged receiving.
    pub manifest_sha256: Option<String>,
    /// When a second person (an admin) approved pruning what it holds.
    pub prune_approved_at: Option<u64>,
    /// Who approved the pruning (token name).
    pub prune_approved_by: Option<String>,
}

/// A reading to export: index, patient, leaf data, logging time.
pub type ExportRow = (u64, Option<String>, Vec<u8>, u64);

const EXPORT_COLUMNS: &str =
    "id, state, request, requested_by, patient, types, from_index, to_index, checkpoint, \
     transaction_time, next_index, progress, manifest, error, created_at, acknowledged_at, \
     acknowledged_by, manifest_sha256, prune_approved_at, prune_approved_by";
const EXPORT_STATES: [&str; 5] = ["queued", "running", "complete", "failed", "cancelled"];

fn export_of(r: &DbRow) -> DbResult<ExportJob> {
    let c = Cols::new(r, "export_jobs");
    let id = c.text(0)?;
    let c = c.keyed(&id);
    Ok(ExportJob {
        state: c.parsed(1, |s| EXPORT_STATES.contains(&s).then(|| s.to_string()))?,
        request: c.text(2)?,
        requested_by: c.text(3)?,
        patient: c.opt_text(4)?,
        types: c.string_list(5)?,
        from_index: c.u64(6)?,
        to_index: c.u64(7)?,
        checkpoint: c.text(8)?,
        transaction_time: c.u64(9)?,
        next_index: c.u64(10)?,
        progress: c.text(11)?,
        manifest: c.opt_text(12)?,
        error: c.opt_text(13)?,
        created_at: c.u64(14)?,
        acknowledged_at: c.opt_u64(15)?,
        acknowledged_by: c.opt_text(16)?,
        manifest_sha256: c.opt_text(17)?,
        prune_approved_at: c.opt_u64(18)?,
        prune_approved_by: c.opt_text(19)?,
        id,
    })
}

impl Db {
    /// Stores a new export job.
    pub(crate) async fn insert_export(&self, j: &ExportJob) -> DbResult<()> {
        let types = serde_json::Value::from(j.types.clone()).to_string();
        let s = Sql::new(
            "INSERT INTO export_jobs (id, state, request, requested_by, patient, types, from_index, to_index, checkpoint, \
             transaction_time, next_index, progress, created_at, updated_at, claimed_until) \
             VALUES ($1, 'queued', $2, $3, $4, $5, $6, $7, $8, $9, $6, '{}', $10, $10, 0)",
        )
        .text(&j.id)
        .text(&j.request)
        .text(&j.requested_by)
        .opt_text(j.patient.as_deref())
        .text(&types)
        .u64(j.from_index)
        .u64(j.to_index)
        .text(&j.checkpoint)
        .u64(j.transaction_time)
        .u64(j.created_at);
        self.exec(s).await.map(drop)
    }

    /// The newest `limit` export jobs (only `requested_by`'s if given), newest first.
    pub(crate) async fn export_jobs(
        &self,
        requested_by: Option<&str>,
        limit: u64,
    ) -> DbResult<Vec<ExportJob>> {
        let s = Sql::new(format!(
            "SELECT {EXPORT_COLUMNS} FROM export_jobs WHERE ($1 IS NULL OR requested_by = $1) \
             ORDER BY created_at DESC, id LIMIT $2"
        ))
        .opt_text(requested_by)
        .u64(limit);
        self.decode_all(s, export_of).await
    }

    /// One export job.
    pub(crate) async fn export_job(&self, id: &str) -> DbResult<Option<ExportJob>> {
        let s = Sql::new(format!(
            "SELECT {EXPORT_COLUMNS} FROM export_jobs WHERE id = $1"
        ))
        .text(id);
        self.decode_one(s, export_of).await
    }

    /// Claims the oldest queued (or abandoned running) job for `lease_ms` (contract 5).
    pub(crate) async fn claim_export(
        &self,
        now: u64,
        lease_ms: u64,
    ) -> DbResult<Option<ExportJob>> {
        let pick = "SELECT id FROM export_jobs WHERE state IN ('queued', 'running') AND claimed_until <= $1 \
                    ORDER BY created_at LIMIT 1";
        let sql = match self {
            Db::Pg(_) => pg::claim_export(pick, EXPORT_COLUMNS),
            Db::Lite(_) => sqlite::claim_export(pick, EXPORT_COLUMNS),
        };
        let s = Sql::new(sql).u64(now).u64(now.saturating_add(lease_ms));
        self.decode_one(s, export_of).await
    }

    /// Records a job's progress and extends its lease; false if it is no longer running (it was
    /// cancelled).
    pub(crate) async fn export_progress(
        &self,
        id: &str,
        next_index: u64,
        progress: &str,
        now: u64,
        lease_ms: u64,
    ) -> DbResult<bool> {
        let s = Sql::new(
            "UPDATE export_jobs SET next_index = $2, progress = $3, updated_at = $4, claimed_until = $5 \
             WHERE id = $1 AND state = 'running'",
        )
        .text(id)
        .u64(next_index)
        .text(progress)
        .u64(now)
        .u64(now.saturating_add(lease_ms));
        Ok(self.exec(s).await? == 1)
    }

    /// Ends a running job: complete with its manifest, or failed with an error.
    pub(crate) async fn finish_export(
        &self,
        id: &str,
        manifest: Option<&str>,
        error: Option<&str>,
        now: u64,
    ) -> DbResult<bool> {
        let state = if manifest.is_some() {
            "complete"
        } else {
            "failed"
        };
        let s = Sql::new(
            "UPDATE export_jobs SET state = $2, manifest = $3, error = $4, updated_at = $5 \
             WHERE id = $1 AND state = 'running'",
        )
        .text(id)
        .text(state)
        .opt_text(manifest)
        .opt_text(error)
        .u64(now);
        Ok(self.exec(s).await? == 1)
    }

    /// Cancels a job (whatever its state but cancelled) unless the archive acknowledged it;
    /// false if there was no such job.
    pub(crate) async fn cancel_export(&self, id: &str, now: u64) -> DbResult<bool> {
        let s = Sql::new(
            "UPDATE export_jobs SET state = 'cancelled', updated_at = $2 \
             WHERE id = $1 AND state <> 'cancelled' AND acknowledged_at IS NULL",
        )
        .text(id)
        .u64(now);
        Ok(self.exec(s).await? == 1)
    }

    /// Marks a complete, unacknowledged export as confirmed by the archive, naming who and the
    /// manifest digest; false if it is not complete or already acknowledged.
    pub(crate) async fn acknowledge_export(
        &self,
        id: &str,
        now: u64,
        by: &str,
        manifest_sha256: &str,
    ) -> DbResult<bool> {
        let s = Sql::new(
            "UPDATE export_jobs SET acknowledged_at = $2, acknowledged_by = $3, manifest_sha256 = $4 \
             WHERE id = $1 AND state = 'complete' AND acknowledged_at IS NULL",
        )
        .text(id)
        .u64(now)
        .text(by)
        .text(manifest_sha256);
        Ok(self.exec(s).await? == 1)
    }

    /// Records a second person's approval of pruning an acknowledged export; false unless it
    /// is acknowledged, not approved yet, and `by` is not who acknowledged it.
    pub(crate) async fn approve_pruning(&self, id: &str, now: u64, by: &str) -> DbResult<bool> {
        let s = Sql::new(
            "UPDATE export_jobs SET prune_approved_at = $2, prune_approved_by = $3 \
             WHERE id = $1 AND acknowledged_at IS NOT NULL AND prune_approved_at IS NULL AND acknowledged_by <> $3",
        )
        .text(id)
        .u64(now)
        .text(by);
        Ok(self.exec(s).await? == 1)
    }

    /// Readings of `[from, to)` (of one patient if given), from index `from`, at most `limit`.
    pub(crate) async fn export_rows(
        &self,
        from: u64,
        to: u64,
        patient: Option<&str>,
        limit: u64,
    ) -> DbResult<Vec<ExportRow>> {
        let s = Sql::new(
            "SELECT r.idx, r.patient, e.leaf_data, e.logged_at FROM readings r JOIN entries e ON e.idx = r.idx \
             WHERE r.idx >= $1 AND r.idx < $2 AND ($3 IS NULL OR r.patient = $3) ORDER BY r.idx LIMIT $4",
        )
        .u64(from)
        .u64(to)
        .opt_text(patient)
        .u64(limit);
        self.decode_all(s, |r| {
            let c = Cols::new(r, "readings");
            let idx = c.u64(0)?;
            let c = c.keyed(idx);
            Ok((idx, c.opt_text(1)?, c.bytes(2)?, c.u64(3)?))
        })
        .await
    }

    /// The devices (sensors and gateways) of the readings of `[from, to)` (of one patient).
    pub(crate) async fn export_devices(
        &self,
        from: u64,
        to: u64,
        patient: Option<&str>,
    ) -> DbResult<Vec<String>> {
        let s = Sql::new(
            "SELECT sensor_id FROM readings WHERE idx >= $1 AND idx < $2 AND ($3 IS NULL OR patient = $3) \
             UNION SELECT gateway_id FROM readings WHERE idx >= $1 AND idx < $2 AND ($3 IS NULL OR patient = $3)",
        )
        .u64(from)
        .u64(to)
        .opt_text(patient);
        self.decode_all(s, |r| Cols::new(r, "readings").text(0))
            .await
    }

    /// Prunes the payloads of the readings of an acknowledged export measured before `cutoff`
    /// (the leaf data; the leaf hashes stay in the tiles, contract 3). Returns how many were
    /// pruned.
    pub(crate) async fn prune_export(
        &self,
        job: &ExportJob,
        cutoff: u64,
        now: u64,
    ) -> DbResult<u64> {
        let mark = Sql::new(
            "INSERT INTO pruned_readings (idx, export_id, pruned_at) \
             SELECT r.idx, $1, $2 FROM readings r WHERE r.idx >= $3 AND r.idx < $4 AND ($5 IS NULL OR r.patient = $5) \
             AND r.measured_at < $6 AND NOT EXISTS (SELECT 1 FROM pruned_readings x WHERE x.idx = r.idx)",
        )
        .text(&job.id)
        .u64(now)
        .u64(job.from_index)
        .u64(job.to_index)
        .opt_text(job.patient.as_deref())
        .u64(cutoff);
        let empty = Sql::new(
            "UPDATE entries SET leaf_data = $2 WHERE idx IN (SELECT idx FROM pruned_readings WHERE export_id = $1)",
        )
        .text(&job.id)
        .bytes(&[]);
        // The values go with the payload: a pruned reading is no longer charted.
        let values = Sql::new(
            "UPDATE readings SET v_body_temperature = NULL, v_heart_rate = NULL, v_spo2 = NULL, \
             v_respiratory_rate = NULL, v_systolic = NULL, v_diastolic = NULL \
             WHERE idx IN (SELECT idx FROM pruned_readings WHERE export_id = $1)",
        )
        .text(&job.id);
        let n = self.exec_all(vec![mark, empty, values]).await?;
        Ok(n.first().copied().unwrap_or(0))
    }
}
