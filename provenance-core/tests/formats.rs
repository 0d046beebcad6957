//! Round-trip and rejection tests for every format: certificates, both COSE layers, registry
//! events, log entries, signed notes, checkpoints, tlog-proofs and evidence bundles.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use ciborium::value::Value;
use common::*;
use provenance_core::bundle::{
    AbsentEnd, EvidenceBundle, MapProof, ProvedEntry, SubjectProof, BUNDLE_MEDIA_TYPE,
};
use provenance_core::cert::{self, CertError, DeviceCert, Role};
use provenance_core::checkpoint::{Checkpoint, CheckpointError};
use provenance_core::cose::{CoseError, GatewayEnvelope, SignedReading};
use provenance_core::keys::{BatchVerifier, KeyId};
use provenance_core::log_entry::{DecodedBody, EntryKind, LogEntry};
use provenance_core::merkle::{self, MemoryTree};
use provenance_core::note::{self, NoteError, NoteSigner, NoteVerifier};
use provenance_core::registry::{RegistryError, RegistryEvent};
use provenance_core::tlog_proof::{TlogProof, TlogProofError};

// ---------- certificates ----------

#[test]
fn certificate_chain_checks() {
    let f = fixture();
    let at = T0 + YEAR;
    f.sensor.check_chain(&f.ca, at).unwrap();
    f.gateway.check_chain(&f.fleet, at).unwrap();
    assert!(
        f.gateway.check_chain(&f.ca, at).is_err(),
        "issued by the fleet CA"
    );
    assert_eq!(f.sensor.subject_cn, "SN-0001");
    assert_eq!(f.sensor.role, Role::Sensor);
    assert_eq!(f.gateway.role, Role::Gateway);
    assert_eq!(f.sensor.key_id, KeyId::of(&f.sensor_key.verifying_key()));
    // Round trip through DER and PEM.
    let again = DeviceCert::from_der(f.sensor.der()).unwrap();
    assert_eq!(again.der(), f.sensor.der());
    let pem = f.sensor.to_pem();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"));
    assert_eq!(DeviceCert::from_pem(&pem).unwrap().der(), f.sensor.der());
}

#[test]
fn certificate_rejections() {
    let f = fixture();
    // Outside validity.
    assert!(matches!(
        f.sensor.check_chain(&f.ca, T0 - 1),
        Err(CertError::Expired { .. })
    ));
    assert!(matches!(
        f.sensor.check_chain(&f.ca, T0 + 6 * YEAR),
        Err(CertError::Expired { .. })
    ));
    // Another CA with the same name but another key.
    let rogue_key = key("rogue-ca");
    let rogue =
        cert::issue_ca(&rogue_key, &params("Example Medical Devices Issuer CA", 1)).unwrap();
    assert!(matches!(
        f.sensor.check_chain(&rogue, T0),
        Err(CertError::WrongIssuer(_))
    ));
    // A device certificate is not a CA.
    assert!(matches!(
        f.gateway.check_chain(&f.sensor, T0),
        Err(CertError::WrongIssuer(_))
    ));
    // Any flipped byte in the DER is rejected at parse or at the signature check.
    let der = f.sensor.der().to_vec();
    for i in (0..der.len()).step_by(7) {
        let mut bad = der.clone();
        bad[i] ^= 0x01;
        let ok = DeviceCert::from_der(&bad).and_then(|c| c.check_chain(&f.ca, T0 + 1));
        assert!(ok.is_err(), "byte {i} flipped yet accepted");
    }
    // Trailing bytes, truncation, over-long input, garbage.
    let mut trailing = der.clone();
    trailing.push(0);
    assert_eq!(
        DeviceCert::from_der(&trailing).unwrap_err(),
        CertError::Malformed
    );
    assert_eq!(
        DeviceCert::from_der(&der[..der.len() - 1]).unwrap_err(),
        CertError::Malformed
    );
    assert!(matches!(
        DeviceCert::from_der(&vec![0x30; 5000]),
        Err(CertError::TooLong(5000))
    ));
    assert_eq!(
        DeviceCert::from_der(b"not a cert").unwrap_err(),
        CertError::Malformed
    );
    assert!(
        DeviceCert::from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
            .is_err()
    );
    // An unknown extension marked critical (RFC 5280 §4.2), even correctly signed: refused.
    {
        use der::{Decode, Encode};
        let mut c = x509_cert::Certificate::from_der(f.sensor.der()).unwrap();
        let mut exts = c.tbs_certificate.extensions.take().unwrap();
        exts.push(x509_cert::ext::Extension {
            extn_id: der::asn1::ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1"),
            critical: true,
            extn_value: der::asn1::OctetString::new(vec![0x05, 0x00]).unwrap(),
        });
        c.tbs_certificate.extensions = Some(exts);
        let tbs = c.tbs_certificate.to_der().unwrap();
        let sig = ed25519_dalek::Signer::sign(&f.ca_key, &tbs);
        c.signature = der::asn1::BitString::from_bytes(&sig.to_bytes()).unwrap();
        assert_eq!(
            DeviceCert::from_der(&c.to_der().unwrap()).unwrap_err(),
            CertError::Extensions("an unknown extension is marked critical")
        );
        // The same extension, not critical, is ignored.
        let mut exts = c.tbs_certificate.extensions.take().unwrap();
        exts.last_mut().unwrap().critical = false;
        c.tbs_certificate.extensions = Some(exts);
        let tbs = c.tbs_certificate.to_der().unwrap();
        let sig = ed25519_dalek::Signer::sign(&f.ca_key, &tbs);
        c.signature = der::asn1::BitString::from_bytes(&sig.to_bytes()).unwrap();
        let ok = DeviceCert::from_der(&c.to_der().unwrap()).unwrap();
        ok.check_chain(&f.ca, T0 + 1).unwrap();
    }
    // Bad device ids cannot be issued.
    assert!(cert::issue_device(
        &f.ca_key,
        &f.ca,
        Role::Sensor,
        &f.sensor_key.verifying_key(),
        &params("bad id", 9)
    )
    .is_err());
    // The CA key must match the CA certificate.
    assert!(cert::issue_device(
        &f.sensor_key,
        &f.ca,
        Role::Sensor,
        &f.sensor_key.verifying_key(),
        &params("SN-9", 9)
    )
    .is_err());
}

