//! The alert engine: the rules applied to each reading and the lifecycle of every unresolved
//! alert, with an undo journal for a batch whose transaction fails.

use super::*;

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
    pub(super) unresolved: HashMap<String, HashMap<String, Alert>>,
    /// Patient → LOINC → the patient's own limits.
    pub(super) limits: HashMap<String, HashMap<String, Limit>>,
    /// Patient → LOINC → latest (value, measured at), for the aggregate score.
    pub(super) latest: HashMap<String, HashMap<&'static str, (f64, u64)>>,
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
            if let Some(score) = news2_aggregate(|p| latest.get(p).copied(), measured_at, window) {
                let sev = news2_severity(score);
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
