//! Registry events: every change to the device registry is one of these, appended to the log
//! before it takes effect, so an auditor can prove enrollment, binding and non-revocation.
//!
//! ```cddl
//! registry-event = {
//!   0: 2,                   ; format version
//!   1: event-type,          ; see below
//!   ? 2: bstr,              ; certificate, DER (types 1, 2, 3, 6)
//!   ? 3: device-id,         ; the sensor (4, 5) or the device whose key rotates (6)
//!   ? 4: device-id,         ; the gateway (4)
//!   ? 5: uint,              ; effective from, Unix ms (4, 5, 6, 7)
//!   ? 6: uint,              ; effective until, Unix ms, exclusive (4, optional)
//!   ? 7: tstr,              ; patient pseudonym, 1..64 chars (5)
//!   ? 8: bstr .size 20,     ; revoked key id (7)
//!   ? 9: tstr,              ; revocation reason, up to 256 chars (7)
//!   ? 10: issuer-role,      ; what the issuer may issue (1)
//!   ? 11: household-id,     ; the household (8, 9)
//!   ? 12: bstr .size 32,    ; the recipient's X25519 public key (8)
//!   ? 13: tstr,             ; the recipient's name in the household, device-id syntax (8)
//! }
//! issuer-role = &( sensor-manufacturer: 1, gateway-fleet: 2 )
//! event-type = &( enroll-issuer: 1, enroll-sensor: 2, enroll-gateway: 3, bind: 4,
//!                 assign-patient: 5, rotate-key: 6, revoke: 7,
//!                 enroll-recipient: 8, bind-household: 9 )
//! ```
//!
//! Each type carries exactly its listed fields; anything else is rejected. The rules that decide
//! whether an event may be logged, and what it means for readings, are in
//! [`crate::registry_state`].

use crate::cbor::{self, CborError, MapReader};
use crate::cert::{CertError, DeviceCert, Role};
use crate::keys::KeyId;
use crate::private::RecipientKey;
use crate::reading::valid_device_id;
use alloc::{string::String, vec, vec::Vec};
use ciborium::value::Value;

/// Registry event format version.
pub const REGISTRY_VERSION: u64 = 2;
/// Largest encoded registry event.
pub const MAX_EVENT_LEN: usize = 8192;

/// Why a registry event was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// Bad CBOR.
    #[error(transparent)]
    Cbor(#[from] CborError),
    /// Unsupported version or event type.
    #[error("unsupported registry event version or type")]
    Unsupported,
    /// A field has an invalid value.
    #[error("invalid registry event field: {0}")]
    Field(&'static str),
    /// The certificate is invalid or has the wrong role for the event.
    #[error("registry event certificate: {0}")]
    Cert(#[from] CertError),
}

/// What an issuer may issue, recorded when it is enrolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IssuerRole {
    /// A sensor manufacturer: issues sensor certificates only.
    SensorManufacturer = 1,
    /// A gateway fleet operator: issues gateway certificates only.
    GatewayFleet = 2,
}

impl IssuerRole {
    /// The name in the API and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            IssuerRole::SensorManufacturer => "sensor-manufacturer",
            IssuerRole::GatewayFleet => "gateway-fleet",
        }
    }

    /// The role of this name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sensor-manufacturer" => Some(IssuerRole::SensorManufacturer),
            "gateway-fleet" => Some(IssuerRole::GatewayFleet),
            _ => None,
        }
    }

    /// The device role its certificates carry.
    pub fn device_role(self) -> Role {
        match self {
            IssuerRole::SensorManufacturer => Role::Sensor,
            IssuerRole::GatewayFleet => Role::Gateway,
        }
    }
}

