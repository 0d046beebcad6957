//! The ingest batch: the `application/cbor` body of `POST /v1/ingest`, written by the gateway's
//! uploader and read by the service.
//!
//! ```cddl
//! ingest-batch = [ 1*2000 envelope: bstr ]   ; definite lengths, shortest form
//! ```
//!
//! Each item is one gateway envelope's bytes exactly as the gateway signed them (decoded and
//! checked one by one afterwards: a bad item is rejected on its own, not the batch). The decoder
//! reads the CBOR heads itself and refuses an item count or an item length over the limits
//! before allocating anything: an 8 MB body of empty byte strings is refused at its first head,
//! not after building millions of values. It borrows the items from the body (no copies), and
//! refuses indefinite lengths, non-shortest heads, other types, truncation and trailing bytes.

use alloc::vec::Vec;

/// Most envelopes in one batch.
pub const MAX_BATCH_ITEMS: usize = 2000;

/// Why a batch was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// Not a CBOR array of definite length.
    #[error("the body must be a CBOR array of byte strings (definite length)")]
    NotAnArray,
    /// No item.
    #[error("the batch holds no envelopes")]
    Empty,
    /// More items than allowed.
    #[error("the batch holds {count} envelopes, more than {max}")]
    TooMany {
        /// Items announced.
        count: u64,
        /// The limit.
        max: usize,
    },
    /// An item is not a definite-length byte string.
    #[error("item {0} is not a CBOR byte string (definite length)")]
    NotBytes(usize),
    /// An item is longer than allowed.
    #[error("item {index} is {len} bytes, more than {max}")]
    ItemTooLong {
        /// The item.
        index: usize,
        /// Its announced length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A head is not in its shortest form.
    #[error("a CBOR length is not in its shortest form")]
    NotShortest,
    /// The body ends inside an item.
    #[error("the body ends inside the batch")]
    Truncated,
    /// Bytes follow the array.
    #[error("bytes follow the batch")]
    TrailingBytes,
}

/// A CBOR head: (major type, argument) and the bytes it took.
fn head(bytes: &[u8]) -> Result<(u8, u64, usize), BatchError> {
    let first = *bytes.first().ok_or(BatchError::Truncated)?;
    let (major, info) = (first >> 5, first & 0x1f);
    let (arg, len) = match info {
        0..=23 => (u64::from(info), 1),
        24..=27 => {
            let n = 1usize << (info - 24);
            let raw = bytes.get(1..1 + n).ok_or(BatchError::Truncated)?;
            let arg = raw.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b));
            // Shortest form: the argument needs this many bytes.
            let min = match n {
                1 => 24,
                2 => 0x100,
                4 => 0x1_0000,
                _ => 0x1_0000_0000,
            };
            if arg < min {
                return Err(BatchError::NotShortest);
            }
            (arg, 1 + n)
        }
        // 28–30 reserved, 31 indefinite length.
        _ => return Err(BatchError::NotAnArray),
    };
    Ok((major, arg, len))
}

/// Encodes envelopes as an ingest batch.
pub fn encode<T: AsRef<[u8]>>(envelopes: &[T]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        9 + envelopes
            .iter()
            .map(|e| e.as_ref().len() + 9)
            .sum::<usize>(),
    );
    put_head(&mut out, 4, envelopes.len() as u64);
    for e in envelopes {
        put_head(&mut out, 2, e.as_ref().len() as u64);
        out.extend_from_slice(e.as_ref());
    }
    out
}