// ---------- COSE layers ----------

fn envelope(f: &Fixture, seq: u64) -> Vec<u8> {
    let inner = SignedReading::sign(&reading(seq), &f.sensor_key).unwrap();
    GatewayEnvelope::wrap(&inner, T0 + 3_600_000 + seq * 5000 + 300, &f.gateway_key)
}

#[test]
fn envelope_round_trip_and_verify() {
    let f = fixture();
    let bytes = envelope(&f, 7);
    let env = GatewayEnvelope::decode(&bytes).unwrap();
    env.verify(&f.gateway.public_key, &f.sensor.public_key)
        .unwrap();
    assert_eq!(env.kid, f.gateway.key_id);
    assert_eq!(env.sensor.kid, f.sensor.key_id);
    assert_eq!(env.sensor.reading, reading(7));
    assert_eq!(env.received_at_ms, T0 + 3_600_000 + 7 * 5000 + 300);
    // The inner bytes are carried exactly.
    let inner = SignedReading::sign(&reading(7), &f.sensor_key).unwrap();
    assert_eq!(env.sensor_bytes(), &inner[..]);
    // Signing is deterministic (Ed25519), so the same input gives the same bytes.
    assert_eq!(envelope(&f, 7), bytes);
}

#[test]
fn envelope_rejections() {
    let f = fixture();
    let bytes = envelope(&f, 7);
    let env = GatewayEnvelope::decode(&bytes).unwrap();
    // Swapped keys: kid mismatch.
    assert!(env
        .verify(&f.sensor.public_key, &f.gateway.public_key)
        .is_err());
    // A flipped bit in the gateway signature (last byte of the envelope).
    let mut bad = bytes.clone();
    *bad.last_mut().unwrap() ^= 1;
    let e = GatewayEnvelope::decode(&bad).unwrap();
    assert_eq!(
        e.verify(&f.gateway.public_key, &f.sensor.public_key),
        Err(CoseError::BadSignature("gateway layer"))
    );
    // A sensor signature flipped inside the payload: gateway signature breaks first, so re-wrap.
    let mut inner = SignedReading::sign(&reading(7), &f.sensor_key).unwrap();
    *inner.last_mut().unwrap() ^= 1;
    let rewrapped = GatewayEnvelope::wrap(&inner, 1, &f.gateway_key);
    let e = GatewayEnvelope::decode(&rewrapped).unwrap();
    assert_eq!(
        e.verify(&f.gateway.public_key, &f.sensor.public_key),
        Err(CoseError::BadSignature("sensor layer"))
    );
    // A value changed inside the signed reading (re-encoded with the same signature).
    let inner = SignedReading::sign(&reading(7), &f.sensor_key).unwrap();
    let mut v: Value = ciborium::de::from_reader(&inner[..]).unwrap();
    if let Value::Tag(18, arr) = &mut v {
        if let Value::Array(a) = arr.as_mut() {
            let mut r = reading(7);
            r.seq = 8;
            a[2] = Value::Bytes(r.to_cbor().unwrap());
        }
    }
    let mut tampered = Vec::new();
    ciborium::ser::into_writer(&v, &mut tampered).unwrap();
    let e = GatewayEnvelope::decode(&GatewayEnvelope::wrap(&tampered, 1, &f.gateway_key)).unwrap();
    assert_eq!(
        e.verify(&f.gateway.public_key, &f.sensor.public_key),
        Err(CoseError::BadSignature("sensor layer"))
    );

    // Structural rejections.
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        GatewayEnvelope::decode(&trailing),
        Err(CoseError::Malformed(_))
    ));
    assert!(matches!(
        GatewayEnvelope::decode(&bytes[1..]),
        Err(CoseError::Malformed(_))
    )); // untagged
    let mut other_tag = bytes.clone();
    other_tag[0] = 0xd1; // tag 17 (COSE_Mac0)
    assert!(matches!(
        GatewayEnvelope::decode(&other_tag),
        Err(CoseError::Malformed(_))
    ));
    assert!(matches!(
        GatewayEnvelope::decode(&vec![0u8; 5000]),
        Err(CoseError::TooLong { .. })
    ));
    // The sensor layer alone is not an envelope (wrong content type), and vice versa.
    assert!(matches!(
        GatewayEnvelope::decode(&inner),
        Err(CoseError::Header { .. })
    ));
    assert!(matches!(
        SignedReading::decode(&bytes),
        Err(CoseError::Header { .. })
    ));
}