/// One change to the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryEvent {
    /// An issuer CA certificate is trusted from now on.
    EnrollIssuer {
        /// Self-signed CA certificate, DER.
        cert: Vec<u8>,
        /// What it may issue.
        role: IssuerRole,
    },
    /// A sensor and its first key.
    EnrollSensor {
        /// Sensor certificate, DER.
        cert: Vec<u8>,
    },
    /// A gateway and its first key.
    EnrollGateway {
        /// Gateway certificate, DER.
        cert: Vec<u8>,
    },
    /// The sensor may send through the gateway during `[from_ms, until_ms)`.
    Bind {
        /// Sensor id.
        sensor_id: String,
        /// Gateway id.
        gateway_id: String,
        /// Start, Unix ms.
        from_ms: u64,
        /// End (exclusive), Unix ms; open-ended if absent.
        until_ms: Option<u64>,
    },
    /// The sensor measures the patient with this pseudonym from `from_ms` on.
    AssignPatient {
        /// Sensor id.
        sensor_id: String,
        /// Patient pseudonym (no names: readings are de-identified).
        pseudonym: String,
        /// Start, Unix ms.
        from_ms: u64,
    },
    /// The device uses a new key (and certificate) from `from_ms` on.
    RotateKey {
        /// Sensor or gateway id (the certificate's CN).
        device_id: String,
        /// New certificate, DER.
        cert: Vec<u8>,
        /// Start, Unix ms.
        from_ms: u64,
    },
    /// Private mode: the recipient `name` of the household reads its messages with `key` from
    /// `from_ms` on (a name already enrolled rotates to the new key).
    EnrollRecipient {
        /// Household id.
        household: String,
        /// The recipient's name in the household (a tenant's phone, a care team's device).
        name: String,
        /// Its X25519 public key.
        key: RecipientKey,
        /// Start, Unix ms.
        from_ms: u64,
    },
    /// Private mode: the gateway encrypts for the household from `from_ms` on.
    BindHousehold {
        /// Gateway id.
        gateway_id: String,
        /// Household id.
        household: String,
        /// Start, Unix ms.
        from_ms: u64,
    },
    /// The key is revoked from `from_ms` on: signatures made at or after it are rejected.
    Revoke {
        /// The revoked key.
        key_id: KeyId,
        /// Effective time, Unix ms.
        from_ms: u64,
        /// Why (free text).
        reason: String,
    },
}

fn cert_with_role(der: &[u8], role: Role) -> Result<DeviceCert, RegistryError> {
    let cert = DeviceCert::from_der(der)?;
    if cert.role != role {
        return Err(RegistryError::Field(
            "certificate role does not fit the event",
        ));
    }
    Ok(cert)
}

fn device_id(s: String) -> Result<String, RegistryError> {
    valid_device_id(&s)
        .then_some(s)
        .ok_or(RegistryError::Field("device id"))
}

impl RegistryEvent {
    /// The event type number.
    pub fn type_code(&self) -> u64 {
        match self {
            Self::EnrollIssuer { .. } => 1,
            Self::EnrollSensor { .. } => 2,
            Self::EnrollGateway { .. } => 3,
            Self::Bind { .. } => 4,
            Self::AssignPatient { .. } => 5,
            Self::RotateKey { .. } => 6,
            Self::Revoke { .. } => 7,
            Self::EnrollRecipient { .. } => 8,
            Self::BindHousehold { .. } => 9,
        }
    }

