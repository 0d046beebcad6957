//! Private mode: sealing, opening and the strict decoder of private envelopes; the registry's
//! household rules. Every way to change a message must make it fail, and say why.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use ciborium::value::Value;
use common::*;
use provenance_core::cbor;
use provenance_core::cose::SignedReading;
use provenance_core::private::{PrivateEnvelope, PrivateError, RecipientKey, Seal};
use provenance_core::registry::RegistryEvent;
use provenance_core::registry_state::{PrivateClaims, Refusal, RegistryState, Subject};

fn seal(f: &Fixture, keys: &[RecipientKey], household: &str, seq: u64) -> (Vec<u8>, Vec<u8>) {
    let r = reading(seq);
    let sensor = SignedReading::sign(&r, &f.sensor_key).unwrap();
    let bytes = Seal {
        gateway: &f.gateway_key,
        received_at_ms: r.measured_at_ms + 250,
        household,
        msg_seq: seq,
    }
    .seal(&sensor, keys, &mut TestRng::new("private tests"))
    .unwrap();
    (sensor, bytes)
}

/// Re-signs a changed envelope as the gateway would (the attacker who holds the gateway key;
/// without it the signature alone fails).
fn resign(f: &Fixture, value: Value) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let Value::Tag(18, inner) = value else {
        panic!()
    };
    let Value::Array(mut a) = *inner else {
        panic!()
    };
    let (Value::Bytes(p), Value::Bytes(payload)) = (&a[0], &a[2]) else {
        panic!()
    };
    let tbs = cbor::encode(&Value::Array(vec![
        Value::Text("Signature1".into()),
        Value::Bytes(p.clone()),
        Value::Bytes(vec![]),
        Value::Bytes(payload.clone()),
    ]));
    a[3] = Value::Bytes(f.gateway_key.sign(&tbs).to_bytes().to_vec());
    cbor::encode(&Value::Tag(18, Box::new(Value::Array(a))))
}

fn parts(bytes: &[u8]) -> (Vec<Value>, Vec<Value>) {
    let v = cbor::decode_deterministic(bytes, 1 << 16).unwrap();
    let Value::Tag(18, inner) = v else { panic!() };
    let Value::Array(outer) = *inner else {
        panic!()
    };
    let Value::Bytes(c) = &outer[2] else { panic!() };
    let Value::Tag(96, ci) = cbor::decode_deterministic(c, 1 << 16).unwrap() else {
        panic!()
    };
    let Value::Array(content) = *ci else { panic!() };
    (outer, content)
}

fn rebuild(outer: &[Value], content: Vec<Value>) -> Value {
    let mut outer = outer.to_vec();
    outer[2] = Value::Bytes(cbor::encode(&Value::Tag(
        96,
        Box::new(Value::Array(content)),
    )));
    Value::Tag(18, Box::new(Value::Array(outer)))
}

#[test]
fn every_recipient_opens_what_the_gateway_sealed() {
    let f = fixture();
    let (alice, bob) = (recipient("alice-phone"), recipient("bob-phone"));
    let (sensor, bytes) = seal(&f, &[alice.public(), bob.public()], HOUSEHOLD, 7);
    let env = PrivateEnvelope::decode(&bytes).unwrap();
    assert!(PrivateEnvelope::is_private(&bytes));
    assert_eq!(env.household, HOUSEHOLD);
    assert_eq!(env.msg_seq, 7);
    assert_eq!(
        env.content.recipient_kids(),
        vec![alice.public().key_id(), bob.public().key_id()]
    );
    env.verify_gateway(&f.gateway.public_key).unwrap();
    for who in [&alice, &bob] {
        let (plain, sr) = env.open(who).unwrap();
        assert_eq!(plain, sensor);
        sr.verify(&f.sensor.public_key).unwrap();
        assert_eq!(sr.reading, reading(7));
    }
    // The cloud's view holds nothing of the reading: no value, no sensor id, no sequence.
    let needle = |hay: &[u8], n: &[u8]| hay.windows(n.len()).any(|w| w == n);
    assert!(!needle(&bytes, b"SN-0001"));
    assert!(!needle(&bytes, &reading(7).to_cbor().unwrap()[..12]));
    // A plain envelope is not private.
    let plain = provenance_core::cose::GatewayEnvelope::wrap(&sensor, 1, &f.gateway_key);
    assert!(!PrivateEnvelope::is_private(&plain));
    assert!(PrivateEnvelope::decode(&plain).is_err());
}