/// Builds a COSE_Sign1 with arbitrary protected/unprotected headers, to test header rules.
fn custom_sign1(protected: coset::Header, unprotected: coset::Header, payload: Vec<u8>) -> Vec<u8> {
    use coset::TaggedCborSerializable;
    let f = fixture();
    use ed25519_dalek::Signer;
    coset::CoseSign1Builder::new()
        .protected(protected)
        .unprotected(unprotected)
        .payload(payload)
        .create_signature(&[], |tbs| f.sensor_key.sign(tbs).to_bytes().to_vec())
        .build()
        .to_tagged_vec()
        .unwrap()
}

#[test]
fn header_rules() {
    use coset::{iana, HeaderBuilder};
    let f = fixture();
    let kid = f.sensor.key_id.0.to_vec();
    let payload = reading(1).to_cbor().unwrap();
    let ct = provenance_core::cose::READING_CONTENT_TYPE.to_string();
    let good = || {
        HeaderBuilder::new()
            .algorithm(iana::Algorithm::EdDSA)
            .content_type(ct.clone())
            .key_id(kid.clone())
    };
    let ok = custom_sign1(good().build(), Default::default(), payload.clone());
    SignedReading::decode(&ok)
        .unwrap()
        .verify(&f.sensor.public_key)
        .unwrap();
    let cases: Vec<(coset::Header, coset::Header, &str)> = vec![
        (
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::ES256)
                .content_type(ct.clone())
                .key_id(kid.clone())
                .build(),
            Default::default(),
            "algorithm",
        ),
        (
            HeaderBuilder::new()
                .content_type(ct.clone())
                .key_id(kid.clone())
                .build(),
            Default::default(),
            "algorithm",
        ),
        (
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::EdDSA)
                .content_type(ct.clone())
                .key_id(vec![1, 2, 3])
                .build(),
            Default::default(),
            "kid",
        ),
        (
            HeaderBuilder::new()
                .algorithm(iana::Algorithm::EdDSA)
                .content_type("text/plain".into())
                .key_id(kid.clone())
                .build(),
            Default::default(),
            "content type",
        ),
        (
            good().value(99, Value::Null).build(),
            Default::default(),
            "unexpected header",
        ),
        (
            good().build(),
            HeaderBuilder::new().key_id(kid.clone()).build(),
            "unprotected",
        ),
    ];
    for (p, u, want) in cases {
        let err = SignedReading::decode(&custom_sign1(p, u, payload.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "got {err:?}, want {want:?}");
    }
}

