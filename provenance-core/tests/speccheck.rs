//! The ed25519-speccheck edge cases (`testdata/ed25519-speccheck/cases.json`, copied from
//! `shared/testdata/`): every path that decides a signature — [`keys::verify_signature`] (the
//! single path the sensor, gateway, certificate, checkpoint and verifier checks call) and
//! [`BatchVerifier`] (the service's ingest and `ledger-verify export`), alone, among valid
//! signatures, and twice in one batch — accepts exactly the same cases.
//!
//! `cargo test -p provenance-core --test speccheck -- --nocapture` prints the table of
//! docs/FORMATS.md.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use provenance_core::keys::{self, BatchVerifier};
use std::path::Path;

struct Case {
    msg: Vec<u8>,
    key: Option<VerifyingKey>,
    sig: Signature,
}

fn cases() -> Vec<Case> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ed25519-speccheck/cases.json");
    let text = std::fs::read_to_string(&path).expect("speccheck cases");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    v.as_array()
        .expect("array")
        .iter()
        .map(|c| {
            let h = |k: &str| hex::decode(c[k].as_str().expect("hex field")).expect("hex");
            let key: [u8; 32] = h("pub_key").try_into().expect("32-byte key");
            let sig: [u8; 64] = h("signature").try_into().expect("64-byte signature");
            Case {
                msg: h("message"),
                // A key that does not even decode is refused by every path before any check.
                key: VerifyingKey::from_bytes(&key).ok(),
                sig: Signature::from_bytes(&sig),
            }
        })
        .collect()
}

/// The answers of every path for one case: single, batch alone, batch of 64 with the case at
/// three positions among valid signatures, the case twice in one batch.
fn answers(c: &Case) -> Vec<(&'static str, bool)> {
    let Some(key) = c.key else {
        return vec![("decode", false)];
    };
    let single = keys::verify_signature(&key, &c.msg, &c.sig);
    let alone = {
        let mut b = BatchVerifier::new();
        b.push(key, c.msg.clone(), c.sig);
        b.verify().is_ok()
    };
    let mut out = vec![("single", single), ("batch alone", alone)];
    for (name, pos) in [
        ("batch first of 64", 0),
        ("batch middle of 64", 31),
        ("batch last of 64", 63),
    ] {
        let mut b = BatchVerifier::new();
        for i in 0..64u8 {
            if i == pos {
                b.push(key, c.msg.clone(), c.sig);
            } else {
                let k = SigningKey::from_bytes(&[i.wrapping_add(1); 32]);
                let m = vec![i; 100];
                b.push(k.verifying_key(), m.clone(), k.sign(&m));
            }
        }
        let verdict = b.verify();
        // The batch names exactly the case's position, or nothing.
        let accepted = match &verdict {
            Ok(()) => true,
            Err(bad) => {
                assert_eq!(bad, &vec![pos as usize], "{name}: only the case may fail");
                false
            }
        };
        out.push((name, accepted));
    }
    let twice = {
        let mut b = BatchVerifier::new();
        b.push(key, c.msg.clone(), c.sig);
        b.push(key, c.msg.clone(), c.sig);
        b.verify().is_ok()
    };
    out.push(("batch, twice", twice));
    out
}

/// The speccheck cases our rule accepts (docs/FORMATS.md, "Signatures").
const ACCEPTED: &[usize] = &[3, 4, 5];

#[test]
fn every_path_accepts_exactly_the_same_cases() {
    let mut accepted = Vec::new();
    for (i, c) in cases().iter().enumerate() {
        let a = answers(c);
        let dalek_strict = c
            .key
            .is_some_and(|k| k.verify_strict(&c.msg, &c.sig).is_ok());
        println!(
            "case {i:2}: {} | ed25519-dalek verify_strict: {}",
            a.iter()
                .map(|(p, ok)| format!("{p}: {}", if *ok { "accept" } else { "reject" }))
                .collect::<Vec<_>>()
                .join(", "),
            if dalek_strict { "accept" } else { "reject" }
        );
        let first = a[0].1;
        assert!(
            a.iter().all(|(_, ok)| *ok == first),
            "case {i}: the paths disagree: {a:?}"
        );
        if first {
            accepted.push(i);
        }
    }
    assert_eq!(
        accepted, ACCEPTED,
        "the accepted set of the documented rule"
    );
}

