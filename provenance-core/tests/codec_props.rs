//! Property tests for encoder/decoder pairs: whatever valid value goes in comes back out, and a
//! decoder never accepts a truncated or extended encoding.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use proptest::prelude::*;
use provenance_core::checkpoint::Checkpoint;
use provenance_core::cose::{GatewayEnvelope, SignedReading};
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::reading::{Decimal, Measurement, Reading, VITALS};
use provenance_core::registry::RegistryEvent;
use provenance_core::tlog_proof::TlogProof;

fn device_id() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._:-]{1,64}"
}

fn reading() -> impl Strategy<Value = Reading> {
    (
        device_id(),
        any::<u64>(),
        any::<u64>(),
        proptest::sample::subsequence((0..VITALS.len()).collect::<Vec<_>>(), 1..=VITALS.len()),
        proptest::collection::vec((any::<i64>(), -18i8..=18), VITALS.len()),
    )
        .prop_map(|(sensor_id, seq, measured_at_ms, which, values)| Reading {
            sensor_id,
            seq,
            measured_at_ms,
            measurements: which
                .into_iter()
                .map(|i| {
                    Measurement::new(VITALS[i].loinc, Decimal::new(values[i].0, values[i].1))
                        .unwrap()
                })
                .collect(),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn reading_round_trip(r in reading()) {
        let bytes = r.to_cbor().unwrap();
        prop_assert_eq!(&Reading::from_cbor(&bytes).unwrap(), &r);
        prop_assert!(Reading::from_cbor(&bytes[..bytes.len() - 1]).is_err());
        let mut longer = bytes.clone();
        longer.push(0);
        prop_assert!(Reading::from_cbor(&longer).is_err());
    }

    #[test]
    fn envelope_round_trip(r in reading(), received in any::<u64>()) {
        let f = common::fixture();
        let inner = SignedReading::sign(&r, &f.sensor_key).unwrap();
        let outer = GatewayEnvelope::wrap(&inner, received, &f.gateway_key);
        let env = GatewayEnvelope::decode(&outer).unwrap();
        prop_assert_eq!(&env.sensor.reading, &r);
        prop_assert_eq!(env.received_at_ms, received);
        prop_assert!(env.verify(&f.gateway.public_key, &f.sensor.public_key).is_ok());
        prop_assert!(GatewayEnvelope::decode(&outer[..outer.len() - 1]).is_err());
    }

    #[test]
    fn registry_round_trip(s in device_id(), g in device_id(), from in 0u64..u64::MAX / 2, len in proptest::option::of(1u64..1 << 40), p in "[a-z0-9-]{1,64}", reason in "[ -~]{0,256}", kid in any::<[u8; 20]>()) {
        for e in [
            RegistryEvent::Bind { sensor_id: s.clone(), gateway_id: g.clone(), from_ms: from, until_ms: len.map(|l| from + l) },
            RegistryEvent::AssignPatient { sensor_id: s.clone(), pseudonym: p.clone(), from_ms: from },
            RegistryEvent::Revoke { key_id: provenance_core::keys::KeyId(kid), from_ms: from, reason: reason.clone() },
        ] {
            let bytes = e.to_cbor().unwrap();
            prop_assert_eq!(&RegistryEvent::from_cbor(&bytes).unwrap(), &e);
        }
    }

    #[test]
    fn log_entry_round_trip(body in proptest::collection::vec(any::<u8>(), 0..2000), at in any::<u64>(), reg in any::<bool>()) {
        let e = LogEntry { kind: if reg { EntryKind::Registry } else { EntryKind::Reading }, body, logged_at_ms: at };
        let bytes = e.to_cbor();
        prop_assert_eq!(LogEntry::from_cbor(&bytes).unwrap(), e);
    }

    #[test]
    fn checkpoint_and_tlog_proof_round_trip(size in any::<u64>(), root in any::<[u8; 32]>(), index in any::<u64>(), hashes in proptest::collection::vec(any::<[u8; 32]>(), 0..64), extra in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
        let f = common::fixture();
        let cp = Checkpoint { origin: common::ORIGIN.into(), size, root, extensions: vec![] };
        let signed = cp.sign(&f.log).unwrap();
        prop_assert_eq!(&Checkpoint::open(&signed, &f.log.verifier()).unwrap(), &cp);
        let p = TlogProof { extra, index, hashes, checkpoint: signed };
        prop_assert_eq!(TlogProof::parse(&p.encode()).unwrap(), p);
    }

    /// The firmware's allocation-free signer writes exactly the bytes of the alloc path.
    #[test]
    fn no_alloc_signer_matches(r in reading()) {
        let f = common::fixture();
        let want = SignedReading::sign(&r, &f.sensor_key).unwrap();
        let mut buf = [0u8; provenance_core::sensor::MAX_FRAME_LEN];
        let rr = provenance_core::sensor::ReadingRef { sensor_id: &r.sensor_id, seq: r.seq, measured_at_ms: r.measured_at_ms, measurements: &r.measurements };
        let n = provenance_core::sensor::sign_reading(&rr, &f.sensor_key, &mut buf).unwrap();
        prop_assert_eq!(&buf[..n], &want[..]);
        // Too small a buffer is an error, never a panic or a truncated frame.
        let mut small = [0u8; 64];
        prop_assert_eq!(provenance_core::sensor::sign_reading(&rr, &f.sensor_key, &mut small), Err(provenance_core::sensor::SignError::BufferTooSmall));
    }

    /// Signer and verifier key strings round-trip for any key (base64 may contain '+').
    #[test]
    fn note_keys_round_trip(seed in any::<[u8; 32]>(), name in "[a-z0-9./_-]{1,40}") {
        let signer = provenance_core::note::NoteSigner::new(&name, ed25519_dalek::SigningKey::from_bytes(&seed)).unwrap();
        let again = provenance_core::note::NoteSigner::from_skey(&signer.to_skey()).unwrap();
        prop_assert_eq!(again.verifier(), signer.verifier());
        let v = provenance_core::note::NoteVerifier::from_vkey(&signer.verifier().to_vkey()).unwrap();
        prop_assert_eq!(v, signer.verifier());
    }

    /// Decoders never panic on arbitrary bytes (the fuzz targets go much further).
    #[test]
    fn decoders_survive_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = Reading::from_cbor(&bytes);
        let _ = GatewayEnvelope::decode(&bytes);
        let _ = RegistryEvent::from_cbor(&bytes);
        let _ = LogEntry::from_cbor(&bytes);
        let _ = provenance_core::cert::DeviceCert::from_der(&bytes);
        if let Ok(s) = std::str::from_utf8(&bytes) {
            let _ = TlogProof::parse(s);
            let _ = Checkpoint::from_text(s);
        }
    }
}
