//! Deterministic CBOR (RFC 8949 §4.2.1) on top of `ciborium`.
//!
//! Our structures are maps with small unsigned integer keys and arrays, written with definite
//! lengths and shortest-form integers, keys in ascending order: that is what `ciborium` writes
//! for a [`Value`] built in key order. A decoder accepts input only if re-encoding the decoded
//! value gives back exactly the same bytes, which rejects every non-deterministic encoding
//! (long-form integers, unsorted or duplicate keys, indefinite lengths, non-preferred floats)
//! and trailing bytes, with one rule instead of many.

use alloc::{string::String, vec::Vec};
use ciborium::value::{Integer, Value};

/// Why CBOR input was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CborError {
    /// Larger than the structure allows.
    #[error("input is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Input length.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Not well-formed CBOR, or nested too deeply.
    #[error("malformed CBOR")]
    Malformed,
    /// Well-formed, but not in deterministic encoding (or followed by trailing bytes).
    #[error("CBOR is not in deterministic encoding or has trailing bytes")]
    NotDeterministic,
    /// Well-formed and deterministic, but not the expected structure.
    #[error("unexpected CBOR structure: {0}")]
    Structure(&'static str),
}

/// Encodes a value (deterministically, if it was built with keys in order).
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    if ciborium::ser::into_writer(value, &mut out).is_err() {
        out.clear();
    }
    out
}

/// Decodes `bytes`, requiring deterministic encoding, no trailing bytes and at most `max` bytes.
pub fn decode_deterministic(bytes: &[u8], max: usize) -> Result<Value, CborError> {
    if bytes.len() > max {
        return Err(CborError::TooLong {
            len: bytes.len(),
            max,
        });
    }
    // A recursion limit well below ciborium's default: none of our structures nest deeper than 6.
    let value: Value = ciborium::de::from_reader_with_recursion_limit(bytes, 16)
        .map_err(|_| CborError::Malformed)?;
    if encode(&value) != bytes || !keys_strictly_ordered(&value) {
        return Err(CborError::NotDeterministic);
    }
    Ok(value)
}

/// True if every map in `value` has its keys in strictly ascending bytewise order of their
/// encodings (RFC 8949 §4.2.1), which also rules out duplicate keys.
fn keys_strictly_ordered(value: &Value) -> bool {
    match value {
        Value::Map(entries) => {
            let mut prev: Option<Vec<u8>> = None;
            for (k, v) in entries {
                let key = encode(k);
                if prev.as_ref().is_some_and(|p| *p >= key) {
                    return false;
                }
                if !keys_strictly_ordered(k) || !keys_strictly_ordered(v) {
                    return false;
                }
                prev = Some(key);
            }
            true
        }
        Value::Array(items) => items.iter().all(keys_strictly_ordered),
        Value::Tag(_, inner) => keys_strictly_ordered(inner),
        _ => true,
    }
}

/// Reads an integer-keyed map, checking every key is one of `allowed`.
pub struct MapReader {
    entries: Vec<(u64, Value)>,
}

impl MapReader {
    /// Wraps a decoded value that must be a map with unsigned integer keys from `allowed`.
    pub fn new(value: Value, allowed: &[u64]) -> Result<Self, CborError> {
        let Value::Map(map) = value else {
            return Err(CborError::Structure("expected a map"));
        };
        let mut entries = Vec::with_capacity(map.len());
        for (k, v) in map {
            let key =
                as_u64(&k).ok_or(CborError::Structure("map key is not an unsigned integer"))?;
            if !allowed.contains(&key) {
                return Err(CborError::Structure("unknown map key"));
            }
            entries.push((key, v));
        }
        Ok(Self { entries })
    }

    /// Takes the value under `key`, if present.
    pub fn take(&mut self, key: u64) -> Option<Value> {
        let pos = self.entries.iter().position(|(k, _)| *k == key)?;
        Some(self.entries.swap_remove(pos).1)
    }

    /// Takes a required value.
    pub fn req(&mut self, key: u64, what: &'static str) -> Result<Value, CborError> {
        self.take(key).ok_or(CborError::Structure(what))
    }

    /// A required unsigned integer.
    pub fn u64(&mut self, key: u64, what: &'static str) -> Result<u64, CborError> {
        as_u64(&self.req(key, what)?).ok_or(CborError::Structure(what))
    }

    /// A required text string.
    pub fn text(&mut self, key: u64, what: &'static str) -> Result<String, CborError> {
        match self.req(key, what)? {
            Value::Text(s) => Ok(s),
            _ => Err(CborError::Structure(what)),
        }
    }

    /// A required byte string.
    pub fn bytes(&mut self, key: u64, what: &'static str) -> Result<Vec<u8>, CborError> {
        match self.req(key, what)? {
            Value::Bytes(b) => Ok(b),
            _ => Err(CborError::Structure(what)),
        }
    }

    /// An optional unsigned integer.
    pub fn opt_u64(&mut self, key: u64, what: &'static str) -> Result<Option<u64>, CborError> {
        self.take(key)
            .map(|v| as_u64(&v).ok_or(CborError::Structure(what)))
            .transpose()
    }
}

/// The value as an unsigned 64-bit integer, if it is one.
pub fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Integer(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

/// The value as a signed 64-bit integer, if it is one.
pub fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => i64::try_from(*i).ok(),
        _ => None,
    }
}

/// Builds a map with unsigned integer keys; the caller lists keys in ascending order.
pub fn map(entries: Vec<(u64, Value)>) -> Value {
    debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
    Value::Map(
        entries
            .into_iter()
            .map(|(k, v)| (Value::Integer(Integer::from(k)), v))
            .collect(),
    )
}

/// An unsigned integer value.
pub fn uint(v: u64) -> Value {
    Value::Integer(Integer::from(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(hex_in: &str, want: Result<(), CborError>) {
        let bytes = hex::decode(hex_in).unwrap();
        assert_eq!(
            decode_deterministic(&bytes, 1024).map(|_| ()),
            want,
            "{hex_in}"
        );
    }

    #[test]
    fn deterministic_rules() {
        check("a201020304", Ok(())); // {1:2, 3:4}
        check("a203040102", Err(CborError::NotDeterministic)); // keys out of order
        check("a201020102", Err(CborError::NotDeterministic)); // duplicate key
        check("1817", Err(CborError::NotDeterministic)); // 23 in long form
        check("190001", Err(CborError::NotDeterministic)); // 1 in 2-byte form
        check("9f01ff", Err(CborError::NotDeterministic)); // indefinite array
        check("5f4101ff", Err(CborError::NotDeterministic)); // indefinite bytes
        check("0101", Err(CborError::NotDeterministic)); // trailing byte
        check("fb3ff0000000000000", Err(CborError::NotDeterministic)); // 1.0 not in f16
        check("f93c00", Ok(())); // 1.0 in preferred half precision
        check("1c", Err(CborError::Malformed)); // reserved additional info
        check("", Err(CborError::Malformed));
        check("a1", Err(CborError::Malformed)); // truncated
    }

    #[test]
    fn rejects_overlong_and_deep_input() {
        assert!(matches!(
            decode_deterministic(&[0u8; 20], 10),
            Err(CborError::TooLong { len: 20, max: 10 })
        ));
        let deep: Vec<u8> = core::iter::repeat_n(0x81, 100).chain([0x00]).collect();
        assert_eq!(decode_deterministic(&deep, 1024), Err(CborError::Malformed));
    }
}
