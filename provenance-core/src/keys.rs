//! Ed25519 keys, key identifiers, and the one signature rule with its single and batch paths.
//!
//! Every signature in the system (sensor, gateway, certificate, checkpoint) is accepted or
//! refused by one rule, [`verify_signature`], and [`BatchVerifier`] answers exactly the same
//! for every item, alone or in a batch. The rule (RFC 8032 §5.1.7 with the choices that make a
//! batch agree with single verification, as ZIP 215 argues, and stricter on encodings):
//!
//! 1. `S` is canonical (`S < ℓ`);
//! 2. the encodings of `A` (the key) and `R` are canonical (`y < p`) and decode to points;
//! 3. neither `A` nor `R` is of small order (no weak keys, no signature valid for any message);
//! 4. the **cofactored** equation `[8]([S]B − [k]A − R) = 0` holds, `k = SHA-512(R ‖ A ‖ M)`.
//!
//! Cofactored, because a batch can only check the cofactored equation exactly: a random linear
//! combination of cofactorless equations accepts a signature whose `R` carries a torsion
//! component with probability up to 1/2 (the speccheck cases 4 and 5 show the difference; see
//! the table in docs/FORMATS.md). Honest signatures satisfy both equations, so `pycose`,
//! OpenSSL and every RFC 8032 verifier accept what we produce.

use alloc::vec::Vec;
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256, Sha512};

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

/// The canonical encoding check: the 255-bit `y` (sign bit cleared) is below `p = 2^255 − 19`.
fn canonical_y(bytes: &[u8; 32]) -> bool {
    let top = bytes[31] & 0x7f;
    // y ≥ p exactly when the high bytes are all ones and the low byte is at least 0xed.
    !(top == 0x7f && bytes[1..31].iter().all(|b| *b == 0xff) && bytes[0] >= 0xed)
}

/// A signature checked against rules 1–3 of the module rule, ready for the equation.
struct Prepared {
    /// The encodings as given (canonical, checked), for the batch transcript.
    encoded: ([u8; 32], [u8; 32]),
    a: EdwardsPoint,
    r: EdwardsPoint,
    s: Scalar,
    k: Scalar,
}

/// Rules 1–3 and the challenge `k`; `None` if the signature fails them.
fn prepare(key: &VerifyingKey, msg: &[u8], sig: &Signature) -> Option<Prepared> {
    let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(*sig.s_bytes()))?;
    let (a_bytes, r_bytes) = (key.as_bytes(), sig.r_bytes());
    if !canonical_y(a_bytes) || !canonical_y(r_bytes) {
        return None;
    }
    let a = key.to_edwards();
    let r = CompressedEdwardsY(*r_bytes).decompress()?;
    if a.is_small_order() || r.is_small_order() {
        return None;
    }
    let h = Sha512::new()
        .chain_update(r_bytes)
        .chain_update(a_bytes)
        .chain_update(msg)
        .finalize();
    let mut wide = [0u8; 64];
    wide.copy_from_slice(&h);
    let k = Scalar::from_bytes_mod_order_wide(&wide);
    Some(Prepared {
        encoded: (*a_bytes, *r_bytes),
        a,
        r,
        s,
        k,
    })
}

/// The cofactored equation for one prepared signature.
fn equation_holds(p: &Prepared) -> bool {
    (EdwardsPoint::vartime_double_scalar_mul_basepoint(&p.k, &(-p.a), &p.s) - p.r)
        .mul_by_cofactor()
        .is_identity()
}

/// The one signature rule of the system (see the module documentation).
pub fn verify_signature(key: &VerifyingKey, msg: &[u8], sig: &Signature) -> bool {
    prepare(key, msg, sig).is_some_and(|p| equation_holds(&p))
}

