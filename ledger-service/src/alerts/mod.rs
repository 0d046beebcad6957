//! Clinical alerts: rules evaluated on every accepted reading of a patient, and the alert
//! lifecycle (open → acknowledged → resolved). The sequencer owns the [`Engine`] — it is the one
//! writer, so the in-memory state is authoritative and every change is written (alert row,
//! transition, webhook outbox rows) in the same transaction as the readings that caused it.
//!
//! Rules, per vital sign: the NEWS2 single-parameter sub-score (RCP 2017, chart 1; SpO2 scale 1):
//! a sub-score of 2 opens an *urgent* alert (severity 2), 3 an *emergency* one (severity 3). A
//! patient's own limits (set by a clinician) replace the NEWS2 bands for that vital sign: outside
//! them is an emergency. An aggregate NEWS2 score is computed when all five scored vital signs
//! have a value from the last `news2_window_ms` (consciousness and supplemental oxygen are not
//! measured by the sensors and count 0): 5–6 is urgent, 7 or more an emergency (parameter
//! `news2`).
//!
//! Lifecycle: one unresolved alert per patient and parameter; a worse severity escalates it
//! (and re-opens an acknowledged one); a reading back in range resolves it automatically once
//! the last abnormal reading is `normal_period_ms` old; clinicians acknowledge and resolve
//! through the API. Every transition is recorded with its actor.

use serde::Serialize;
use std::collections::HashMap;

/// The five vital signs NEWS2 scores, by LOINC: temperature, heart rate, SpO2, respiratory rate,
/// systolic blood pressure.
pub const NEWS2_PARAMS: [&str; 5] = ["8310-5", "8867-4", "2708-6", "9279-1", "8480-6"];
/// The aggregate score's parameter name.
pub const NEWS2: &str = "news2";

/// The NEWS2 sub-score of one vital sign's value (`None`: not a scored vital sign).
pub fn news2_subscore(loinc: &str, v: f64) -> Option<u8> {
    let s = match loinc {
        "9279-1" => match v {
            v if v <= 8.0 => 3,
            v if v <= 11.0 => 1,
            v if v <= 20.0 => 0,
            v if v <= 24.0 => 2,
            _ => 3,
        },
        "2708-6" => match v {
            v if v <= 91.0 => 3,
            v if v <= 93.0 => 2,
            v if v <= 95.0 => 1,
            _ => 0,
        },
        "8480-6" => match v {
            v if v <= 90.0 => 3,
            v if v <= 100.0 => 2,
            v if v <= 110.0 => 1,
            v if v < 220.0 => 0,
            _ => 3,
        },
        "8867-4" => match v {
            v if v <= 40.0 => 3,
            v if v <= 50.0 => 1,
            v if v <= 90.0 => 0,
            v if v <= 110.0 => 1,
            v if v <= 130.0 => 2,
            _ => 3,
        },
        "8310-5" => match v {
            v if v <= 35.0 => 3,
            v if v <= 36.0 => 1,
            v if v <= 38.0 => 0,
            v if v <= 39.0 => 1,
            _ => 2,
        },
        _ => return None,
    };
    Some(s)
}

/// The aggregate NEWS2 score at `at`: the sum of the five sub-scores when every scored vital sign
/// has a value (`latest(loinc)`: value and measured-at) measured at most `window_ms` before
/// `at`; `None` otherwise (consciousness and supplemental oxygen count 0).
pub fn news2_aggregate(
    latest: impl Fn(&str) -> Option<(f64, u64)>,
    at: u64,
    window_ms: u64,
) -> Option<u8> {
    NEWS2_PARAMS
        .iter()
        .map(|p| {
            latest(p)
                .filter(|(_, t)| t.saturating_add(window_ms) >= at)
                .map(|(v, _)| news2_subscore(p, v).unwrap_or(0))
        })
        .sum()
}

/// The alert severity of an aggregate NEWS2 score: 0 (none) for 0–4, 2 (urgent) for 5–6, 3
/// (emergency) for 7 or more.
pub fn news2_severity(score: u8) -> u8 {
    match score {
        0..=4 => 0,
        5 | 6 => 2,
        _ => 3,
    }
}

