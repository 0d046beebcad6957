//! The device registry in memory: issuers, device keys, bindings, patient assignments and
//! revocations, rebuilt from the database at start and changed only by logged registry events.
//!
//! Two jobs: check a registry event before it is logged ([`Registry::check_event`]), and check a
//! decoded envelope against the registry before its signatures are verified
//! ([`Registry::check_reading`]).

use crate::db::RegistryRow;
use provenance_core::cert::{DeviceCert, Role};
use provenance_core::cose::GatewayEnvelope;
use provenance_core::keys::KeyId;
use provenance_core::registry::RegistryEvent;
use std::collections::HashMap;

/// A key known to the registry.
#[derive(Debug, Clone)]
pub struct KeyRecord {
    /// The certificate.
    pub cert: DeviceCert,
    /// Valid from (enrollment or rotation time), ms.
    pub valid_from: u64,
    /// Valid until (exclusive) once rotated out, ms.
    pub valid_until: Option<u64>,
    /// Log index of the event that enrolled it.
    pub idx: u64,
}

/// A binding of a sensor to a gateway.
#[derive(Debug, Clone)]
pub struct Binding {
    /// Gateway id.
    pub gateway_id: String,
    /// From, ms.
    pub from_ms: u64,
    /// Until (exclusive), ms.
    pub until_ms: Option<u64>,
    /// Log index.
    pub idx: u64,
}

/// A patient assignment.
#[derive(Debug, Clone)]
pub struct Assignment {
    /// Pseudonym.
    pub pseudonym: String,
    /// From, ms.
    pub from_ms: u64,
    /// Log index.
    pub idx: u64,
}

/// A revocation.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// From, ms.
    pub from_ms: u64,
    /// Log index.
    pub idx: u64,
}

/// Why an ingest item was rejected: a stable, machine-readable reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not a valid gateway envelope (CBOR/COSE/reading).
    MalformedEnvelope,
    /// The gateway `kid` is not enrolled as a gateway key.
    UnknownGatewayKey,
    /// The sensor `kid` is not enrolled as a sensor key.
    UnknownSensorKey,
    /// The reading's sensor id is not the one the sensor key is enrolled for.
    SensorIdMismatch,
    /// The key was not valid at the time (before enrollment, after rotation, certificate expired).
    KeyNotValidAtTime,
    /// The gateway key was revoked before the gateway received the reading.
    GatewayKeyRevoked,
    /// The sensor key was revoked before the reading was measured.
    SensorKeyRevoked,
    /// The sensor is not bound to this gateway at the reading's time.
    NotBound,
    /// Times out of the plausible range (future, or too old, or received before measured).
    ImplausibleTime,
    /// The gateway signature does not verify.
    BadGatewaySignature,
    /// The sensor signature does not verify.
    BadSensorSignature,
    /// Another reading with the same sensor sequence number is already logged.
    Equivocation,
}

impl Reject {
    /// Every reason, for looking one up by its code.
    pub const ALL: [Reject; 12] = [
        Reject::MalformedEnvelope,
        Reject::UnknownGatewayKey,
        Reject::UnknownSensorKey,
        Reject::SensorIdMismatch,
        Reject::KeyNotValidAtTime,
        Reject::GatewayKeyRevoked,
        Reject::SensorKeyRevoked,
        Reject::NotBound,
        Reject::ImplausibleTime,
        Reject::BadGatewaySignature,
        Reject::BadSensorSignature,
        Reject::Equivocation,
    ];