#[test]
fn batch_verification_of_envelopes_names_the_bad_one() {
    let f = fixture();
    let mut batch = BatchVerifier::new();
    for seq in 0..20 {
        let mut bytes = envelope(&f, seq);
        if seq == 13 {
            *bytes.last_mut().unwrap() ^= 0x40;
        }
        let env = GatewayEnvelope::decode(&bytes).unwrap();
        let (m, s) = env.signed_data();
        batch.push(f.gateway.public_key, m, s);
        let (m, s) = env.sensor.signed_data();
        batch.push(f.sensor.public_key, m, s);
    }
    assert_eq!(batch.verify(), Err(vec![26]));
}

// ---------- registry events and log entries ----------

fn events(f: &Fixture) -> Vec<RegistryEvent> {
    let mut all = registry_events(f);
    all.push(RegistryEvent::Bind {
        sensor_id: "SN-0001".into(),
        gateway_id: "GW-0001".into(),
        from_ms: T0,
        until_ms: Some(T0 + YEAR),
    });
    all.push(RegistryEvent::RotateKey {
        device_id: "SN-0001".into(),
        cert: f.sensor.der().to_vec(),
        from_ms: T0 + 10,
    });
    all
}

#[test]
fn registry_events_round_trip() {
    let f = fixture();
    for e in events(&f) {
        let bytes = e.to_cbor().unwrap();
        assert_eq!(
            RegistryEvent::from_cbor(&bytes).unwrap(),
            e,
            "{}",
            e.type_name()
        );
    }
}

#[test]
fn registry_event_rejections() {
    let f = fixture();
    let wrong_role = RegistryEvent::EnrollSensor {
        cert: f.gateway.der().to_vec(),
    };
    assert!(matches!(wrong_role.to_cbor(), Err(RegistryError::Field(_))));
    let bad_range = RegistryEvent::Bind {
        sensor_id: "S".into(),
        gateway_id: "G".into(),
        from_ms: 5,
        until_ms: Some(5),
    };
    assert!(bad_range.to_cbor().is_err());
    let rotate_other = RegistryEvent::RotateKey {
        device_id: "SN-0002".into(),
        cert: f.sensor.der().to_vec(),
        from_ms: 0,
    };
    assert!(rotate_other.to_cbor().is_err());
    // A field that does not belong to the type.
    let bind = events(&f)[3].to_cbor().unwrap();
    let Value::Map(mut m) = ciborium::de::from_reader::<Value, _>(&bind[..]).unwrap() else {
        panic!()
    };
    m.push((Value::Integer(9.into()), Value::Text("x".into())));
    let mut extra = Vec::new();
    ciborium::ser::into_writer(&Value::Map(m), &mut extra).unwrap();
    assert!(RegistryEvent::from_cbor(&extra).is_err());
    // Unknown type, trailing bytes.
    let mut unknown = Vec::new();
    ciborium::ser::into_writer(
        &Value::Map(vec![
            (Value::Integer(0.into()), Value::Integer(1.into())),
            (Value::Integer(1.into()), Value::Integer(99.into())),
        ]),
        &mut unknown,
    )
    .unwrap();
    assert_eq!(
        RegistryEvent::from_cbor(&unknown),
        Err(RegistryError::Unsupported)
    );
    let mut trailing = bind.clone();
    trailing.push(0xf6);
    assert!(RegistryEvent::from_cbor(&trailing).is_err());
}

#[test]
fn log_entries_round_trip_and_decode() {
    let f = fixture();
    let reading_entry = LogEntry {
        kind: EntryKind::Reading,
        body: envelope(&f, 1),
        logged_at_ms: T0 + 1,
    };
    let bytes = reading_entry.to_cbor();
    let back = LogEntry::from_cbor(&bytes).unwrap();
    assert_eq!(back, reading_entry);
    assert_eq!(back.leaf_hash(), merkle::leaf_hash(&bytes));
    assert!(matches!(
        back.decode_body().unwrap(),
        DecodedBody::Reading(_)
    ));
    let reg = LogEntry {
        kind: EntryKind::Registry,
        body: events(&f)[0].to_cbor().unwrap(),
        logged_at_ms: T0,
    };
    assert!(matches!(
        LogEntry::from_cbor(&reg.to_cbor())
            .unwrap()
            .decode_body()
            .unwrap(),
        DecodedBody::Registry(_)
    ));
    // Kind mismatch: a registry body under the reading kind fails to decode.
    let wrong = LogEntry {
        kind: EntryKind::Reading,
        body: reg.body.clone(),
        logged_at_ms: 0,
    };
    assert!(LogEntry::from_cbor(&wrong.to_cbor())
        .unwrap()
        .decode_body()
        .is_err());
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(LogEntry::from_cbor(&trailing).is_err());
}

