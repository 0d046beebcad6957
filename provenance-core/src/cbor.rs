//! Deterministic CBOR (RFC 8949 §4.2.1) on top of `ciborium`.
//!
//! Our structures are maps with small unsigned integer keys and arrays, written with definite
//! lengths and shortest-form integers, keys in ascending order: that is what `ciborium` writes
//! for a [`Value`] built in key order. A decoder accepts input only if re-encoding the decoded
//! value would give back exactly the same bytes, which rejects every non-deterministic encoding
//! (long-form integers, unsorted or duplicate keys, indefinite lengths, non-preferred floats)
//! and trailing bytes, with one rule instead of many. The rule is checked by a byte-level scan
//! (heads, lengths, key order) where it can decide, and by re-encoding where it cannot (floats,
//! bignums, simple values).

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
    let deterministic = match scan(bytes) {
        Scan::Deterministic => true,
        Scan::Not => false,
        // Floats, bignums, simple values: the rule itself decides (re-encoding).
        Scan::Unsure => encode(&value) == bytes && keys_strictly_ordered(&value),
    };
    if !deterministic {
        return Err(CborError::NotDeterministic);
    }
    Ok(value)
}

/// Checks that `bytes`, which `ciborium` decoded as one well-formed item, are in deterministic
/// encoding with no trailing bytes, without decoding them.
pub fn check_deterministic(bytes: &[u8], max: usize) -> Result<(), CborError> {
    match scan(bytes) {
        Scan::Deterministic if bytes.len() <= max => Ok(()),
        _ => decode_deterministic(bytes, max).map(|_| ()),
    }
}

/// What a byte-level scan of one CBOR item says of its encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Exactly the deterministic encoding of its value, nothing after it.
    Deterministic,
    /// Not (a longer head than needed, an indefinite length, keys out of order, trailing bytes).
    Not,
    /// Outside what the scan decides (floats, bignums, simple values, ill-formed input).
    Unsure,
}

/// The fast form of "re-encoding the decoded value gives back the same bytes": every head in its
/// shortest form, definite lengths, map keys in strictly ascending bytewise order of their
/// encodings, one item and nothing after it. About ten times cheaper than re-encoding, and
/// identical to it on what it decides (a differential test against re-encoding keeps it so).
fn scan(bytes: &[u8]) -> Scan {
    let mut pos = 0;
    match scan_item(bytes, &mut pos, 0) {
        Ok(()) if pos == bytes.len() => Scan::Deterministic,
        Ok(()) => Scan::Not,
        Err(s) => s,
    }
}

