//! The registry state machine: the one place where a registry question is decided.
//!
//! The service (inside its sequencer, on the single writer), the gateway (on the events it
//! syncs) and `ledger-verify` (on the events in a bundle or an archive) all build a
//! [`RegistryState`] by [`RegistryState::apply`]ing logged registry events in log order, and
//! ask it about a reading with [`RegistryState::evaluate`]. Nobody else decides whether a key
//! was enrolled, current, revoked or bound, or which patient a reading belongs to.
//!
//! Rules (docs/FORMATS.md, "Registry rules", says the same in prose):
//!
//! - Events apply in strictly increasing log index. An event that breaks a rule is refused with
//!   an [`EventRefusal`]: the service does not log it; a verifier that finds one in the log
//!   fails the evidence.
//! - An issuer is enrolled with the one device role it may issue ([`IssuerRole`]). A device
//!   certificate must be issued by an enrolled issuer of its role whose certificate is valid and
//!   not revoked when the event is logged.
//! - A key is enrolled once, ever: re-enrolling or rotating back to a known key (current,
//!   rotated out or revoked) is refused, so a retired key is never revived.
//! - A rotation retires the device's current key from its `from_ms` on; it may not start before
//!   the current key did. Patient assignments of a sensor may not go back in time, so the one
//!   in force at a time is the last logged one that started at or before it.
//! - **Clocks.** A reading is judged by times a key holder cannot set alone: the sensor's key,
//!   its issuer, its binding and its patient at the gateway's received-at; the gateway's key and
//!   its issuer at the log's logged-at. The sensor's measured-at is only a claim, bounded by
//!   received-at + [`MAX_CLOCK_SKEW_MS`] (and received-at by logged-at + the same skew, and by
//!   logged-at − [`MAX_BACKLOG_MS`] from below). So a
//!   revoked sensor key cannot backdate a frame past an honest gateway, a gateway's honest
//!   backlog after an outage (received before the revocation) is still accepted, and a revoked
//!   or rotated-out gateway key signs nothing the log receives after its end.
//! - A reading at log position `p` is held to the events logged before `p`
//!   ([`RegistryState::evaluate`]). Revocations also count when logged later
//!   ([`RegistryState::revocation_check`]): a key revoked from a time before its use taints
//!   the reading, whenever the revocation was logged.

use crate::cert::{DeviceCert, Role};
use crate::cose::GatewayEnvelope;
use crate::keys::KeyId;
use crate::log_entry::{EntryKind, LogEntry};
use crate::registry::{IssuerRole, RegistryEvent};
use crate::smt::{Hash, SparseMap};
use alloc::collections::BTreeMap;
use alloc::{string::String, vec::Vec};
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

#[path = "registry_households.rs"]
mod households;
pub use households::{Household, HouseholdBinding, PrivateClaims, PrivateVerdict, RecipientEntry};

/// How far a claimed time may lie after the clock that bounds it: measured-at after
/// received-at, received-at after logged-at (5 minutes).
pub const MAX_CLOCK_SKEW_MS: u64 = 5 * 60 * 1000;

/// How long a gateway's backlog may wait: received-at at most 30 days before logged-at. It
/// bounds what a compromised gateway can backdate past a sensor key's revocation.
pub const MAX_BACKLOG_MS: u64 = 30 * 24 * 3600 * 1000;

/// Why the state machine refused a registry event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventRefusal {
    /// Events must come in strictly increasing log index.
    #[error("registry event at index {index} is out of log order (after {last})")]
    OutOfOrder {
        /// The event's index.
        index: u64,
        /// The last applied index.
        last: u64,
    },
    /// The certificate does not parse or has the wrong role for the event.
    #[error("certificate: {0}")]
    Certificate(String),
    /// The key is already known (current, rotated out, revoked, or an issuer's).
    #[error("key {0} is already enrolled: a key is enrolled once, ever")]
    KeyAlreadyEnrolled(KeyId),
    /// The device is already enrolled.
    #[error("device {0} is already enrolled: rotate its key instead")]
    DeviceAlreadyEnrolled(String),
    /// The device named is not enrolled (with the role the event needs).
    #[error("{0} is not an enrolled {1}")]
    UnknownDevice(String, &'static str),
    /// No enrolled issuer of the device's role issued the certificate.
    #[error("the {0} certificate of {1} is not issued by an enrolled {2} issuer")]
    NoIssuer(&'static str, String, &'static str),
    /// The issuer or the certificate is not valid, or the issuer is revoked, when logged.
    #[error("certificate of {0} not valid at {1}: {2}")]
    NotValid(String, u64, String),
    /// A rotation may not start before the current key did.
    #[error("a rotation of {0} may not start before its current key ({1})")]
    RotationBackwards(String, u64),
    /// An assignment may not start before the sensor's current one.
    #[error("an assignment of {0} may not start before its current one ({1})")]
    AssignmentBackwards(String, u64),
    /// The revoked key is not enrolled.
    #[error("key {0} is not enrolled")]
    UnknownKey(KeyId),
    /// The event does not encode (a field out of range).
    #[error("the event does not encode: {0}")]
    Malformed(String),
    /// A recipient key rotation may not start before the recipient's current key did.
    #[error("a new key for recipient {0} may not start before its current key ({1})")]
    RecipientBackwards(String, u64),
}

/// Why a reading is refused: the one list of reasons. The service's rejection codes and
/// problem types, the gateway's frame refusals and the verifier's step names all come from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// Not a valid gateway envelope (CBOR/COSE/reading).
    MalformedEnvelope,
    /// Times out of the plausible range.
    ImplausibleTime,
    /// The gateway `kid` is not enrolled as a gateway key.
    UnknownGatewayKey,
    /// The sensor `kid` is not enrolled as a sensor key.
    UnknownSensorKey,
    /// The reading's sensor id is not the one its key is enrolled for.
    SensorIdMismatch,
    /// The sensor's key or certificate (or its issuer's) was not valid at received-at.
    SensorKeyNotValid,
    /// The gateway's key or certificate (or its issuer's) was not valid at logged-at.
    GatewayKeyNotValid,
    /// The sensor's key or its issuer was revoked from received-at or before.
    SensorKeyRevoked,
    /// The gateway's key or its issuer was revoked from logged-at or before.
    GatewayKeyRevoked,
    /// The sensor is not bound to this gateway at received-at.
    NotBound,
    /// The sequence number is not above every earlier one of this sensor.
    StaleSequence,
    /// Another reading with the same sensor sequence number is already logged.
    Equivocation,
    /// The gateway signature does not verify.
    BadGatewaySignature,
    /// The sensor signature does not verify.
    BadSensorSignature,
    /// The envelope is countersigned by another gateway than the one the submitting token
    /// belongs to (the service's own check at ingest; no verifier step sees tokens).
    NotTheTokensGateway,
    /// Private mode: the gateway is not bound to the envelope's household at received-at.
    NotBoundToHousehold,
    /// Private mode: a recipient key is not a current, unrevoked recipient of the household at
    /// received-at (or none is).
    RecipientNotCurrent,
    /// A time-sharded log ([`crate::shard`]): the reading was measured before the open shard's
    /// period less its grace, so it belongs to a shard already closed with a final checkpoint.
    ShardClosed,
}

