//! Log entries: the leaf data of the Merkle log.
//!
//! ```cddl
//! log-entry = {
//!   0: 1,          ; format version
//!   1: kind,       ; 1 = reading (body: gateway envelope bytes), 2 = registry event (body: registry-event),
//!                  ; 3 = private message (body: private envelope bytes, crate::private)
//!   2: bstr,       ; body, exactly the bytes received or appended
//!   3: uint,       ; logged-at, Unix ms, assigned by the sequencer
//! }
//! ```
//!
//! The leaf hash is `SHA-256(0x00 ‖ leaf data)` ([`crate::merkle::leaf_hash`]).

use crate::cbor::{self, CborError, MapReader};
use crate::cose::{CoseError, GatewayEnvelope, MAX_ENVELOPE_LEN};
use crate::merkle::{leaf_hash, Hash};
use crate::private::{PrivateEnvelope, PrivateError};
use crate::registry::{RegistryError, RegistryEvent};
use crate::shard::{Carried, ShardError, ShardStart};
use alloc::{vec, vec::Vec};
use ciborium::value::Value;

/// Log entry format version.
pub const ENTRY_VERSION: u64 = 1;
/// Largest leaf data of a registry event (the largest original a carried entry holds).
pub const MAX_REGISTRY_ENTRY_LEN: usize = crate::shard::MAX_CARRIED_LEAF_LEN;
/// Largest leaf data accepted (a carried registry event, or a shard start, is the largest).
pub const MAX_ENTRY_LEN: usize = crate::shard::MAX_SHARD_START_LEN + 64;

/// What a log entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A doubly signed reading: the gateway envelope.
    Reading = 1,
    /// A registry event.
    Registry = 2,
    /// A private message: a gateway's signature over a reading encrypted for a household.
    Private = 3,
    /// A shard's entry 0: its period and the previous shard's final checkpoint.
    ShardStart = 4,
    /// A registry event carried into a shard with its original position and leaf data.
    Carried = 5,
}

/// Why leaf data was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Bad CBOR.
    #[error(transparent)]
    Cbor(#[from] CborError),
    /// Unsupported version or kind.
    #[error("unsupported log entry version or kind")]
    Unsupported,
    /// The body is not a valid envelope.
    #[error("reading entry: {0}")]
    Envelope(#[from] CoseError),
    /// The body is not a valid registry event.
    #[error("registry entry: {0}")]
    Registry(#[from] RegistryError),
    /// The body is not a valid private envelope.
    #[error("private entry: {0}")]
    Private(#[from] PrivateError),
    /// The body is not a valid shard start or carried event.
    #[error("shard entry: {0}")]
    Shard(#[from] ShardError),
}

/// A log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// What the body is.
    pub kind: EntryKind,
    /// The body bytes.
    pub body: Vec<u8>,
    /// When the sequencer logged it, Unix ms.
    pub logged_at_ms: u64,
}

/// A log entry with its body decoded.
#[derive(Debug, Clone)]
pub enum DecodedBody {
    /// A reading envelope (signatures not yet verified).
    Reading(alloc::boxed::Box<GatewayEnvelope>),
    /// A registry event.
    Registry(RegistryEvent),
    /// A private message (signature not yet verified; the content unreadable here).
    Private(alloc::boxed::Box<PrivateEnvelope>),
    /// A shard start.
    ShardStart(alloc::boxed::Box<ShardStart>),
    /// A carried registry event: its original position, original entry and event.
    Carried(u64, alloc::boxed::Box<LogEntry>, RegistryEvent),
}

impl LogEntry {
    /// Deterministic CBOR: the leaf data.
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::encode(&cbor::map(vec![
            (0, cbor::uint(ENTRY_VERSION)),
            (1, cbor::uint(self.kind as u64)),
            (2, Value::Bytes(self.body.clone())),
            (3, cbor::uint(self.logged_at_ms)),
        ]))
    }

    /// The RFC 9162 leaf hash of this entry.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.to_cbor())
    }

    /// Decodes leaf data (the body is not decoded: see [`LogEntry::decode_body`]).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, EntryError> {
        let value = cbor::decode_deterministic(bytes, MAX_ENTRY_LEN)?;
        let mut m = MapReader::new(value, &[0, 1, 2, 3])?;
        if m.u64(0, "version")? != ENTRY_VERSION {
            return Err(EntryError::Unsupported);
        }
        let kind = match m.u64(1, "kind")? {
            1 => EntryKind::Reading,
            2 => EntryKind::Registry,
            3 => EntryKind::Private,
            4 => EntryKind::ShardStart,
            5 => EntryKind::Carried,
            _ => return Err(EntryError::Unsupported),
        };
        let body = m.bytes(2, "body")?;
        let logged_at_ms = m.u64(3, "logged-at")?;
        if kind == EntryKind::Reading && body.len() > MAX_ENVELOPE_LEN {
            return Err(CborError::TooLong {
                len: body.len(),
                max: MAX_ENVELOPE_LEN,
            }
            .into());
        }
        Ok(Self {
            kind,
            body,
            logged_at_ms,
        })
    }

    /// Decodes the body according to the kind.
    pub fn decode_body(&self) -> Result<DecodedBody, EntryError> {
        Ok(match self.kind {
            EntryKind::Reading => {
                DecodedBody::Reading(alloc::boxed::Box::new(GatewayEnvelope::decode(&self.body)?))
            }
            EntryKind::Registry => DecodedBody::Registry(RegistryEvent::from_cbor(&self.body)?),
            EntryKind::Private => {
                DecodedBody::Private(alloc::boxed::Box::new(PrivateEnvelope::decode(&self.body)?))
            }
            EntryKind::ShardStart => {
                DecodedBody::ShardStart(alloc::boxed::Box::new(ShardStart::from_cbor(&self.body)?))
            }
            EntryKind::Carried => {
                let c = Carried::from_cbor(&self.body)?;
                let entry = LogEntry::from_cbor(&c.leaf_data)?;
                if entry.kind != EntryKind::Registry {
                    return Err(ShardError::Invalid(
                        "a carried entry must hold a registry event".into(),
                    )
                    .into());
                }
                let event = RegistryEvent::from_cbor(&entry.body)?;
                DecodedBody::Carried(c.position, alloc::boxed::Box::new(entry), event)
            }
        })
    }
}
