//! The registry as an auditor rebuilds it from the logged registry events in a bundle or an
//! archive: `provenance-core`'s registry state machine — the same rules the service ran when
//! it logged them — plus the one thing only the auditor knows, which issuers to trust.
//!
//! A registry event that breaks a rule fails the evidence (the service would have refused it,
//! so a log holding it was not written by an honest service). A reading is held to the events
//! logged before it; revocations count whenever logged.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::audit::trust::Trust;
use crate::bundle::MapProof;
use crate::cose::GatewayEnvelope;
use crate::keys::KeyId;
use crate::registry::RegistryEvent;
use crate::registry_state::{
    parse_registry_extension, Evaluation, ReadingClaims, RegistryState, Subject,
};
use crate::smt;

/// The registry as shown by the logged events the auditor has.
#[derive(Debug, Clone, Default)]
pub struct RegistryView {
    state: RegistryState,
    /// The subject of every event applied, by log index.
    applied: Vec<(u64, Subject)>,
}

/// Which keys a reading used, and when: all a revocation check needs (kept for every reading
/// of an archive until its whole registry is known).
#[derive(Debug, Clone)]
pub struct KeyUse {
    /// Log index of the reading.
    pub idx: u64,
    /// Logged-at of the reading.
    pub logged_at_ms: u64,
    /// The sensor's key.
    pub sensor_kid: KeyId,
    /// The sensor id.
    pub sensor_id: String,
    /// The sensor's sequence number.
    pub seq: u64,
    /// When it was measured (the sensor's claim).
    pub measured_at_ms: u64,
    /// The gateway's key.
    pub gateway_kid: KeyId,
    /// When the gateway received it.
    pub received_at_ms: u64,
}

impl KeyUse {
    /// The key use of a reading logged at `idx`, `logged_at_ms`.
    pub fn of(idx: u64, logged_at_ms: u64, env: &GatewayEnvelope) -> Self {
        Self::of_claims(idx, logged_at_ms, &ReadingClaims::of(env))
    }

    /// The key use of a reading's claims (a private message's, once decrypted).
    pub fn of_claims(idx: u64, logged_at_ms: u64, c: &ReadingClaims<'_>) -> Self {
        Self {
            idx,
            logged_at_ms,
            sensor_kid: c.sensor_kid,
            sensor_id: c.sensor_id.to_string(),
            seq: c.seq,
            measured_at_ms: c.measured_at_ms,
            gateway_kid: c.gateway_kid,
            received_at_ms: c.received_at_ms,
        }
    }

    fn claims(&self) -> ReadingClaims<'_> {
        ReadingClaims {
            gateway_kid: self.gateway_kid,
            sensor_kid: self.sensor_kid,
            sensor_id: &self.sensor_id,
            seq: self.seq,
            measured_at_ms: self.measured_at_ms,
            received_at_ms: self.received_at_ms,
        }
    }
}

/// What a reading's registry checks found: per step, a pass detail or a failure reason, and
/// the two keys when known (for the signature checks).
#[derive(Debug, Clone)]
pub struct ReadingFacts {
    /// (step, outcome), in report order.
    pub checks: Vec<(&'static str, Result<String, String>)>,
    /// The sensor's key, if enrolled before the reading.
    pub sensor_key: Option<ed25519_dalek::VerifyingKey>,
    /// The gateway's key, if enrolled before the reading.
    pub gateway_key: Option<ed25519_dalek::VerifyingKey>,
    /// The patient pseudonym in force when the gateway received the reading, and the log
    /// index of that assignment.
    pub patient: Option<(String, u64)>,
}

impl RegistryView {
    /// Applies one event logged at `idx` and `logged_at_ms`; events must come in index order
    /// and obey the registry rules.
    pub fn apply(&mut self, idx: u64, logged_at_ms: u64, ev: &RegistryEvent) -> Result<(), String> {
        let subject = self.state.subject_of(ev);
        self.state.apply(idx, logged_at_ms, ev).map_err(|e| {
            format!(
                "entry {idx} ({}) breaks the registry rules: {e}",
                ev.type_name()
            )
        })?;
        if let Ok(subject) = subject {
            self.applied.push((idx, subject));
        }
        Ok(())
    }

    /// How many events were applied.
    pub fn events(&self) -> u64 {
        self.state.event_count()
    }

