//! Readings: the derived query row of each logged reading, the ingest rejections recorded
//! beside them, and the marks of readings whose payload was pruned.

use super::{pg, Cols, Db, DbResult, Sql};
use std::collections::HashMap;

/// The derived query row of a reading.
#[derive(Debug, Clone)]
pub struct ReadingRow {
    /// Log index.
    pub idx: u64,
    /// Sensor id.
    pub sensor_id: String,
    /// Sequence number.
    pub seq: u64,
    /// SHA-256 of the sensor COSE_Sign1 bytes.
    pub sensor_hash: Vec<u8>,
    /// Gateway id.
    pub gateway_id: String,
    /// Measured-at, ms.
    pub measured_at: u64,
    /// Received-at (gateway), ms.
    pub received_at: u64,
    /// Patient pseudonym at measurement time, if assigned.
    pub patient: Option<String>,
    /// Its values (LOINC, value), stored for charts when a patient was assigned.
    pub values: Vec<(&'static str, f64)>,
}

/// An existing reading found by (sensor, seq).
#[derive(Debug, Clone)]
pub struct ExistingReading {
    /// Log index.
    pub idx: u64,
    /// SHA-256 of the sensor layer.
    pub sensor_hash: Vec<u8>,
}

/// A rejected ingest item as recorded: reason code, detail, SHA-256 of the envelope.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// The reason code.
    pub reason: String,
    /// What was wrong.
    pub detail: String,
    /// SHA-256 of the envelope bytes.
    pub envelope_sha256: Vec<u8>,
}

/// One reading of a page: its index, measured-at, leaf data (empty if pruned) and the export
/// that holds it if pruned.
#[derive(Debug, Clone)]
pub struct PageItem {
    /// Log index.
    pub idx: u64,
    /// Measured-at, ms.
    pub measured_at: u64,
    /// The entry's leaf data (empty once pruned).
    pub leaf: Vec<u8>,
    /// The export whose acknowledgement pruned it.
    pub export: Option<String>,
}