fn scan_item(b: &[u8], pos: &mut usize, depth: u32) -> Result<(), Scan> {
    // Deeper than any of our structures (and well within ciborium's recursion limit).
    if depth > 8 {
        return Err(Scan::Unsure);
    }
    let ib = *b.get(*pos).ok_or(Scan::Unsure)?;
    *pos += 1;
    let (major, ai) = (ib >> 5, ib & 0x1f);
    if major == 7 {
        // false, true, null; floats and other simple values are left to re-encoding.
        return match ai {
            20..=22 => Ok(()),
            _ => Err(Scan::Unsure),
        };
    }
    let arg = match ai {
        0..=23 => u64::from(ai),
        24..=27 => {
            let n = 1usize << (ai - 24);
            let raw = b.get(*pos..*pos + n).ok_or(Scan::Unsure)?;
            *pos += n;
            let v = raw.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
            let shortest = match n {
                1 => v >= 24,
                2 => v > 0xff,
                4 => v > 0xffff,
                _ => v > 0xffff_ffff,
            };
            if !shortest {
                return Err(Scan::Not);
            }
            v
        }
        31 => return Err(Scan::Not),   // indefinite length
        _ => return Err(Scan::Unsure), // reserved: ill-formed
    };
    match major {
        0 | 1 => Ok(()),
        2 | 3 => {
            let len = usize::try_from(arg).map_err(|_| Scan::Unsure)?;
            let body = b
                .get(*pos..)
                .and_then(|r| r.get(..len))
                .ok_or(Scan::Unsure)?;
            if major == 3 && core::str::from_utf8(body).is_err() {
                return Err(Scan::Unsure);
            }
            *pos += len;
            Ok(())
        }
        4 => (0..arg).try_for_each(|_| scan_item(b, pos, depth + 1)),
        5 => {
            let mut prev: Option<&[u8]> = None;
            for _ in 0..arg {
                let start = *pos;
                scan_item(b, pos, depth + 1)?;
                let key = &b[start..*pos];
                if prev.is_some_and(|p| p >= key) {
                    return Err(Scan::Not);
                }
                prev = Some(key);
                scan_item(b, pos, depth + 1)?;
            }
            Ok(())
        }
        // Bignums (tags 2 and 3) decode to integers that may re-encode otherwise.
        _ if arg == 2 || arg == 3 => Err(Scan::Unsure),
        _ => scan_item(b, pos, depth + 1),
    }
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

    /// The rule as it was first written: decode, re-encode, compare, check key order.
    fn by_reencoding(bytes: &[u8]) -> Result<(), CborError> {
        let value: Value = ciborium::de::from_reader_with_recursion_limit(bytes, 16)
            .map_err(|_| CborError::Malformed)?;
        if encode(&value) != bytes || !keys_strictly_ordered(&value) {
            return Err(CborError::NotDeterministic);
        }
        Ok(())
    }

    fn sample_items() -> Vec<Vec<u8>> {
        let big = Value::Bytes(vec![7; 300]);
        let nested = map(vec![
            (1, uint(23)),
            (2, uint(24)),
            (3, uint(0x1_0000)),
            (24, Value::Text("héllo".into())),
            (
                300,
                Value::Array(vec![
                    Value::Integer((-25).into()),
                    Value::Tag(4, Box::new(Value::Array(vec![uint(1), uint(2)]))),
                    Value::Bool(true),
                    Value::Null,
                    big,
                ]),
            ),
            (u64::MAX, map(vec![(0, Value::Float(1.5))])),
        ]);
        vec![
            encode(&nested),
            hex::decode("a201020304").unwrap(),
            hex::decode("c24101").unwrap(),     // bignum 1
            hex::decode("f97e00").unwrap(),     // NaN
            hex::decode("fa47c35000").unwrap(), // 100000.0 as f32
        ]
    }

    #[test]
    fn scan_decides_like_reencoding_on_samples() {
        for item in sample_items() {
            assert_eq!(
                decode_deterministic(&item, 4096).map(|_| ()),
                by_reencoding(&item),
                "{}",
                hex::encode(&item)
            );
        }
        // Every byte of a rich item changed, removed, or repeated.
        let item = &sample_items()[0];
        for i in 0..item.len() {
            for edit in 0..4u8 {
                let mut m = item.clone();
                match edit {
                    0 => m[i] ^= 0x01,
                    1 => m[i] = m[i].wrapping_add(0x20),
                    2 => {
                        m.remove(i);
                    }
                    _ => m.insert(i, m[i]),
                }
                for got in [
                    decode_deterministic(&m, 4096).map(|_| ()),
                    check_deterministic(&m, 4096),
                ] {
                    assert_eq!(got, by_reencoding(&m), "{}", hex::encode(&m));
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn scan_decides_like_reencoding(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            proptest::prop_assert_eq!(decode_deterministic(&bytes, 4096).map(|_| ()), by_reencoding(&bytes));
            proptest::prop_assert_eq!(check_deterministic(&bytes, 4096), by_reencoding(&bytes));
        }

        #[test]
        fn scan_decides_like_reencoding_on_edits(
            which in 0usize..5,
            edits in proptest::collection::vec((proptest::prelude::any::<usize>(), proptest::prelude::any::<u8>(), 0u8..3), 1..4),
        ) {
            let mut m = sample_items()[which].clone();
            for (at, byte, how) in edits {
                let i = at % (m.len() + 1);
                match how {
                    0 if i < m.len() => m[i] = byte,
                    1 if i < m.len() => { m.remove(i); }
                    _ => m.insert(i, byte),
                }
            }
            proptest::prop_assert_eq!(decode_deterministic(&m, 4096).map(|_| ()), by_reencoding(&m));
            proptest::prop_assert_eq!(check_deterministic(&m, 4096), by_reencoding(&m));
        }
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
