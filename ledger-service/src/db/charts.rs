//! The values behind the web app's charts and ward overview (migration 0011: one column per
//! vital sign on each reading's row, set while a patient is assigned): each patient's latest
//! value of a vital sign, a range of values decimated into time buckets, and the one-time fill
//! of the rows logged before the columns existed.

use super::{Cols, Db, DbResult, Sql};
use provenance_core::log_entry::{DecodedBody, LogEntry};
use provenance_core::reading::VITALS;

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

/// The columns of `readings` holding the values of the vital signs of SPEC.md §4, in
/// [`VITALS`] order (a compile-time check keeps the two the same length).
pub(crate) const VALUE_COLUMNS: [&str; VITALS.len()] = [
    "v_body_temperature",
    "v_heart_rate",
    "v_spo2",
    "v_respiratory_rate",
    "v_systolic",
    "v_diastolic",
];

/// The position of a vital sign in [`VITALS`] and [`VALUE_COLUMNS`] (`None`: not one of them).
pub(crate) fn value_index(loinc: &str) -> Option<usize> {
    VITALS.iter().position(|v| v.loinc == loinc)
}

/// The column of `readings` holding a vital sign's value, by LOINC.
fn value_column(loinc: &str) -> Option<&'static str> {
    value_index(loinc).map(|i| VALUE_COLUMNS[i])
}

/// The value columns of a reading row as stored: its values (charts read a patient's; the FHIR
/// facade's `code` search reads whether a reading holds a sign, assigned or not).
pub(crate) fn chart_values(r: &super::ReadingRow) -> [Option<f64>; VITALS.len()] {
    by_column(&r.values)
}

