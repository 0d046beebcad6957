//! The two signed layers: the sensor's COSE_Sign1 over a [`Reading`], and the gateway's
//! COSE_Sign1 envelope over the sensor's bytes exactly as received (RFC 9052, tag 18, EdDSA).
//!
//! ```cddl
//! signed-reading = #6.18([ protected: bstr .cbor sensor-hdr, unprotected: {}, payload: bstr .cbor reading, signature: bstr .size 64 ])
//! sensor-hdr     = { 1: -8, 3: "application/vnd.vitals-ledger.reading+cbor", 4: bstr .size 20 }
//! envelope       = #6.18([ protected: bstr .cbor gateway-hdr, unprotected: {}, payload: bstr .cbor signed-reading, signature: bstr .size 64 ])
//! gateway-hdr    = { 1: -8, 3: 18, 4: bstr .size 20, -65537: uint }   ; 3: 18 = CoAP content format application/cose; cose-type="cose-sign1"; -65537 = received-at, Unix ms
//! ```
//!
//! Decoders accept only exactly this shape, with deterministic protected headers, an empty
//! unprotected header, an attached payload, tag 18 and no trailing bytes. Signatures are
//! checked with strict Ed25519 over the RFC 9052 `Sig_structure` (empty external AAD).

use crate::cbor::{self, CborError};
use crate::keys::{self, KeyId};
use crate::reading::{Reading, ReadingError};
use alloc::vec::Vec;
use ciborium::value::Value;
use coset::{
    iana, CoseSign1, CoseSign1Builder, HeaderBuilder, Label, RegisteredLabel,
    RegisteredLabelWithPrivate, TaggedCborSerializable,
};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Content type of the sensor layer's payload.
pub const READING_CONTENT_TYPE: &str = "application/vnd.vitals-ledger.reading+cbor";
/// Private-use header label carrying the time the gateway received the frame (Unix ms).
pub const RECEIVED_AT_LABEL: i64 = -65537;
/// Largest sensor COSE_Sign1 accepted.
pub const MAX_SIGNED_READING_LEN: usize = 2048;
/// Largest gateway envelope accepted.
pub const MAX_ENVELOPE_LEN: usize = 4096;

