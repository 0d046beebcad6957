//! Checking sensor frames at the gateway: decoded, from a sensor bound to this gateway with a
//! valid key, signature valid, sequence number never seen before.

use provenance_core::cert::DeviceCert;
use provenance_core::cose::SignedReading;
use provenance_core::keys::KeyId;
use serde::Deserialize;
use std::collections::HashMap;

/// A binding time range (from the service's registry).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct BindingView {
    /// From, Unix ms.
    pub from_ms: u64,
    /// Until (exclusive), Unix ms.
    pub until_ms: Option<u64>,
}

/// A sensor key (from the service's registry).
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct KeyView {
    /// KeyId, hex.
    pub key_id: String,
    /// Certificate, PEM.
    pub certificate_pem: String,
    /// Valid from, Unix ms.
    pub valid_from: u64,
    /// Valid until (exclusive), Unix ms.
    pub valid_until: Option<u64>,
}

/// A bound sensor, as `GET /v1/registry/gateways/{id}/sensors` answers.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
pub struct BoundSensor {
    /// Sensor id.
    pub sensor_id: String,
    /// Its bindings to this gateway.
    pub bindings: Vec<BindingView>,
    /// Its keys.
    pub keys: Vec<KeyView>,
}

struct KnownKey {
    sensor_id: String,
    cert: DeviceCert,
    valid_from: u64,
    valid_until: Option<u64>,
}

/// The sensors this gateway accepts frames from.
#[derive(Default)]
pub struct BoundSensors {
    keys: HashMap<KeyId, KnownKey>,
    bindings: HashMap<String, Vec<BindingView>>,
}

impl BoundSensors {
    /// Builds the set from the registry's answer (certificates are parsed and checked here).
    pub fn from_registry(list: &[BoundSensor]) -> Self {
        let mut s = Self::default();
        for b in list {
            for k in &b.keys {
                match DeviceCert::from_pem(&k.certificate_pem) {
                    Ok(cert) if cert.subject_cn == b.sensor_id => {
                        s.keys.insert(
                            cert.key_id,
                            KnownKey {
                                sensor_id: b.sensor_id.clone(),
                                cert,
                                valid_from: k.valid_from,
                                valid_until: k.valid_until,
                            },
                        );
                    }
                    _ => {
                        tracing::warn!(sensor = %b.sensor_id, key = %k.key_id, "ignoring an unusable certificate from the registry")
                    }
                }
            }
            s.bindings.insert(b.sensor_id.clone(), b.bindings.clone());
        }
        s
    }

    /// Number of sensors.
    pub fn len(&self) -> usize {
        self.bindings.len()
    }

    /// True if no sensor is bound.
    pub fn is_empty(&self) -> bool {
        self.bindings.is_empty()
    }
}

/// Why a frame was rejected (logged with the reason; nothing is spooled).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameReject {
    /// Not a valid sensor COSE_Sign1 (corrupted in transit, or not ours).
    #[error("corrupt frame: {0}")]
    Corrupt(String),
    /// The key is not one of a sensor bound to this gateway.
    #[error("frame from a sensor not bound to this gateway (kid {0})")]
    Unbound(String),
    /// The key or binding was not valid at the frame's time.
    #[error("sensor {0} not bound to this gateway, or its key not valid, at the frame's time")]
    NotValidAtTime(String),
    /// The signature does not verify.
    #[error("bad signature from sensor {0}")]
    BadSignature(String),
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
    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            FrameReject::Corrupt(_) => "corrupt",
            FrameReject::Unbound(_) => "unbound",
            FrameReject::NotValidAtTime(_) => "not_valid_at_time",
            FrameReject::BadSignature(_) => "bad_signature",
            FrameReject::Replay { .. } => "replay",
        }
    }
}

/// Checks one frame; on success records its sequence number in `last_seq`.
pub fn check(
    frame: &[u8],
    bound: &BoundSensors,
    last_seq: &mut HashMap<String, u64>,
) -> Result<SignedReading, FrameReject> {
    let r = SignedReading::decode(frame).map_err(|e| FrameReject::Corrupt(e.to_string()))?;
    let k = bound
        .keys
        .get(&r.kid)
        .ok_or_else(|| FrameReject::Unbound(r.kid.to_hex()))?;
    let at = r.reading.measured_at_ms;
    if k.sensor_id != r.reading.sensor_id {
        return Err(FrameReject::Unbound(r.kid.to_hex()));
    }
    let bound_then = bound.bindings.get(&k.sensor_id).is_some_and(|bs| {
        bs.iter()
            .any(|b| b.from_ms <= at && b.until_ms.is_none_or(|u| at < u))
    });
    let key_then = at >= k.valid_from
        && k.valid_until.is_none_or(|u| at < u)
        && k.cert.check_valid_at(at).is_ok();
    if !bound_then || !key_then {
        return Err(FrameReject::NotValidAtTime(k.sensor_id.clone()));
    }
    r.verify(&k.cert.public_key)
        .map_err(|_| FrameReject::BadSignature(k.sensor_id.clone()))?;
    let seq = r.reading.seq;
    if let Some(&last) = last_seq.get(&k.sensor_id) {
        if seq <= last {
            return Err(FrameReject::Replay {
                sensor: k.sensor_id.clone(),
                seq,
                last,
            });
        }
    }
    last_seq.insert(k.sensor_id.clone(), seq);
    Ok(r)
}