impl Refusal {
    /// Every reason.
    pub const ALL: [Refusal; 18] = [
        Refusal::MalformedEnvelope,
        Refusal::ImplausibleTime,
        Refusal::UnknownGatewayKey,
        Refusal::UnknownSensorKey,
        Refusal::SensorIdMismatch,
        Refusal::SensorKeyNotValid,
        Refusal::GatewayKeyNotValid,
        Refusal::SensorKeyRevoked,
        Refusal::GatewayKeyRevoked,
        Refusal::NotBound,
        Refusal::StaleSequence,
        Refusal::Equivocation,
        Refusal::BadGatewaySignature,
        Refusal::BadSensorSignature,
        Refusal::NotTheTokensGateway,
        Refusal::NotBoundToHousehold,
        Refusal::RecipientNotCurrent,
        Refusal::ShardClosed,
    ];

    /// The one table: (stable code, problem type slug, verifier step, description).
    fn names(self) -> (&'static str, &'static str, &'static str, &'static str) {
        match self {
            Refusal::MalformedEnvelope => (
                "malformed_envelope",
                "malformed-envelope",
                "reading.decode",
                "not a valid gateway envelope",
            ),
            Refusal::ImplausibleTime => (
                "implausible_time",
                "implausible-time",
                "reading.time",
                "measured-at or received-at is outside the plausible range",
            ),
            Refusal::UnknownGatewayKey => (
                "unknown_gateway_key",
                "unknown-gateway-key",
                "registry.enrolled",
                "the gateway key (kid) is not enrolled",
            ),
            Refusal::UnknownSensorKey => (
                "unknown_sensor_key",
                "unknown-sensor-key",
                "registry.enrolled",
                "the sensor key (kid) is not enrolled",
            ),
            Refusal::SensorIdMismatch => (
                "sensor_id_mismatch",
                "sensor-id-mismatch",
                "registry.enrolled",
                "the reading's sensor id is not the one its key is enrolled for",
            ),
            Refusal::SensorKeyNotValid => (
                "sensor_key_not_valid",
                "sensor-key-not-valid",
                "sensor.certificate",
                "the sensor's key or certificate, or its issuer's, was not valid when the gateway received the reading",
            ),
            Refusal::GatewayKeyNotValid => (
                "gateway_key_not_valid",
                "gateway-key-not-valid",
                "gateway.certificate",
                "the gateway's key or certificate, or its issuer's, was not valid when the log received the reading",
            ),
            Refusal::SensorKeyRevoked => (
                "sensor_key_revoked",
                "sensor-key-revoked",
                "registry.not_revoked",
                "the sensor key or its issuer was revoked before the gateway received the reading",
            ),
            Refusal::GatewayKeyRevoked => (
                "gateway_key_revoked",
                "gateway-key-revoked",
                "registry.not_revoked",
                "the gateway key or its issuer was revoked before the log received the reading",
            ),
            Refusal::NotBound => (
                "sensor_not_bound_to_gateway",
                "sensor-not-bound-to-gateway",
                "registry.bound",
                "the sensor is not bound to this gateway when the gateway received the reading",
            ),
            Refusal::StaleSequence => (
                "stale_sequence",
                "stale-sequence",
                "reading.sequence",
                "the sequence number is not above every earlier one of this sensor",
            ),
            Refusal::Equivocation => (
                "equivocation",
                "equivocation",
                "reading.sequence",
                "another reading with this sensor sequence number is already logged",
            ),
            Refusal::BadGatewaySignature => (
                "bad_gateway_signature",
                "bad-gateway-signature",
                "gateway.signature",
                "the gateway signature does not verify",
            ),
            Refusal::BadSensorSignature => (
                "bad_sensor_signature",
                "bad-sensor-signature",
                "sensor.signature",
                "the sensor signature does not verify",
            ),
            Refusal::NotTheTokensGateway => (
                "gateway_not_token_holder",
                "gateway-not-token-holder",
                "ingest.token",
                "the envelope is countersigned by another gateway than the one this token belongs to",
            ),
            Refusal::NotBoundToHousehold => (
                "gateway_not_bound_to_household",
                "gateway-not-bound-to-household",
                "registry.household",
                "the gateway is not bound to the message's household when it received the reading",
            ),
            Refusal::RecipientNotCurrent => (
                "recipient_not_current",
                "recipient-not-current",
                "registry.recipients",
                "the message is encrypted to a key that is not a current recipient of the household",
            ),
            Refusal::ShardClosed => (
                "shard_closed",
                "shard-closed",
                "shard.period",
                "the reading was measured in the period of a shard that is closed with its final checkpoint: it arrived too late to be logged",
            ),
        }
    }

    /// The stable reason code (per-item ingest results, metrics, audit table).
    pub fn code(self) -> &'static str {
        self.names().0
    }

    /// The problem type slug (`code` with dashes).
    pub fn problem_type(self) -> &'static str {
        self.names().1
    }

    /// The verifier step that reports this reason.
    pub fn step(self) -> &'static str {
        self.names().2
    }

    /// What it means.
    pub fn description(self) -> &'static str {
        self.names().3
    }

    /// The reason with this code.
    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.code() == code)
    }
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.description())
    }
}

/// What a reading claims about itself: all the state machine needs of it.
#[derive(Debug, Clone, Copy)]
pub struct ReadingClaims<'a> {
    /// The gateway's key (envelope `kid`).
    pub gateway_kid: KeyId,
    /// The sensor's key (sensor layer `kid`).
    pub sensor_kid: KeyId,
    /// The sensor id in the reading.
    pub sensor_id: &'a str,
    /// The sensor's sequence number.
    pub seq: u64,
    /// Measured-at (the sensor's claim), Unix ms.
    pub measured_at_ms: u64,
    /// Received-at (the gateway's clock), Unix ms.
    pub received_at_ms: u64,
}

impl<'a> ReadingClaims<'a> {
    /// The claims of a decoded envelope.
    pub fn of(env: &'a GatewayEnvelope) -> Self {
        let r = &env.sensor.reading;
        Self {
            gateway_kid: env.kid,
            sensor_kid: env.sensor.kid,
            sensor_id: &r.sensor_id,
            seq: r.seq,
            measured_at_ms: r.measured_at_ms,
            received_at_ms: env.received_at_ms,
        }
    }
}

/// A revocation of a key from a time on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revocation {
    /// Log index of the revocation.
    pub index: u64,
    /// Effective from, Unix ms.
    pub from_ms: u64,
}

/// An enrolled issuer CA.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// Its self-signed certificate.
    pub cert: DeviceCert,
    /// The device role it may issue.
    pub role: IssuerRole,
    /// Log index of its enrollment.
    pub index: u64,
    /// Its revocations, in log order.
    pub revocations: Vec<Revocation>,
}