// ---------- notes, checkpoints, tlog-proofs ----------

#[test]
fn signed_notes() {
    let f = fixture();
    let v = f.log.verifier();
    let vkey = v.to_vkey();
    assert!(vkey.starts_with(&format!("{ORIGIN}+")));
    assert_eq!(NoteVerifier::from_vkey(&vkey).unwrap(), v);
    let signed = f.log.sign("hello\nworld\n").unwrap();
    assert_eq!(
        note::open(&signed, &[&v]).unwrap(),
        ("hello\nworld\n", vec![ORIGIN.to_string()])
    );
    // An extra signature by an unknown key (a witness) is tolerated, before or after.
    let witness = NoteSigner::new("witness.example", key("witness")).unwrap();
    let cosigned = format!("{signed}{}", witness.signature_line("hello\nworld\n"));
    assert!(note::open(&cosigned, &[&v]).is_ok());
    assert_eq!(
        note::open(&cosigned, &[&v, &witness.verifier()])
            .unwrap()
            .1
            .len(),
        2
    );
    // Only an unknown key: rejected.
    assert_eq!(
        note::open(&signed, &[&witness.verifier()]),
        Err(NoteError::UnknownSigner)
    );
    // Text changed: the known key's signature fails.
    let changed = signed.replacen("world", "w0rld", 1);
    assert!(matches!(
        note::open(&changed, &[&v]),
        Err(NoteError::BadSignature(_))
    ));
    // Syntax.
    for bad in [
        "no blank line\n— x AAAA\n".to_string(),
        signed.replace('\u{2014}', "-"),
        signed.trim_end().to_string(),
        format!("{signed}\n"),
        "\n\n— a AAAAAAAA\n".into(),
        "a\u{7}b\n\n".to_string() + &f.log.signature_line("a\u{7}b\n"),
    ] {
        assert!(note::open(&bad, &[&v]).is_err(), "{bad:?}");
    }
    assert!(f.log.sign("no newline").is_err());
    assert!(f.log.sign("a\n\nb\n").is_err());
    // vkeys.
    for bad in [
        "",
        "name",
        "name+0000+AAAA",
        &vkey.replacen('+', "+0", 1),
        &vkey.to_uppercase(),
        &vkey[..vkey.len() - 4],
    ] {
        assert!(NoteVerifier::from_vkey(bad).is_err(), "{bad:?}");
    }
    let other_name = vkey.replacen(ORIGIN, "other.example", 1);
    assert!(NoteVerifier::from_vkey(&other_name).is_err());
}

/// A note from Go's golang.org/x/mod/sumdb/note documentation: an independent implementation's
/// key and signature, which must verify here.
#[test]
fn go_sumdb_note_example_verifies() {
    let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    let msg = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    let v = NoteVerifier::from_vkey(vkey).unwrap();
    let (text, by) = note::open(msg, &[&v]).unwrap();
    assert!(text.starts_with("If you think"));
    assert_eq!(by, vec!["PeterNeumann".to_string()]);
}

#[test]
fn checkpoints() {
    let f = fixture();
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: 12345,
        root: [7u8; 32],
        extensions: vec![],
    };
    let signed = cp.sign(&f.log).unwrap();
    assert_eq!(Checkpoint::open(&signed, &f.log.verifier()).unwrap(), cp);
    assert!(signed.starts_with(&format!("{ORIGIN}\n12345\n")));
    let other = NoteSigner::new("other.example/log", key("other")).unwrap();
    assert!(cp.sign(&other).is_err());
    assert!(Checkpoint::open(&signed, &other.verifier()).is_err());
    for bad in [
        "o\n012\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        "o\n12\nAAAA\n",
        "o\n-1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
        "o\n12\n",
        "\n1\nBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=\n",
    ] {
        assert!(Checkpoint::from_text(bad).is_err(), "{bad:?}");
    }
    let with_ext = Checkpoint {
        extensions: vec!["ext one".into()],
        ..cp.clone()
    };
    assert_eq!(
        Checkpoint::from_text(&with_ext.to_text()).unwrap(),
        with_ext
    );
    // Signed by the right key name but a checkpoint of another origin.
    let alien = Checkpoint {
        origin: "x".into(),
        ..cp
    };
    let forged = format!(
        "{}\n{}",
        alien.to_text(),
        f.log.signature_line(&alien.to_text())
    );
    assert!(matches!(
        Checkpoint::open(&forged, &f.log.verifier()),
        Err(CheckpointError::Origin { .. })
    ));
}