#[test]
fn a_key_it_is_not_encrypted_to_opens_nothing() {
    let f = fixture();
    let (_, bytes) = seal(&f, &[recipient("alice-phone").public()], HOUSEHOLD, 1);
    let env = PrivateEnvelope::decode(&bytes).unwrap();
    let outsider = recipient("outsider");
    assert_eq!(
        env.open(&outsider).unwrap_err(),
        PrivateError::NotForMe(outsider.public().key_id())
    );
}

#[test]
fn a_changed_ciphertext_header_or_recipient_does_not_open() {
    let f = fixture();
    let alice = recipient("alice-phone");
    let (_, bytes) = seal(&f, &[alice.public()], HOUSEHOLD, 1);
    let (outer, content) = parts(&bytes);
    // A flipped bit of the content ciphertext, re-signed by the gateway key: signature fine,
    // the AEAD refuses.
    let mut c = content.clone();
    let Value::Bytes(ct) = &mut c[2] else {
        panic!()
    };
    ct[3] ^= 1;
    let env = PrivateEnvelope::decode(&resign(&f, rebuild(&outer, c))).unwrap();
    env.verify_gateway(&f.gateway.public_key).unwrap();
    assert_eq!(
        env.open(&alice).unwrap_err(),
        PrivateError::Decrypt("the content does not authenticate")
    );
    // The same content under another gateway header (another message number, another
    // household): the content is bound to the header it was sealed under.
    let other = seal(&f, &[alice.public()], HOUSEHOLD, 2).1;
    let (other_outer, _) = parts(&other);
    let moved =
        PrivateEnvelope::decode(&resign(&f, rebuild(&other_outer, content.clone()))).unwrap();
    assert_eq!(moved.msg_seq, 2);
    assert!(matches!(moved.open(&alice), Err(PrivateError::Decrypt(_))));
    let hh2 = seal(&f, &[alice.public()], "HH-0002", 1).1;
    let (hh2_outer, _) = parts(&hh2);
    let moved = PrivateEnvelope::decode(&resign(&f, rebuild(&hh2_outer, content.clone()))).unwrap();
    assert!(matches!(moved.open(&alice), Err(PrivateError::Decrypt(_))));
    // The sealed CEK changed: HPKE refuses.
    let mut c = content.clone();
    let Value::Array(rs) = &mut c[3] else {
        panic!()
    };
    let Value::Array(r0) = &mut rs[0] else {
        panic!()
    };
    let Value::Bytes(sealed) = &mut r0[2] else {
        panic!()
    };
    sealed[0] ^= 1;
    let env = PrivateEnvelope::decode(&resign(&f, rebuild(&outer, c))).unwrap();
    assert_eq!(
        env.open(&alice).unwrap_err(),
        PrivateError::Decrypt("HPKE refused the sealed content key")
    );
    // Without the gateway key, any change fails the gateway signature.
    let mut c = content;
    let Value::Bytes(ct) = &mut c[2] else {
        panic!()
    };
    ct[0] ^= 1;
    let unsigned = cbor::encode(&rebuild(&outer, c));
    let env = PrivateEnvelope::decode(&unsigned).unwrap();
    assert!(env.verify_gateway(&f.gateway.public_key).is_err());
}

