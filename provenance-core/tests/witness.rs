//! C2SP tlog-witness and tlog-cosignature: the specifications' published examples, the request
//! and answer formats (round trip and rejection), and every answer of the witness's decision.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use ed25519_dalek::SigningKey;
use provenance_core::checkpoint::Checkpoint;
use provenance_core::merkle::{self, MemoryTree};
use provenance_core::note::{self, Cosigner, NoteSigner, NoteVerifier};
use provenance_core::witness::{self, AddCheckpoint, Cosigned, Refusal};

/// The example request body of c2sp.org/tlog-witness.
const SPEC_REQUEST: &str = "old 20852014
PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=
jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=
5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=
/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=

example.com/behind-the-sofa
20852163
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=
\u{2014} example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=
";

/// The example response body of c2sp.org/tlog-witness.
const SPEC_RESPONSE: &str = "\u{2014} witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQLrdk3DXDqI5G2HgLatVs0pWh6Up69HVOw==
\u{2014} witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+DlkL0+UfzuOBMh9ChdMkP1vi/lCAsmlw==
\u{2014} witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==
";

/// The cosigned checkpoint example of c2sp.org/tlog-cosignature.
const SPEC_COSIGNED: &str = "example.com/behind-the-sofa
20852163
CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=

\u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=
\u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==
";

#[test]
fn spec_request_example_parses() {
    let req = AddCheckpoint::parse(SPEC_REQUEST).expect("the spec's example request");
    assert_eq!(req.old_size, 20852014);
    assert_eq!(req.proof.len(), 4);
    assert_eq!(
        B64.encode(req.proof[0]),
        "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw="
    );
    assert_eq!(req.origin(), Some("example.com/behind-the-sofa"));
    let split = note::split(req.checkpoint).expect("its checkpoint is a signed note");
    assert_eq!(split.signatures.len(), 2);
    let cp = Checkpoint::from_text(split.text).expect("a checkpoint");
    assert_eq!(
        (cp.origin.as_str(), cp.size),
        ("example.com/behind-the-sofa", 20852163)
    );
    // Encoding the parsed request gives the same bytes back.
    assert_eq!(
        AddCheckpoint::encode(req.old_size, &req.proof, req.checkpoint),
        SPEC_REQUEST
    );
}

#[test]
fn spec_response_example_parses() {
    let lines = witness::parse_cosignatures(SPEC_RESPONSE).expect("the spec's example answer");
    assert_eq!(lines.len(), 3);
    // Appended to the checkpoint, the answer is a well-formed note with five signatures.
    let req = AddCheckpoint::parse(SPEC_REQUEST).expect("request");
    let joined = format!("{}{}", req.checkpoint, SPEC_RESPONSE);
    let split = note::split(&joined).expect("checkpoint + answer");
    assert_eq!(split.signatures.len(), 5);
    // Each is a timestamped signature: key ID, 8-byte timestamp, 64-byte signature.
    for s in &split.signatures[2..] {
        assert_eq!(s.signature.len(), 72, "{}", s.name);
    }
}

#[test]
fn spec_cosignature_example_parses() {
    let split = note::split(SPEC_COSIGNED).expect("the spec's cosigned checkpoint");
    let w = &split.signatures[1];
    assert_eq!(w.name, "witness.example.com/w1");
    assert_eq!(w.signature.len(), 72);
    // The timestamp is the one of the specification's signed-message example (`time
    // 1679315147`).
    let ts = u64::from_be_bytes(w.signature[..8].try_into().expect("8 bytes"));
    assert_eq!(ts, 1679315147);
    // The examples carry no public keys: a verifier that does not know the witness ignores
    // its line, and a key of that name with another hash does not match it.
    let other = Cosigner::new("witness.example.com/w1", SigningKey::from_bytes(&[9; 32]))
        .expect("cosigner")
        .verifier();
    assert_eq!(witness::cosigned_by(SPEC_COSIGNED, &[&other]), Ok(vec![]));
}

