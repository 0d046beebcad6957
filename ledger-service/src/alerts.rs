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

/// Alert settings.
#[derive(Debug, Clone, Copy)]
pub struct AlertConfig {
    /// A reading back in range resolves an alert once the last abnormal one is this old.
    pub normal_period_ms: u64,
    /// How recent all five values must be for an aggregate NEWS2 score.
    pub news2_window_ms: u64,
}

/// The rules and every unresolved alert.
///
/// The sequencer evaluates a batch between [`Engine::begin`] and [`Engine::commit`]; if the
/// batch's transaction fails, [`Engine::rollback`] undoes exactly what the batch changed (an undo
/// journal of the touched entries, not a copy of the whole state).
#[derive(Debug, Clone)]
pub struct Engine {
    cfg: AlertConfig,
    /// Patient → parameter → its unresolved alert.
    unresolved: HashMap<String, HashMap<String, Alert>>,
    /// Patient → LOINC → the patient's own limits.
    limits: HashMap<String, HashMap<String, Limit>>,
    /// Patient → LOINC → latest (value, measured at), for the aggregate score.
    latest: HashMap<String, HashMap<&'static str, (f64, u64)>>,
    /// Previous values of what the current batch changed, oldest first.
    undo: Option<Vec<Undo>>,
}

/// One entry's value before a change.
#[derive(Debug, Clone)]
enum Undo {
    Alert(String, String, Option<Alert>),
    Limit(String, String, Option<Limit>),
    Latest(String, &'static str, Option<(f64, u64)>),
}

fn new_id() -> String {
    let mut b = [0u8; 12];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    format!("alrt_{}", hex::encode(b))
}

/// Sets (or removes) `map[a][b]`, returning the previous value.
fn put<K: Clone + Eq + std::hash::Hash + std::borrow::Borrow<str>, V>(
    map: &mut HashMap<String, HashMap<K, V>>,
    a: &str,
    b: K,
    v: Option<V>,
) -> Option<V> {
    match v {
        Some(v) => map.entry(a.to_string()).or_default().insert(b, v),
        None => {
            let inner = map.get_mut(a)?;
            let old = inner.remove(b.borrow());
            if inner.is_empty() {
                map.remove(a);
            }
            old
        }
    }
}

impl Engine {
    /// An engine with these unresolved alerts and patient limits (as stored).
    pub fn new(
        cfg: AlertConfig,
        unresolved: Vec<Alert>,
        limits: Vec<(String, String, Limit)>,
    ) -> Self {
        let mut e = Self {
            cfg,
            unresolved: HashMap::new(),
            limits: HashMap::new(),
            latest: HashMap::new(),
            undo: None,
        };
        for a in unresolved {
            put(
                &mut e.unresolved,
                &a.patient.clone(),
                a.parameter.clone(),
                Some(a),
            );
        }
        for (p, l, lim) in limits {
            put(&mut e.limits, &p, l, Some(lim));
        }
        e
    }

