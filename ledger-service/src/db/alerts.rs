//! Clinical alerts: their current state, their transitions and the patients' alert limits. The
//! sequencer is their one writer (side rows of its batches); handlers read.

use super::{Cols, Db, DbResult, DbRow, Sql};
use crate::alerts::{Alert, Limit, Status};

/// One transition of an alert, as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AlertEventOut {
    /// Its number among the alert's transitions.
    pub seq: u32,
    /// When, Unix ms.
    pub at_ms: u64,
    /// opened | escalated | acknowledged | resolved.
    pub transition: String,
    /// `system` or the clinician's token name.
    pub actor: String,
    /// Severity after it.
    pub severity: u8,
    /// The reading that caused it.
    pub reading_index: Option<u64>,
}

const ALERT_COLUMNS: &str = "a.id, a.patient, a.parameter, a.state, a.severity, a.value, a.reading_index, \
     a.opened_at, a.updated_at, a.last_abnormal_at, (SELECT COUNT(*) FROM alert_events e WHERE e.alert_id = a.id)";

fn alert_of(r: &DbRow) -> DbResult<Alert> {
    let c = Cols::new(r, "alerts");
    let id = c.text(0)?;
    let c = c.keyed(&id);
    Ok(Alert {
        id,
        patient: c.text(1)?,
        parameter: c.text(2)?,
        status: c.parsed(3, Status::parse)?,
        severity: c.small(4)?,
        value: c.f64(5)?,
        reading_index: c.u64(6)?,
        opened_at: c.u64(7)?,
        updated_at: c.u64(8)?,
        last_abnormal_at: c.u64(9)?,
        events: {
            let n = c.u64(10)?;
            u32::try_from(n).map_err(|_| c.corrupt(10, format!("{n} transitions")))?
        },
    })
}

/// Inserts or updates an alert's state.
pub(super) fn write_alert(a: &Alert) -> Sql {
    Sql::new(
        "INSERT INTO alerts (id, patient, parameter, state, severity, value, reading_index, opened_at, updated_at, last_abnormal_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET state = excluded.state, severity = excluded.severity, value = excluded.value, \
         reading_index = excluded.reading_index, updated_at = excluded.updated_at, last_abnormal_at = excluded.last_abnormal_at",
    )
    .text(&a.id)
    .text(&a.patient)
    .text(&a.parameter)
    .text(a.status.as_str())
    .i16(Some(i16::from(a.severity)))
    .f64(Some(a.value))
    .u64(a.reading_index)
    .u64(a.opened_at)
    .u64(a.updated_at)
    .u64(a.last_abnormal_at)
}