/// An enrolled device key.
#[derive(Debug, Clone)]
pub struct DeviceKey {
    /// Its certificate.
    pub cert: DeviceCert,
    /// The issuer that issued it.
    pub issuer: KeyId,
    /// Log index of the enrollment or rotation that brought it.
    pub index: u64,
    /// Valid from (certificate start, or the rotation's start), Unix ms.
    pub valid_from: u64,
    /// Retired by a rotation: (log index of the rotation, end (exclusive), Unix ms).
    pub retired: Option<(u64, u64)>,
    /// Its revocations, in log order.
    pub revocations: Vec<Revocation>,
}

/// A binding of a sensor to a gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// Log index.
    pub index: u64,
    /// The gateway.
    pub gateway_id: String,
    /// From, Unix ms.
    pub from_ms: u64,
    /// Until (exclusive), Unix ms.
    pub until_ms: Option<u64>,
}

/// A patient assignment of a sensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Log index.
    pub index: u64,
    /// The patient pseudonym.
    pub pseudonym: String,
    /// From, Unix ms.
    pub from_ms: u64,
}

/// An enrolled device (sensor or gateway).
#[derive(Debug, Clone)]
pub struct Device {
    /// Sensor or gateway.
    pub role: Role,
    /// Its keys, oldest first (the last one is current unless retired).
    pub keys: Vec<KeyId>,
    /// Bindings (sensors only), in log order.
    pub bindings: Vec<Binding>,
    /// Patient assignments (sensors only), in log order.
    pub assignments: Vec<Assignment>,
    /// Log indices of every event about it: enrollment, rotations, bindings, assignments and
    /// revocations of its keys.
    pub events: Vec<u64>,
}

/// What a registry event is about. Every event belongs to exactly one subject: an issuer's
/// enrollment and revocations to the issuer; a device's enrollment, rotations and the
/// revocations of its keys to the device; a binding and a patient assignment to the sensor.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Subject {
    /// A sensor or gateway, by device id.
    Device(String),
    /// An issuer CA, by its key id.
    Issuer(KeyId),
    /// A household (private mode): its recipients, their keys' revocations and its gateways.
    Household(String),
}

impl Subject {
    /// Its key in the registry map: `SHA-256("vitals-ledger registry subject\n" ‖ name)`, the
    /// name being `device:<id>` or `issuer:<key id hex>`.
    pub fn map_key(&self) -> Hash {
        Sha256::new()
            .chain_update(b"vitals-ledger registry subject\n")
            .chain_update(self.name().as_bytes())
            .finalize()
            .into()
    }

    /// `device:<id>` or `issuer:<key id hex>`.
    pub fn name(&self) -> String {
        match self {
            Subject::Device(id) => alloc::format!("device:{id}"),
            Subject::Issuer(kid) => alloc::format!("issuer:{kid}"),
            Subject::Household(id) => alloc::format!("household:{id}"),
        }
    }

    /// Parses [`Subject::name`].
    pub fn parse(name: &str) -> Option<Self> {
        if let Some(id) = name.strip_prefix("device:") {
            return crate::reading::valid_device_id(id).then(|| Subject::Device(id.into()));
        }
        if let Some(id) = name.strip_prefix("household:") {
            return crate::reading::valid_device_id(id).then(|| Subject::Household(id.into()));
        }
        let hex = name.strip_prefix("issuer:")?;
        let bytes = hex::decode(hex).ok()?;
        KeyId::from_slice(&bytes)
            .filter(|k| k.to_hex() == hex)
            .map(Subject::Issuer)
    }
}

impl core::fmt::Display for Subject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.name())
    }
}

/// A subject's event chain: how many events, and the hash chain over them in log order,
/// `acc₀ = 0³²`, `accₖ = SHA-256(0x02 ‖ accₖ₋₁ ‖ u64be(index) ‖ leaf hash)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Chain {
    /// Events so far.
    pub count: u64,
    /// The hash chain.
    pub acc: Hash,
}

impl Chain {
    /// The chain with one more event.
    pub fn extend(&self, index: u64, leaf_hash: &Hash) -> Self {
        Self {
            count: self.count + 1,
            acc: Sha256::new()
                .chain_update([2u8])
                .chain_update(self.acc)
                .chain_update(index.to_be_bytes())
                .chain_update(leaf_hash)
                .finalize()
                .into(),
        }
    }

    /// Its value in the registry map: `SHA-256(0x03 ‖ u64be(count) ‖ acc)`.
    pub fn map_value(&self) -> Hash {
        Sha256::new()
            .chain_update([3u8])
            .chain_update(self.count.to_be_bytes())
            .chain_update(self.acc)
            .finalize()
            .into()
    }
}

/// The registry, as the registry events applied so far make it.
#[derive(Debug, Clone, Default)]
pub struct RegistryState {
    issuers: BTreeMap<KeyId, Issuer>,
    keys: BTreeMap<KeyId, DeviceKey>,
    devices: BTreeMap<String, Device>,
    households: BTreeMap<String, households::Household>,
    recipient_keys: BTreeMap<KeyId, households::RecipientEntry>,
    last_index: Option<u64>,
    events: u64,
    /// Each subject's event chain.
    chains: BTreeMap<Subject, Chain>,
    /// The registry map: subject key → chain value.
    map: SparseMap,
}

/// One check of a reading against the registry and its outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The verifier step name.
    pub step: &'static str,
    /// A detail when it passed, the refusal and a detail when it failed.
    pub outcome: Result<String, (Refusal, String)>,
}

/// Everything [`RegistryState::evaluate`] found about a reading.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Every check, in the fixed order `reading.time`, `registry.enrolled`,
    /// `sensor.certificate`, `gateway.certificate`, `registry.not_revoked`, `registry.bound`.
    pub checks: Vec<Check>,
    /// The sensor's key and the issuer of its certificate, if enrolled before the reading.
    pub sensor: Option<(VerifyingKey, KeyId)>,
    /// The gateway's key, the issuer of its certificate and the gateway id, if enrolled.
    pub gateway: Option<(VerifyingKey, KeyId, String)>,
    /// The patient assignment in force at received-at.
    pub patient: Option<Assignment>,
    /// The binding that covers the reading.
    pub binding: Option<Binding>,
}

/// What a reading that passed every check is: the keys to verify its signatures with.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The sensor's key.
    pub sensor_key: VerifyingKey,
    /// The gateway's key.
    pub gateway_key: VerifyingKey,
    /// The gateway id.
    pub gateway_id: String,
    /// The patient pseudonym in force, if any.
    pub patient: Option<String>,
    /// The issuers of the sensor's and the gateway's certificates.
    pub issuers: (KeyId, KeyId),
}

impl Evaluation {
    /// The first refusal in the fixed order, or the verdict.
    pub fn verdict(self) -> Result<Verdict, Refusal> {
        if let Some((r, _)) = self.checks.iter().find_map(|c| c.outcome.clone().err()) {
            return Err(r);
        }
        match (self.sensor, self.gateway) {
            (Some((sensor_key, si)), Some((gateway_key, gi, gateway_id))) => Ok(Verdict {
                sensor_key,
                gateway_key,
                gateway_id,
                patient: self.patient.map(|a| a.pseudonym),
                issuers: (si, gi),
            }),
            (None, _) => Err(Refusal::UnknownSensorKey),
            (_, None) => Err(Refusal::UnknownGatewayKey),
        }
    }
}

