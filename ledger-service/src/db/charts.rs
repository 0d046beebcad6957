//! The values behind the web app's charts and ward overview (`measurements`, migration 0011):
//! each patient's latest value of a vital sign, a range of values decimated into time buckets,
//! and the one-time fill of the rows logged before the table existed.

use super::{Cols, Db, DbResult, ReadingRow, Sql};
use provenance_core::log_entry::{DecodedBody, LogEntry};

/// A patient's latest value of one vital sign.
#[derive(Debug, Clone, PartialEq)]
pub struct Latest {
    /// The value.
    pub value: f64,
    /// Measured-at, ms.
    pub measured_at: u64,
    /// The reading's log index.
    pub idx: u64,
}

/// The values of one time bucket of a series.
#[derive(Debug, Clone, PartialEq)]
pub struct Bucket {
    /// The first measured-at in the bucket, ms.
    pub first_at: u64,
    /// The last measured-at in the bucket, ms.
    pub last_at: u64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Mean value.
    pub mean: f64,
    /// How many readings.
    pub count: u64,
    /// The bucket's last reading (the whole reading when the bucket holds one).
    pub idx: u64,
}

/// How many reading rows the start-up fill decodes per query.
const FILL_CHUNK: u64 = 5000;

impl Db {
    /// The latest value of `code` for `patient`.
    pub(crate) async fn latest_value(&self, patient: &str, code: &str) -> DbResult<Option<Latest>> {
        let s = Sql::new(
            "SELECT value, measured_at, idx FROM measurements WHERE patient = $1 AND code = $2 \
             ORDER BY measured_at DESC, idx DESC LIMIT 1",
        )
        .text(patient)
        .text(code);
        self.decode_one(s, |r| {
            let c = Cols::new(r, "measurements").keyed(patient);
            Ok(Latest {
                value: c.f64(0)?,
                measured_at: c.u64(1)?,
                idx: c.u64(2)?,
            })
        })
        .await
    }

    /// The values of `code` for `patient` measured in `[from, to)`, in buckets of `bucket_ms`
    /// (at least 1) from `from`, oldest first; empty buckets are absent (a gap).
    pub(crate) async fn series(
        &self,
        patient: &str,
        code: &str,
        from: u64,
        to: u64,
        bucket_ms: u64,
    ) -> DbResult<Vec<Bucket>> {
        let s = Sql::new(
            "SELECT (measured_at - $3) / $5 AS b, MIN(measured_at), MAX(measured_at), MIN(value), \
             MAX(value), AVG(value), COUNT(*), MAX(idx) FROM measurements \
             WHERE patient = $1 AND code = $2 AND measured_at >= $3 AND measured_at < $4 \
             GROUP BY b ORDER BY b",
        )
        .text(patient)
        .text(code)
        .u64(from)
        .u64(to)
        .u64(bucket_ms.max(1));
        self.decode_all(s, |r| {
            let c = Cols::new(r, "measurements").keyed(patient);
            Ok(Bucket {
                first_at: c.u64(1)?,
                last_at: c.u64(2)?,
                min: c.f64(3)?,
                max: c.f64(4)?,
                mean: c.f64(5)?,
                count: c.u64(6)?,
                idx: c.u64(7)?,
            })
        })
        .await
    }

    /// Fills `measurements` from the readings logged before migration 0011, once (marked in
    /// `log_meta`), decoding their leaf data. Returns how many readings were filled in.
    pub(crate) async fn fill_measurements(&self) -> DbResult<u64> {
        if self.meta("measurements_filled").await?.is_some() {
            return Ok(0);
        }
        let mut filled = 0;
        let mut after: Option<u64> = None;
        loop {
            let s = Sql::new(
                "SELECT r.idx, r.patient, r.measured_at, e.leaf_data FROM readings r \
                 JOIN entries e ON e.idx = r.idx WHERE r.patient IS NOT NULL AND r.idx >= $1 \
                 AND NOT EXISTS (SELECT 1 FROM measurements m WHERE m.idx = r.idx) \
                 ORDER BY r.idx LIMIT $2",
            )
            .u64(after.map_or(0, |a| a + 1))
            .u64(FILL_CHUNK);
            let rows = self
                .decode_all(s, |r| {
                    let c = Cols::new(r, "readings");
                    let idx = c.u64(0)?;
                    let c = c.keyed(idx);
                    Ok((idx, c.text(1)?, c.u64(2)?, c.bytes(3)?))
                })
                .await?;
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            let mut stmts = Vec::new();
            for (idx, patient, at, leaf) in &rows {
                // A pruned reading (empty leaf data) has no values to chart.
                let Ok(DecodedBody::Reading(env)) =
                    LogEntry::from_cbor(leaf).and_then(|e| e.decode_body())
                else {
                    continue;
                };
                let row = ReadingRow {
                    idx: *idx,
                    sensor_id: String::new(),
                    seq: 0,
                    sensor_hash: Vec::new(),
                    gateway_id: String::new(),
                    measured_at: *at,
                    received_at: 0,
                    patient: Some(patient.clone()),
                    values: env
                        .sensor
                        .reading
                        .measurements
                        .iter()
                        .map(|m| (m.vital.loinc, m.value.to_f64()))
                        .collect(),
                };
                stmts.extend(measurement_rows(&row));
                filled += 1;
            }
            self.exec_all(stmts).await?;
            after = Some(last);
        }
        self.meta_init("measurements_filled", "1").await?;
        Ok(filled)
    }
}

/// The `measurements` rows of a reading (none without a patient).
pub(crate) fn measurement_rows(r: &ReadingRow) -> Vec<Sql> {
    let Some(p) = &r.patient else {
        return Vec::new();
    };
    r.values
        .iter()
        .map(|(code, value)| {
            Sql::new(
                "INSERT INTO measurements (idx, code, patient, measured_at, value) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (idx, code) DO NOTHING",
            )
            .u64(r.idx)
            .text(code)
            .text(p)
            .u64(r.measured_at)
            .f64(Some(*value))
        })
        .collect()
}
