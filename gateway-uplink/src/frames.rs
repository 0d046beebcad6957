//! Checking sensor frames at the gateway. The gateway decides no registry question itself: it
//! replays the logged registry events it synced from the service (its own, all issuers', those
//! of every sensor ever bound to it) through `provenance-core`'s registry state machine, the
//! same one the service and the verifier run, and asks it about each frame at the gateway's own
//! clock (received-at): sensor key enrolled, current, valid and not revoked, issuer valid and not
//! revoked, sensor bound to this gateway. Then the signature, then the sequence number (above
//! every earlier one of the sensor).

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use provenance_core::cert::DeviceCert;
use provenance_core::cose::SignedReading;
use provenance_core::log_entry::{DecodedBody, LogEntry};
use provenance_core::registry_state::{Refusal, RegistryState};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A logged registry event, as `GET /v1/registry/gateways/{id}/events` answers it.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SyncedEvent {
    /// Log index.
    pub index: u64,
    /// The log entry's leaf data, base64.
    pub leaf_data: String,
}

/// The answer of `GET /v1/registry/gateways/{id}/events` (also the on-disk cache).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct SyncedEvents {
    /// The gateway.
    pub gateway_id: String,
    /// The events, in log order.
    pub events: Vec<SyncedEvent>,
}

/// The registry as this gateway knows it.
#[derive(Debug, Clone, Default)]
pub struct GatewayRegistry {
    gateway_id: String,
    state: RegistryState,
    /// The issuer CAs the gateway was configured with (empty: the registry's issuers).
    trusted: Vec<DeviceCert>,
}

impl GatewayRegistry {
    /// An empty registry for `gateway_id` (every frame is refused until a sync).
    pub fn empty(gateway_id: &str) -> Self {
        Self {
            gateway_id: gateway_id.into(),
            state: RegistryState::new(),
            trusted: Vec::new(),
        }
    }

    /// Replays synced events through the registry state machine. Events that are not
    /// registry entries, or that break the registry rules, make the whole sync unusable.
    pub fn from_events(gateway_id: &str, synced: &SyncedEvents) -> Result<Self, String> {
        if synced.gateway_id != gateway_id {
            return Err(format!(
                "the registry answered for gateway {:?}, not {gateway_id:?}",
                synced.gateway_id
            ));
        }
        let mut state = RegistryState::new();
        for e in &synced.events {
            let leaf = B64
                .decode(&e.leaf_data)
                .map_err(|_| format!("event {}: leaf data is not base64", e.index))?;
            let entry =
                LogEntry::from_cbor(&leaf).map_err(|err| format!("event {}: {err}", e.index))?;
            let DecodedBody::Registry(ev) = entry
                .decode_body()
                .map_err(|err| format!("event {}: {err}", e.index))?
            else {
                return Err(format!(
                    "event {} is a reading, not a registry event",
                    e.index
                ));
            };
            state
                .apply(e.index, entry.logged_at_ms, &ev)
                .map_err(|err| format!("event {} breaks the registry rules: {err}", e.index))?;
        }
        Ok(Self {
            gateway_id: gateway_id.into(),
            state,
            trusted: Vec::new(),
        })
    }

    /// Trust only sensor certificates that chain to one of these CAs (whatever issuers the
    /// registry holds); none: the registry's issuers.
    pub fn trusting(mut self, cas: Vec<DeviceCert>) -> Self {
        self.trusted = cas;
        self
    }

    /// The sensors ever bound to this gateway.
    pub fn bound_sensors(&self) -> usize {
        self.state
            .devices()
            .filter(|(_, d)| d.bindings.iter().any(|b| b.gateway_id == self.gateway_id))
            .count()
    }

    /// The state machine's state.
    pub fn state(&self) -> &RegistryState {
        &self.state
    }
}