fn put_head(out: &mut Vec<u8>, major: u8, arg: u64) {
    let m = major << 5;
    match arg {
        0..=23 => out.push(m | arg as u8),
        24..=0xff => out.extend_from_slice(&[m | 24, arg as u8]),
        0x100..=0xffff => {
            out.push(m | 25);
            out.extend_from_slice(&(arg as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(m | 26);
            out.extend_from_slice(&(arg as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&arg.to_be_bytes());
        }
    }
}

/// Decodes a batch of at most `max_items` envelopes of at most `max_item_len` bytes each,
/// borrowing them from `bytes`.
pub fn decode(
    bytes: &[u8],
    max_items: usize,
    max_item_len: usize,
) -> Result<Vec<&[u8]>, BatchError> {
    let (major, count, mut at) = head(bytes)?;
    if major != 4 {
        return Err(BatchError::NotAnArray);
    }
    if count == 0 {
        return Err(BatchError::Empty);
    }
    if count > max_items as u64 {
        return Err(BatchError::TooMany {
            count,
            max: max_items,
        });
    }
    let mut items = Vec::with_capacity(count as usize);
    for index in 0..count as usize {
        let (major, len, n) = match head(&bytes[at..]) {
            Err(BatchError::NotAnArray) => return Err(BatchError::NotBytes(index)),
            other => other?,
        };
        if major != 2 {
            return Err(BatchError::NotBytes(index));
        }
        if len > max_item_len as u64 {
            return Err(BatchError::ItemTooLong {
                index,
                len,
                max: max_item_len,
            });
        }
        let start = at + n;
        let end = start + len as usize;
        items.push(bytes.get(start..end).ok_or(BatchError::Truncated)?);
        at = end;
    }
    if at != bytes.len() {
        return Err(BatchError::TrailingBytes);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn round_trip_at_every_head_size() {
        for n in [1usize, 23, 24, 255, 256, 2000] {
            let items: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; i % 300]).collect();
            let bytes = encode(&items);
            let got = decode(&bytes, 2000, 4096).unwrap();
            assert_eq!(got.len(), n);
            assert!(got.iter().zip(&items).all(|(a, b)| *a == b.as_slice()));
        }
        // Large items: 2- and 4-byte length heads.
        let big = vec![vec![7u8; 70_000]];
        assert_eq!(decode(&encode(&big), 1, 100_000).unwrap()[0].len(), 70_000);
    }

    #[test]
    fn rejections_before_allocation() {
        // 8 MB of empty byte strings announced by a 4-byte head: refused at the head.
        let mut flood = vec![0x9a];
        flood.extend_from_slice(&4_000_000u32.to_be_bytes());
        flood.extend(core::iter::repeat_n(0x40, 16));
        assert_eq!(
            decode(&flood, 2000, 4096),
            Err(BatchError::TooMany {
                count: 4_000_000,
                max: 2000
            })
        );
        let cases: &[(&[u8], BatchError)] = &[
            (&[], BatchError::Truncated),
            (&[0x80], BatchError::Empty),
            (&[0xa0], BatchError::NotAnArray),
            (&[0x9f, 0x41, 0x00, 0xff], BatchError::NotAnArray), // indefinite array
            (&[0x81, 0x5f, 0x41, 0x00, 0xff], BatchError::NotBytes(0)), // indefinite bytes
            (&[0x81, 0x61, 0x61], BatchError::NotBytes(0)),      // a text string
            (&[0x81, 0x42, 0x00], BatchError::Truncated),
            (&[0x81, 0x41, 0x00, 0x00], BatchError::TrailingBytes),
            (&[0x98, 0x01, 0x41, 0x00], BatchError::NotShortest), // count 1 in a 1-byte head
            (&[0x81, 0x58, 0x01, 0x00], BatchError::NotShortest), // length 1 in a 1-byte head
            (&[0x81, 0x59], BatchError::Truncated),
        ];
        for (bytes, want) in cases {
            assert_eq!(
                decode(bytes, 2000, 4096).as_ref().err(),
                Some(want),
                "{bytes:02x?}"
            );
        }
        assert_eq!(
            decode(&encode(&[vec![0u8; 5000]]), 10, 4096),
            Err(BatchError::ItemTooLong {
                index: 0,
                len: 5000,
                max: 4096
            })
        );
        // An item length past the end of the body.
        let mut lie = vec![0x81, 0x59];
        lie.extend_from_slice(&1000u16.to_be_bytes());
        assert_eq!(decode(&lie, 10, 4096), Err(BatchError::Truncated));
    }
}
