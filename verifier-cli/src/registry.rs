//! The registry as the log's own registry events show it, rebuilt by the auditor (independently
//! of the service's code): which keys were enrolled for which devices and when, bindings of
//! sensors to gateways, patient assignments and revocations. A reading is checked against the
//! events logged before it (enrollment, binding) and against every revocation in the evidence,
//! whenever it was logged (a key revoked from a time before the reading taints it).

use crate::trust::Trust;
use provenance_core::cert::{DeviceCert, Role};
use provenance_core::cose::GatewayEnvelope;
use provenance_core::keys::KeyId;
use provenance_core::registry::RegistryEvent;
use std::collections::HashMap;

/// An enrolled key.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// Its certificate.
    pub cert: DeviceCert,
    /// Log index of the event that enrolled it.
    pub idx: u64,
    /// Valid from, Unix ms.
    pub valid_from: u64,
    /// Rotations that replaced it: (log index of the rotation, valid until (exclusive)). A
    /// reading is held only to the rotations logged before it.
    pub closed: Vec<(u64, u64)>,
    /// The trusted issuer it chains to (index into `Trust::issuers`), if any.
    pub issuer: Option<usize>,
}

#[derive(Debug, Clone)]
struct Binding {
    idx: u64,
    gateway_id: String,
    from_ms: u64,
    until_ms: Option<u64>,
}

/// The registry as shown by a set of registry events.
#[derive(Debug, Clone, Default)]
pub struct RegistryView {
    keys: HashMap<KeyId, KeyInfo>,
    bindings: HashMap<String, Vec<Binding>>,
    /// (log index, effective from) per revoked key.
    revocations: HashMap<KeyId, Vec<(u64, u64)>>,
    /// (log index, pseudonym, from) per sensor.
    assignments: HashMap<String, Vec<(u64, String, u64)>>,
    last_idx: Option<u64>,
}

/// Which keys a reading used, and when: all a revocation check needs (kept for every reading
/// of an archive until its whole registry is known).
#[derive(Debug, Clone, Copy)]
pub struct KeyUse {
    /// Log index of the reading.
    pub idx: u64,
    /// The sensor's key.
    pub sensor_kid: KeyId,
    /// When it measured.
    pub measured_at_ms: u64,
    /// The gateway's key.
    pub gateway_kid: KeyId,
    /// When it received the frame.
    pub received_at_ms: u64,
}

impl KeyUse {
    /// The key use of a reading (its index is not known here: 0).
    pub fn of(env: &GatewayEnvelope) -> Self {
        Self {
            idx: 0,
            sensor_kid: env.sensor.kid,
            measured_at_ms: env.sensor.reading.measured_at_ms,
            gateway_kid: env.kid,
            received_at_ms: env.received_at_ms,
        }
    }
}

/// What a reading's registry checks found: per step, a pass detail or a failure reason, and
/// the two keys when known (for the signature checks).
#[derive(Debug, Clone)]
pub struct ReadingFacts {
    /// (step, outcome), in report order.
    pub checks: Vec<(&'static str, Result<String, String>)>,
    /// The sensor's key, if enrolled.
    pub sensor_key: Option<ed25519_dalek::VerifyingKey>,
    /// The gateway's key, if enrolled.
    pub gateway_key: Option<ed25519_dalek::VerifyingKey>,
    /// The patient pseudonym in force at the measurement, if the evidence shows one.
    pub patient: Option<String>,
}

impl RegistryView {
    /// Applies one event logged at `idx`; events must come in index order.
    pub fn apply(&mut self, idx: u64, ev: &RegistryEvent, trust: &Trust) -> Result<(), String> {
        if self.last_idx.is_some_and(|l| idx <= l) {
            return Err(format!("registry entry {idx} is out of index order"));
        }
        self.last_idx = Some(idx);
        let parse = |der: &[u8]| DeviceCert::from_der(der).map_err(|e| format!("entry {idx}: {e}"));
        match ev {
            RegistryEvent::EnrollIssuer { .. } => {}
            RegistryEvent::EnrollSensor { cert } | RegistryEvent::EnrollGateway { cert } => {
                let c = parse(cert)?;
                self.add_key(c.not_before_ms, c, idx, trust);
            }
            RegistryEvent::RotateKey {
                device_id,
                cert,
                from_ms,
            } => {
                for k in self.keys.values_mut() {
                    if k.cert.subject_cn == *device_id && k.cert.role != Role::Issuer {
                        k.closed.push((idx, *from_ms));
                    }
                }
                let c = parse(cert)?;
                self.add_key(*from_ms, c, idx, trust);
            }
            RegistryEvent::Bind {
                sensor_id,
                gateway_id,
                from_ms,
                until_ms,
            } => {
                self.bindings
                    .entry(sensor_id.clone())
                    .or_default()
                    .push(Binding {
                        idx,
                        gateway_id: gateway_id.clone(),
                        from_ms: *from_ms,
                        until_ms: *until_ms,
                    });
            }
            RegistryEvent::AssignPatient {
                sensor_id,
                pseudonym,
                from_ms,
            } => {
                self.assignments
                    .entry(sensor_id.clone())
                    .or_default()
                    .push((idx, pseudonym.clone(), *from_ms));
            }
            RegistryEvent::Revoke {
                key_id, from_ms, ..
            } => {
                self.revocations
                    .entry(*key_id)
                    .or_default()
                    .push((idx, *from_ms));
            }
        }
        Ok(())
    }