/// The NEWS2 bands of a scored vital sign, low to high, for charts: each band's upper bound
/// (`None`: unbounded) and its sub-score, as [`news2_subscore`] scores (a value equal to a bound
/// is in the band below it, except systolic pressure's 220, which scores 3).
pub fn news2_bands(loinc: &str) -> Option<&'static [(Option<f64>, u8)]> {
    Some(match loinc {
        "9279-1" => &[
            (Some(8.0), 3),
            (Some(11.0), 1),
            (Some(20.0), 0),
            (Some(24.0), 2),
            (None, 3),
        ],
        "2708-6" => &[(Some(91.0), 3), (Some(93.0), 2), (Some(95.0), 1), (None, 0)],
        "8480-6" => &[
            (Some(90.0), 3),
            (Some(100.0), 2),
            (Some(110.0), 1),
            (Some(220.0), 0),
            (None, 3),
        ],
        "8867-4" => &[
            (Some(40.0), 3),
            (Some(50.0), 1),
            (Some(90.0), 0),
            (Some(110.0), 1),
            (Some(130.0), 2),
            (None, 3),
        ],
        "8310-5" => &[
            (Some(35.0), 3),
            (Some(36.0), 1),
            (Some(38.0), 0),
            (Some(39.0), 1),
            (None, 2),
        ],
        _ => return None,
    })
}

/// A patient's own limits for one vital sign (either bound may be absent).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limit {
    /// Alarm at or below.
    pub low: Option<f64>,
    /// Alarm at or above.
    pub high: Option<f64>,
}

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Raised, nobody has acknowledged it.
    Open,
    /// A clinician has seen it.
    Acknowledged,
    /// Over.
    Resolved,
}

impl Status {
    /// Its name in storage and the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Acknowledged => "acknowledged",
            Status::Resolved => "resolved",
        }
    }

    /// From its name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Status::Open),
            "acknowledged" => Some(Status::Acknowledged),
            "resolved" => Some(Status::Resolved),
            _ => None,
        }
    }
}

/// An alert's current state (one row of `alerts`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    /// `alrt_…`.
    pub id: String,
    /// Patient pseudonym.
    pub patient: String,
    /// LOINC code or [`NEWS2`].
    pub parameter: String,
    /// Lifecycle state.
    pub status: Status,
    /// 2 urgent, 3 emergency.
    pub severity: u8,
    /// Latest abnormal value (or score).
    pub value: f64,
    /// Latest reading that raised or kept it.
    pub reading_index: u64,
    /// Opened, Unix ms.
    pub opened_at: u64,
    /// Last changed, Unix ms.
    pub updated_at: u64,
    /// Measurement time of the latest abnormal reading.
    pub last_abnormal_at: u64,
    /// Transitions recorded so far.
    pub events: u32,
}

/// A transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// A new alert.
    Opened,
    /// Its severity rose.
    Escalated,
    /// A clinician acknowledged it.
    Acknowledged,
    /// It is over (a clinician, or automatically after the normal period).
    Resolved,
}

impl Transition {
    /// Its name (and the webhook event type after `alert.`).
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Opened => "opened",
            Transition::Escalated => "escalated",
            Transition::Acknowledged => "acknowledged",
            Transition::Resolved => "resolved",
        }
    }
}

/// A change to write: the alert's new state and, if it moved in its lifecycle, the transition
/// (its sequence number is `alert.events`).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The alert after the change.
    pub alert: Alert,
    /// The transition and who made it (`system` or a token name).
    pub transition: Option<(Transition, String)>,
}

/// Why a clinician's action was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// No unresolved alert with that id.
    #[error("no unresolved alert {0}")]
    NotFound(String),
    /// Already acknowledged.
    #[error("alert {0} is already acknowledged")]
    AlreadyAcknowledged(String),
}

mod engine;
#[cfg(test)]
mod tests;

pub use engine::{AlertConfig, Engine};

/// The webhook payload of a transition (Standard Webhooks' `type`/`timestamp`/`data` shape). It
/// names the patient by pseudonym only and points to the reading's evidence.
pub fn payload(
    alert: &Alert,
    transition: Transition,
    msg_at_ms: u64,
    url: impl Fn(&str) -> String,
) -> (String, String) {
    let event_type = format!("alert.{}", transition.as_str());
    let (name, unit) = provenance_core::reading::vital(&alert.parameter)
        .map_or(("NEWS2 aggregate score", "{score}"), |v| (v.name, v.unit));
    let ts = crate::fhir::iso8601(msg_at_ms);
    let body = serde_json::json!({
        "type": event_type,
        "timestamp": ts,
        "data": {
            "alert_id": alert.id,
            "patient": alert.patient,
            "parameter": alert.parameter,
            "name": name,
            "state": alert.status.as_str(),
            "severity": alert.severity,
            "value": alert.value,
            "unit": unit,
            "reading_index": alert.reading_index,
            "evidence": url(&format!("/v1/readings/{}/evidence", alert.reading_index)),
            "opened_at_ms": alert.opened_at,
            "sequence": alert.events,
        }
    });
    (event_type, body.to_string())
}