    /// The state machine's state.
    pub fn state(&self) -> &RegistryState {
        &self.state
    }

    /// `registry.complete` for a bundle: the checkpoint's registry map (its extension line)
    /// proves the event chain of every subject that decides the reading — the sensor, the
    /// gateway, every gateway the sensor was bound to, the issuers of all their keys, as the
    /// replayed events themselves name them — equal to the events in the evidence. An event
    /// left out (a revocation, a rotation, a newer assignment) or changed fails.
    pub fn check_complete(
        &self,
        extensions: &[String],
        env: &GatewayEnvelope,
        proofs: &[crate::bundle::SubjectProof],
    ) -> Result<String, String> {
        self.check_complete_subjects(extensions, &self.required_subjects(env), proofs)
    }

    /// The subjects that decide a reading, as the replayed events name them.
    pub fn required_subjects(&self, env: &GatewayEnvelope) -> Vec<Subject> {
        let sensor = &env.sensor.reading.sensor_id;
        // The gateway's device id from its enrolled key (an unknown key fails registry.enrolled).
        let gateway = self
            .state
            .key(&env.kid)
            .map(|k| k.cert.subject_cn.clone())
            .unwrap_or_else(|| sensor.clone());
        self.state.subjects_for(sensor, &gateway)
    }

    /// `registry.complete` for a set of subjects: the evidence holds exactly their events, and
    /// each one's chain is proved in the checkpoint's registry map.
    pub fn check_complete_subjects(
        &self,
        extensions: &[String],
        required: &[Subject],
        proofs: &[crate::bundle::SubjectProof],
    ) -> Result<String, String> {
        let (count, root) = parse_registry_extension(extensions)?;
        let mut by_subject = alloc::collections::BTreeMap::new();
        for p in proofs {
            let (subject, proof) = p.parse().map_err(|e| e.to_string())?;
            by_subject.insert(subject, proof);
        }
        let mut problems = Vec::new();
        // The evidence is exactly these subjects' histories: nothing about anyone else.
        for (idx, subject) in &self.applied {
            if !required.contains(subject) {
                problems.push(format!(
                    "entry {idx} is about {subject}, which does not decide this evidence"
                ));
            }
        }
        for subject in by_subject.keys() {
            if !required.contains(subject) {
                problems.push(format!(
                    "a registry proof for {subject}, which does not decide this evidence"
                ));
            }
        }
        for subject in required {
            let chain = self.state.chain(subject).unwrap_or_default();
            match by_subject.get(subject) {
                None => problems.push(format!("no registry proof for {subject}")),
                Some(MapProof::Absent(_)) if chain.count > 0 => problems.push(format!(
                    "the evidence holds {} event(s) of {subject}, but its registry proof says it has none",
                    chain.count
                )),
                Some(MapProof::Absent(p)) => {
                    if !smt::verify_absent(&root, &subject.map_key(), p) {
                        problems.push(format!(
                            "{subject} has no event in the evidence, but it is not absent from the checkpoint's registry: its events were left out"
                        ));
                    }
                }
                Some(MapProof::Present(hashes)) => {
                    if !smt::verify(&root, &subject.map_key(), &chain.map_value(), hashes) {
                        problems.push(format!(
                            "the {} event(s) of {subject} in the evidence are not its history in the checkpoint's registry: events left out or changed",
                            chain.count
                        ));
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(format!(
                "the complete histories of {} subjects ({}) are proved in the checkpoint's registry of {count} events",
                required.len(),
                required.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ")
            ))
        } else {
            Err(problems.join("; "))
        }
    }

    /// `registry.complete` for an archive: the registry replayed from every registry event of
    /// `[0, end)` (prelude and entries) is the one the checkpoint commits to, so no registry
    /// event was left out or replaced by a hash-only line.
    pub fn check_complete_log(&self, extensions: &[String]) -> Result<String, String> {
        let (count, root) = parse_registry_extension(extensions)?;
        if self.state.event_count() == count && self.state.registry_root() == root {
            Ok(format!(
                "the {count} registry events of the log up to the checkpoint give its registry root: none left out, replaced or changed"
            ))
        } else {
            Err(format!(
                "the archive's {} registry events do not give the checkpoint's registry of {count} events: events left out, replaced by a hash or changed",
                self.state.event_count()
            ))
        }
    }

    /// Checks a reading logged at `idx`, `logged_at_ms` against the registry events logged
    /// before it (`reading.time`, `registry.enrolled`, `sensor.certificate`,
    /// `gateway.certificate`, `registry.bound`), and that both keys' issuers are among the
    /// auditor's trusted issuers. Revocations: [`RegistryView::check_not_revoked`].
    pub fn check_reading(
        &self,
        idx: u64,
        logged_at_ms: u64,
        env: &GatewayEnvelope,
        trust: &Trust,
    ) -> ReadingFacts {
        self.check_claims(idx, logged_at_ms, &ReadingClaims::of(env), trust)
    }

    /// [`RegistryView::check_reading`] of a reading's claims (a private message's, once
    /// decrypted: its sensor layer and the gateway layer's key and received-at).
    pub fn check_claims(
        &self,
        idx: u64,
        logged_at_ms: u64,
        claims: &ReadingClaims<'_>,
        trust: &Trust,
    ) -> ReadingFacts {
        let eval: Evaluation = self.state.evaluate(idx, logged_at_ms, claims);
        let trusted =
            |issuer: Option<KeyId>| issuer.map_or(Ok(()), |kid| self.trusted_issuer(&kid, trust));
        let sensor_issuer = eval.sensor.map(|(_, i)| i);
        let gateway_issuer = eval.gateway.as_ref().map(|(_, i, _)| *i);
        // Revocations: `check_not_revoked`, which also counts those logged after the reading.
        let checks = eval
            .checks
            .iter()
            .filter(|c| c.step != "registry.not_revoked")
            .map(|c| {
                let mut outcome = c
                    .outcome
                    .clone()
                    .map_err(|(r, d)| format!("{}: {d}", r.code()));
                let issuer = match c.step {
                    "sensor.certificate" => Some(sensor_issuer),
                    "gateway.certificate" => Some(gateway_issuer),
                    _ => None,
                };
                if let (Some(i), Ok(detail)) = (issuer, &outcome) {
                    if let Err(e) = trusted(i) {
                        outcome = Err(format!("untrusted_issuer: {detail}, but {e}"));
                    }
                }
                (c.step, outcome)
            })
            .collect();
        ReadingFacts {
            checks,
            sensor_key: eval.sensor.map(|(k, _)| k),
            gateway_key: eval.gateway.map(|(k, _, _)| k),
            patient: eval.patient.map(|a| (a.pseudonym, a.index)),
        }
    }

    /// The fast path of [`RegistryView::check_reading`] for archives: the keys when every check
    /// passes and both issuers are trusted, `None` when anything fails (then ask
    /// `check_reading` for the details). No text is built.
    pub fn quick_check(
        &self,
        idx: u64,
        logged_at_ms: u64,
        env: &GatewayEnvelope,
        trust: &Trust,
    ) -> Option<(ed25519_dalek::VerifyingKey, ed25519_dalek::VerifyingKey)> {
        let v = self
            .state
            .check(idx, logged_at_ms, &ReadingClaims::of(env))
            .ok()?;
        let trusted = |kid: &KeyId| self.trusted_issuer(kid, trust).is_ok();
        (trusted(&v.issuers.0) && trusted(&v.issuers.1)).then_some((v.sensor_key, v.gateway_key))
    }

    /// Whether the enrolled issuer `kid` is one of the auditor's trusted issuers.
    pub fn trusted_issuer(&self, kid: &KeyId, trust: &Trust) -> Result<(), String> {
        let Some(ca) = self.state.issuer(kid) else {
            return Err("its issuer is not enrolled".into());
        };
        if trust.issuers.iter().any(|t| t.der() == ca.cert.der()) {
            Ok(())
        } else {
            Err(format!(
                "its issuer {:?} (enrolled at entry {}) is not one of the trusted issuers (--issuer)",
                ca.cert.subject_cn, ca.index
            ))
        }
    }

    /// Revocations logged anywhere in the evidence (also after the reading) that take effect
    /// at or before its times (`registry.not_revoked`).
    pub fn check_not_revoked(&self, u: &KeyUse) -> Result<String, String> {
        self.state
            .revocation_check(u.logged_at_ms, &u.claims())
            .map_err(|(r, d)| format!("{}: {d}", r.code()))
    }
}