/// Why a COSE layer was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoseError {
    /// Over the size limit.
    #[error("{what} is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Which layer.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a well-formed, tagged (18), attached-payload COSE_Sign1.
    #[error("{0}: not a well-formed tagged COSE_Sign1")]
    Malformed(&'static str),
    /// Well-formed but not in our deterministic encoding.
    #[error("{0}: COSE_Sign1 is not deterministically encoded")]
    NotDeterministic(&'static str),
    /// Algorithm other than EdDSA.
    #[error("{0}: algorithm must be EdDSA (-8)")]
    Algorithm(&'static str),
    /// Header missing, unexpected or wrong.
    #[error("{layer}: bad header: {why}")]
    Header {
        /// Which layer.
        layer: &'static str,
        /// What is wrong.
        why: &'static str,
    },
    /// The signature does not verify.
    #[error("{0}: signature does not verify")]
    BadSignature(&'static str),
    /// The sensor payload is not a valid reading.
    #[error("sensor payload: {0}")]
    Reading(#[from] ReadingError),
}

const SENSOR: &str = "sensor layer";
const GATEWAY: &str = "gateway layer";

/// Parses and checks the common shape of both layers; returns the message, the protected
/// header and the signature.
fn parse_sign1(
    bytes: &[u8],
    layer: &'static str,
    max: usize,
) -> Result<(CoseSign1, Signature), CoseError> {
    if bytes.len() > max {
        return Err(CoseError::TooLong {
            what: layer,
            len: bytes.len(),
            max,
        });
    }
    let msg = CoseSign1::from_tagged_slice(bytes).map_err(|_| CoseError::Malformed(layer))?;
    // Protected header bytes must themselves be deterministic CBOR.
    let protected = msg
        .protected
        .original_data
        .as_deref()
        .ok_or(CoseError::Malformed(layer))?;
    // The protected header and the whole message in deterministic encoding (the message is
    // then exactly what re-encoding it would give, checked without re-encoding it).
    for (part, max) in [(protected, 256), (bytes, max)] {
        match cbor::check_deterministic(part, max) {
            Ok(()) => {}
            Err(CborError::NotDeterministic) => return Err(CoseError::NotDeterministic(layer)),
            Err(_) => return Err(CoseError::Malformed(layer)),
        }
    }
    let h = &msg.protected.header;
    if h.alg != Some(RegisteredLabelWithPrivate::Assigned(iana::Algorithm::EdDSA)) {
        return Err(CoseError::Algorithm(layer));
    }
    if !h.crit.is_empty()
        || !h.iv.is_empty()
        || !h.partial_iv.is_empty()
        || !h.counter_signatures.is_empty()
    {
        return Err(CoseError::Header {
            layer,
            why: "unexpected header parameter",
        });
    }
    if KeyId::from_slice(&h.key_id).is_none() {
        return Err(CoseError::Header {
            layer,
            why: "kid must be a 20-byte key identifier",
        });
    }
    if !msg.unprotected.is_empty() {
        return Err(CoseError::Header {
            layer,
            why: "unprotected header must be empty",
        });
    }
    if msg.payload.is_none() {
        return Err(CoseError::Header {
            layer,
            why: "payload must be attached",
        });
    }
    let signature = keys::parse_signature(&msg.signature).ok_or(CoseError::Malformed(layer))?;
    Ok((msg, signature))
}

fn sign1(protected: coset::Header, payload: Vec<u8>, key: &SigningKey) -> Vec<u8> {
    let msg = CoseSign1Builder::new()
        .protected(protected)
        .payload(payload)
        .create_signature(&[], |tbs| key.sign(tbs).to_bytes().to_vec())
        .build();
    // Serializing a COSE_Sign1 we just built into a Vec cannot fail.
    msg.to_tagged_vec().unwrap_or_default()
}

/// A decoded sensor COSE_Sign1 (the inner layer).
#[derive(Debug, Clone)]
pub struct SignedReading {
    msg: CoseSign1,
    signature: Signature,
    /// The sensor's key identifier (`kid`).
    pub kid: KeyId,
    /// The decoded reading.
    pub reading: Reading,
}

impl SignedReading {
    /// Signs `reading` with the sensor key: the tagged COSE_Sign1 bytes.
    pub fn sign(reading: &Reading, key: &SigningKey) -> Result<Vec<u8>, ReadingError> {
        let payload = reading.to_cbor()?;
        Ok(Self::sign_payload(payload, key))
    }

    /// Signs an already encoded reading (the firmware encodes once and signs).
    pub fn sign_payload(payload: Vec<u8>, key: &SigningKey) -> Vec<u8> {
        let kid = KeyId::of(&key.verifying_key());
        let protected = HeaderBuilder::new()
            .algorithm(iana::Algorithm::EdDSA)
            .content_type(READING_CONTENT_TYPE.into())
            .key_id(kid.0.to_vec())
            .build();
        sign1(protected, payload, key)
    }

    /// Decodes and checks the structure (not the signature: see [`SignedReading::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, CoseError> {
        let (msg, signature) = parse_sign1(bytes, SENSOR, MAX_SIGNED_READING_LEN)?;
        let h = &msg.protected.header;
        if h.content_type != Some(RegisteredLabel::Text(READING_CONTENT_TYPE.into())) {
            return Err(CoseError::Header {
                layer: SENSOR,
                why: "content type must be the reading type",
            });
        }
        if !h.rest.is_empty() {
            return Err(CoseError::Header {
                layer: SENSOR,
                why: "unexpected header parameter",
            });
        }
        let kid = KeyId::from_slice(&h.key_id).ok_or(CoseError::Malformed(SENSOR))?;
        let reading = Reading::from_cbor(msg.payload.as_deref().unwrap_or_default())?;
        Ok(Self {
            msg,
            signature,
            kid,
            reading,
        })
    }

    /// The bytes the signature covers (the `Sig_structure`) and the signature, for batching.
    pub fn signed_data(&self) -> (Vec<u8>, Signature) {
        (self.msg.tbs_data(&[]), self.signature)
    }

    /// The encoded reading (the payload bytes).
    pub fn payload(&self) -> &[u8] {
        self.msg.payload.as_deref().unwrap_or_default()
    }

    /// Strictly verifies the sensor signature with `key`, which must match the `kid`.
    pub fn verify(&self, key: &VerifyingKey) -> Result<(), CoseError> {
        verify_layer(&self.msg, &self.signature, self.kid, key, SENSOR)
    }
}

fn verify_layer(
    msg: &CoseSign1,
    sig: &Signature,
    kid: KeyId,
    key: &VerifyingKey,
    layer: &'static str,
) -> Result<(), CoseError> {
    if KeyId::of(key) != kid {
        return Err(CoseError::Header {
            layer,
            why: "kid does not identify the given key",
        });
    }
    if keys::verify_signature(key, &msg.tbs_data(&[]), sig) {
        Ok(())
    } else {
        Err(CoseError::BadSignature(layer))
    }
}

/// A decoded gateway envelope (the outer layer) with its decoded sensor layer.
#[derive(Debug, Clone)]
pub struct GatewayEnvelope {
    msg: CoseSign1,
    signature: Signature,
    /// The gateway's key identifier (`kid`).
    pub kid: KeyId,
    /// When the gateway received the sensor frame, Unix ms.
    pub received_at_ms: u64,
    /// The sensor layer, decoded from the payload.
    pub sensor: SignedReading,
}

impl GatewayEnvelope {
    /// Wraps the sensor's COSE_Sign1 bytes, exactly as received, and countersigns them.
    pub fn wrap(sensor_bytes: &[u8], received_at_ms: u64, key: &SigningKey) -> Vec<u8> {
        let kid = KeyId::of(&key.verifying_key());
        let protected = HeaderBuilder::new()
            .algorithm(iana::Algorithm::EdDSA)
            .content_format(iana::CoapContentFormat::CoseSign1)
            .key_id(kid.0.to_vec())
            .value(RECEIVED_AT_LABEL, cbor::uint(received_at_ms))
            .build();
        sign1(protected, sensor_bytes.to_vec(), key)
    }

    /// Decodes both layers and checks their structure (not the signatures).
    pub fn decode(bytes: &[u8]) -> Result<Self, CoseError> {
        let (msg, signature) = parse_sign1(bytes, GATEWAY, MAX_ENVELOPE_LEN)?;
        let h = &msg.protected.header;
        if h.content_type
            != Some(RegisteredLabel::Assigned(
                iana::CoapContentFormat::CoseSign1,
            ))
        {
            return Err(CoseError::Header {
                layer: GATEWAY,
                why: "content type must be COSE_Sign1 (18)",
            });
        }
        let received_at_ms = match h.rest.as_slice() {
            [(Label::Int(RECEIVED_AT_LABEL), v @ Value::Integer(_))] => cbor::as_u64(v),
            _ => None,
        }
        .ok_or(CoseError::Header { layer: GATEWAY, why: "needs exactly the received-at (-65537) parameter besides alg, content type and kid" })?;
        let kid = KeyId::from_slice(&h.key_id).ok_or(CoseError::Malformed(GATEWAY))?;
        let sensor = SignedReading::decode(msg.payload.as_deref().unwrap_or_default())?;
        Ok(Self {
            msg,
            signature,
            kid,
            received_at_ms,
            sensor,
        })
    }

    /// The sensor's COSE_Sign1 bytes exactly as the gateway received them.
    pub fn sensor_bytes(&self) -> &[u8] {
        self.msg.payload.as_deref().unwrap_or_default()
    }

    /// The bytes the gateway signature covers and the signature, for batching.
    pub fn signed_data(&self) -> (Vec<u8>, Signature) {
        (self.msg.tbs_data(&[]), self.signature)
    }

    /// Strictly verifies both layers: the gateway signature with `gateway_key` and the sensor
    /// signature with `sensor_key`.
    pub fn verify(
        &self,
        gateway_key: &VerifyingKey,
        sensor_key: &VerifyingKey,
    ) -> Result<(), CoseError> {
        verify_layer(&self.msg, &self.signature, self.kid, gateway_key, GATEWAY)?;
        self.sensor.verify(sensor_key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::{Decimal, Measurement};

    fn envelope() -> Vec<u8> {
        let sensor = SigningKey::from_bytes(&[1; 32]);
        let gateway = SigningKey::from_bytes(&[2; 32]);
        let r = Reading {
            sensor_id: "SN-1".into(),
            seq: 7,
            measured_at_ms: 1_767_229_205_123,
            measurements: vec![
                Measurement::new("8867-4", Decimal::new(72, 0)).unwrap(),
                Measurement::new("8310-5", Decimal::new(371, -1)).unwrap(),
            ],
        };
        let s = SignedReading::sign(&r, &sensor).unwrap();
        GatewayEnvelope::wrap(&s, r.measured_at_ms + 40, &gateway)
    }

    /// The determinism rule as first written: each layer re-encoded by `coset` must give back
    /// its bytes.
    fn reencodes_to_itself(bytes: &[u8]) -> bool {
        let same = |b: &[u8]| {
            CoseSign1::from_tagged_slice(b)
                .ok()
                .and_then(|m| m.to_tagged_vec().ok())
                .as_deref()
                == Some(b)
        };
        same(bytes)
            && CoseSign1::from_tagged_slice(bytes)
                .ok()
                .and_then(|m| m.payload)
                .is_some_and(|p| same(&p))
    }

    #[test]
    fn a_decoded_envelope_is_what_coset_would_write() {
        let env = envelope();
        assert!(GatewayEnvelope::decode(&env).is_ok());
        assert!(reencodes_to_itself(&env));
        // Every byte changed, dropped or doubled: accepted only if re-encoding gives it back.
        for i in 0..env.len() {
            for edit in 0..4u8 {
                let mut m = env.clone();
                match edit {
                    0 => m[i] ^= 0x01,
                    1 => m[i] = m[i].wrapping_add(0x20),
                    2 => {
                        m.remove(i);
                    }
                    _ => m.insert(i, m[i]),
                }
                if GatewayEnvelope::decode(&m).is_ok() {
                    assert!(
                        reencodes_to_itself(&m),
                        "byte {i} edit {edit}: {}",
                        hex::encode(&m)
                    );
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn accepted_envelopes_reencode_to_themselves(
            edits in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut m = envelope();
            for (at, byte, how) in edits {
                let i = at % (m.len() + 1);
                match how {
                    0 if i < m.len() => m[i] = byte,
                    1 if i < m.len() => { m.remove(i); }
                    _ => m.insert(i, byte),
                }
            }
            if GatewayEnvelope::decode(&m).is_ok() {
                proptest::prop_assert!(reencodes_to_itself(&m), "{}", hex::encode(&m));
            }
        }
    }
}