    /// The one table of a reason's names: (stable code, problem type slug, description).
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Reject::MalformedEnvelope => (
                "malformed_envelope",
                "malformed-envelope",
                "not a valid gateway envelope",
            ),
            Reject::UnknownGatewayKey => (
                "unknown_gateway_key",
                "unknown-gateway-key",
                "the gateway key (kid) is not enrolled",
            ),
            Reject::UnknownSensorKey => (
                "unknown_sensor_key",
                "unknown-sensor-key",
                "the sensor key (kid) is not enrolled",
            ),
            Reject::SensorIdMismatch => (
                "sensor_id_mismatch",
                "sensor-id-mismatch",
                "the reading's sensor id is not the one its key is enrolled for",
            ),
            Reject::KeyNotValidAtTime => (
                "key_not_valid_at_time",
                "key-not-valid-at-time",
                "a key or certificate was not valid at the reading's time",
            ),
            Reject::GatewayKeyRevoked => (
                "gateway_key_revoked",
                "gateway-key-revoked",
                "the gateway key was revoked before the reading was received",
            ),
            Reject::SensorKeyRevoked => (
                "sensor_key_revoked",
                "sensor-key-revoked",
                "the sensor key was revoked before the reading was measured",
            ),
            Reject::NotBound => (
                "sensor_not_bound_to_gateway",
                "sensor-not-bound-to-gateway",
                "the sensor is not bound to this gateway at the reading's time",
            ),
            Reject::ImplausibleTime => (
                "implausible_time",
                "implausible-time",
                "measured-at or received-at is outside the plausible range",
            ),
            Reject::BadGatewaySignature => (
                "bad_gateway_signature",
                "bad-gateway-signature",
                "the gateway signature does not verify",
            ),
            Reject::BadSensorSignature => (
                "bad_sensor_signature",
                "bad-sensor-signature",
                "the sensor signature does not verify",
            ),
            Reject::Equivocation => (
                "equivocation",
                "equivocation",
                "another reading with this sensor sequence number is already logged",
            ),
        }
    }

    /// The stable reason code (in per-item results and metrics).
    pub fn code(self) -> &'static str {
        self.names().0
    }

    /// The problem type slug (the answer's `type` when a single item is rejected).
    pub fn problem_type(self) -> &'static str {
        self.names().1
    }

    /// What it means.
    pub fn description(self) -> &'static str {
        self.names().2
    }

    /// The reason with this code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

/// Time plausibility bounds for ingest.
#[derive(Debug, Clone, Copy)]
pub struct TimePolicy {
    /// Allowed clock skew into the future, ms.
    pub max_skew_ms: u64,
    /// Oldest accepted reading, ms before now.
    pub max_age_ms: u64,
}

/// The facts about a reading the registry established.
#[derive(Debug, Clone)]
pub struct ReadingFacts {
    /// Gateway key.
    pub gateway_key: ed25519_dalek::VerifyingKey,
    /// Sensor key.
    pub sensor_key: ed25519_dalek::VerifyingKey,
    /// Gateway id.
    pub gateway_id: String,
    /// Patient pseudonym at measurement time.
    pub patient: Option<String>,
}

/// The registry state.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    keys: HashMap<KeyId, KeyRecord>,
    bindings: HashMap<String, Vec<Binding>>,
    assignments: HashMap<String, Vec<Assignment>>,
    revocations: HashMap<KeyId, Vec<Revocation>>,
}

fn role_str(r: Role) -> &'static str {
    r.as_str()
}

impl Registry {
    /// Rebuilds the registry from stored rows.
    pub fn from_rows(rows: Vec<RegistryRow>) -> Result<Self, String> {
        let mut reg = Self::default();
        for row in rows {
            reg.apply_row(&row)?;
        }
        Ok(reg)
    }