fn proved_log(f: &Fixture, n: u64) -> (MemoryTree, Vec<Vec<u8>>, String) {
    let mut tree = MemoryTree::new();
    let mut leaves = Vec::new();
    for i in 0..n {
        let e = LogEntry {
            kind: EntryKind::Reading,
            body: envelope(f, i),
            logged_at_ms: T0 + i,
        };
        leaves.push(e.to_cbor());
        tree.push_data(leaves.last().unwrap());
    }
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: n,
        root: tree.root_at(n).unwrap(),
        extensions: vec![],
    };
    (tree, leaves, cp.sign(&f.log).unwrap())
}

#[test]
fn tlog_proofs() {
    let f = fixture();
    let (tree, leaves, cp) = proved_log(&f, 11);
    for i in 0..11 {
        let p = TlogProof {
            extra: (i % 2 == 0).then(|| b"extra".to_vec()),
            index: i,
            hashes: merkle::inclusion_proof(&tree, i, 11).unwrap(),
            checkpoint: cp.clone(),
        };
        let text = p.encode();
        let back = TlogProof::parse(&text).unwrap();
        assert_eq!(back, p);
        assert_eq!(
            back.verify(&leaves[i as usize], &f.log.verifier())
                .unwrap()
                .size,
            11
        );
        // Another leaf at this index fails.
        assert!(matches!(
            back.verify(&leaves[(i as usize + 1) % 11], &f.log.verifier()),
            Err(TlogProofError::Inclusion(_))
        ));
    }
    let p = TlogProof {
        extra: None,
        index: 3,
        hashes: merkle::inclusion_proof(&tree, 3, 11).unwrap(),
        checkpoint: cp.clone(),
    };
    let text = p.encode();
    for bad in [
        text.replacen("c2sp.org/tlog-proof@v1", "c2sp.org/tlog-proof@v2", 1),
        text.replacen("index 3", "index 03", 1),
        text.replacen("index 3", "index", 1),
        text.replacen("index 3\n", "", 1),
        text.replacen("\n\n", "\n", 1),
        text.replacen("index 3\n", "index 3\nAAAA\n", 1),
    ] {
        assert!(TlogProof::parse(&bad).is_err(), "{bad:?}");
    }
    // A proof against a checkpoint signed by an unknown key.
    let other = NoteSigner::new(ORIGIN, key("impostor")).unwrap();
    let forged_cp = Checkpoint {
        origin: ORIGIN.into(),
        size: 11,
        root: tree.root_at(11).unwrap(),
        extensions: vec![],
    }
    .sign(&other)
    .unwrap();
    let forged = TlogProof {
        checkpoint: forged_cp,
        ..p
    };
    assert!(matches!(
        forged.verify(&leaves[3], &f.log.verifier()),
        Err(TlogProofError::Checkpoint(_))
    ));
}