/// Whether to spell out details (reports) or not (hot paths).
#[derive(Clone, Copy)]
struct Say(bool);

impl Say {
    fn text(self, f: impl FnOnce() -> String) -> String {
        if self.0 {
            f()
        } else {
            String::new()
        }
    }
}

fn revoked_by(revs: &[Revocation], position: u64, at: u64) -> Option<Revocation> {
    revs.iter()
        .find(|r| r.index < position && r.from_ms <= at)
        .copied()
}

impl RegistryState {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The index of the last event applied.
    pub fn last_index(&self) -> Option<u64> {
        self.last_index
    }

    /// How many events were applied.
    pub fn event_count(&self) -> u64 {
        self.events
    }

    /// An issuer by its key.
    pub fn issuer(&self, kid: &KeyId) -> Option<&Issuer> {
        self.issuers.get(kid)
    }

    /// Every issuer.
    pub fn issuers(&self) -> impl Iterator<Item = (&KeyId, &Issuer)> {
        self.issuers.iter()
    }

    /// A device key by its id.
    pub fn key(&self, kid: &KeyId) -> Option<&DeviceKey> {
        self.keys.get(kid)
    }

    /// A device by its id.
    pub fn device(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    /// Every device.
    pub fn devices(&self) -> impl Iterator<Item = (&String, &Device)> {
        self.devices.iter()
    }

    /// The device keys of a device, oldest first.
    pub fn device_keys<'a>(&'a self, id: &str) -> impl Iterator<Item = &'a DeviceKey> + 'a {
        let ids: &[KeyId] = self.devices.get(id).map_or(&[], |d| d.keys.as_slice());
        ids.iter().filter_map(|k| self.keys.get(k))
    }

    fn known_key(&self, kid: &KeyId) -> bool {
        self.keys.contains_key(kid)
            || self.issuers.contains_key(kid)
            || self.recipient_keys.contains_key(kid)
    }

    /// The issuer of a new device certificate at log time `at`, by the rules above.
    fn issuer_for(&self, cert: &DeviceCert, at: u64) -> Result<KeyId, EventRefusal> {
        let role = cert.role;
        let (what, wanted) = match role {
            Role::Sensor => ("sensor", IssuerRole::SensorManufacturer),
            _ => ("gateway", IssuerRole::GatewayFleet),
        };
        let Some((kid, ca)) = self
            .issuers
            .iter()
            .find(|(_, ca)| cert.check_issued_by(&ca.cert).is_ok())
        else {
            return Err(EventRefusal::NoIssuer(
                what,
                cert.subject_cn.clone(),
                wanted.as_str(),
            ));
        };
        if ca.role != wanted {
            return Err(EventRefusal::NoIssuer(
                what,
                cert.subject_cn.clone(),
                wanted.as_str(),
            ));
        }
        let not_valid = |why: String| EventRefusal::NotValid(cert.subject_cn.clone(), at, why);
        ca.cert
            .check_valid_at(at)
            .map_err(|e| not_valid(alloc::format!("issuer: {e}")))?;
        cert.check_valid_at(at)
            .map_err(|e| not_valid(alloc::format!("{e}")))?;
        if let Some(r) = revoked_by(&ca.revocations, u64::MAX, at) {
            return Err(not_valid(alloc::format!(
                "its issuer is revoked from {} (entry {})",
                r.from_ms,
                r.index
            )));
        }
        Ok(*kid)
    }

    /// Applies `event`, logged at `index` and `logged_at_ms`, or refuses it. Every check comes
    /// before any change: a refused event leaves the state exactly as it was.
    pub fn apply(
        &mut self,
        index: u64,
        logged_at_ms: u64,
        event: &RegistryEvent,
    ) -> Result<(), EventRefusal> {
        if let Some(last) = self.last_index.filter(|l| index <= *l) {
            return Err(EventRefusal::OutOfOrder { index, last });
        }
        let body = event
            .to_cbor()
            .map_err(|e| EventRefusal::Malformed(alloc::format!("{e}")))?;
        let leaf = LogEntry {
            kind: EntryKind::Registry,
            body,
            logged_at_ms,
        }
        .leaf_hash();
        let subject = self.subject_of(event)?;
        self.change(index, logged_at_ms, event)?;
        let chain = self
            .chains
            .get(&subject)
            .copied()
            .unwrap_or_default()
            .extend(index, &leaf);
        self.map.insert(subject.map_key(), chain.map_value());
        self.chains.insert(subject, chain);
        self.last_index = Some(index);
        self.events += 1;
        Ok(())
    }

    /// The subject an event belongs to (a revocation's is the owner of the key).
    pub fn subject_of(&self, event: &RegistryEvent) -> Result<Subject, EventRefusal> {
        let device_of = |der: &[u8]| {
            DeviceCert::from_der(der)
                .map(|c| c.subject_cn)
                .map_err(|e| EventRefusal::Certificate(alloc::format!("{e}")))
        };
        Ok(match event {
            RegistryEvent::EnrollIssuer { cert, .. } => Subject::Issuer(
                DeviceCert::from_der(cert)
                    .map_err(|e| EventRefusal::Certificate(alloc::format!("{e}")))?
                    .key_id,
            ),
            RegistryEvent::EnrollSensor { cert } | RegistryEvent::EnrollGateway { cert } => {
                Subject::Device(device_of(cert)?)
            }
            RegistryEvent::Bind { sensor_id, .. }
            | RegistryEvent::AssignPatient { sensor_id, .. } => Subject::Device(sensor_id.clone()),
            RegistryEvent::RotateKey { device_id, .. } => Subject::Device(device_id.clone()),
            RegistryEvent::EnrollRecipient { household, .. }
            | RegistryEvent::BindHousehold { household, .. } => {
                Subject::Household(household.clone())
            }
            RegistryEvent::Revoke { key_id, .. } => {
                if self.issuers.contains_key(key_id) {
                    Subject::Issuer(*key_id)
                } else if let Some(k) = self.keys.get(key_id) {
                    Subject::Device(k.cert.subject_cn.clone())
                } else if let Some(r) = self.recipient_keys.get(key_id) {
                    Subject::Household(r.household.clone())
                } else {
                    return Err(EventRefusal::UnknownKey(*key_id));
                }
            }
        })
    }