#[test]
fn the_decoder_refuses_every_other_shape() {
    let f = fixture();
    let alice = recipient("alice-phone");
    let (_, bytes) = seal(&f, &[alice.public()], HOUSEHOLD, 1);
    let (outer, content) = parts(&bytes);
    let refuse = |v: Value, why: &str| {
        let b = resign(&f, v);
        assert!(PrivateEnvelope::decode(&b).is_err(), "accepted: {why}");
    };
    let with = |i: usize, v: Value| {
        let mut c = content.clone();
        c[i] = v;
        rebuild(&outer, c)
    };
    let m = |entries: Vec<(i64, Value)>| {
        Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| (Value::Integer(k.into()), v))
                .collect(),
        )
    };
    refuse(
        with(
            0,
            Value::Bytes(cbor::encode(&m(vec![(1, Value::Integer(1.into()))]))),
        ),
        "AES-GCM content alg",
    );
    refuse(
        with(0, Value::Bytes(vec![])),
        "empty content protected header",
    );
    refuse(
        with(1, m(vec![(5, Value::Bytes(vec![0; 11]))])),
        "11-byte IV",
    );
    refuse(
        with(
            1,
            m(vec![
                (4, Value::Bytes(vec![0; 20])),
                (5, Value::Bytes(vec![0; 12])),
            ]),
        ),
        "kid in the content layer",
    );
    refuse(with(2, Value::Null), "detached content");
    refuse(
        with(2, Value::Bytes(vec![0; 15])),
        "content shorter than the tag",
    );
    refuse(with(3, Value::Array(vec![])), "no recipients");
    let Value::Array(rs) = &content[3] else {
        panic!()
    };
    refuse(
        with(3, Value::Array(vec![rs[0].clone(), rs[0].clone()])),
        "one recipient twice",
    );
    refuse(
        with(3, Value::Array(vec![rs[0].clone(); 17])),
        "17 recipients",
    );
    let Value::Array(r0) = &rs[0] else { panic!() };
    let recip = |i: usize, v: Value| {
        let mut r = r0.clone();
        r[i] = v;
        with(3, Value::Array(vec![Value::Array(r)]))
    };
    let kid = Value::Bytes(alice.public().key_id().0.to_vec());
    refuse(
        recip(
            0,
            Value::Bytes(cbor::encode(&m(vec![
                (1, Value::Integer(49.into())),
                (4, kid.clone()),
            ]))),
        ),
        "HPKE-3-KE",
    );
    refuse(
        recip(
            0,
            Value::Bytes(cbor::encode(&m(vec![
                (1, Value::Integer(ALG.into())),
                (4, Value::Bytes(vec![0; 19])),
            ]))),
        ),
        "19-byte kid",
    );
    refuse(
        recip(0, Value::Bytes(cbor::encode(&m(vec![(4, kid.clone())])))),
        "no recipient alg",
    );
    refuse(
        recip(1, m(vec![(-4, Value::Bytes(vec![9; 31]))])),
        "31-byte ek",
    );
    refuse(
        recip(
            1,
            m(vec![
                (-4, Value::Bytes(vec![9; 32])),
                (-5, Value::Bytes(vec![])),
            ]),
        ),
        "extra unprotected parameter",
    );
    refuse(recip(2, Value::Bytes(vec![0; 47])), "47-byte sealed CEK");
    let mut nested = r0.clone();
    nested.push(Value::Array(vec![]));
    refuse(
        with(3, Value::Array(vec![Value::Array(nested)])),
        "nested recipients",
    );
    // Not deterministic: a definite length written long, trailing bytes.
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(PrivateEnvelope::decode(&trailing).is_err());
    assert!(PrivateEnvelope::decode(&bytes[..bytes.len() - 1]).is_err());
    // The gateway layer: the household, message number and received-at are all required.
    for drop_label in [-65537i64, -65538, -65539] {
        let Value::Bytes(p) = &outer[0] else { panic!() };
        let Value::Map(h) = cbor::decode_deterministic(p, 256).unwrap() else {
            panic!()
        };
        let h: Vec<_> = h
            .into_iter()
            .filter(|(k, _)| *k != Value::Integer(drop_label.into()))
            .collect();
        let mut o = outer.clone();
        o[0] = Value::Bytes(cbor::encode(&Value::Map(h)));
        refuse(
            Value::Tag(18, Box::new(Value::Array(o))),
            "a missing gateway header parameter",
        );
    }
    // Every single-byte change either fails to decode or fails the signature or the opening.
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        if let Ok(env) = PrivateEnvelope::decode(&b) {
            assert!(
                PrivateEnvelope::is_private(&b),
                "byte {i}: decodes but is not routed as private"
            );
            assert!(
                env.verify_gateway(&f.gateway.public_key).is_err() || env.open(&alice).is_err(),
                "byte {i} changed unnoticed"
            );
        }
    }
}

const ALG: i64 = provenance_core::private::ALG_HPKE_4_KE;

#[test]
fn small_order_recipient_keys_are_refused() {
    // The all-zero point, the point of order 2 (u = 1 − …: its encodings), and u = p (zero again,
    // non-canonical): every shared secret with them is zero.
    let p = {
        let mut p = [0xffu8; 32];
        p[0] = 0xed;
        p[31] = 0x7f;
        p
    };
    let mut one = [0u8; 32];
    one[0] = 1;
    for bad in [[0u8; 32], one, p] {
        assert_eq!(
            RecipientKey::from_slice(&bad),
            Err(PrivateError::BadRecipientKey)
        );
    }
    // A point of order 8 (from the list of Curve25519's small-order points).
    let order8 =
        hex::decode("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800").unwrap();
    assert!(RecipientKey::from_slice(&order8).is_err());
    assert!(RecipientKey::from_slice(&[1u8; 31]).is_err());
    assert!(RecipientKey::from_slice(&recipient("alice").public().0).is_ok());
    // And the registry event refuses them too.
    let ev = RegistryEvent::EnrollRecipient {
        household: HOUSEHOLD.into(),
        name: "x".into(),
        key: RecipientKey([0u8; 32]),
        from_ms: T0,
    };
    assert!(ev.to_cbor().is_err());
}