#[test]
fn spec_signed_message_format() {
    // c2sp.org/tlog-cosignature: the signed message is `cosignature/v1`, `time <ts>`, then the
    // note text. A signature over exactly that verifies with the plain Ed25519 key.
    let key = SigningKey::from_bytes(&[7; 32]);
    let c = Cosigner::new("witness.example.com/w1", key.clone()).expect("cosigner");
    let text =
        "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
    let line = c.signature_line(text, 1679315147);
    let blob = B64
        .decode(line.trim_end().rsplit(' ').next().expect("b64"))
        .expect("base64");
    let msg = format!("cosignature/v1\ntime 1679315147\n{text}");
    let sig = ed25519_dalek::Signature::from_slice(&blob[12..]).expect("sig");
    use ed25519_dalek::Verifier;
    key.verifying_key()
        .verify(msg.as_bytes(), &sig)
        .expect("the cosignature signs the spec's message");
    // Key ID: SHA-256(name ‖ "\n" ‖ 0x04 ‖ key)[:4].
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"witness.example.com/w1\n\x04");
    h.update(key.verifying_key().as_bytes());
    assert_eq!(&blob[..4], &h.finalize()[..4]);
    assert_eq!(&blob[4..12], &1679315147u64.to_be_bytes());
}

#[test]
fn cosigner_keys_round_trip_and_reject() {
    let c = Cosigner::new("witness.example/w", SigningKey::from_bytes(&[3; 32])).expect("c");
    let skey = c.to_skey();
    let back = Cosigner::from_skey(&skey).expect("round trip");
    assert_eq!(back.verifier(), c.verifier());
    assert!(
        !format!("{c:?}").contains(&skey[20..]),
        "Debug hides the key"
    );
    // A plain note signer key is not a cosigner key, and the other way round.
    let plain = NoteSigner::new("witness.example/w", SigningKey::from_bytes(&[3; 32])).expect("s");
    assert!(Cosigner::from_skey(&plain.to_skey()).is_err());
    assert!(NoteSigner::from_skey(&skey).is_err());
    // A wrong hash, a wrong name, a short seed.
    let bad_hash = skey.replace(skey.split('+').nth(3).expect("hash"), "00000000");
    assert!(Cosigner::from_skey(&bad_hash).is_err());
    assert!(Cosigner::from_skey(&skey.replace("witness.example/w", "other")).is_err());
    assert!(Cosigner::from_skey("PRIVATE+KEY+w+00000000+BAAA").is_err());
    let vkey = c.verifier().to_vkey();
    assert_eq!(NoteVerifier::from_vkey(&vkey).expect("vkey"), c.verifier());
    assert!(!vkey.contains(&skey[skey.len() - 20..]));
}

#[test]
fn request_round_trip_and_rejections() {
    let note = "log.example\n5\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u{2014} log.example AAAAAQAB\n";
    let proof = [[1u8; 32], [2u8; 32]];
    let body = AddCheckpoint::encode(3, &proof, note);
    let req = AddCheckpoint::parse(&body).expect("round trip");
    assert_eq!(
        (req.old_size, req.proof.as_slice(), req.checkpoint),
        (3, &proof[..], note)
    );
    let zero = AddCheckpoint::encode(0, &[], note);
    assert!(zero.starts_with("old 0\n\n"));
    assert_eq!(AddCheckpoint::parse(&zero).expect("zero").proof.len(), 0);
    let h = B64.encode([0u8; 32]);
    let long: String = (0..64).map(|_| format!("{h}\n")).collect();
    for bad in [
        String::new(),
        format!("old 3\n{note}"),    // no empty line
        format!("old 03\n\n{note}"), // leading zero
        format!("old -1\n\n{note}"),
        format!("new 3\n\n{note}"),
        format!("old  3\n\n{note}"),
        format!("old 3\nAAAA\n\n{note}"), // not 32 bytes
        format!("old 3\n{h} \n\n{note}"), // trailing space
        format!("old 3\n{long}\n{note}"), // 64 proof lines
        "old 3\n\nnot a note\n".to_string(),
        format!("old 3\n\n{}", "x".repeat(witness::MAX_REQUEST_LEN)),
    ] {
        assert!(
            matches!(AddCheckpoint::parse(&bad), Err(Refusal::BadRequest(_))),
            "{bad:.60?}"
        );
    }
    // 63 proof lines are allowed.
    let ok: String = (0..63).map(|_| format!("{h}\n")).collect();
    assert_eq!(
        AddCheckpoint::parse(&format!("old 3\n{ok}\n{note}"))
            .expect("63")
            .proof
            .len(),
        63
    );
}