/// A reading's values by column, in [`VALUE_COLUMNS`] order (`None` where it has none).
fn by_column(values: &[(&'static str, f64)]) -> [Option<f64>; VITALS.len()] {
    let mut out = [None; VITALS.len()];
    for (code, v) in values {
        if let Some(i) = value_index(code) {
            out[i] = Some(*v);
        }
    }
    out
}

impl Db {
    /// The latest value of `code` for `patient`.
    pub(crate) async fn latest_value(&self, patient: &str, code: &str) -> DbResult<Option<Latest>> {
        let Some(col) = value_column(code) else {
            return Ok(None);
        };
        let s = Sql::new(format!(
            "SELECT {col}, measured_at, idx FROM readings WHERE patient = $1 AND {col} IS NOT NULL \
             ORDER BY measured_at DESC, idx DESC LIMIT 1"
        ))
        .text(patient);
        self.decode_one(s, |r| {
            let c = Cols::new(r, "readings").keyed(patient);
            Ok(Latest {
                value: c.f64(0)?,
                measured_at: c.u64(1)?,
                idx: c.u64(2)?,
            })
        })
        .await
    }

    /// Every vital sign's values for `patient` measured in `[from, to)`, in buckets of
    /// `bucket_ms` (at least 1) from `from`, oldest first, in [`VALUE_COLUMNS`] order; a bucket
    /// without a value of a sign is absent from its series (a gap). One scan of the patient's
    /// range for all six signs.
    pub(crate) async fn series(
        &self,
        patient: &str,
        from: u64,
        to: u64,
        bucket_ms: u64,
    ) -> DbResult<[Vec<Bucket>; VITALS.len()]> {
        let per_column: Vec<String> = VALUE_COLUMNS
            .iter()
            .map(|c| {
                format!(
                    "MIN(CASE WHEN {c} IS NOT NULL THEN measured_at END), \
                     MAX(CASE WHEN {c} IS NOT NULL THEN measured_at END), MIN({c}), MAX({c}), \
                     AVG({c}), COUNT({c}), MAX(CASE WHEN {c} IS NOT NULL THEN idx END)"
                )
            })
            .collect();
        let s = Sql::new(format!(
            "SELECT (measured_at - $2) / $4 AS b, {} FROM readings \
             WHERE patient = $1 AND measured_at >= $2 AND measured_at < $3 \
             GROUP BY b ORDER BY b",
            per_column.join(", ")
        ))
        .text(patient)
        .u64(from)
        .u64(to)
        .u64(bucket_ms.max(1));
        let rows = self
            .decode_all(s, |r| {
                let c = Cols::new(r, "readings").keyed(patient);
                let mut out: [Option<Bucket>; VITALS.len()] = Default::default();
                for (k, slot) in out.iter_mut().enumerate() {
                    let at = 1 + 7 * k;
                    if c.u64(at + 5)? == 0 {
                        continue;
                    }
                    *slot = Some(Bucket {
                        first_at: c.u64(at)?,
                        last_at: c.u64(at + 1)?,
                        min: c.f64(at + 2)?,
                        max: c.f64(at + 3)?,
                        mean: c.f64(at + 4)?,
                        count: c.u64(at + 5)?,
                        idx: c.u64(at + 6)?,
                    });
                }
                Ok(out)
            })
            .await?;
        let mut series: [Vec<Bucket>; VITALS.len()] = Default::default();
        for row in rows {
            for (k, b) in row.into_iter().enumerate() {
                if let Some(b) = b {
                    series[k].push(b);
                }
            }
        }
        Ok(series)
    }

    /// Fills the value columns of the readings logged before migration 0011, once (marked in
    /// `log_meta`), decoding their leaf data; then, once more, those of readings without a
    /// patient (stored only for assigned readings before the FHIR facade). Returns how many
    /// readings were filled in.
    pub(crate) async fn fill_chart_values(&self) -> DbResult<u64> {
        let assigned = self
            .fill_values("measurements_filled", "r.patient IS NOT NULL")
            .await?;
        Ok(assigned
            + self
                .fill_values("measurements_filled_all", "r.patient IS NULL")
                .await?)
    }

    async fn fill_values(&self, flag: &str, rows_where: &str) -> DbResult<u64> {
        if self.meta(flag).await?.is_some() {
            return Ok(0);
        }
        let mut filled = 0;
        let mut after: Option<u64> = None;
        loop {
            let s = Sql::new(format!(
                "SELECT r.idx, e.leaf_data FROM readings r \
                 JOIN entries e ON e.idx = r.idx WHERE {rows_where} AND r.idx >= $1 \
                 ORDER BY r.idx LIMIT $2"
            ))
            .u64(after.map_or(0, |a| a + 1))
            .u64(FILL_CHUNK);
            let rows = self
                .decode_all(s, |r| {
                    let c = Cols::new(r, "readings");
                    let idx = c.u64(0)?;
                    let c = c.keyed(idx);
                    Ok((idx, c.bytes(1)?))
                })
                .await?;
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            let mut stmts = Vec::new();
            for (idx, leaf) in &rows {
                // A pruned reading (empty leaf data) has no values to chart.
                let Ok(DecodedBody::Reading(env)) =
                    LogEntry::from_cbor(leaf).and_then(|e| e.decode_body())
                else {
                    continue;
                };
                let values: Vec<(&'static str, f64)> = env
                    .sensor
                    .reading
                    .measurements
                    .iter()
                    .map(|m| (m.vital.loinc, m.value.to_f64()))
                    .collect();
                stmts.push(set_values(*idx, &values));
                filled += 1;
            }
            self.exec_all(stmts).await?;
            after = Some(last);
        }
        self.meta_init(flag, "1").await?;
        Ok(filled)
    }
}

/// The statement that sets a reading's value columns.
fn set_values(idx: u64, values: &[(&'static str, f64)]) -> Sql {
    let cols = by_column(values);
    let sets: Vec<String> = VALUE_COLUMNS
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c} = ${}", i + 2))
        .collect();
    let mut s = Sql::new(format!(
        "UPDATE readings SET {} WHERE idx = $1",
        sets.join(", ")
    ))
    .u64(idx);
    for v in cols {
        s = s.f64(v);
    }
    s
}