fn household_state(f: &Fixture) -> (RegistryState, u64) {
    let mut s = RegistryState::new();
    let mut i = 0u64;
    let mut apply = |s: &mut RegistryState, e: &RegistryEvent| {
        s.apply(i, T0 + i, e).unwrap();
        i += 1;
    };
    let fleet = fleet_enrollment(f);
    apply(&mut s, &fleet);
    apply(
        &mut s,
        &RegistryEvent::EnrollGateway {
            cert: f.gateway.der().to_vec(),
        },
    );
    for name in ["alice-phone", "bob-phone"] {
        apply(
            &mut s,
            &RegistryEvent::EnrollRecipient {
                household: HOUSEHOLD.into(),
                name: name.into(),
                key: recipient(name).public(),
                from_ms: T0,
            },
        );
    }
    apply(
        &mut s,
        &RegistryEvent::BindHousehold {
            gateway_id: "GW-0001".into(),
            household: HOUSEHOLD.into(),
            from_ms: T0,
        },
    );
    (s, i)
}

#[test]
fn registry_events_round_trip_and_refuse_what_they_must() {
    let f = fixture();
    for e in [
        RegistryEvent::EnrollRecipient {
            household: HOUSEHOLD.into(),
            name: "alice-phone".into(),
            key: recipient("alice-phone").public(),
            from_ms: T0,
        },
        RegistryEvent::BindHousehold {
            gateway_id: "GW-0001".into(),
            household: HOUSEHOLD.into(),
            from_ms: T0,
        },
    ] {
        let b = e.to_cbor().unwrap();
        assert_eq!(RegistryEvent::from_cbor(&b).unwrap(), e);
        // A field another type carries is refused.
        let Value::Map(mut m) = cbor::decode_deterministic(&b, 8192).unwrap() else {
            panic!()
        };
        m.push((Value::Integer(7.into()), Value::Text("p".into())));
        m.sort_by_key(|a| cbor::encode(&a.0));
        assert!(RegistryEvent::from_cbor(&cbor::encode(&Value::Map(m))).is_err());
    }
    let bad_name = RegistryEvent::EnrollRecipient {
        household: HOUSEHOLD.into(),
        name: "has space".into(),
        key: recipient("a").public(),
        from_ms: T0,
    };
    assert!(bad_name.to_cbor().is_err());
    let (mut s, i) = household_state(&f);
    // A key enrolled twice (in this household or as anything else) is refused.
    let again = RegistryEvent::EnrollRecipient {
        household: "HH-0002".into(),
        name: "carol".into(),
        key: recipient("alice-phone").public(),
        from_ms: T0,
    };
    assert!(s.apply(i, T0 + i, &again).is_err());
    // Binding a device that is not a gateway is refused.
    let bind_unknown = RegistryEvent::BindHousehold {
        gateway_id: "GW-9999".into(),
        household: HOUSEHOLD.into(),
        from_ms: T0,
    };
    assert!(s.apply(i, T0 + i, &bind_unknown).is_err());
    // The household is one subject with every event of it, in the registry commitment.
    let subject = Subject::Household(HOUSEHOLD.into());
    assert_eq!(s.events_of(&subject), vec![2, 3, 4]);
    assert_eq!(s.chain(&subject).unwrap().count, 3);
    assert_eq!(Subject::parse("household:HH-0001"), Some(subject.clone()));
    assert!(s.chain_proof(&subject).is_some());
    // The gateway's view carries the household's events (it encrypts to its recipients).
    let view = s.gateway_view("GW-0001");
    assert!([2, 3, 4].iter().all(|i| view.contains(i)));
}