#[test]
fn answer_rejections() {
    for bad in [
        "",
        "\u{2014} w AAAA",
        "- w AAAA\n",
        "\u{2014} w AAAA\nfoo\n",
    ] {
        assert!(witness::parse_cosignatures(bad).is_err(), "{bad:?}");
    }
}

struct Log {
    signer: NoteSigner,
    tree: MemoryTree,
}

impl Log {
    fn new(name: &str, seed: u8) -> Self {
        Self {
            signer: NoteSigner::new(name, SigningKey::from_bytes(&[seed; 32])).expect("signer"),
            tree: MemoryTree::new(),
        }
    }
    fn grow(&mut self, n: u64, tag: u8) {
        for i in 0..n {
            self.tree.push_data(&[tag, i as u8, (i >> 8) as u8]);
        }
    }
    fn checkpoint(&self) -> (Checkpoint, String) {
        let size = self.tree.size();
        let cp = Checkpoint {
            origin: self.signer.name().into(),
            size,
            root: self.tree.root_at(size).expect("root"),
            extensions: vec![],
        };
        let note = cp.sign(&self.signer).expect("sign");
        (cp, note)
    }
    fn request(&self, old: u64) -> String {
        let (cp, note) = self.checkpoint();
        let proof = if old == 0 || old == cp.size {
            vec![]
        } else {
            merkle::consistency_proof(&self.tree, old, cp.size).expect("proof")
        };
        AddCheckpoint::encode(old, &proof, &note)
    }
}