    /// The state change of an event (every check before any change).
    fn change(
        &mut self,
        index: u64,
        logged_at_ms: u64,
        event: &RegistryEvent,
    ) -> Result<(), EventRefusal> {
        let at = logged_at_ms;
        let parse = |der: &[u8]| {
            DeviceCert::from_der(der).map_err(|e| EventRefusal::Certificate(alloc::format!("{e}")))
        };
        match event {
            RegistryEvent::EnrollIssuer { cert, role } => {
                let c = parse(cert)?;
                if c.role != Role::Issuer {
                    return Err(EventRefusal::Certificate(
                        "not an issuer certificate".into(),
                    ));
                }
                c.check_chain(&c, at).map_err(|e| {
                    EventRefusal::NotValid(c.subject_cn.clone(), at, alloc::format!("{e}"))
                })?;
                if self.known_key(&c.key_id) {
                    return Err(EventRefusal::KeyAlreadyEnrolled(c.key_id));
                }
                self.issuers.insert(
                    c.key_id,
                    Issuer {
                        cert: c,
                        role: *role,
                        index,
                        revocations: Vec::new(),
                    },
                );
            }
            RegistryEvent::EnrollSensor { cert } | RegistryEvent::EnrollGateway { cert } => {
                let c = parse(cert)?;
                let want = if matches!(event, RegistryEvent::EnrollSensor { .. }) {
                    Role::Sensor
                } else {
                    Role::Gateway
                };
                if c.role != want {
                    return Err(EventRefusal::Certificate(alloc::format!(
                        "a {} certificate in a {} enrollment",
                        c.role.as_str(),
                        want.as_str()
                    )));
                }
                if self.devices.contains_key(&c.subject_cn) {
                    return Err(EventRefusal::DeviceAlreadyEnrolled(c.subject_cn.clone()));
                }
                if self.known_key(&c.key_id) {
                    return Err(EventRefusal::KeyAlreadyEnrolled(c.key_id));
                }
                let issuer = self.issuer_for(&c, at)?;
                let kid = c.key_id;
                self.devices.insert(
                    c.subject_cn.clone(),
                    Device {
                        role: want,
                        keys: alloc::vec![kid],
                        bindings: Vec::new(),
                        assignments: Vec::new(),
                        events: alloc::vec![index],
                    },
                );
                self.keys.insert(
                    kid,
                    DeviceKey {
                        valid_from: c.not_before_ms,
                        cert: c,
                        issuer,
                        index,
                        retired: None,
                        revocations: Vec::new(),
                    },
                );
            }
            RegistryEvent::Bind {
                sensor_id,
                gateway_id,
                from_ms,
                until_ms,
            } => {
                self.device_with_role(gateway_id, Role::Gateway)?;
                let sensor = self.device_with_role_mut(sensor_id, Role::Sensor)?;
                sensor.bindings.push(Binding {
                    index,
                    gateway_id: gateway_id.clone(),
                    from_ms: *from_ms,
                    until_ms: *until_ms,
                });
                sensor.events.push(index);
            }
            RegistryEvent::AssignPatient {
                sensor_id,
                pseudonym,
                from_ms,
            } => {
                let sensor = self.device_with_role_mut(sensor_id, Role::Sensor)?;
                if let Some(prev) = sensor.assignments.last().filter(|a| *from_ms < a.from_ms) {
                    return Err(EventRefusal::AssignmentBackwards(
                        sensor_id.clone(),
                        prev.from_ms,
                    ));
                }
                sensor.assignments.push(Assignment {
                    index,
                    pseudonym: pseudonym.clone(),
                    from_ms: *from_ms,
                });
                sensor.events.push(index);
            }
            RegistryEvent::RotateKey {
                device_id,
                cert,
                from_ms,
            } => {
                let c = parse(cert)?;
                let device = self
                    .devices
                    .get(device_id)
                    .ok_or_else(|| EventRefusal::UnknownDevice(device_id.clone(), "device"))?;
                if c.role != device.role || c.subject_cn != *device_id {
                    return Err(EventRefusal::Certificate(alloc::format!(
                        "the new certificate must be a {} certificate of {device_id}",
                        device.role.as_str()
                    )));
                }
                if self.known_key(&c.key_id) {
                    return Err(EventRefusal::KeyAlreadyEnrolled(c.key_id));
                }
                let issuer = self.issuer_for(&c, at)?;
                let current = device.keys.last().copied();
                if let Some(cur) = current.and_then(|k| self.keys.get(&k)) {
                    let start = cur.retired.map_or(cur.valid_from, |(_, end)| end);
                    if *from_ms < start {
                        return Err(EventRefusal::RotationBackwards(device_id.clone(), start));
                    }
                }
                if let Some(cur) = current.and_then(|k| self.keys.get_mut(&k)) {
                    if cur.retired.is_none() {
                        cur.retired = Some((index, *from_ms));
                    }
                }
                let kid = c.key_id;
                self.keys.insert(
                    kid,
                    DeviceKey {
                        cert: c,
                        issuer,
                        index,
                        valid_from: *from_ms,
                        retired: None,
                        revocations: Vec::new(),
                    },
                );
                if let Some(d) = self.devices.get_mut(device_id) {
                    d.keys.push(kid);
                    d.events.push(index);
                }
            }
            RegistryEvent::Revoke {
                key_id, from_ms, ..
            } => {
                let rev = Revocation {
                    index,
                    from_ms: *from_ms,
                };
                if let Some(ca) = self.issuers.get_mut(key_id) {
                    ca.revocations.push(rev);
                } else if let Some(k) = self.keys.get_mut(key_id) {
                    k.revocations.push(rev);
                    let owner = k.cert.subject_cn.clone();
                    if let Some(d) = self.devices.get_mut(&owner) {
                        d.events.push(index);
                    }
                } else if self.recipient_keys.contains_key(key_id) {
                    self.revoke_recipient(index, key_id, rev);
                } else {
                    return Err(EventRefusal::UnknownKey(*key_id));
                }
            }
            RegistryEvent::EnrollRecipient {
                household,
                name,
                key,
                from_ms,
            } => self.enroll_recipient(index, household, name, key, *from_ms)?,
            RegistryEvent::BindHousehold {
                gateway_id,
                household,
                from_ms,
            } => {
                self.device_with_role(gateway_id, Role::Gateway)?;
                self.bind_household(index, gateway_id, household, *from_ms);
            }
        }
        Ok(())
    }

    /// The registry's commitment: the root of the map from every subject to its event chain
    /// ([`crate::smt`]). Each checkpoint carries it, with the event count
    /// ([`registry_extension`]).
    pub fn registry_root(&self) -> Hash {
        self.map.root()
    }

    /// A subject's chain, if it has events.
    pub fn chain(&self, subject: &Subject) -> Option<Chain> {
        self.chains.get(subject).copied()
    }

    /// The map proof of a subject's chain.
    pub fn chain_proof(&self, subject: &Subject) -> Option<Vec<Hash>> {
        self.map.prove(&subject.map_key())
    }

    /// A proof that the subject has no event in the registry map (`None` if it has).
    pub fn absence_proof(&self, subject: &Subject) -> Option<crate::smt::AbsenceProof> {
        self.map.prove_absent(&subject.map_key())
    }