#[test]
fn the_registry_judges_what_a_private_message_exposes() {
    let f = fixture();
    let (mut s, mut i) = household_state(&f);
    let (alice, bob) = (recipient("alice-phone"), recipient("bob-phone"));
    let at = T0 + 3_600_000;
    let logged = at + 1000;
    let claims = |recips: Vec<RecipientKey>, household: &'static str| PrivateClaims {
        gateway_kid: f.gateway.key_id,
        household,
        received_at_ms: at,
        recipients: recips.iter().map(|k| k.key_id()).collect(),
    };
    let ok = s
        .check_private(
            i,
            logged,
            &claims(vec![alice.public(), bob.public()], HOUSEHOLD),
        )
        .unwrap();
    assert_eq!(ok.gateway_id, "GW-0001");
    assert_eq!(ok.recipients, vec!["alice-phone", "bob-phone"]);
    // Another household: not bound.
    assert_eq!(
        s.check_private(i, logged, &claims(vec![alice.public()], "HH-0002"))
            .unwrap_err()
            .0,
        Refusal::NotBoundToHousehold
    );
    // A key the household does not have (the cloud's own): refused.
    let cloud = recipient("cloud");
    assert_eq!(
        s.check_private(
            i,
            logged,
            &claims(vec![alice.public(), cloud.public()], HOUSEHOLD)
        )
        .unwrap_err()
        .0,
        Refusal::RecipientNotCurrent
    );
    assert_eq!(
        s.check_private(i, logged, &claims(vec![], HOUSEHOLD))
            .unwrap_err()
            .0,
        Refusal::RecipientNotCurrent
    );
    // Judged at its position: before the recipients were enrolled, they were not recipients.
    assert_eq!(
        s.check_private(2, logged, &claims(vec![alice.public()], HOUSEHOLD))
            .unwrap_err()
            .0,
        Refusal::NotBoundToHousehold
    );
    // Time: received-at far before logged-at.
    assert_eq!(
        s.check_private(
            i,
            at + 31 * 24 * 3600 * 1000,
            &claims(vec![alice.public()], HOUSEHOLD)
        )
        .unwrap_err()
        .0,
        Refusal::ImplausibleTime
    );
    // Alice's phone rotates to a new key from `at + 10 s`: the old key is current before, not
    // after; the new one after, not before.
    let alice2 = recipient("alice-phone 2");
    s.apply(
        i,
        T0 + i,
        &RegistryEvent::EnrollRecipient {
            household: HOUSEHOLD.into(),
            name: "alice-phone".into(),
            key: alice2.public(),
            from_ms: at + 10_000,
        },
    )
    .unwrap();
    i += 1;
    assert!(s
        .check_private(i, logged, &claims(vec![alice.public()], HOUSEHOLD))
        .is_ok());
    assert!(s
        .check_private(i, logged, &claims(vec![alice2.public()], HOUSEHOLD))
        .is_err());
    let later = PrivateClaims {
        received_at_ms: at + 20_000,
        ..claims(vec![alice2.public(), bob.public()], HOUSEHOLD)
    };
    assert!(s.check_private(i, logged + 20_000, &later).is_ok());
    let stale = PrivateClaims {
        received_at_ms: at + 20_000,
        ..claims(vec![alice.public()], HOUSEHOLD)
    };
    assert_eq!(
        s.check_private(i, logged + 20_000, &stale).unwrap_err().0,
        Refusal::RecipientNotCurrent
    );
    let current: Vec<_> = s
        .current_recipients(HOUSEHOLD, u64::MAX, at + 20_000)
        .iter()
        .map(|r| r.key)
        .collect();
    assert_eq!(current, vec![bob.public(), alice2.public()]);
    // A rotation may not start before the current key.
    let back = RegistryEvent::EnrollRecipient {
        household: HOUSEHOLD.into(),
        name: "alice-phone".into(),
        key: recipient("alice-phone 3").public(),
        from_ms: at,
    };
    assert!(s.apply(i, T0 + i, &back).is_err());
    // Bob's key revoked from `at + 30 s`.
    s.apply(
        i,
        T0 + i,
        &RegistryEvent::Revoke {
            key_id: bob.public().key_id(),
            from_ms: at + 30_000,
            reason: "phone lost".into(),
        },
    )
    .unwrap();
    i += 1;
    let after = PrivateClaims {
        received_at_ms: at + 40_000,
        ..claims(vec![alice2.public(), bob.public()], HOUSEHOLD)
    };
    assert_eq!(
        s.check_private(i, logged + 40_000, &after).unwrap_err().0,
        Refusal::RecipientNotCurrent
    );
    assert_eq!(s.events_of(&Subject::Household(HOUSEHOLD.into())).len(), 5);
    assert_eq!(
        s.current_recipients(HOUSEHOLD, u64::MAX, at + 40_000).len(),
        1
    );
}