/// This machine's Ed25519 batch-verification rate on `threads` threads, signatures per second
/// (batches of 256 over 240-byte messages, one key): the ceiling the benchmarks report beside
/// their figures, measured in the same run.
#[cfg(feature = "std")]
pub fn batch_verification_rate(threads: usize) -> f64 {
    use ed25519_dalek::{Signer, SigningKey};
    let k = SigningKey::from_bytes(&[9; 32]);
    let msgs: Vec<Vec<u8>> = (0..16_384u32).map(|i| i.to_le_bytes().repeat(60)).collect();
    let sigs: Vec<Signature> = msgs.iter().map(|m| k.sign(m)).collect();
    let threads = threads.max(1);
    let t = std::time::Instant::now();
    std::thread::scope(|sc| {
        for part in 0..threads {
            let (msgs, sigs, k) = (&msgs, &sigs, &k);
            sc.spawn(move || {
                for (m, s) in msgs
                    .chunks(256)
                    .zip(sigs.chunks(256))
                    .skip(part)
                    .step_by(threads)
                {
                    let mut b = BatchVerifier::new();
                    for (m, s) in m.iter().zip(s) {
                        b.push(k.verifying_key(), m.clone(), *s);
                    }
                    // Valid signatures: a failing batch would only make the ceiling look lower.
                    let _ = b.verify();
                }
            });
        }
    });
    msgs.len() as f64 / t.elapsed().as_secs_f64()
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

    /// Verifies every item. `Ok(())` if every item satisfies [`verify_signature`]; otherwise
    /// the indices of exactly the items that do not, in order.
    ///
    /// Items failing rules 1–3 are refused on their own. The rest are checked with one
    /// cofactored batch equation `[8](−(Σ zᵢSᵢ)B + Σ zᵢRᵢ + Σ (zᵢkᵢ)Aᵢ) = 0`; the 128-bit
    /// coefficients `zᵢ` are derived from a hash of the whole batch (every `R`, `A`, `S` and
    /// challenge), so nobody who cannot find SHA-512 collisions can choose them, and the batch
    /// needs no randomness source. If the equation fails, each item is checked alone.
    pub fn verify(&self) -> Result<(), Vec<usize>> {
        let mut bad = Vec::new();
        let mut ready: Vec<(usize, Prepared)> = Vec::with_capacity(self.len());
        for i in 0..self.len() {
            match prepare(&self.keys[i], &self.messages[i], &self.signatures[i]) {
                Some(p) => ready.push((i, p)),
                None => bad.push(i),
            }
        }
        if !ready.is_empty() && !Self::batch_equation(&ready) {
            bad.extend(
                ready
                    .iter()
                    .filter(|(_, p)| !equation_holds(p))
                    .map(|(i, _)| *i),
            );
            bad.sort_unstable();
        }
        if bad.is_empty() {
            Ok(())
        } else {
            Err(bad)
        }
    }

    fn batch_equation(items: &[(usize, Prepared)]) -> bool {
        if let [(_, one)] = items {
            return equation_holds(one);
        }
        let mut transcript = Sha512::new_with_prefix(b"vitals-ledger batch v1");
        for (_, p) in items {
            transcript.update(p.encoded.1);
            transcript.update(p.encoded.0);
            transcript.update(p.s.as_bytes());
            transcript.update(p.k.as_bytes());
        }
        let seed = transcript.finalize();
        let mut b_coefficient = Scalar::ZERO;
        let mut scalars = Vec::with_capacity(2 * items.len() + 1);
        let mut points = Vec::with_capacity(2 * items.len() + 1);
        for (n, (_, p)) in items.iter().enumerate() {
            let h = Sha512::new()
                .chain_update(seed)
                .chain_update((n as u64).to_le_bytes())
                .finalize();
            let mut z = [0u8; 16];
            z.copy_from_slice(&h[..16]);
            let z = Scalar::from(u128::from_le_bytes(z));
            b_coefficient -= z * p.s;
            scalars.push(z);
            points.push(p.r);
            scalars.push(z * p.k);
            points.push(p.a);
        }
        scalars.push(b_coefficient);
        points.push(ED25519_BASEPOINT_POINT);
        EdwardsPoint::vartime_multiscalar_mul(scalars, points)
            .mul_by_cofactor()
            .is_identity()
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