    /// The subjects whose complete histories decide a reading of `sensor_id` through the
    /// gateway `gateway_id`: the sensor, the gateway, every gateway the sensor was bound to, and
    /// the issuer of every key of those devices. Evidence must prove each complete.
    pub fn subjects_for(&self, sensor_id: &str, gateway_id: &str) -> Vec<Subject> {
        let mut devices = alloc::vec![sensor_id, gateway_id];
        if let Some(d) = self.devices.get(sensor_id) {
            devices.extend(d.bindings.iter().map(|b| b.gateway_id.as_str()));
        }
        let mut out: Vec<Subject> = Vec::new();
        for id in devices {
            out.push(Subject::Device(id.into()));
            for k in self.device_keys(id) {
                out.push(Subject::Issuer(k.issuer));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    fn device_with_role(&self, id: &str, role: Role) -> Result<&Device, EventRefusal> {
        self.devices
            .get(id)
            .filter(|d| d.role == role)
            .ok_or_else(|| EventRefusal::UnknownDevice(id.into(), role.as_str()))
    }

    fn device_with_role_mut(&mut self, id: &str, role: Role) -> Result<&mut Device, EventRefusal> {
        self.devices
            .get_mut(id)
            .filter(|d| d.role == role)
            .ok_or_else(|| EventRefusal::UnknownDevice(id.into(), role.as_str()))
    }

    /// A key enrolled before `position` with a device of `role`.
    fn key_before(&self, kid: &KeyId, role: Role, position: u64) -> Option<&DeviceKey> {
        self.keys
            .get(kid)
            .filter(|k| k.index < position && k.cert.role == role)
    }

    /// Whether a device key (and its issuer) is valid at `at`, by the events before
    /// `position`: the key's own period, its certificate's and its issuer's validity.
    fn key_valid(&self, k: &DeviceKey, position: u64, at: u64, say: Say) -> Result<String, String> {
        if at < k.valid_from {
            return Err(say.text(|| {
                alloc::format!(
                    "key {} of {} is valid from {}, not at {at}",
                    k.cert.key_id,
                    k.cert.subject_cn,
                    k.valid_from
                )
            }));
        }
        if let Some((idx, end)) = k.retired.filter(|(i, _)| *i < position) {
            if at >= end {
                return Err(say.text(|| {
                    alloc::format!(
                        "key {} of {} was rotated out from {end} (entry {idx}), before {at}",
                        k.cert.key_id,
                        k.cert.subject_cn
                    )
                }));
            }
        }
        k.cert.check_valid_at(at).map_err(|e| {
            say.text(|| alloc::format!("certificate of {}: {e}", k.cert.subject_cn))
        })?;
        let ca = self.issuers.get(&k.issuer).ok_or_else(|| {
            say.text(|| alloc::format!("the issuer of {} is not enrolled", k.cert.subject_cn))
        })?;
        ca.cert.check_valid_at(at).map_err(|e| {
            say.text(|| {
                alloc::format!(
                    "issuer {:?} of {}: {e}",
                    ca.cert.subject_cn,
                    k.cert.subject_cn
                )
            })
        })?;
        Ok(say.text(|| {
            alloc::format!(
                "{} (key {}) issued by {:?}, current and valid at {at}",
                k.cert.subject_cn,
                k.cert.key_id,
                ca.cert.subject_cn
            )
        }))
    }

    /// The revocation of a key or its issuer, among the events before `position`, effective at
    /// or before `at`.
    fn revocation(
        &self,
        k: &DeviceKey,
        position: u64,
        at: u64,
    ) -> Option<(&'static str, Revocation)> {
        if let Some(r) = revoked_by(&k.revocations, position, at) {
            return Some(("key", r));
        }
        self.issuers
            .get(&k.issuer)
            .and_then(|ca| revoked_by(&ca.revocations, position, at))
            .map(|r| ("issuer", r))
    }

    /// Evaluates a reading logged at `position` and `logged_at_ms` against the events applied
    /// before `position`: every check, in a fixed order (see [`Evaluation::checks`]).
    pub fn evaluate(&self, position: u64, logged_at_ms: u64, c: &ReadingClaims<'_>) -> Evaluation {
        self.judge(position, logged_at_ms, c, Say(true))
    }

    /// [`RegistryState::evaluate`] without the details: the verdict alone, for hot paths.
    pub fn check(
        &self,
        position: u64,
        logged_at_ms: u64,
        c: &ReadingClaims<'_>,
    ) -> Result<Verdict, Refusal> {
        self.judge(position, logged_at_ms, c, Say(false)).verdict()
    }

    fn judge(
        &self,
        position: u64,
        logged_at_ms: u64,
        c: &ReadingClaims<'_>,
        say: Say,
    ) -> Evaluation {
        let (received, logged) = (c.received_at_ms, logged_at_ms);
        let mut checks = Vec::with_capacity(6);
        let fail = |r: Refusal, d: String| Err((r, d));
        // reading.time
        checks.push(Check {
            step: "reading.time",
            outcome: if received > logged.saturating_add(MAX_CLOCK_SKEW_MS) {
                fail(
                    Refusal::ImplausibleTime,
                    say.text(|| alloc::format!("received at {received}, after the log received it ({logged}) by more than the allowed skew")),
                )
            } else if received.saturating_add(MAX_BACKLOG_MS) < logged {
                fail(
                    Refusal::ImplausibleTime,
                    say.text(|| alloc::format!("received at {received}, more than 30 days before the log received it ({logged}): older than any backlog the log takes")),
                )
            } else if c.measured_at_ms > received.saturating_add(MAX_CLOCK_SKEW_MS) {
                fail(
                    Refusal::ImplausibleTime,
                    say.text(|| alloc::format!("measured at {}, after the gateway received it ({received}) by more than the allowed skew", c.measured_at_ms)),
                )
            } else {
                Ok(say.text(|| alloc::format!(
                    "measured at {}, received at {received}, logged at {logged}",
                    c.measured_at_ms
                )))
            },
        });
        // registry.enrolled
        let gw = self.key_before(&c.gateway_kid, Role::Gateway, position);
        let sensor = self.key_before(&c.sensor_kid, Role::Sensor, position);
        checks.push(Check {
            step: "registry.enrolled",
            outcome: match (gw, sensor) {
                (None, _) => fail(
                    Refusal::UnknownGatewayKey,
                    say.text(|| alloc::format!("gateway key {} is not enrolled before entry {position}", c.gateway_kid)),
                ),
                (_, None) => fail(
                    Refusal::UnknownSensorKey,
                    say.text(|| alloc::format!("sensor key {} is not enrolled before entry {position}", c.sensor_kid)),
                ),
                (Some(_), Some(s)) if s.cert.subject_cn != c.sensor_id => fail(
                    Refusal::SensorIdMismatch,
                    say.text(|| alloc::format!("the reading names sensor {:?} but the key is enrolled for {:?}", c.sensor_id, s.cert.subject_cn)),
                ),
                (Some(g), Some(s)) => Ok(say.text(|| alloc::format!(
                    "sensor {} (entry {}) and gateway {} (entry {}) enrolled before entry {position}",
                    s.cert.subject_cn, s.index, g.cert.subject_cn, g.index
                ))),
            },
        });
        // sensor.certificate, gateway.certificate: keys current and valid at their clocks.
        let validity = |k: Option<&DeviceKey>, at: u64, r: Refusal| match k {
            None => fail(
                r,
                say.text(|| "cannot check: the key is not enrolled".into()),
            ),
            Some(k) => self.key_valid(k, position, at, say).map_err(|e| (r, e)),
        };
        checks.push(Check {
            step: "sensor.certificate",
            outcome: validity(sensor, received, Refusal::SensorKeyNotValid),
        });
        checks.push(Check {
            step: "gateway.certificate",
            outcome: validity(gw, logged, Refusal::GatewayKeyNotValid),
        });
        // registry.not_revoked (events before the reading; later ones: revocation_check)
        checks.push(Check {
            step: "registry.not_revoked",
            outcome: self.not_revoked(sensor, gw, position, received, logged, say),
        });
        // registry.bound
        let gateway_id = gw.map(|g| g.cert.subject_cn.clone());
        let device = self.devices.get(c.sensor_id);
        let binding = match (&gateway_id, device) {
            (Some(gid), Some(d)) => d
                .bindings
                .iter()
                .find(|b| {
                    b.index < position
                        && b.gateway_id == *gid
                        && b.from_ms <= received
                        && b.until_ms.is_none_or(|u| received < u)
                })
                .cloned(),
            _ => None,
        };
        checks.push(Check {
            step: "registry.bound",
            outcome: match (&binding, &gateway_id) {
                (Some(b), Some(gid)) => Ok(say.text(|| alloc::format!(
                    "{} bound to {gid} from {} (entry {}) at {received}",
                    c.sensor_id, b.from_ms, b.index
                ))),
                (None, Some(gid)) => fail(
                    Refusal::NotBound,
                    say.text(|| alloc::format!("no binding of {} to {gid} covering {received} was logged before entry {position}", c.sensor_id)),
                ),
                (_, None) => fail(Refusal::NotBound, say.text(|| "cannot check: the gateway key is not enrolled".into())),
            },
        });
        let patient = device.and_then(|d| {
            d.assignments
                .iter()
                .rfind(|a| a.index < position && a.from_ms <= received)
                .cloned()
        });
        Evaluation {
            checks,
            sensor: sensor.map(|k| (k.cert.public_key, k.issuer)),
            gateway: gw.map(|k| (k.cert.public_key, k.issuer, k.cert.subject_cn.clone())),
            patient,
            binding,
        }
    }

    fn not_revoked(
        &self,
        sensor: Option<&DeviceKey>,
        gw: Option<&DeviceKey>,
        position: u64,
        received: u64,
        logged: u64,
        say: Say,
    ) -> Result<String, (Refusal, String)> {
        if let Some((what, r)) = sensor.and_then(|k| self.revocation(k, position, received)) {
            return Err((
                Refusal::SensorKeyRevoked,
                say.text(|| alloc::format!("the sensor's {what} was revoked from {} (entry {}), before the gateway received the reading at {received}", r.from_ms, r.index)),
            ));
        }
        if let Some((what, r)) = gw.and_then(|k| self.revocation(k, position, logged)) {
            return Err((
                Refusal::GatewayKeyRevoked,
                say.text(|| alloc::format!("the gateway's {what} was revoked from {} (entry {}), before the log received the reading at {logged}", r.from_ms, r.index)),
            ));
        }
        let later = || {
            [sensor, gw]
                .into_iter()
                .flatten()
                .map(|k| {
                    k.revocations.len()
                        + self
                            .issuers
                            .get(&k.issuer)
                            .map_or(0, |ca| ca.revocations.len())
                })
                .sum::<usize>()
        };
        Ok(if !say.0 {
            String::new()
        } else if position == u64::MAX {
            match later() {
                0 => "neither key nor their issuers are revoked".into(),
                n => alloc::format!("{n} revocation(s) of these keys or their issuers take effect after the reading"),
            }
        } else {
            say.text(|| alloc::format!("neither key nor their issuers revoked before entry {position} at the reading's times"))
        })
    }

    /// Revocations logged anywhere in the applied events (also after the reading) that take
    /// effect at or before the reading's times: a key revoked retroactively taints it.
    pub fn revocation_check(
        &self,
        logged_at_ms: u64,
        c: &ReadingClaims<'_>,
    ) -> Result<String, (Refusal, String)> {
        let sensor = self.keys.get(&c.sensor_kid);
        let gw = self.keys.get(&c.gateway_kid);
        self.not_revoked(
            sensor,
            gw,
            u64::MAX,
            c.received_at_ms,
            logged_at_ms,
            Say(true),
        )
    }

    /// The sensor side of [`RegistryState::evaluate`], for a gateway that receives a frame
    /// now (`received_at_ms`): measured-at not after it by more than the skew, the sensor key
    /// enrolled, current, valid and not revoked, and bound to `gateway_id`. Every event applied
    /// counts.
    pub fn check_frame(
        &self,
        gateway_id: &str,
        sensor_kid: &KeyId,
        sensor_id: &str,
        measured_at_ms: u64,
        received_at_ms: u64,
    ) -> Result<VerifyingKey, (Refusal, String)> {
        let at = received_at_ms;
        if measured_at_ms > at.saturating_add(MAX_CLOCK_SKEW_MS) {
            return Err((
                Refusal::ImplausibleTime,
                alloc::format!("measured at {measured_at_ms}, after its reception at {at} by more than the allowed skew"),
            ));
        }
        let k = self.key_before(sensor_kid, Role::Sensor, u64::MAX).ok_or((
            Refusal::UnknownSensorKey,
            alloc::format!("sensor key {sensor_kid} is not enrolled"),
        ))?;
        if k.cert.subject_cn != sensor_id {
            return Err((
                Refusal::SensorIdMismatch,
                alloc::format!(
                    "the frame names {sensor_id:?}, the key is {:?}'s",
                    k.cert.subject_cn
                ),
            ));
        }
        self.key_valid(k, u64::MAX, at, Say(true))
            .map_err(|e| (Refusal::SensorKeyNotValid, e))?;
        if let Some((what, r)) = self.revocation(k, u64::MAX, at) {
            return Err((
                Refusal::SensorKeyRevoked,
                alloc::format!(
                    "the sensor's {what} is revoked from {} (entry {})",
                    r.from_ms,
                    r.index
                ),
            ));
        }
        let bound = self.devices.get(sensor_id).is_some_and(|d| {
            d.bindings.iter().any(|b| {
                b.gateway_id == gateway_id && b.from_ms <= at && b.until_ms.is_none_or(|u| at < u)
            })
        });
        if !bound {
            return Err((
                Refusal::NotBound,
                alloc::format!("{sensor_id} is not bound to {gateway_id} at {at}"),
            ));
        }
        Ok(k.cert.public_key)
    }

    /// The log indices of a subject's events, in log order.
    pub fn events_of(&self, subject: &Subject) -> Vec<u64> {
        match subject {
            Subject::Device(id) => self
                .devices
                .get(id)
                .map(|d| d.events.clone())
                .unwrap_or_default(),
            Subject::Issuer(kid) => self
                .issuers
                .get(kid)
                .map(|ca| {
                    core::iter::once(ca.index)
                        .chain(ca.revocations.iter().map(|r| r.index))
                        .collect()
                })
                .unwrap_or_default(),
            Subject::Household(id) => self
                .households
                .get(id)
                .map(|h| h.events.clone())
                .unwrap_or_default(),
        }
    }

    /// The log indices of the complete registry history of a reading's devices: every event of
    /// every subject of [`RegistryState::subjects_for`], in log order.
    pub fn history_of(&self, sensor_id: &str, gateway_id: &str) -> Vec<u64> {
        let mut out: Vec<u64> = self
            .subjects_for(sensor_id, gateway_id)
            .iter()
            .flat_map(|s| self.events_of(s))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The log indices a gateway needs to check frames itself: every issuer's history, its own
    /// history, and the history of every sensor ever bound to it.
    pub fn gateway_view(&self, gateway_id: &str) -> Vec<u64> {
        let mut out = Vec::new();
        for ca in self.issuers.values() {
            out.push(ca.index);
            out.extend(ca.revocations.iter().map(|r| r.index));
        }
        // Its own history, its sensors', and the histories of the other gateways those sensors
        // were bound to (their bindings name them, so a replay needs them enrolled).
        let mut gateways = alloc::collections::BTreeSet::new();
        gateways.insert(gateway_id);
        for d in self.devices.values() {
            if d.bindings.iter().any(|b| b.gateway_id == gateway_id) {
                out.extend_from_slice(&d.events);
                gateways.extend(d.bindings.iter().map(|b| b.gateway_id.as_str()));
            }
        }
        for g in gateways {
            if let Some(g) = self.devices.get(g) {
                out.extend_from_slice(&g.events);
            }
        }
        // Private mode: the whole history of every household it was ever bound to (it encrypts
        // to their current recipients).
        for h in self.households.values() {
            if h.gateways.iter().any(|b| b.gateway_id == gateway_id) {
                out.extend_from_slice(&h.events);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The per-sensor sequence rule: a reading's sequence number is above every earlier one of its
/// sensor, across the whole log (a sensor's counter never goes back, across gateways and
/// reboots). The exact same reading again is a duplicate, and a different reading with a
/// logged number is equivocation; callers that keep the logged readings tell those apart
/// before asking this.
#[derive(Debug, Clone, Default)]
pub struct Sequences {
    last: BTreeMap<String, u64>,
}

impl Sequences {
    /// Records `seq` for `sensor_id`, or refuses it if it is not above the last one.
    pub fn observe(&mut self, sensor_id: &str, seq: u64) -> Result<(), Refusal> {
        match self.last.get_mut(sensor_id) {
            Some(last) if seq <= *last => Err(Refusal::StaleSequence),
            Some(last) => {
                *last = seq;
                Ok(())
            }
            None => {
                self.last.insert(sensor_id.into(), seq);
                Ok(())
            }
        }
    }

    /// The highest sequence number seen of a sensor.
    pub fn last(&self, sensor_id: &str) -> Option<u64> {
        self.last.get(sensor_id).copied()
    }

    /// Sets a sensor's highest number back (undoing [`Sequences::observe`] of a batch that did
    /// not commit).
    pub fn reset(&mut self, sensor_id: &str, last: Option<u64>) {
        match last {
            Some(l) => {
                self.last.insert(sensor_id.into(), l);
            }
            None => {
                self.last.remove(sensor_id);
            }
        }
    }
}

/// The prefix of the checkpoint extension line that carries the registry commitment.
pub const REGISTRY_EXTENSION: &str = "vitals-ledger/registry/v1";

/// The checkpoint extension line committing to the registry after `count` events:
/// `vitals-ledger/registry/v1 <count> <base64 root>`.
pub fn registry_extension(count: u64, root: &Hash) -> String {
    use base64::{engine::general_purpose::STANDARD as B64, Engine};
    alloc::format!("{REGISTRY_EXTENSION} {count} {}", B64.encode(root))
}

/// The registry commitment `(count, root)` of a checkpoint's extension lines: exactly one line
/// of that form, or an error.
pub fn parse_registry_extension(extensions: &[String]) -> Result<(u64, Hash), String> {
    use base64::{engine::general_purpose::STANDARD as B64, Engine};
    let mut found = extensions
        .iter()
        .filter(|l| l.split(' ').next() == Some(REGISTRY_EXTENSION));
    let (Some(line), None) = (found.next(), found.next()) else {
        return Err(alloc::format!(
            "the checkpoint must carry exactly one {REGISTRY_EXTENSION} line"
        ));
    };
    let mut parts = line.split(' ').skip(1);
    let (Some(count), Some(root), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(alloc::format!("malformed registry line {line:?}"));
    };
    let count: u64 = count
        .parse()
        .ok()
        .filter(|_| !count.starts_with('0') || count == "0")
        .ok_or_else(|| alloc::format!("malformed registry count in {line:?}"))?;
    let root: Hash = B64
        .decode(root)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| alloc::format!("malformed registry root in {line:?}"))?;
    Ok((count, root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_names_are_distinct_and_round_trip() {
        for (i, r) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(Refusal::from_code(r.code()), Some(r));
            assert_eq!(r.problem_type(), r.code().replace('_', "-"));
            assert!(Refusal::ALL[..i].iter().all(|p| p.code() != r.code()));
            assert!(r.step().contains('.'));
        }
        assert_eq!(Refusal::from_code("nope"), None);
    }

    #[test]
    fn sequences_only_go_up() {
        let mut s = Sequences::default();
        assert_eq!(s.observe("a", 5), Ok(()));
        assert_eq!(s.observe("a", 5), Err(Refusal::StaleSequence));
        assert_eq!(s.observe("a", 4), Err(Refusal::StaleSequence));
        assert_eq!(s.observe("b", 1), Ok(()));
        assert_eq!(s.last("a"), Some(5));
    }

    #[test]
    fn events_out_of_order_are_refused() {
        let mut st = RegistryState::new();
        let revoke = RegistryEvent::Revoke {
            key_id: KeyId([1; 20]),
            from_ms: 0,
            reason: String::new(),
        };
        assert_eq!(
            st.apply(3, 0, &revoke),
            Err(EventRefusal::UnknownKey(KeyId([1; 20])))
        );
        assert_eq!(st.last_index(), None, "a refused event changes nothing");
    }

    #[test]
    fn registry_extension_round_trip_and_rejections() {
        let line = registry_extension(7, &[9; 32]);
        assert_eq!(
            parse_registry_extension(core::slice::from_ref(&line)),
            Ok((7, [9; 32]))
        );
        let other = String::from("other/ext 1");
        assert_eq!(
            parse_registry_extension(&[other.clone(), line.clone()]),
            Ok((7, [9; 32]))
        );
        for bad in [
            alloc::vec![],
            alloc::vec![other],
            alloc::vec![line.clone(), line.clone()],
            alloc::vec![line.replace(" 7 ", " 07 ")],
            alloc::vec![line.replace(" 7 ", " x ")],
            alloc::vec![alloc::format!("{line} extra")],
            alloc::vec![line[..line.len() - 4].to_string()],
        ] {
            assert!(parse_registry_extension(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn subjects_name_round_trip() {
        for s in [
            Subject::Device("SN-0001".into()),
            Subject::Issuer(KeyId([0xab; 20])),
        ] {
            assert_eq!(Subject::parse(&s.name()), Some(s.clone()));
        }
        for bad in [
            "device:",
            "device:a/b",
            "issuer:ab",
            "issuer:ABABABABABABABABABABABABABABABABABABABAB",
            "sensor:x",
        ] {
            assert_eq!(Subject::parse(bad), None, "{bad}");
        }
    }
}