/// Appends an alert's transition.
pub(super) fn write_event(
    alert_id: &str,
    seq: u32,
    at: u64,
    transition: &str,
    actor: &str,
    severity: u8,
    reading_index: Option<u64>,
) -> Sql {
    Sql::new(
        "INSERT INTO alert_events (alert_id, seq, at, transition, actor, severity, reading_index) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .text(alert_id)
    .i32(Some(i32::try_from(seq).unwrap_or(i32::MAX)))
    .u64(at)
    .text(transition)
    .text(actor)
    .i16(Some(i16::from(severity)))
    .opt_u64(reading_index)
}

/// Sets a patient's limits for a vital sign, or removes them (`None`: back to NEWS2).
pub(super) fn write_limit(
    patient: &str,
    loinc: &str,
    limit: Option<&Limit>,
    set_by: &str,
    at: u64,
) -> Sql {
    match limit {
        Some(l) => Sql::new(
            "INSERT INTO alert_limits (patient, loinc, low, high, set_by, set_at) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (patient, loinc) DO UPDATE SET low = excluded.low, high = excluded.high, \
             set_by = excluded.set_by, set_at = excluded.set_at",
        )
        .text(patient)
        .text(loinc)
        .f64(l.low)
        .f64(l.high)
        .text(set_by)
        .u64(at),
        None => Sql::new("DELETE FROM alert_limits WHERE patient = $1 AND loinc = $2")
            .text(patient)
            .text(loinc),
    }
}

impl Db {
    /// Every alert not yet resolved (the sequencer's starting state).
    pub(crate) async fn unresolved_alerts(&self) -> DbResult<Vec<Alert>> {
        let s = Sql::new(format!(
            "SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.state <> 'resolved'"
        ));
        self.decode_all(s, alert_of).await
    }

    /// Alerts, newest first, optionally by state and patient.
    #[cfg(test)]
    pub(crate) async fn alerts(
        &self,
        state: Option<&str>,
        patient: Option<&str>,
        limit: u64,
    ) -> DbResult<Vec<Alert>> {
        self.alerts_page(state, patient, None, limit).await
    }

    /// A page of alerts, newest change first (by updated-at, then id), after `after` (the last
    /// page's last (updated-at, id)). An alert that changes meanwhile moves to the front.
    pub(crate) async fn alerts_page(
        &self,
        state: Option<&str>,
        patient: Option<&str>,
        after: Option<(u64, &str)>,
        limit: u64,
    ) -> DbResult<Vec<Alert>> {
        let mut text = format!("SELECT {ALERT_COLUMNS} FROM alerts a WHERE 1 = 1");
        let mut n = 0;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if state.is_some() {
            text.push_str(&format!(" AND a.state = {}", param()));
        }
        if patient.is_some() {
            text.push_str(&format!(" AND a.patient = {}", param()));
        }
        if after.is_some() {
            let (at, id) = (param(), param());
            text.push_str(&format!(
                " AND (a.updated_at < {at} OR (a.updated_at = {at} AND a.id > {id}))"
            ));
        }
        text.push_str(&format!(
            " ORDER BY a.updated_at DESC, a.id LIMIT {}",
            param()
        ));
        let mut s = Sql::new(text);
        if let Some(v) = state {
            s = s.text(v);
        }
        if let Some(v) = patient {
            s = s.text(v);
        }
        if let Some((at, id)) = after {
            s = s.u64(at).text(id);
        }
        self.decode_all(s.u64(limit), alert_of).await
    }

    /// One alert.
    pub(crate) async fn alert(&self, id: &str) -> DbResult<Option<Alert>> {
        let s = Sql::new(format!(
            "SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.id = $1"
        ))
        .text(id);
        self.decode_one(s, alert_of).await
    }

    /// An alert's transitions, in order.
    pub(crate) async fn alert_events(&self, id: &str) -> DbResult<Vec<AlertEventOut>> {
        let s = Sql::new(
            "SELECT seq, at, transition, actor, severity, reading_index FROM alert_events \
             WHERE alert_id = $1 ORDER BY seq",
        )
        .text(id);
        self.decode_all(s, |r| {
            let c = Cols::new(r, "alert_events").keyed(id);
            Ok(AlertEventOut {
                seq: c.int(0)?,
                at_ms: c.u64(1)?,
                transition: c.text(2)?,
                actor: c.text(3)?,
                severity: c.small(4)?,
                reading_index: c.opt_u64(5)?,
            })
        })
        .await
    }

    /// Every patient's alert limits: (patient, LOINC, limits).
    pub(crate) async fn alert_limits(&self) -> DbResult<Vec<(String, String, Limit)>> {
        let s =
            Sql::new("SELECT patient, loinc, low, high FROM alert_limits ORDER BY patient, loinc");
        self.decode_all(s, |r| {
            let c = Cols::new(r, "alert_limits");
            let (patient, loinc) = (c.text(0)?, c.text(1)?);
            let c = c.keyed(format_args!("{patient}/{loinc}"));
            let limit = Limit {
                low: c.opt_f64(2)?,
                high: c.opt_f64(3)?,
            };
            Ok((patient, loinc, limit))
        })
        .await
    }
}