#[test]
fn the_witness_decision() {
    let mut log = Log::new("log.example", 1);
    let verifier = log.signer.verifier();
    let logs = |o: &str| (o == "log.example").then(|| vec![&verifier]);
    let judge = |body: &str, stored: Option<&Cosigned>| {
        witness::judge(&AddCheckpoint::parse(body).expect("parses"), logs, stored)
    };
    // First contact: old 0, no proof.
    log.grow(5, 0);
    let cp = judge(&log.request(0), None).expect("first checkpoint");
    let stored = Cosigned {
        size: cp.size,
        root: cp.root,
    };
    // The same checkpoint again is cosigned again.
    judge(&log.request(5), Some(&stored)).expect("same checkpoint");
    // Growth with a proof from the stored size.
    log.grow(6, 0);
    let next = judge(&log.request(5), Some(&stored)).expect("consistent growth");
    assert_eq!(next.size, 11);
    // The wrong old size: 409 with the stored size.
    assert_eq!(
        judge(&log.request(3), Some(&stored)),
        Err(Refusal::WrongOldSize { latest: 5 })
    );
    assert_eq!(
        judge(&log.request(0), Some(&stored)),
        Err(Refusal::WrongOldSize { latest: 5 })
    );
    assert_eq!(Refusal::WrongOldSize { latest: 5 }.status(), 409);
    // An old size above the checkpoint's: 400.
    let (_, note) = log.checkpoint();
    assert!(matches!(
        judge(&AddCheckpoint::encode(12, &[], &note), Some(&stored)),
        Err(Refusal::BadRequest(_))
    ));
    // A proof that does not verify (one hash flipped): 422.
    let body = log.request(5);
    let mut req = AddCheckpoint::parse(&body).expect("parse");
    req.proof[0][0] ^= 1;
    let flipped = AddCheckpoint::encode(5, &req.proof, req.checkpoint);
    assert_eq!(
        judge(&flipped, Some(&stored)),
        Err(Refusal::BadProof { from: 5, to: 11 })
    );
    assert_eq!(Refusal::BadProof { from: 5, to: 11 }.status(), 422);
    // A proof with old size 0 must be empty.
    let with_proof = AddCheckpoint::encode(0, &[[0; 32]], &note);
    assert!(matches!(
        judge(&with_proof, None),
        Err(Refusal::BadProof { .. })
    ));
    // A split view: the same key signs another tree that shares the first 5 entries.
    // Up to the fork point both views are consistent; past it, the witness refuses the other.
    let mut fork = Log::new("log.example", 1);
    fork.grow(5, 0);
    fork.grow(10, 9);
    judge(&fork.request(5), Some(&stored)).expect("consistent up to the common prefix");
    let eleven = Cosigned {
        size: next.size,
        root: next.root,
    };
    assert_eq!(
        judge(&fork.request(11), Some(&eleven)),
        Err(Refusal::BadProof { from: 11, to: 15 })
    );
    // ... and at the stored size itself: 409 (no size body).
    let mut fork = Log::new("log.example", 1);
    fork.grow(5, 0);
    fork.grow(6, 9);
    assert_eq!(
        judge(&fork.request(11), Some(&eleven)),
        Err(Refusal::RootMismatch { size: 11 })
    );
    assert!(Refusal::RootMismatch { size: 11 }.is_evidence());
    // A smaller tree after a larger one: 409 (the old size cannot match).
    let mut small = Log::new("log.example", 1);
    small.grow(5, 0);
    assert!(matches!(
        judge(&small.request(5), Some(&eleven)),
        Err(Refusal::BadRequest(_)) | Err(Refusal::WrongOldSize { latest: 11 })
    ));
    // An unknown origin: 404; a known origin signed by another key: 403.
    let stranger = Log::new("other.example", 2);
    assert_eq!(
        judge(&stranger.request(0), None),
        Err(Refusal::UnknownOrigin)
    );
    let mut impostor = Log::new("log.example", 3);
    impostor.grow(1, 0);
    assert_eq!(judge(&impostor.request(0), None), Err(Refusal::Forbidden));
    assert_eq!(Refusal::Forbidden.status(), 403);
    assert_eq!(Refusal::UnknownOrigin.status(), 404);
    // A signature by the trusted key that does not verify (text changed after signing): 403.
    let (_, good) = log.checkpoint();
    let tampered = good.replacen("\n11\n", "\n12\n", 1);
    assert_eq!(
        judge(&AddCheckpoint::encode(0, &[], &tampered), None),
        Err(Refusal::Forbidden)
    );
    // Extra signatures by unknown keys are ignored.
    let w = Cosigner::new("w.example", SigningKey::from_bytes(&[4; 32])).expect("w");
    let (cp11, _) = log.checkpoint();
    let extra = format!("{good}{}", w.signature_line(&cp11.to_text(), 1));
    judge(&AddCheckpoint::encode(11, &[], &extra), Some(&eleven)).expect("extra signatures");
    // The cosignature a witness returns verifies with its vkey.
    let line = w.signature_line(&cp11.to_text(), 1_700_000_000);
    let lines = witness::parse_cosignatures(&line).expect("answer");
    let cosigned = format!("{good}{}", lines.concat());
    assert_eq!(
        witness::cosigned_by(&cosigned, &[&w.verifier()]),
        Ok(vec!["w.example".to_string()])
    );
    // A cosignature line over other text, under the witness's name and key ID, is an error.
    let wrong = format!("{good}{}", w.signature_line("other\n", 1));
    assert!(witness::cosigned_by(&wrong, &[&w.verifier()]).is_err());
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any text: parsing never panics, and what parses re-encodes to the same bytes.
        #[test]
        fn parse_never_panics(body in "(old [0-9]{0,4}\n)?([A-Za-z0-9+/=]{0,46}\n){0,3}\n?[ -~\n\u{2014}]{0,200}") {
            if let Ok(req) = AddCheckpoint::parse(&body) {
                prop_assert_eq!(AddCheckpoint::encode(req.old_size, &req.proof, req.checkpoint), body.clone());
            }
            let _ = witness::parse_cosignatures(&body);
            let _ = witness::parse_size_body(&body);
        }

        /// Any request a client can build parses back to itself.
        #[test]
        fn requests_round_trip(old in any::<u64>(), proof in proptest::collection::vec(any::<[u8; 32]>(), 0..64), size in any::<u64>()) {
            let note = format!("log.example\n{size}\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\u{2014} log.example AAAAAQAB\n");
            let body = AddCheckpoint::encode(old, &proof, &note);
            let req = AddCheckpoint::parse(&body).unwrap();
            prop_assert_eq!((req.old_size, req.proof, req.checkpoint), (old, proof, note.as_str()));
        }
    }
}