    /// Starts journaling changes (a batch begins).
    pub fn begin(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Keeps the batch's changes.
    pub fn commit(&mut self) {
        self.undo = None;
    }

    /// Undoes the batch's changes.
    pub fn rollback(&mut self) {
        for u in self.undo.take().unwrap_or_default().into_iter().rev() {
            match u {
                Undo::Alert(p, k, v) => {
                    put(&mut self.unresolved, &p, k, v);
                }
                Undo::Limit(p, k, v) => {
                    put(&mut self.limits, &p, k, v);
                }
                Undo::Latest(p, k, v) => {
                    put(&mut self.latest, &p, k, v);
                }
            }
        }
    }

    fn set_alert(&mut self, patient: &str, parameter: &str, a: Option<Alert>) {
        let old = put(&mut self.unresolved, patient, parameter.to_string(), a);
        if let Some(undo) = &mut self.undo {
            undo.push(Undo::Alert(patient.into(), parameter.into(), old));
        }
    }

    fn alert(&self, patient: &str, parameter: &str) -> Option<&Alert> {
        self.unresolved.get(patient)?.get(parameter)
    }

    /// Sets (or, with `None`, clears) a patient's limits for a vital sign.
    pub fn set_limit(&mut self, patient: &str, loinc: &str, limit: Option<Limit>) {
        let old = put(&mut self.limits, patient, loinc.to_string(), limit);
        if let Some(undo) = &mut self.undo {
            undo.push(Undo::Limit(patient.into(), loinc.into(), old));
        }
    }

    /// The severity a value calls for (0: none).
    fn severity(&self, patient: &str, loinc: &str, v: f64) -> u8 {
        if let Some(l) = self.limits.get(patient).and_then(|m| m.get(loinc)) {
            let out = l.low.is_some_and(|lo| v <= lo) || l.high.is_some_and(|hi| v >= hi);
            return if out { 3 } else { 0 };
        }
        match news2_subscore(loinc, v) {
            Some(s) if s >= 2 => s,
            _ => 0,
        }
    }

    /// Evaluates an accepted reading of `patient` (logged at `idx`, measured at `measured_at`).
    pub fn on_reading(
        &mut self,
        patient: &str,
        idx: u64,
        measured_at: u64,
        vitals: &[(&'static str, f64)],
        now: u64,
    ) -> Vec<Change> {
        let mut out = Vec::new();
        for &(loinc, v) in vitals {
            let sev = self.severity(patient, loinc, v);
            self.step(patient, loinc, sev, v, idx, measured_at, now, &mut out);
            let newer = self
                .latest
                .get(patient)
                .and_then(|m| m.get(loinc))
                .is_none_or(|(_, t)| *t <= measured_at);
            if NEWS2_PARAMS.contains(&loinc) && newer {
                let old = put(&mut self.latest, patient, loinc, Some((v, measured_at)));
                if let Some(undo) = &mut self.undo {
                    undo.push(Undo::Latest(patient.into(), loinc, old));
                }
            }
        }
        // The aggregate score, when every scored vital sign is recent enough.
        if let Some(latest) = self.latest.get(patient) {
            let window = self.cfg.news2_window_ms;
            let recent: Option<Vec<(&str, f64)>> = NEWS2_PARAMS
                .iter()
                .map(|p| {
                    latest
                        .get(p)
                        .filter(|(_, t)| t.saturating_add(window) >= measured_at)
                        .map(|(v, _)| (*p, *v))
                })
                .collect();
            if let Some(values) = recent {
                let score: u8 = values
                    .iter()
                    .map(|(p, v)| news2_subscore(p, *v).unwrap_or(0))
                    .sum();
                let sev = match score {
                    0..=4 => 0,
                    5 | 6 => 2,
                    _ => 3,
                };
                self.step(
                    patient,
                    NEWS2,
                    sev,
                    f64::from(score),
                    idx,
                    measured_at,
                    now,
                    &mut out,
                );
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        patient: &str,
        parameter: &str,
        sev: u8,
        value: f64,
        idx: u64,
        measured_at: u64,
        now: u64,
        out: &mut Vec<Change>,
    ) {
        let system = || "system".to_string();
        let Some(current) = self.alert(patient, parameter) else {
            if sev > 0 {
                let a = Alert {
                    id: new_id(),
                    patient: patient.into(),
                    parameter: parameter.into(),
                    status: Status::Open,
                    severity: sev,
                    value,
                    reading_index: idx,
                    opened_at: now,
                    updated_at: now,
                    last_abnormal_at: measured_at,
                    events: 1,
                };
                out.push(Change {
                    alert: a.clone(),
                    transition: Some((Transition::Opened, system())),
                });
                self.set_alert(patient, parameter, Some(a));
            }
            return;
        };
        let mut a = current.clone();
        if sev == 0 {
            if measured_at >= a.last_abnormal_at.saturating_add(self.cfg.normal_period_ms) {
                a.status = Status::Resolved;
                a.updated_at = now;
                a.events += 1;
                self.set_alert(patient, parameter, None);
                out.push(Change {
                    alert: a,
                    transition: Some((Transition::Resolved, system())),
                });
            }
            return;
        }
        a.value = value;
        a.reading_index = idx;
        a.last_abnormal_at = a.last_abnormal_at.max(measured_at);
        a.updated_at = now;
        let transition = if sev > a.severity {
            a.severity = sev;
            a.status = Status::Open; // an escalation needs a new acknowledgement
            a.events += 1;
            Some((Transition::Escalated, system()))
        } else {
            None
        };
        out.push(Change {
            alert: a.clone(),
            transition,
        });
        self.set_alert(patient, parameter, Some(a));
    }

    /// The unresolved alert with this id.
    fn find(&self, id: &str) -> Option<&Alert> {
        self.unresolved
            .values()
            .flat_map(HashMap::values)
            .find(|a| a.id == id)
    }

    /// A clinician acknowledges an unresolved alert.
    pub fn acknowledge(&mut self, id: &str, actor: &str, now: u64) -> Result<Change, ActionError> {
        let mut a = self
            .find(id)
            .cloned()
            .ok_or_else(|| ActionError::NotFound(id.into()))?;
        if a.status == Status::Acknowledged {
            return Err(ActionError::AlreadyAcknowledged(id.into()));
        }
        a.status = Status::Acknowledged;
        a.updated_at = now;
        a.events += 1;
        self.set_alert(&a.patient.clone(), &a.parameter.clone(), Some(a.clone()));
        Ok(Change {
            alert: a,
            transition: Some((Transition::Acknowledged, actor.into())),
        })
    }

    /// A clinician resolves an unresolved alert.
    pub fn resolve(&mut self, id: &str, actor: &str, now: u64) -> Result<Change, ActionError> {
        let mut a = self
            .find(id)
            .cloned()
            .ok_or_else(|| ActionError::NotFound(id.into()))?;
        a.status = Status::Resolved;
        a.updated_at = now;
        a.events += 1;
        self.set_alert(&a.patient.clone(), &a.parameter.clone(), None);
        Ok(Change {
            alert: a,
            transition: Some((Transition::Resolved, actor.into())),
        })
    }
}

/// The webhook payload of a transition (Standard Webhooks' `type`/`timestamp`/`data` shape). It
/// names the patient by pseudonym only and points to the reading's evidence.
pub fn payload(alert: &Alert, transition: Transition, msg_at_ms: u64) -> (String, String) {
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
            "evidence": format!("/v1/readings/{}/evidence", alert.reading_index),
            "opened_at_ms": alert.opened_at,
            "sequence": alert.events,
        }
    });
    (event_type, body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HR: &str = "8867-4";
    const MIN: u64 = 60_000;

    fn engine() -> Engine {
        Engine::new(
            AlertConfig {
                normal_period_ms: 10 * MIN,
                news2_window_ms: 15 * MIN,
            },
            vec![],
            vec![],
        )
    }

    fn kinds(c: &[Change]) -> Vec<Option<Transition>> {
        c.iter()
            .map(|c| c.transition.as_ref().map(|t| t.0))
            .collect()
    }

    #[test]
    fn subscores_follow_news2() {
        for (loinc, v, s) in [
            ("9279-1", 8.0, 3),
            ("9279-1", 9.0, 1),
            ("9279-1", 16.0, 0),
            ("9279-1", 22.0, 2),
            ("9279-1", 25.0, 3),
            ("2708-6", 91.0, 3),
            ("2708-6", 93.0, 2),
            ("2708-6", 95.0, 1),
            ("2708-6", 96.0, 0),
            ("8480-6", 90.0, 3),
            ("8480-6", 100.0, 2),
            ("8480-6", 110.0, 1),
            ("8480-6", 219.0, 0),
            ("8480-6", 220.0, 3),
            ("8867-4", 40.0, 3),
            ("8867-4", 50.0, 1),
            ("8867-4", 90.0, 0),
            ("8867-4", 110.0, 1),
            ("8867-4", 130.0, 2),
            ("8867-4", 131.0, 3),
            ("8310-5", 35.0, 3),
            ("8310-5", 36.0, 1),
            ("8310-5", 38.0, 0),
            ("8310-5", 39.0, 1),
            ("8310-5", 39.1, 2),
        ] {
            assert_eq!(news2_subscore(loinc, v), Some(s), "{loinc} {v}");
        }
        assert_eq!(news2_subscore("0000-0", 1.0), None);
    }

    #[test]
    fn lifecycle_open_escalate_acknowledge_resolve() {
        let mut e = engine();
        let t = 1_000 * MIN;
        assert!(e.on_reading("p1", 1, t, &[(HR, 80.0)], t).is_empty());
        let c = e.on_reading("p1", 2, t + 1, &[(HR, 120.0)], t + 1);
        assert_eq!(kinds(&c), vec![Some(Transition::Opened)]);
        assert_eq!(c[0].alert.severity, 2);
        let id = c[0].alert.id.clone();
        // Still abnormal, not worse: the row is updated, no transition.
        let c = e.on_reading("p1", 3, t + 2, &[(HR, 118.0)], t + 2);
        assert_eq!(kinds(&c), vec![None]);
        assert_eq!(c[0].alert.reading_index, 3);
        let ack = e.acknowledge(&id, "dr-a", t + 3).unwrap();
        assert_eq!(ack.alert.status, Status::Acknowledged);
        assert_eq!(
            e.acknowledge(&id, "dr-a", t + 3),
            Err(ActionError::AlreadyAcknowledged(id.clone()))
        );
        // Worse: escalated, open again, same alert.
        let c = e.on_reading("p1", 4, t + 4, &[(HR, 140.0)], t + 4);
        assert_eq!(kinds(&c), vec![Some(Transition::Escalated)]);
        assert_eq!(
            (
                c[0].alert.id.as_str(),
                c[0].alert.severity,
                c[0].alert.status
            ),
            (id.as_str(), 3, Status::Open)
        );
        // Normal again: resolved only once the normal period has passed.
        assert!(e
            .on_reading("p1", 5, t + 5 * MIN, &[(HR, 75.0)], t + 5 * MIN)
            .is_empty());
        let c = e.on_reading("p1", 6, t + 4 + 10 * MIN, &[(HR, 75.0)], t + 11 * MIN);
        assert_eq!(kinds(&c), vec![Some(Transition::Resolved)]);
        assert_eq!(
            c[0].alert.events, 4,
            "opened, acknowledged, escalated, resolved"
        );
        assert_eq!(
            e.resolve(&id, "dr-a", t),
            Err(ActionError::NotFound(id.clone()))
        );
        // A new episode is a new alert.
        let c = e.on_reading("p1", 7, t + 20 * MIN, &[(HR, 150.0)], t + 20 * MIN);
        assert_eq!(kinds(&c), vec![Some(Transition::Opened)]);
        assert_ne!(c[0].alert.id, id);
        let r = e.resolve(&c[0].alert.id, "dr-b", t + 21 * MIN).unwrap();
        assert_eq!(r.transition, Some((Transition::Resolved, "dr-b".into())));
    }

    #[test]
    fn rollback_undoes_exactly_the_batch() {
        let mut e = engine();
        let t = 100 * MIN;
        let kept = e.on_reading("p1", 1, t, &[(HR, 150.0)], t);
        // The whole state, in a stable order.
        let snapshot = |e: &Engine| {
            let mut v: Vec<String> = Vec::new();
            for (p, m) in &e.unresolved {
                for (k, a) in m {
                    v.push(format!("alert {p} {k} {a:?}"));
                }
            }
            for (p, m) in &e.limits {
                for (k, l) in m {
                    v.push(format!("limit {p} {k} {l:?}"));
                }
            }
            for (p, m) in &e.latest {
                for (k, x) in m {
                    v.push(format!("latest {p} {k} {x:?}"));
                }
            }
            v.sort();
            v
        };
        let before = snapshot(&e);
        assert!(before.len() >= 2, "an alert and a latest value");
        e.begin();
        e.on_reading("p1", 2, t + 1, &[(HR, 80.0), ("8310-5", 39.5)], t + 1); // new fever alert
        e.on_reading("p2", 3, t + 1, &[(HR, 35.0)], t + 1);
        e.set_limit(
            "p1",
            HR,
            Some(Limit {
                low: Some(1.0),
                high: Some(2.0),
            }),
        );
        e.acknowledge(&kept[0].alert.id, "dr", t + 2).unwrap();
        e.rollback();
        assert_eq!(snapshot(&e), before);
        // And a committed batch stays.
        e.begin();
        e.resolve(&kept[0].alert.id, "dr", t + 3).unwrap();
        e.commit();
        e.rollback(); // nothing to undo
        assert!(e.unresolved.is_empty());
    }

    #[test]
    fn patient_limits_replace_news2_bands() {
        let mut e = engine();
        e.set_limit(
            "p1",
            HR,
            Some(Limit {
                low: Some(50.0),
                high: Some(100.0),
            }),
        );
        let c = e.on_reading("p1", 1, 1, &[(HR, 105.0)], 1);
        assert_eq!(c[0].alert.severity, 3, "outside the patient's own limits");
        assert!(
            e.on_reading("p2", 2, 1, &[(HR, 105.0)], 1).is_empty(),
            "NEWS2 1 for others"
        );
        e.set_limit("p1", HR, None);
        assert!(e.on_reading("p3", 3, 1, &[(HR, 125.0)], 1).len() == 1);
    }

    #[test]
    fn aggregate_news2_needs_all_five_recent() {
        let mut e = engine();
        let t = 100 * MIN;
        // Each sub-score 1 (total 5) is no single-parameter alert, but the aggregate is urgent.
        let mild = [
            ("8310-5", 38.5),
            ("8867-4", 100.0),
            ("2708-6", 95.0),
            ("9279-1", 10.0),
        ];
        assert!(
            e.on_reading("p1", 1, t, &mild, t).is_empty(),
            "blood pressure missing"
        );
        let c = e.on_reading("p1", 2, t + 1, &[("8480-6", 105.0)], t + 1);
        assert_eq!(kinds(&c), vec![Some(Transition::Opened)]);
        assert_eq!(
            (
                c[0].alert.parameter.as_str(),
                c[0].alert.value,
                c[0].alert.severity
            ),
            (NEWS2, 5.0, 2)
        );
        // Too old to combine: no aggregate.
        let mut e = engine();
        e.on_reading("p1", 1, t, &mild, t);
        assert!(e
            .on_reading("p1", 2, t + 16 * MIN, &[("8480-6", 105.0)], t)
            .is_empty());
    }

    #[test]
    fn payload_names_only_the_pseudonym_and_the_evidence() {
        let mut e = engine();
        let c = e.on_reading(
            "patient-7",
            42,
            1_795_000_000_000,
            &[(HR, 150.0)],
            1_795_000_000_123,
        );
        let (ty, body) = payload(&c[0].alert, Transition::Opened, 1_795_000_000_123);
        assert_eq!(ty, "alert.opened");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["type"], "alert.opened");
        assert_eq!(v["timestamp"], "2026-11-18T11:06:40.123Z");
        assert_eq!(v["data"]["patient"], "patient-7");
        assert_eq!(v["data"]["evidence"], "/v1/readings/42/evidence");
        assert_eq!(v["data"]["unit"], "/min");
    }
}