    fn add_key(&mut self, valid_from: u64, cert: DeviceCert, idx: u64, trust: &Trust) {
        // Which trusted issuer signed it (the time checks are per reading).
        let issuer = trust
            .issuers
            .iter()
            .position(|ca| ca.check_issued_by(ca).is_ok() && cert.check_issued_by(ca).is_ok());
        self.keys.insert(
            cert.key_id,
            KeyInfo {
                cert,
                idx,
                valid_from,
                closed: Vec::new(),
                issuer,
            },
        );
    }

    /// Checks that neither key of a reading was revoked from a time at or before its use (the
    /// sensor's at the measurement, the gateway's at the reception), whenever the revocation was
    /// logged (`registry.not_revoked`).
    pub fn check_not_revoked(&self, env: &GatewayEnvelope) -> Result<String, String> {
        self.check_keys_not_revoked(&KeyUse::of(env))
    }

    /// [`RegistryView::check_not_revoked`] for a reading's key use.
    pub fn check_keys_not_revoked(&self, u: &KeyUse) -> Result<String, String> {
        let (measured, received) = (u.measured_at_ms, u.received_at_ms);
        let env = u;
        let revoked = |kid: &KeyId, at: u64| {
            self.revocations
                .get(kid)
                .into_iter()
                .flatten()
                .find(|(_, from)| *from <= at)
                .copied()
        };
        match (revoked(&env.sensor_kid, measured), revoked(&env.gateway_kid, received)) {
            (Some((i, from)), _) => Err(format!("the sensor key was revoked from {from} (entry {i}), before the measurement at {measured}")),
            (_, Some((i, from))) => Err(format!("the gateway key was revoked from {from} (entry {i}), before the reception at {received}")),
            (None, None) => {
                let n = self.revocations.get(&env.sensor_kid).map_or(0, Vec::len)
                    + self.revocations.get(&env.gateway_kid).map_or(0, Vec::len);
                Ok(if n == 0 {
                    "neither key is revoked in the evidence".to_string()
                } else {
                    format!("{n} revocation(s) of these keys take effect after the reading")
                })
            }
        }
    }

    /// The revocations in the view: (key, log index, effective from).
    pub fn revocations(&self) -> impl Iterator<Item = (&KeyId, u64, u64)> {
        self.revocations
            .iter()
            .flat_map(|(k, v)| v.iter().map(move |(i, f)| (k, *i, *f)))
    }