impl Db {
    /// Readings already logged for these (sensor, seq) pairs.
    pub(crate) async fn existing_readings(
        &self,
        keys: &[(String, u64)],
    ) -> DbResult<HashMap<(String, u64), ExistingReading>> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        if let Db::Pg(p) = self {
            return pg::existing_readings(p, keys).await;
        }
        let mut out = HashMap::new();
        for (sensor, seq) in keys {
            let s =
                Sql::new("SELECT idx, sensor_hash FROM readings WHERE sensor_id = $1 AND seq = $2")
                    .text(sensor)
                    .u64(*seq);
            let found = self
                .decode_one(s, |r| {
                    let c = Cols::new(r, "readings").keyed(format_args!("{sensor}/{seq}"));
                    Ok(ExistingReading {
                        idx: c.u64(0)?,
                        sensor_hash: c.bytes(1)?,
                    })
                })
                .await?;
            if let Some(e) = found {
                out.insert((sensor.clone(), *seq), e);
            }
        }
        Ok(out)
    }

    /// Each sensor's highest logged sequence number.
    pub(crate) async fn max_seqs(&self) -> DbResult<Vec<(String, u64)>> {
        let s = Sql::new("SELECT sensor_id, MAX(seq) FROM readings GROUP BY sensor_id");
        self.decode_all(s, |r| {
            let c = Cols::new(r, "readings");
            let sensor = c.text(0)?;
            let c = c.keyed(&sensor);
            Ok((sensor, c.u64(1)?))
        })
        .await
    }

    /// Number of readings stored.
    pub async fn count_readings(&self) -> DbResult<u64> {
        let s = Sql::new("SELECT COUNT(*) FROM readings");
        Ok(self.number("readings", s).await?.unwrap_or(0))
    }

    /// Reading indices by patient or sensor and time range, oldest first (the first page).
    #[cfg(test)]
    pub(crate) async fn reading_indices(
        &self,
        patient: Option<&str>,
        sensor: Option<&str>,
        from: u64,
        to: u64,
        limit: u32,
    ) -> DbResult<Vec<u64>> {
        Ok(self
            .reading_page(patient, sensor, from, to, None, limit)
            .await?
            .into_iter()
            .map(|p| p.idx)
            .collect())
    }

    /// One page of readings by patient or sensor and time range, ordered by (measured-at,
    /// index): those after `after` (the last page's last (measured-at, index)), at most `limit`,
    /// each with its leaf data and, if pruned, the export holding it — one query (the filters
    /// are written out, not `$1 IS NULL OR …`, so PostgreSQL's generic plans keep the index).
    /// The order is total, so paging never skips or repeats a reading, even when many share a
    /// time.
    pub(crate) async fn reading_page(
        &self,
        patient: Option<&str>,
        sensor: Option<&str>,
        from: u64,
        to: u64,
        after: Option<(u64, u64)>,
        limit: u32,
    ) -> DbResult<Vec<PageItem>> {
        let mut text = String::from(
            "SELECT r.idx, r.measured_at, e.leaf_data, p.export_id FROM readings r \
             JOIN entries e ON e.idx = r.idx LEFT JOIN pruned_readings p ON p.idx = r.idx \
             WHERE r.measured_at >= $1 AND r.measured_at < $2",
        );
        let mut n = 2;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if patient.is_some() {
            text.push_str(&format!(" AND r.patient = {}", param()));
        }
        if sensor.is_some() {
            text.push_str(&format!(" AND r.sensor_id = {}", param()));
        }
        if after.is_some() {
            let (at, idx) = (param(), param());
            text.push_str(&format!(
                " AND (r.measured_at > {at} OR (r.measured_at = {at} AND r.idx > {idx}))"
            ));
        }
        text.push_str(&format!(" ORDER BY r.measured_at, r.idx LIMIT {}", param()));
        let mut s = Sql::new(text).u64(from).u64(to);
        if let Some(p) = patient {
            s = s.text(p);
        }
        if let Some(v) = sensor {
            s = s.text(v);
        }
        if let Some((at, idx)) = after {
            s = s.u64(at).u64(idx);
        }
        s = s.u64(u64::from(limit));
        self.decode_all(s, |r| {
            let c = Cols::new(r, "readings");
            let idx = c.u64(0)?;
            let c = c.keyed(idx);
            Ok(PageItem {
                idx,
                measured_at: c.u64(1)?,
                leaf: c.bytes(2)?,
                export: c.opt_text(3)?,
            })
        })
        .await
    }

    /// Records rejected ingest items, in one transaction: one row per reason with the count,
    /// the first item's detail and envelope digest, so a batch writes at most one row per
    /// reason however many items it holds.
    pub(crate) async fn insert_rejections(&self, at: u64, items: &[Rejection]) -> DbResult<()> {
        let mut by_reason: Vec<(&Rejection, u64)> = Vec::new();
        for r in items {
            match by_reason.iter_mut().find(|(f, _)| f.reason == r.reason) {
                Some((_, n)) => *n += 1,
                None => by_reason.push((r, 1)),
            }
        }
        if by_reason.is_empty() {
            return Ok(());
        }
        let stmts = by_reason
            .into_iter()
            .map(|(r, n)| {
                Sql::new(
                    "INSERT INTO rejections (at, reason, detail, envelope_sha256, count) VALUES ($1, $2, $3, $4, $5)",
                )
                .u64(at)
                .text(&r.reason)
                .text(&r.detail)
                .bytes(&r.envelope_sha256)
                .u64(n)
            })
            .collect();
        self.exec_all(stmts).await.map(drop)
    }

    /// Number of rejections recorded with this reason (the ingest audit trail).
    pub async fn count_rejections(&self, reason: &str) -> DbResult<u64> {
        let s = Sql::new(
            "SELECT CAST(COALESCE(SUM(count), 0) AS BIGINT) FROM rejections WHERE reason = $1",
        )
        .text(reason);
        Ok(self.number("rejections", s).await?.unwrap_or(0))
    }

    /// The gateway a reading came through and the patient it was measured on, by log index.
    pub(crate) async fn reading_path(
        &self,
        idx: u64,
    ) -> DbResult<Option<(String, Option<String>)>> {
        let s = Sql::new("SELECT gateway_id, patient FROM readings WHERE idx = $1").u64(idx);
        self.decode_one(s, |r| {
            let c = Cols::new(r, "readings").keyed(idx);
            Ok((c.text(0)?, c.opt_text(1)?))
        })
        .await
    }

    /// The export holding a pruned reading's payload.
    pub(crate) async fn pruned_by(&self, idx: u64) -> DbResult<Option<String>> {
        let s = Sql::new("SELECT export_id FROM pruned_readings WHERE idx = $1").u64(idx);
        self.decode_one(s, |r| Cols::new(r, "pruned_readings").keyed(idx).text(0))
            .await
    }
}