#[test]
fn evidence_bundles() {
    let f = fixture();
    let (tree, leaves, cp) = proved_log(&f, 4);
    let proof = |i: u64| TlogProof {
        extra: None,
        index: i,
        hashes: merkle::inclusion_proof(&tree, i, 4).unwrap(),
        checkpoint: cp.clone(),
    };
    let b = EvidenceBundle {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        log_vkey: f.log.verifier().to_vkey(),
        reading: ProvedEntry::new(&leaves[2], &proof(2)),
        registry: vec![ProvedEntry::new(&leaves[0], &proof(0))],
        shard_start: None,
        carried_proofs: vec![],
        registry_proofs: vec![SubjectProof {
            subject: "device:SN-0001".into(),
            hashes: vec![{
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.encode([7u8; 32])
            }],
            absent: None,
        }],
    };
    let json = b.to_json();
    assert_eq!(EvidenceBundle::from_json(&json).unwrap(), b);
    let s = String::from_utf8(json).unwrap();
    for bad in [
        s.replace("version=2", "version=1"),
        s.replace("device:SN-0001", "sensor:SN-0001"),
        s.replace("device:SN-0001", "device:../x"),
        s.replacen("\"hashes\": [", "\"hashes\": [\"AAAA\", ", 1),
        s.replacen("\"registry\"", "\"extra\": 1, \"registry\"", 1),
        s.replacen("\"leaf_data\": \"", "\"leaf_data\": \"!", 1),
        s[..s.len() - 2].to_string(),
    ] {
        assert!(EvidenceBundle::from_json(bad.as_bytes()).is_err());
    }
    // An absence proof: an empty subtree, or another key's leaf (both key and value).
    let b64 = |b: [u8; 32]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(b)
    };
    for absent in [
        AbsentEnd {
            key: None,
            value: None,
        },
        AbsentEnd {
            key: Some(b64([1; 32])),
            value: Some(b64([2; 32])),
        },
    ] {
        let mut a = b.clone();
        a.registry_proofs[0].absent = Some(absent);
        let json = a.to_json();
        assert_eq!(EvidenceBundle::from_json(&json).unwrap(), a);
        let (_, proof) = a.registry_proofs[0].parse().unwrap();
        assert!(matches!(proof, MapProof::Absent(_)));
        let s = String::from_utf8(json).unwrap();
        for bad in [
            s.replace(&b64([1; 32]), "AAAA"),
            s.replace(&b64([2; 32]), "!"),
            s.replace("\"absent\": {", "\"absent\": {\"extra\": 1, "),
            s.replace("\"absent\": {}", "\"absent\": {\"key\": \"AAAA\"}"),
            s.replace("\"absent\": {}", "\"absent\": []"),
        ] {
            if bad != s {
                assert!(EvidenceBundle::from_json(bad.as_bytes()).is_err(), "{bad}");
            }
        }
    }
    let mut half = b.clone();
    half.registry_proofs[0].absent = Some(AbsentEnd {
        key: Some(b64([1; 32])),
        value: None,
    });
    assert!(EvidenceBundle::from_json(&half.to_json()).is_err());
    // Proofs against different checkpoints in one bundle.
    let other_cp = Checkpoint {
        origin: ORIGIN.into(),
        size: 3,
        root: tree.root_at(3).unwrap(),
        extensions: vec![],
    }
    .sign(&f.log)
    .unwrap();
    let mixed = EvidenceBundle {
        registry: vec![ProvedEntry::new(
            &leaves[0],
            &TlogProof {
                checkpoint: other_cp,
                hashes: merkle::inclusion_proof(&tree, 0, 3).unwrap(),
                ..proof(0)
            },
        )],
        ..b.clone()
    };
    assert!(EvidenceBundle::from_json(&mixed.to_json()).is_err());
    // Two proofs for one subject.
    let mut twice = b.clone();
    twice.registry_proofs.push(twice.registry_proofs[0].clone());
    assert!(EvidenceBundle::from_json(&twice.to_json()).is_err());
}