/// A key holder's mixed-order `R`: with the secret `a`, sign with `R = [r]B + T` for a point `T`
/// of order 2 and `S = r + k·a`. Then `[S]B − [k]A − R = −T`: the cofactored equation holds and
/// the cofactorless one does not. The batch path used to accept such a signature about half the
/// time while single verification never did, so the log could hold a reading its own evidence
/// failed. Now every path gives the same answer, in every batch.
#[test]
fn a_key_holders_mixed_order_r_gets_the_same_answer_on_every_path() {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT as B;
    use curve25519_dalek::edwards::CompressedEdwardsY;
    use curve25519_dalek::scalar::Scalar;
    use sha2::{Digest, Sha512};
    let a = Scalar::from(0x1234_5678_9abc_def0u64) * Scalar::from(0x0fed_cba9_8765_4321u64);
    let key = VerifyingKey::from_bytes((a * B).compress().as_bytes()).expect("key");
    // The point of order 2 is (0, −1).
    let mut minus_one = [0u8; 32];
    minus_one[0] = 0xec;
    minus_one[1..31].fill(0xff);
    minus_one[31] = 0x7f;
    let t = CompressedEdwardsY(minus_one)
        .decompress()
        .expect("order-2 point");
    assert!(t.is_small_order() && !curve25519_dalek::traits::IsIdentity::is_identity(&t));
    let msg = b"reading".to_vec();
    let r = Scalar::from(987_654_321u64);
    let big_r = (r * B + t).compress();
    let mut h = Sha512::new();
    h.update(big_r.as_bytes());
    h.update(key.as_bytes());
    h.update(&msg);
    let k = Scalar::from_bytes_mod_order_wide(&h.finalize().into());
    let s = r + k * a;
    let mut bytes = [0u8; 64];
    bytes[..32].copy_from_slice(big_r.as_bytes());
    bytes[32..].copy_from_slice(s.as_bytes());
    let c = Case {
        msg,
        key: Some(key),
        sig: Signature::from_bytes(&bytes),
    };
    assert!(
        key.verify_strict(&c.msg, &c.sig).is_err(),
        "cofactorless verification refuses it"
    );
    let answers = answers(&c);
    assert!(answers.iter().all(|(_, ok)| *ok), "{answers:?}");
    // However often it is batched, with whatever neighbours, the answer does not change.
    for n in 2..40u8 {
        let mut b = BatchVerifier::new();
        for i in 0..n {
            if i % 3 == 0 {
                b.push(key, c.msg.clone(), c.sig);
            } else {
                let k = SigningKey::from_bytes(&[i; 32]);
                b.push(k.verifying_key(), vec![i], k.sign(&[i]));
            }
        }
        assert!(b.verify().is_ok(), "batch of {n}");
    }
}

/// Signatures that must never pass: a changed message, a changed `S`, `S ≥ ℓ`, a small-order
/// `R`, a non-canonical `R`, a weak key.
#[test]
fn forgeries_fail_on_every_path() {
    let k = SigningKey::from_bytes(&[3; 32]);
    let msg = b"m".to_vec();
    let sig = k.sign(&msg).to_bytes();
    let mut forged: Vec<(&str, VerifyingKey, Vec<u8>, [u8; 64])> = Vec::new();
    forged.push(("other message", k.verifying_key(), b"n".to_vec(), sig));
    let mut s = sig;
    s[40] ^= 1;
    forged.push(("changed S", k.verifying_key(), msg.clone(), s));
    let mut s = sig;
    s[63] |= 0xf0; // S ≥ ℓ
    forged.push(("S not canonical", k.verifying_key(), msg.clone(), s));
    let mut s = sig;
    s[..32].copy_from_slice(&{
        let mut id = [0u8; 32];
        id[0] = 1;
        id
    });
    forged.push(("identity R", k.verifying_key(), msg.clone(), s));
    let mut s = sig;
    // y = p + 1 encodes the identity point non-canonically.
    s[..32].copy_from_slice(&{
        let mut y = [0xffu8; 32];
        y[0] = 0xee;
        y[31] = 0x7f;
        y
    });
    forged.push(("non-canonical R", k.verifying_key(), msg.clone(), s));
    for (name, key, m, s) in forged {
        let c = Case {
            msg: m,
            key: Some(key),
            sig: Signature::from_bytes(&s),
        };
        let a = answers(&c);
        assert!(a.iter().all(|(_, ok)| !ok), "{name}: {a:?}");
    }
}