    /// Checks a reading logged at `idx` against the registry events logged before it: both
    /// certificates against the trusted issuers at the reading's times (`sensor.certificate`,
    /// `gateway.certificate`), both keys enrolled and current then (`registry.enrolled`), and the
    /// binding (`registry.bound`). Revocations: [`RegistryView::check_not_revoked`].
    pub fn check_reading(&self, idx: u64, env: &GatewayEnvelope, trust: &Trust) -> ReadingFacts {
        let r = &env.sensor.reading;
        let (measured, received) = (r.measured_at_ms, env.received_at_ms);
        let sensor = self.keys.get(&env.sensor.kid);
        let gateway = self.keys.get(&env.kid);
        let cert_check =
            |k: Option<&KeyInfo>, role: Role, kid: &KeyId, at: u64| -> Result<String, String> {
                let k = k.ok_or_else(|| {
                    format!(
                        "key {} is not enrolled in the registry evidence",
                        kid.to_hex()
                    )
                })?;
                if k.cert.role != role {
                    return Err(format!(
                        "key {} belongs to a {}, not a {}",
                        kid.to_hex(),
                        k.cert.role.as_str(),
                        role.as_str()
                    ));
                }
                let ca = k.issuer.and_then(|i| trust.issuers.get(i)).ok_or_else(|| {
                    format!(
                        "certificate of {} does not chain to any trusted issuer (--issuer)",
                        k.cert.subject_cn
                    )
                })?;
                // The issuer's signature was checked once, at enrollment; here only the times.
                ca.check_valid_at(at)
                    .and_then(|()| k.cert.check_valid_at(at))
                    .map_err(|e| format!("certificate of {} at {at}: {e}", k.cert.subject_cn))?;
                Ok(format!(
                    "{} (key {}) issued by {:?}, valid at {at}",
                    k.cert.subject_cn,
                    kid.to_hex(),
                    ca.subject_cn
                ))
            };
        let mut checks = vec![
            (
                "sensor.certificate",
                cert_check(sensor, Role::Sensor, &env.sensor.kid, measured),
            ),
            (
                "gateway.certificate",
                cert_check(gateway, Role::Gateway, &env.kid, received),
            ),
        ];
        let enrolled = (|| {
            let s = sensor.ok_or("the sensor key is not enrolled")?;
            let g = gateway.ok_or("the gateway key is not enrolled")?;
            if s.cert.subject_cn != r.sensor_id {
                return Err(format!(
                    "the reading names sensor {:?} but the key is enrolled for {:?}",
                    r.sensor_id, s.cert.subject_cn
                ));
            }
            for (who, k, at) in [("sensor", s, measured), ("gateway", g, received)] {
                if k.idx >= idx {
                    return Err(format!(
                        "the {who} key was enrolled at entry {} — after this reading (entry {idx})",
                        k.idx
                    ));
                }
                let until = k
                    .closed
                    .iter()
                    .filter(|(i, _)| *i < idx)
                    .map(|(_, u)| *u)
                    .min();
                if at < k.valid_from || until.is_some_and(|u| at >= u) {
                    return Err(format!("the {who} key was not the device's key at {at} (valid from {} until {until:?})", k.valid_from));
                }
            }
            Ok(format!(
                "sensor {} (entry {}) and gateway {} (entry {}) enrolled before entry {idx}",
                s.cert.subject_cn, s.idx, g.cert.subject_cn, g.idx
            ))
        })();
        checks.push(("registry.enrolled", enrolled.map_err(|e: String| e)));
        let bound = match gateway {
            None => Err("cannot check: the gateway key is not enrolled".to_string()),
            Some(g) => {
                let gw = &g.cert.subject_cn;
                self.bindings
                    .get(&r.sensor_id)
                    .into_iter()
                    .flatten()
                    .find(|b| b.idx < idx && b.gateway_id == *gw && b.from_ms <= measured && b.until_ms.is_none_or(|u| measured < u))
                    .map(|b| format!("{} bound to {gw} from {} (entry {})", r.sensor_id, b.from_ms, b.idx))
                    .ok_or_else(|| format!("no binding of {} to {gw} covering {measured} was logged before entry {idx}", r.sensor_id))
            }
        };
        checks.push(("registry.bound", bound));
        let patient = self
            .assignments
            .get(&r.sensor_id)
            .into_iter()
            .flatten()
            .filter(|(i, _, from)| *i < idx && *from <= measured)
            .max_by_key(|(i, _, from)| (*from, *i))
            .map(|(_, p, _)| p.clone());
        ReadingFacts {
            checks,
            sensor_key: sensor
                .filter(|k| k.cert.role == Role::Sensor)
                .map(|k| k.cert.public_key),
            gateway_key: gateway
                .filter(|k| k.cert.role == Role::Gateway)
                .map(|k| k.cert.public_key),
            patient,
        }
    }
}