/// Cross-check with an independent implementation of signed notes (Cloudflare's `signed_note`
/// crate, a port of Go's `sumdb/note`): its notes open here, ours open there, byte for byte.
#[test]
fn signed_notes_interoperate_with_the_signed_note_crate() {
    use base64::Engine;
    use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
    let f = fixture();
    let v = f.log.verifier();
    let seed = key("log").to_bytes();
    let mut raw = vec![0x01];
    raw.extend_from_slice(&seed);
    let skey = format!(
        "PRIVATE+KEY+{ORIGIN}+{}+{}",
        &v.to_vkey().split('+').nth(1).unwrap(),
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    assert_eq!(skey, f.log.to_skey());
    assert_eq!(NoteSigner::from_skey(&skey).unwrap().verifier(), v);
    for bad in [
        &skey[1..],
        &skey.replacen("+KEY+", "+KEY+x", 1),
        &skey[..skey.len() - 4],
    ] {
        let err = NoteSigner::from_skey(bad).unwrap_err().to_string();
        assert!(
            !err.contains(&skey[skey.len() - 20..]),
            "an error must not repeat the secret"
        );
    }
    let theirs = StandardSigner::new(&skey).unwrap();
    let text = Checkpoint {
        origin: ORIGIN.into(),
        size: 42,
        root: [9u8; 32],
        extensions: vec![],
    }
    .to_text();
    let mut n = Note::new(text.as_bytes(), &[]).unwrap();
    n.add_sigs(&[&theirs]).unwrap();
    let their_bytes = String::from_utf8(n.to_bytes()).unwrap();
    // Same key, same text, deterministic Ed25519: the same note.
    assert_eq!(their_bytes, f.log.sign(&text).unwrap());
    assert_eq!(Checkpoint::open(&their_bytes, &v).unwrap().size, 42);
    // Our vkey parses there, and our note verifies there.
    let their_verifier = StandardVerifier::new(&v.to_vkey()).unwrap();
    let ours = Note::from_bytes(f.log.sign(&text).unwrap().as_bytes()).unwrap();
    let (verified, _) = ours
        .verify(&VerifierList::new(vec![Box::new(their_verifier.clone())]))
        .unwrap();
    assert_eq!(verified.len(), 1);
    // A note we reject for a changed text is rejected there too.
    let changed = f.log.sign(&text).unwrap().replacen("\n42\n", "\n43\n", 1);
    assert!(Note::from_bytes(changed.as_bytes())
        .unwrap()
        .verify(&VerifierList::new(vec![Box::new(their_verifier)]))
        .is_err());
}

/// The example note of the C2SP-conformant Elixir `signed_note` package, another independent
/// implementation.
#[test]
fn elixir_signed_note_example_verifies() {
    let v = NoteVerifier::from_vkey(
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",
    )
    .unwrap();
    let msg = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    assert_eq!(
        note::open(msg, &[&v]).unwrap().0,
        "This is an example message.\n"
    );
}

/// C2SP tlog-cosignature `cosignature/v1`: a witness's timestamped Ed25519 cosignature on a
/// checkpoint, with type 0x04 vkeys.
#[test]
fn witness_cosignatures_v1() {
    use provenance_core::note::Cosigner;
    let f = fixture();
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: 20_852_163,
        root: [7u8; 32],
        extensions: vec![],
    };
    let note = cp.sign(&f.log).unwrap();
    let text = note::split(&note).unwrap().text.to_string();
    let witness = Cosigner::new(
        "witness.example.com/w1",
        ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]),
    )
    .unwrap();
    let line = witness.signature_line(&text, 1_679_315_147);
    let cosigned = format!("{note}{line}");
    let v = witness.verifier();
    let vkey = v.to_vkey();
    // The vkey says type 0x04 and round-trips.
    let raw = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        vkey.splitn(3, '+').nth(2).unwrap(),
    )
    .unwrap();
    assert_eq!(raw[0], 0x04);
    assert_eq!(NoteVerifier::from_vkey(&vkey).unwrap(), v);
    // It verifies, beside the log's own signature.
    let (_, by) = note::open(&cosigned, &[&v]).unwrap();
    assert_eq!(by, vec!["witness.example.com/w1"]);
    assert_eq!(Checkpoint::open(&cosigned, &f.log.verifier()).unwrap(), cp);
    // The signature line is key id ‖ u64 big-endian timestamp ‖ signature, as in the
    // specification's example (whose timestamp bytes decode to 1679315147, like ours).
    let blob = |l: &str| {
        base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            l.trim_end().rsplit(' ').next().unwrap(),
        )
        .unwrap()
    };
    let spec_example = "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==";
    for b in [blob(&line), blob(spec_example)] {
        assert_eq!(b.len(), 4 + 8 + 64);
        assert_eq!(
            u64::from_be_bytes(b[4..12].try_into().unwrap()),
            1_679_315_147
        );
    }
    assert_eq!(
        &blob(&line)[..4],
        &v.to_vkey()
            .split('+')
            .nth(1)
            .map(|h| hex::decode(h).unwrap())
            .unwrap()[..]
    );
    // The same key as a plain note signer is another key id: not a match.
    let plain = NoteSigner::new(
        "witness.example.com/w1",
        ed25519_dalek::SigningKey::from_bytes(&[42u8; 32]),
    )
    .unwrap();
    assert!(matches!(
        note::open(&cosigned, &[&plain.verifier()]),
        Err(NoteError::UnknownSigner)
    ));
    // A changed timestamp, a changed body, or a plain signature under a 0x04 key id fail.
    let mut b = blob(&line);
    b[11] ^= 1;
    let forged = format!(
        "{note}— witness.example.com/w1 {}\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &b)
    );
    assert!(matches!(
        note::open(&forged, &[&v]),
        Err(NoteError::BadSignature(_))
    ));
    let other = Checkpoint {
        size: 20_852_164,
        ..cp.clone()
    }
    .sign(&f.log)
    .unwrap();
    let moved = format!("{other}{line}");
    assert!(matches!(
        note::open(&moved, &[&v]),
        Err(NoteError::BadSignature(_))
    ));
    let plain_line = plain.signature_line(&text);
    let mut pb = blob(&plain_line);
    pb[..4].copy_from_slice(&blob(&line)[..4]);
    let confused = format!(
        "{note}— witness.example.com/w1 {}\n",
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pb)
    );
    assert!(matches!(
        note::open(&confused, &[&v]),
        Err(NoteError::BadSignature(_))
    ));
}