    /// Applies one row (after it was committed).
    pub fn apply_row(&mut self, row: &RegistryRow) -> Result<(), String> {
        match row {
            RegistryRow::Key {
                key_id,
                cert,
                valid_from,
                valid_until,
                idx,
                ..
            } => {
                let cert =
                    DeviceCert::from_der(cert).map_err(|e| format!("stored certificate: {e}"))?;
                let id = KeyId::from_slice(key_id).ok_or("stored key id")?;
                self.keys.insert(
                    id,
                    KeyRecord {
                        cert,
                        valid_from: *valid_from,
                        valid_until: *valid_until,
                        idx: *idx,
                    },
                );
            }
            RegistryRow::CloseKeys { device_id, until } => {
                for k in self.keys.values_mut() {
                    if k.cert.subject_cn == *device_id
                        && k.cert.role != Role::Issuer
                        && k.valid_until.is_none()
                    {
                        k.valid_until = Some(*until);
                    }
                }
            }
            RegistryRow::Binding {
                idx,
                sensor_id,
                gateway_id,
                from_ms,
                until_ms,
            } => {
                self.bindings
                    .entry(sensor_id.clone())
                    .or_default()
                    .push(Binding {
                        gateway_id: gateway_id.clone(),
                        from_ms: *from_ms,
                        until_ms: *until_ms,
                        idx: *idx,
                    });
            }
            RegistryRow::Assignment {
                idx,
                sensor_id,
                pseudonym,
                from_ms,
            } => {
                self.assignments
                    .entry(sensor_id.clone())
                    .or_default()
                    .push(Assignment {
                        pseudonym: pseudonym.clone(),
                        from_ms: *from_ms,
                        idx: *idx,
                    });
            }
            RegistryRow::Revocation {
                idx,
                key_id,
                from_ms,
                ..
            } => {
                let id = KeyId::from_slice(key_id).ok_or("stored key id")?;
                self.revocations.entry(id).or_default().push(Revocation {
                    from_ms: *from_ms,
                    idx: *idx,
                });
            }
        }
        Ok(())
    }

    /// A key record.
    pub fn key(&self, id: &KeyId) -> Option<&KeyRecord> {
        self.keys.get(id)
    }

    fn issuer_of(&self, cert: &DeviceCert, at_ms: u64) -> Option<&KeyRecord> {
        self.keys
            .values()
            .filter(|k| k.cert.role == Role::Issuer)
            .find(|ca| cert.check_chain(&ca.cert, at_ms).is_ok())
    }

    /// The enrolled issuer record of a device certificate (the first CA that it chains to).
    pub fn issuer_record(&self, cert: &DeviceCert) -> Option<&KeyRecord> {
        self.keys
            .values()
            .filter(|k| k.cert.role == Role::Issuer)
            .find(|ca| cert.check_issued_by(&ca.cert).is_ok())
    }