/// Why a frame was rejected (logged with the reason; nothing is spooled).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameReject {
    /// Not a valid sensor COSE_Sign1 (corrupted in transit, or not ours).
    #[error("corrupt frame: {0}")]
    Corrupt(String),
    /// The registry refuses it: unknown or unbound sensor, key or issuer not valid or revoked
    /// now, or a measured-at after now by more than the allowed skew.
    #[error("{code}: {1}", code = .0.code())]
    Refused(Refusal, String),
    /// The signature does not verify.
    #[error("bad signature from sensor {0}")]
    BadSignature(String),
    /// The sensor's certificate does not chain to an issuer CA this gateway was configured with.
    #[error("sensor {0}: its certificate does not chain to a configured issuer CA ({1})")]
    UntrustedIssuer(String, String),
    /// A sequence number already seen (a replay or a duplicate frame).
    #[error("replayed sequence number {seq} from sensor {sensor} (last seen {last})")]
    Replay {
        /// Sensor.
        sensor: String,
        /// Its sequence number.
        seq: u64,
        /// The highest seen before.
        last: u64,
    },
}

impl FrameReject {
    /// A short label for metrics: the registry's refusal code, or `corrupt`, `bad_signature`,
    /// `replay`.
    pub fn label(&self) -> &'static str {
        match self {
            FrameReject::Corrupt(_) => "corrupt",
            FrameReject::Refused(r, _) => r.code(),
            FrameReject::BadSignature(_) => "bad_signature",
            FrameReject::UntrustedIssuer(..) => "untrusted_issuer",
            FrameReject::Replay { .. } => "replay",
        }
    }

    /// The registry's refusal, if it refused the frame.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            FrameReject::Refused(r, _) => Some(*r),
            _ => None,
        }
    }
}

/// Checks one frame received at `received_at_ms` (the gateway's clock); on success records its
/// sequence number in `last_seq`.
pub fn check(
    frame: &[u8],
    registry: &GatewayRegistry,
    received_at_ms: u64,
    last_seq: &mut HashMap<String, u64>,
) -> Result<SignedReading, FrameReject> {
    let r = SignedReading::decode(frame).map_err(|e| FrameReject::Corrupt(e.to_string()))?;
    let sensor = r.reading.sensor_id.clone();
    let key = registry
        .state
        .check_frame(
            &registry.gateway_id,
            &r.kid,
            &sensor,
            r.reading.measured_at_ms,
            received_at_ms,
        )
        .map_err(|(refusal, why)| FrameReject::Refused(refusal, why))?;
    if !registry.trusted.is_empty() {
        let cert =
            registry.state.key(&r.kid).map(|k| &k.cert).ok_or_else(|| {
                FrameReject::UntrustedIssuer(sensor.clone(), "no certificate".into())
            })?;
        let mut why = String::from("no configured CA issued it");
        let chained =
            registry
                .trusted
                .iter()
                .any(|ca| match cert.check_chain(ca, received_at_ms) {
                    Ok(()) => true,
                    Err(e) => {
                        if e.to_string().contains("expired") || e.to_string().contains("valid") {
                            why = e.to_string();
                        }
                        false
                    }
                });
        if !chained {
            return Err(FrameReject::UntrustedIssuer(sensor, why));
        }
    }
    r.verify(&key)
        .map_err(|_| FrameReject::BadSignature(sensor.clone()))?;
    let seq = r.reading.seq;
    if let Some(&last) = last_seq.get(&sensor) {
        if seq <= last {
            return Err(FrameReject::Replay { sensor, seq, last });
        }
    }
    last_seq.insert(sensor, seq);
    Ok(r)
}

/// Private mode: the keys to encrypt a frame received at `received_at_ms` to — the household's
/// current recipients, if the registry binds this gateway to exactly this household then — or
/// why the frame must not be sent.
pub fn recipients(
    registry: &GatewayRegistry,
    household: &str,
    received_at_ms: u64,
) -> Result<Vec<provenance_core::private::RecipientKey>, String> {
    let state = &registry.state;
    match state.household_of(&registry.gateway_id, u64::MAX, received_at_ms) {
        Some(h) if h == household => {}
        Some(h) => {
            return Err(format!(
                "the registry binds {} to household {h}, not {household}: not encrypting for it",
                registry.gateway_id
            ))
        }
        None => {
            return Err(format!(
                "the registry binds {} to no household yet",
                registry.gateway_id
            ))
        }
    }
    let keys: Vec<_> = state
        .current_recipients(household, u64::MAX, received_at_ms)
        .iter()
        .map(|r| r.key)
        .take(provenance_core::private::MAX_RECIPIENTS)
        .collect();
    if keys.is_empty() {
        return Err(format!("household {household} has no current recipient"));
    }
    Ok(keys)
}
