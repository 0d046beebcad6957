//! Ed25519 keys, key identifiers, strict single verification and batch verification.
//!
//! Every signature in the system is Ed25519 (RFC 8032) checked with `verify_strict`, which
//! rejects small-order public keys and small-order `R` components, so no signature is malleable
//! and no weak key is accepted. [`BatchVerifier`] checks many signatures at once for the ingest
//! hot path; it screens out what strict verification would reject first, and when a batch fails
//! it falls back to single strict checks to name every bad signature.

use alloc::vec::Vec;
use curve25519_dalek::edwards::CompressedEdwardsY;
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

/// Length of a [`KeyId`] in bytes.
pub const KEY_ID_LEN: usize = 20;

/// A key identifier: the first 160 bits of SHA-256 over the raw 32-byte Ed25519 public key
/// (RFC 7093 §2, method 1). It is the COSE `kid` and the X.509 subject key identifier.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl KeyId {
    /// The key identifier of an Ed25519 public key.
    pub fn of(key: &VerifyingKey) -> Self {
        let digest = Sha256::digest(key.as_bytes());
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&digest[..KEY_ID_LEN]);
        Self(id)
    }

    /// Parses a key identifier from its bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        Some(Self(bytes.try_into().ok()?))
    }

    /// Lower-case hex.
    pub fn to_hex(&self) -> alloc::string::String {
        hex::encode(self.0)
    }
}

impl core::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "KeyId({})", self.to_hex())
    }
}

impl core::fmt::Display for KeyId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Parses a raw 32-byte Ed25519 public key, rejecting malformed and small-order (weak) keys.
pub fn parse_public_key(bytes: &[u8]) -> Option<VerifyingKey> {
    let raw: [u8; 32] = bytes.try_into().ok()?;
    let key = VerifyingKey::from_bytes(&raw).ok()?;
    (!key.is_weak()).then_some(key)
}

/// Parses a 64-byte Ed25519 signature.
pub fn parse_signature(bytes: &[u8]) -> Option<Signature> {
    Signature::from_slice(bytes).ok()
}

/// Strict single verification (`verify_strict`).
pub fn verify_strict(key: &VerifyingKey, msg: &[u8], sig: &Signature) -> bool {
    key.verify_strict(msg, sig).is_ok()
}

/// True if batch verification would agree with strict verification on this item: the key is
/// not weak, `R` decodes to a point of more than small order, and `s` is canonical.
fn strict_preconditions(key: &VerifyingKey, sig: &Signature) -> bool {
    if key.is_weak() {
        return false;
    }
    match CompressedEdwardsY(*sig.r_bytes()).decompress() {
        Some(r) if !r.is_small_order() => {}
        _ => return false,
    }
    // s < L is checked by `Signature::from_bytes`-based verification; a non-canonical s fails
    // both batch and strict checks, so it needs no screening here.
    true
}

/// Collects `(message, signature, key)` triples and verifies them together.
#[derive(Default)]
pub struct BatchVerifier {
    messages: Vec<Vec<u8>>,
    signatures: Vec<Signature>,
    keys: Vec<VerifyingKey>,
}

impl BatchVerifier {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one item; its position in the batch is its index in [`BatchVerifier::verify`]'s
    /// answer.
    pub fn push(&mut self, key: VerifyingKey, message: Vec<u8>, signature: Signature) -> usize {
        self.messages.push(message);
        self.signatures.push(signature);
        self.keys.push(key);
        self.messages.len() - 1
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// True if the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Verifies every item. `Ok(())` if all are valid under strict verification; otherwise the
    /// indices of exactly the invalid items, in order.
    pub fn verify(&self) -> Result<(), Vec<usize>> {
        if self.is_empty() {
            return Ok(());
        }
        let screened = self
            .keys
            .iter()
            .zip(&self.signatures)
            .all(|(k, s)| strict_preconditions(k, s));
        if screened && self.batch_ok() {
            return Ok(());
        }
        let bad: Vec<usize> = (0..self.len())
            .filter(|&i| !verify_strict(&self.keys[i], &self.messages[i], &self.signatures[i]))
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad)
        }
    }

    #[cfg(feature = "std")]
    fn batch_ok(&self) -> bool {
        let msgs: Vec<&[u8]> = self.messages.iter().map(Vec::as_slice).collect();
        ed25519_dalek::verify_batch(&msgs, &self.signatures, &self.keys).is_ok()
    }

    /// Without `std` there is no randomness source for batch coefficients: check one by one.
    #[cfg(not(feature = "std"))]
    fn batch_ok(&self) -> bool {
        (0..self.len())
            .all(|i| verify_strict(&self.keys[i], &self.messages[i], &self.signatures[i]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn batch_names_every_bad_signature() {
        let mut batch = BatchVerifier::new();
        for i in 0..10u8 {
            let k = key(i);
            let msg = alloc::vec![i; 40];
            let mut sig = k.sign(&msg);
            if i == 3 || i == 7 {
                // Sign something else: a valid signature over the wrong message.
                sig = k.sign(b"other");
            }
            batch.push(k.verifying_key(), msg, sig);
        }
        assert_eq!(batch.verify(), Err(alloc::vec![3, 7]));
    }

    #[test]
    fn batch_accepts_all_good() {
        let mut batch = BatchVerifier::new();
        for i in 0..10u8 {
            let k = key(i);
            batch.push(k.verifying_key(), alloc::vec![i], k.sign(&[i]));
        }
        assert_eq!(batch.verify(), Ok(()));
        assert_eq!(BatchVerifier::new().verify(), Ok(()));
    }

    #[test]
    fn weak_keys_are_rejected() {
        // The identity point (small order) encodes as 0x01 followed by zeros.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert!(parse_public_key(&identity).is_none());
        assert!(parse_public_key(&[0u8; 31]).is_none());
        assert!(parse_public_key(key(1).verifying_key().as_bytes()).is_some());
    }

    #[test]
    fn small_order_r_is_screened_from_the_batch() {
        // A signature whose R is the identity point must not pass, batched or not.
        let k = key(9);
        let mut bytes = k.sign(b"m").to_bytes();
        bytes[..32].copy_from_slice(&{
            let mut id = [0u8; 32];
            id[0] = 1;
            id
        });
        let sig = Signature::from_bytes(&bytes);
        let mut batch = BatchVerifier::new();
        batch.push(k.verifying_key(), b"m".to_vec(), sig);
        assert_eq!(batch.verify(), Err(alloc::vec![0]));
    }
}