    /// Every key (current and rotated out) of a device.
    pub fn device_keys<'a>(
        &'a self,
        device_id: &'a str,
    ) -> impl Iterator<Item = &'a KeyRecord> + 'a {
        self.keys
            .values()
            .filter(move |k| k.cert.role != Role::Issuer && k.cert.subject_cn == device_id)
    }

    fn device_role(&self, device_id: &str) -> Option<Role> {
        self.device_keys(device_id).next().map(|k| k.cert.role)
    }

    /// Checks a registry event against the current state at time `now_ms`; returns the rows it
    /// will add once logged at `idx`, or why it is refused.
    pub fn check_event(
        &self,
        event: &RegistryEvent,
        idx: u64,
        now_ms: u64,
    ) -> Result<Vec<RegistryRow>, String> {
        let key_row = |cert: &DeviceCert, valid_from: u64| RegistryRow::Key {
            key_id: cert.key_id.0.to_vec(),
            device_id: cert.subject_cn.clone(),
            role: role_str(cert.role).into(),
            cert: cert.der().to_vec(),
            valid_from,
            valid_until: None,
            idx,
        };
        match event {
            RegistryEvent::EnrollIssuer { cert } => {
                let c = DeviceCert::from_der(cert).map_err(|e| e.to_string())?;
                c.check_chain(&c, now_ms)
                    .map_err(|e| format!("issuer certificate: {e}"))?;
                if self.keys.contains_key(&c.key_id) {
                    return Err("this issuer key is already enrolled".into());
                }
                Ok(vec![key_row(&c, c.not_before_ms)])
            }
            RegistryEvent::EnrollSensor { cert } | RegistryEvent::EnrollGateway { cert } => {
                let c = DeviceCert::from_der(cert).map_err(|e| e.to_string())?;
                self.check_new_device_key(&c, now_ms)?;
                if self.device_role(&c.subject_cn).is_some() {
                    return Err(format!(
                        "device {} is already enrolled: rotate its key instead",
                        c.subject_cn
                    ));
                }
                Ok(vec![key_row(&c, c.not_before_ms)])
            }
            RegistryEvent::Bind {
                sensor_id,
                gateway_id,
                from_ms,
                until_ms,
            } => {
                if self.device_role(sensor_id) != Some(Role::Sensor) {
                    return Err(format!("{sensor_id} is not an enrolled sensor"));
                }
                if self.device_role(gateway_id) != Some(Role::Gateway) {
                    return Err(format!("{gateway_id} is not an enrolled gateway"));
                }
                Ok(vec![RegistryRow::Binding {
                    idx,
                    sensor_id: sensor_id.clone(),
                    gateway_id: gateway_id.clone(),
                    from_ms: *from_ms,
                    until_ms: *until_ms,
                }])
            }
            RegistryEvent::AssignPatient {
                sensor_id,
                pseudonym,
                from_ms,
            } => {
                if self.device_role(sensor_id) != Some(Role::Sensor) {
                    return Err(format!("{sensor_id} is not an enrolled sensor"));
                }
                Ok(vec![RegistryRow::Assignment {
                    idx,
                    sensor_id: sensor_id.clone(),
                    pseudonym: pseudonym.clone(),
                    from_ms: *from_ms,
                }])
            }
            RegistryEvent::RotateKey {
                device_id,
                cert,
                from_ms,
            } => {
                let c = DeviceCert::from_der(cert).map_err(|e| e.to_string())?;
                let role = self
                    .device_role(device_id)
                    .ok_or(format!("{device_id} is not enrolled"))?;
                if c.role != role {
                    return Err("the new certificate's role differs from the device's".into());
                }
                self.check_new_device_key(&c, now_ms)?;
                Ok(vec![
                    RegistryRow::CloseKeys {
                        device_id: device_id.clone(),
                        until: *from_ms,
                    },
                    key_row(&c, *from_ms),
                ])
            }
            RegistryEvent::Revoke {
                key_id,
                from_ms,
                reason,
            } => {
                if !self.keys.contains_key(key_id) {
                    return Err("unknown key".into());
                }
                Ok(vec![RegistryRow::Revocation {
                    idx,
                    key_id: key_id.0.to_vec(),
                    from_ms: *from_ms,
                    reason: reason.clone(),
                }])
            }
        }
    }

    /// A new device key: chains to an enrolled issuer (valid now) and is not known yet.
    fn check_new_device_key(&self, c: &DeviceCert, now_ms: u64) -> Result<(), String> {
        if self.issuer_of(c, now_ms).is_none() {
            return Err(
                "certificate does not chain to an enrolled issuer (or is not valid now)".into(),
            );
        }
        if self.keys.contains_key(&c.key_id) {
            return Err("this key is already enrolled".into());
        }
        Ok(())
    }

    fn revoked_at(&self, id: &KeyId, at_ms: u64) -> bool {
        self.revocations
            .get(id)
            .is_some_and(|rs| rs.iter().any(|r| r.from_ms <= at_ms))
    }

    fn valid_at(k: &KeyRecord, at_ms: u64) -> bool {
        at_ms >= k.valid_from
            && k.valid_until.is_none_or(|u| at_ms < u)
            && k.cert.check_valid_at(at_ms).is_ok()
    }

    /// Checks a decoded envelope against the registry and the time policy (signatures are
    /// checked afterwards, in batches).
    pub fn check_reading(
        &self,
        env: &GatewayEnvelope,
        now_ms: u64,
        policy: TimePolicy,
    ) -> Result<ReadingFacts, Reject> {
        let r = &env.sensor.reading;
        let (measured, received) = (r.measured_at_ms, env.received_at_ms);
        // Saturating arithmetic: these times come from outside and may be anything.
        if received > now_ms.saturating_add(policy.max_skew_ms)
            || measured > received.saturating_add(policy.max_skew_ms)
            || measured.saturating_add(policy.max_age_ms) < now_ms
            || r.seq >= (1 << 62)
        {
            return Err(Reject::ImplausibleTime);
        }
        let gw = self
            .keys
            .get(&env.kid)
            .filter(|k| k.cert.role == Role::Gateway)
            .ok_or(Reject::UnknownGatewayKey)?;
        let sensor = self
            .keys
            .get(&env.sensor.kid)
            .filter(|k| k.cert.role == Role::Sensor)
            .ok_or(Reject::UnknownSensorKey)?;
        if sensor.cert.subject_cn != r.sensor_id {
            return Err(Reject::SensorIdMismatch);
        }
        if !Self::valid_at(gw, received) || !Self::valid_at(sensor, measured) {
            return Err(Reject::KeyNotValidAtTime);
        }
        if self.revoked_at(&env.kid, received) {
            return Err(Reject::GatewayKeyRevoked);
        }
        if self.revoked_at(&env.sensor.kid, measured) {
            return Err(Reject::SensorKeyRevoked);
        }
        let gateway_id = &gw.cert.subject_cn;
        let bound = self.bindings.get(&r.sensor_id).is_some_and(|bs| {
            bs.iter().any(|b| {
                b.gateway_id == *gateway_id
                    && b.from_ms <= measured
                    && b.until_ms.is_none_or(|u| measured < u)
            })
        });
        if !bound {
            return Err(Reject::NotBound);
        }
        Ok(ReadingFacts {
            gateway_key: gw.cert.public_key,
            sensor_key: sensor.cert.public_key,
            gateway_id: gateway_id.clone(),
            patient: self
                .patient_at(&r.sensor_id, measured)
                .map(|a| a.pseudonym.clone()),
        })
    }

    /// The patient assignment of a sensor at a time (the latest one that started before it).
    pub fn patient_at(&self, sensor_id: &str, at_ms: u64) -> Option<&Assignment> {
        self.assignments
            .get(sensor_id)?
            .iter()
            .filter(|a| a.from_ms <= at_ms)
            .max_by_key(|a| (a.from_ms, a.idx))
    }

    /// Log indices of the registry events an auditor needs for a reading: the issuers' and both
    /// keys' enrollments, the bindings of the pair, the patient assignment in force, and every
    /// revocation of either key.
    pub fn evidence_indices(
        &self,
        sensor: &KeyId,
        gateway: &KeyId,
        sensor_id: &str,
        gateway_id: &str,
        measured_at: u64,
    ) -> Vec<u64> {
        let mut out = Vec::new();
        for id in [sensor, gateway] {
            if let Some(k) = self.keys.get(id) {
                out.push(k.idx);
                if let Some(ca) = self.issuer_record(&k.cert) {
                    out.push(ca.idx);
                }
                for r in self.revocations.get(id).into_iter().flatten() {
                    out.push(r.idx);
                }
            }
        }
        for b in self.bindings.get(sensor_id).into_iter().flatten() {
            if b.gateway_id == gateway_id {
                out.push(b.idx);
            }
        }
        if let Some(a) = self.patient_at(sensor_id, measured_at) {
            out.push(a.idx);
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The sensors ever bound to a gateway: each with its bindings to it and all its keys
    /// (a gateway verifies frames itself, offline, against this list).
    pub fn sensors_of_gateway(
        &self,
        gateway_id: &str,
    ) -> Vec<(String, Vec<&Binding>, Vec<&KeyRecord>)> {
        let mut out: Vec<_> = self
            .bindings
            .iter()
            .filter_map(|(sensor, bs)| {
                let mine: Vec<&Binding> =
                    bs.iter().filter(|b| b.gateway_id == gateway_id).collect();
                if mine.is_empty() {
                    return None;
                }
                let mut keys: Vec<&KeyRecord> = self.device_keys(sensor).collect();
                keys.sort_by_key(|k| k.idx);
                Some((sensor.clone(), mine, keys))
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::Reject;

    #[test]
    fn reject_names_are_distinct_and_round_trip() {
        for (i, r) in Reject::ALL.into_iter().enumerate() {
            assert_eq!(Reject::from_code(r.code()), Some(r));
            assert_eq!(r.problem_type(), r.code().replace('_', "-"));
            assert!(Reject::ALL[..i].iter().all(|p| p.code() != r.code()));
        }
        assert_eq!(Reject::from_code("nope"), None);
    }
}
