//! Allocation-free encoding and signing of a sensor reading, for firmware.
//!
//! Produces exactly the bytes of [`crate::cose::SignedReading::sign`] (a test checks it for
//! random readings) without touching the heap: the reading, the protected header and the
//! `Sig_structure` are written into stack buffers and the caller's output buffer with `minicbor`,
//! which writes shortest-form integers and definite lengths — deterministic CBOR for our maps,
//! whose keys are written in ascending order.

use crate::cose::READING_CONTENT_TYPE;
use crate::keys::KeyId;
use crate::reading::{
    valid_device_id, Measurement, MAX_MEASUREMENTS, MAX_READING_LEN, READING_VERSION,
};
use ed25519_dalek::{Signer, SigningKey};
use minicbor::data::Tag;
use minicbor::encode::write::Cursor;
use minicbor::Encoder;

/// The largest sensor frame (a tagged COSE_Sign1) this encoder produces.
pub const MAX_FRAME_LEN: usize = crate::cose::MAX_SIGNED_READING_LEN;

/// Why a reading could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The output buffer is too small.
    #[error("output buffer too small")]
    BufferTooSmall,
    /// The reading breaks a format rule.
    #[error("invalid reading: {0}")]
    Invalid(&'static str),
}

impl<E> From<minicbor::encode::Error<E>> for SignError {
    fn from(_: minicbor::encode::Error<E>) -> Self {
        SignError::BufferTooSmall
    }
}

/// A reading by reference: nothing owned, nothing allocated.
#[derive(Debug, Clone, Copy)]
pub struct ReadingRef<'a> {
    /// Sensor id.
    pub sensor_id: &'a str,
    /// Sequence number.
    pub seq: u64,
    /// Measured-at, Unix ms.
    pub measured_at_ms: u64,
    /// Measurements (1..=16, distinct LOINC codes).
    pub measurements: &'a [Measurement],
}

fn validate(r: &ReadingRef<'_>) -> Result<(), SignError> {
    if !valid_device_id(r.sensor_id) {
        return Err(SignError::Invalid("sensor id"));
    }
    let n = r.measurements.len();
    if n == 0 || n > MAX_MEASUREMENTS {
        return Err(SignError::Invalid("1 to 16 measurements"));
    }
    for (i, m) in r.measurements.iter().enumerate() {
        if r.measurements[..i]
            .iter()
            .any(|p| p.vital.loinc == m.vital.loinc)
        {
            return Err(SignError::Invalid("LOINC codes must be distinct"));
        }
    }
    Ok(())
}

/// Writes the reading's deterministic CBOR into `out`; returns its length.
pub fn encode_reading(r: &ReadingRef<'_>, out: &mut [u8]) -> Result<usize, SignError> {
    validate(r)?;
    let mut e = Encoder::new(Cursor::new(out));
    e.map(5)?.u8(0)?.u64(READING_VERSION)?;
    e.u8(1)?.str(r.sensor_id)?;
    e.u8(2)?.u64(r.seq)?;
    e.u8(3)?.u64(r.measured_at_ms)?;
    e.u8(4)?.array(r.measurements.len() as u64)?;
    for m in r.measurements {
        e.array(3)?.str(m.vital.loinc)?;
        e.tag(Tag::new(4))?
            .array(2)?
            .i8(m.value.exponent)?
            .i64(m.value.mantissa)?;
        e.str(m.vital.unit)?;
    }
    Ok(e.writer().position())
}

/// Writes the sensor layer's protected header for `kid`; returns its length.
fn encode_protected(kid: &KeyId, out: &mut [u8]) -> Result<usize, SignError> {
    let mut e = Encoder::new(Cursor::new(out));
    e.map(3)?.u8(1)?.i8(-8)?; // alg: EdDSA
    e.u8(3)?.str(READING_CONTENT_TYPE)?; // content type
    e.u8(4)?.bytes(&kid.0)?; // kid
    Ok(e.writer().position())
}

/// Encodes and signs a reading into `out` as a tagged COSE_Sign1 (the sensor frame); returns
/// its length. No heap allocation.
pub fn sign_reading(
    r: &ReadingRef<'_>,
    key: &SigningKey,
    out: &mut [u8],
) -> Result<usize, SignError> {
    let mut payload = [0u8; MAX_READING_LEN];
    let payload_len = encode_reading(r, &mut payload)?;
    let payload = &payload[..payload_len];
    let mut protected = [0u8; 96];
    let protected_len = encode_protected(&KeyId::of(&key.verifying_key()), &mut protected)?;
    let protected = &protected[..protected_len];

    // Sig_structure = ["Signature1", protected, external_aad (empty), payload], built in `out`.
    let tbs_len = {
        let mut e = Encoder::new(Cursor::new(&mut *out));
        e.array(4)?
            .str("Signature1")?
            .bytes(protected)?
            .bytes(&[])?
            .bytes(payload)?;
        e.writer().position()
    };
    let signature = key.sign(&out[..tbs_len]).to_bytes();

    let mut e = Encoder::new(Cursor::new(out));
    e.tag(Tag::new(18))?
        .array(4)?
        .bytes(protected)?
        .map(0)?
        .bytes(payload)?
        .bytes(&signature)?;
    Ok(e.writer().position())
}