    /// A short name of the event type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::EnrollIssuer { .. } => "enroll-issuer",
            Self::EnrollSensor { .. } => "enroll-sensor",
            Self::EnrollGateway { .. } => "enroll-gateway",
            Self::Bind { .. } => "bind",
            Self::AssignPatient { .. } => "assign-patient",
            Self::RotateKey { .. } => "rotate-key",
            Self::Revoke { .. } => "revoke",
            Self::EnrollRecipient { .. } => "enroll-recipient",
            Self::BindHousehold { .. } => "bind-household",
        }
    }

    /// Checks the field rules the decoder enforces.
    pub fn validate(&self) -> Result<(), RegistryError> {
        match self {
            Self::EnrollIssuer { cert, .. } => cert_with_role(cert, Role::Issuer).map(drop),
            Self::EnrollSensor { cert } => cert_with_role(cert, Role::Sensor).map(drop),
            Self::EnrollGateway { cert } => cert_with_role(cert, Role::Gateway).map(drop),
            Self::Bind {
                sensor_id,
                gateway_id,
                from_ms,
                until_ms,
            } => {
                if !valid_device_id(sensor_id) || !valid_device_id(gateway_id) {
                    return Err(RegistryError::Field("device id"));
                }
                if until_ms.is_some_and(|u| u <= *from_ms) {
                    return Err(RegistryError::Field("binding must end after it starts"));
                }
                Ok(())
            }
            Self::AssignPatient {
                sensor_id,
                pseudonym,
                ..
            } => {
                if !valid_device_id(sensor_id) {
                    return Err(RegistryError::Field("device id"));
                }
                if pseudonym.is_empty()
                    || pseudonym.len() > 64
                    || pseudonym.chars().any(|c| c.is_control())
                {
                    return Err(RegistryError::Field("pseudonym"));
                }
                Ok(())
            }
            Self::RotateKey {
                device_id, cert, ..
            } => {
                let c = DeviceCert::from_der(cert)?;
                if c.role == Role::Issuer || c.subject_cn != *device_id {
                    return Err(RegistryError::Field(
                        "rotated certificate must name the device",
                    ));
                }
                Ok(())
            }
            Self::Revoke { reason, .. } => {
                if reason.len() > 256 || reason.chars().any(|c| c.is_control()) {
                    return Err(RegistryError::Field("reason"));
                }
                Ok(())
            }
            Self::EnrollRecipient {
                household,
                name,
                key,
                ..
            } => {
                if !valid_device_id(household) {
                    return Err(RegistryError::Field("household id"));
                }
                if !valid_device_id(name) {
                    return Err(RegistryError::Field("recipient name"));
                }
                RecipientKey::from_slice(&key.0)
                    .map(drop)
                    .map_err(|_| RegistryError::Field("recipient key: not a usable X25519 key"))
            }
            Self::BindHousehold {
                gateway_id,
                household,
                ..
            } => {
                if !valid_device_id(gateway_id) {
                    return Err(RegistryError::Field("device id"));
                }
                if !valid_device_id(household) {
                    return Err(RegistryError::Field("household id"));
                }
                Ok(())
            }
        }
    }

    /// Deterministic CBOR encoding.
    pub fn to_cbor(&self) -> Result<Vec<u8>, RegistryError> {
        self.validate()?;
        let mut m = vec![
            (0, cbor::uint(REGISTRY_VERSION)),
            (1, cbor::uint(self.type_code())),
        ];
        let text = |s: &String| Value::Text(s.clone());
        match self {
            Self::EnrollIssuer { cert, role } => {
                m.push((2, Value::Bytes(cert.clone())));
                m.push((10, cbor::uint(*role as u64)));
            }
            Self::EnrollSensor { cert } | Self::EnrollGateway { cert } => {
                m.push((2, Value::Bytes(cert.clone())));
            }
            Self::Bind {
                sensor_id,
                gateway_id,
                from_ms,
                until_ms,
            } => {
                m.push((3, text(sensor_id)));
                m.push((4, text(gateway_id)));
                m.push((5, cbor::uint(*from_ms)));
                if let Some(u) = until_ms {
                    m.push((6, cbor::uint(*u)));
                }
            }
            Self::AssignPatient {
                sensor_id,
                pseudonym,
                from_ms,
            } => {
                m.push((3, text(sensor_id)));
                m.push((5, cbor::uint(*from_ms)));
                m.push((7, text(pseudonym)));
            }
            Self::RotateKey {
                device_id,
                cert,
                from_ms,
            } => {
                m.push((2, Value::Bytes(cert.clone())));
                m.push((3, text(device_id)));
                m.push((5, cbor::uint(*from_ms)));
            }
            Self::Revoke {
                key_id,
                from_ms,
                reason,
            } => {
                m.push((5, cbor::uint(*from_ms)));
                m.push((8, Value::Bytes(key_id.0.to_vec())));
                m.push((9, text(reason)));
            }
            Self::EnrollRecipient {
                household,
                name,
                key,
                from_ms,
            } => {
                m.push((5, cbor::uint(*from_ms)));
                m.push((11, text(household)));
                m.push((12, Value::Bytes(key.0.to_vec())));
                m.push((13, text(name)));
            }
            Self::BindHousehold {
                gateway_id,
                household,
                from_ms,
            } => {
                m.push((4, text(gateway_id)));
                m.push((5, cbor::uint(*from_ms)));
                m.push((11, text(household)));
            }
        }
        Ok(cbor::encode(&cbor::map(m)))
    }

    /// Decodes and validates an event; rejects anything but the deterministic encoding.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, RegistryError> {
        let value = cbor::decode_deterministic(bytes, MAX_EVENT_LEN)?;
        let Value::Map(entries) = &value else {
            return Err(CborError::Structure("expected a map").into());
        };
        let type_code = entries
            .iter()
            .find(|(k, _)| cbor::as_u64(k) == Some(1))
            .and_then(|(_, v)| cbor::as_u64(v))
            .ok_or(CborError::Structure("event type"))?;
        let fields: &[u64] = match type_code {
            1 => &[0, 1, 2, 10],
            2 | 3 => &[0, 1, 2],
            4 => &[0, 1, 3, 4, 5, 6],
            5 => &[0, 1, 3, 5, 7],
            6 => &[0, 1, 2, 3, 5],
            7 => &[0, 1, 5, 8, 9],
            8 => &[0, 1, 5, 11, 12, 13],
            9 => &[0, 1, 4, 5, 11],
            _ => return Err(RegistryError::Unsupported),
        };
        let mut m = MapReader::new(value, fields)?;
        if m.u64(0, "version")? != REGISTRY_VERSION {
            return Err(RegistryError::Unsupported);
        }
        let event = match type_code {
            1 => Self::EnrollIssuer {
                cert: m.bytes(2, "certificate")?,
                role: match m.u64(10, "issuer role")? {
                    1 => IssuerRole::SensorManufacturer,
                    2 => IssuerRole::GatewayFleet,
                    _ => return Err(RegistryError::Field("issuer role")),
                },
            },
            2 => Self::EnrollSensor {
                cert: m.bytes(2, "certificate")?,
            },
            3 => Self::EnrollGateway {
                cert: m.bytes(2, "certificate")?,
            },
            4 => Self::Bind {
                sensor_id: device_id(m.text(3, "sensor id")?)?,
                gateway_id: device_id(m.text(4, "gateway id")?)?,
                from_ms: m.u64(5, "from")?,
                until_ms: m.opt_u64(6, "until")?,
            },
            5 => Self::AssignPatient {
                sensor_id: device_id(m.text(3, "sensor id")?)?,
                from_ms: m.u64(5, "from")?,
                pseudonym: m.text(7, "pseudonym")?,
            },
            6 => Self::RotateKey {
                cert: m.bytes(2, "certificate")?,
                device_id: device_id(m.text(3, "device id")?)?,
                from_ms: m.u64(5, "from")?,
            },
            8 => Self::EnrollRecipient {
                from_ms: m.u64(5, "from")?,
                household: m.text(11, "household id")?,
                key: RecipientKey::from_slice(&m.bytes(12, "recipient key")?)
                    .map_err(|_| RegistryError::Field("recipient key: not a usable X25519 key"))?,
                name: m.text(13, "recipient name")?,
            },
            9 => Self::BindHousehold {
                gateway_id: device_id(m.text(4, "gateway id")?)?,
                from_ms: m.u64(5, "from")?,
                household: m.text(11, "household id")?,
            },
            _ => Self::Revoke {
                from_ms: m.u64(5, "from")?,
                key_id: KeyId::from_slice(&m.bytes(8, "key id")?)
                    .ok_or(RegistryError::Field("key id must be 20 bytes"))?,
                reason: m.text(9, "reason")?,
            },
        };
        event.validate()?;
        Ok(event)
    }
}
