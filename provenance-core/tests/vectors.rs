//! Committed test vectors (`testdata/vectors/`): this test regenerates every file from the fixed
//! test-only seeds of `tests/common` and fails if any byte differs from what is committed.
//!
//! Regenerate after an intended format change with:
//!
//! ```sh
//! UPDATE_VECTORS=1 cargo test -p provenance-core --test vectors
//! ```
//!
//! and review the diff: a changed vector is a changed wire format.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use common::*;
use provenance_core::bundle::{EvidenceBundle, ProvedEntry, SubjectProof, BUNDLE_MEDIA_TYPE};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::cose::{GatewayEnvelope, SignedReading};
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::merkle::{self, MemoryTree};
use provenance_core::registry::RegistryEvent;
use provenance_core::registry_state::{registry_extension, RegistryState};
use provenance_core::tlog_proof::TlogProof;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::Path;

fn pretty(v: &Value) -> Vec<u8> {
    let mut s = serde_json::to_vec_pretty(v).unwrap();
    s.push(b'\n');
    s
}

fn generate() -> BTreeMap<&'static str, Vec<u8>> {
    let f = fixture();
    let mut files = BTreeMap::new();
    let seed = |label: &str| hex::encode(key(label).to_bytes());
    files.insert(
        "keys.json",
        pretty(&json!({
            "warning": "TEST-ONLY keys from public seeds: SHA-256(\"provenance-core test seed: \" + label). Never use them outside tests.",
            "keys": [
                {"label": "issuer-ca", "seed": seed("issuer-ca"), "public_key": hex::encode(f.ca.public_key.as_bytes()), "key_id": f.ca.key_id.to_hex()},
                {"label": "fleet-ca", "seed": seed("fleet-ca"), "public_key": hex::encode(f.fleet.public_key.as_bytes()), "key_id": f.fleet.key_id.to_hex()},
                {"label": "sensor SN-0001", "seed": seed("sensor SN-0001"), "public_key": hex::encode(f.sensor.public_key.as_bytes()), "key_id": f.sensor.key_id.to_hex()},
                {"label": "gateway GW-0001", "seed": seed("gateway GW-0001"), "public_key": hex::encode(f.gateway.public_key.as_bytes()), "key_id": f.gateway.key_id.to_hex()},
                {"label": "log", "seed": seed("log"), "public_key": hex::encode(f.log.verifier().key().as_bytes()), "vkey": f.log.verifier().to_vkey()},
            ]
        })),
    );
    files.insert("ca.pem", f.ca.to_pem().into_bytes());
    files.insert("fleet.pem", f.fleet.to_pem().into_bytes());
    files.insert("sensor.pem", f.sensor.to_pem().into_bytes());
    files.insert("gateway.pem", f.gateway.to_pem().into_bytes());

    // Readings and both COSE layers.
    let mut readings = Vec::new();
    let mut envelopes = Vec::new();
    for seq in 1..=3u64 {
        let r = reading(seq);
        let payload = r.to_cbor().unwrap();
        let sensor = SignedReading::sign(&r, &f.sensor_key).unwrap();
        let received = r.measured_at_ms + 250;
        let envelope = GatewayEnvelope::wrap(&sensor, received, &f.gateway_key);
        readings.push(json!({
            "sensor_id": r.sensor_id, "seq": r.seq, "measured_at_ms": r.measured_at_ms,
            "measurements": r.measurements.iter().map(|m| json!({"loinc": m.vital.loinc, "value": m.value.to_string(), "unit": m.vital.unit})).collect::<Vec<_>>(),
            "reading_cbor": hex::encode(&payload),
            "sensor_cose_sign1": hex::encode(&sensor),
            "sensor_public_key": hex::encode(f.sensor.public_key.as_bytes()),
            "sensor_kid": f.sensor.key_id.to_hex(),
            "gateway_received_at_ms": received,
            "gateway_envelope": hex::encode(&envelope),
            "gateway_public_key": hex::encode(f.gateway.public_key.as_bytes()),
            "gateway_kid": f.gateway.key_id.to_hex(),
        }));
        envelopes.push(envelope);
    }
    files.insert("readings.json", pretty(&json!({ "readings": readings })));

    files.insert("private.json", private_vectors(&f));

    // Registry events.
    let events = registry_events(&f);
    files.insert(
        "registry.json",
        pretty(&json!({ "events": events.iter().map(|e| json!({"type": e.type_name(), "cbor": hex::encode(e.to_cbor().unwrap())})).collect::<Vec<_>>() })),
    );

    // The log: six registry entries (both issuers, both devices, the binding, the patient
    // assignment), replayed by the registry state machine, then the three readings.
    let fleet = fleet_enrollment(&f);
    let logged: Vec<&RegistryEvent> = vec![
        &events[0], &fleet, &events[1], &events[2], &events[3], &events[4],
    ];
    let mut entries = Vec::new();
    let mut state = RegistryState::new();
    for (i, e) in logged.iter().enumerate() {
        state.apply(i as u64, T0 + i as u64, e).unwrap();
        entries.push(LogEntry {
            kind: EntryKind::Registry,
            body: e.to_cbor().unwrap(),
            logged_at_ms: T0 + i as u64,
        });
    }
    let registered = entries.len();
    for (i, env) in envelopes.iter().enumerate() {
        entries.push(LogEntry {
            kind: EntryKind::Reading,
            body: env.clone(),
            logged_at_ms: T0 + 3_600_000 + 1000 * (i as u64 + 1),
        });
    }
    let mut tree = MemoryTree::new();
    let leaves: Vec<Vec<u8>> = entries.iter().map(LogEntry::to_cbor).collect();
    for l in &leaves {
        tree.push_data(l);
    }
    let size = tree.size();
    let cp_at = |n: u64| {
        Checkpoint {
            origin: ORIGIN.into(),
            size: n,
            root: tree.root_at(n).unwrap(),
            extensions: vec![registry_extension(
                state.event_count(),
                &state.registry_root(),
            )],
        }
        .sign(&f.log)
        .unwrap()
    };
    let checkpoint = cp_at(size);
    let proof = |i: u64| TlogProof {
        extra: None,
        index: i,
        hashes: merkle::inclusion_proof(&tree, i, size).unwrap(),
        checkpoint: checkpoint.clone(),
    };
    files.insert(
        "log.json",
        pretty(&json!({
            "origin": ORIGIN,
            "vkey": f.log.verifier().to_vkey(),
            "leaves": leaves.iter().enumerate().map(|(i, l)| json!({
                "index": i, "leaf_data": hex::encode(l), "leaf_hash": hex::encode(merkle::leaf_hash(l)),
                "tlog_proof": proof(i as u64).encode(),
            })).collect::<Vec<_>>(),
            "root": hex::encode(tree.root_at(size).unwrap()),
            "checkpoint": checkpoint,
            "earlier_checkpoint": cp_at(6),
            "consistency_6_to_9": merkle::consistency_proof(&tree, 6, size).unwrap().iter().map(|h| B64.encode(h)).collect::<Vec<_>>(),
        })),
    );
    files.insert("checkpoint.txt", checkpoint.clone().into_bytes());
    let last = size - 1;
    files.insert("reading-8.tlog-proof", proof(last).encode().into_bytes());

    let bundle = EvidenceBundle {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        log_vkey: f.log.verifier().to_vkey(),
        reading: ProvedEntry::new(&leaves[last as usize], &proof(last)),
        registry: state
            .history_of("SN-0001", "GW-0001")
            .into_iter()
            .map(|i| ProvedEntry::new(&leaves[i as usize], &proof(i)))
            .collect(),
        shard_start: None,
        carried_proofs: vec![],
        registry_proofs: state
            .subjects_for("SN-0001", "GW-0001")
            .iter()
            .map(|s| SubjectProof::of(&state, s))
            .collect(),
    };
    assert_eq!(bundle.registry.len(), registered);
    let mut b = bundle.to_json();
    b.push(b'\n');
    files.insert("bundle.json", b);
    files
}

/// Private mode: two recipients of one household, their registry events, and two private
/// envelopes with every intermediate value an independent implementation needs to check.
fn private_vectors(f: &Fixture) -> Vec<u8> {
    use provenance_core::private::{PrivateEnvelope, Seal};
    let recipients = [
        ("alice-phone", recipient("alice-phone")),
        ("bob-phone", recipient("bob-phone")),
    ];
    let events: Vec<RegistryEvent> = recipients
        .iter()
        .map(|(name, sk)| RegistryEvent::EnrollRecipient {
            household: HOUSEHOLD.into(),
            name: (*name).into(),
            key: sk.public(),
            from_ms: T0,
        })
        .chain([RegistryEvent::BindHousehold {
            gateway_id: "GW-0001".into(),
            household: HOUSEHOLD.into(),
            from_ms: T0,
        }])
        .collect();
    let keys: Vec<_> = recipients.iter().map(|(_, sk)| sk.public()).collect();
    let mut rng = TestRng::new("provenance-core test private vectors");
    let messages: Vec<Value> = (1..=2u64)
        .map(|seq| {
            let r = reading(seq);
            let sensor = SignedReading::sign(&r, &f.sensor_key).unwrap();
            let received = r.measured_at_ms + 250;
            let seal = Seal {
                gateway: &f.gateway_key,
                received_at_ms: received,
                household: HOUSEHOLD,
                msg_seq: seq,
            };
            let bytes = seal.seal(&sensor, &keys, &mut rng).unwrap();
            let env = PrivateEnvelope::decode(&bytes).unwrap();
            json!({
                "received_at_ms": received,
                "msg_seq": seq,
                "sensor_cose_sign1": hex::encode(&sensor),
                "private_envelope": hex::encode(&bytes),
                "content_cose_encrypt": hex::encode(env.content_bytes()),
                "recipient_kids": env.content.recipient_kids().iter().map(|k| k.to_hex()).collect::<Vec<_>>(),
            })
        })
        .collect();
    pretty(&json!({
        "warning": "TEST-ONLY recipient keys, derived (RFC 9180 DeriveKeyPair, DHKEM(X25519, HKDF-SHA256)) from the public ikm \"provenance-core test recipient: \" + name. Never use them outside tests.",
        "suite": {"recipient_alg": 50, "recipient_alg_name": "HPKE-4-KE", "kem": "0x0020", "kdf": "0x0001", "aead": "0x0003", "content_alg": 24, "content_alg_name": "ChaCha20/Poly1305"},
        "household": HOUSEHOLD,
        "gateway_public_key": hex::encode(f.gateway.public_key.as_bytes()),
        "sensor_public_key": hex::encode(f.sensor.public_key.as_bytes()),
        "recipients": recipients.iter().map(|(name, sk)| json!({
            "name": name,
            "private_key": hex::encode(sk.to_bytes()),
            "public_key": hex::encode(sk.public().0),
            "kid": sk.public().key_id().to_hex(),
        })).collect::<Vec<_>>(),
        "outsider_private_key": hex::encode(recipient("outsider").to_bytes()),
        "registry_events": events.iter().map(|e| json!({"type": e.type_name(), "cbor": hex::encode(e.to_cbor().unwrap())})).collect::<Vec<_>>(),
        "messages": messages,
    }))
}

#[test]
fn vectors_match_committed_files() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/vectors");
    let files = generate();
    if std::env::var_os("UPDATE_VECTORS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
        return;
    }
    let mut differ = Vec::new();
    for (name, bytes) in &files {
        match std::fs::read(dir.join(name)) {
            Ok(committed) if committed == *bytes => {}
            _ => differ.push(*name),
        }
    }
    assert!(
        differ.is_empty(),
        "test vectors differ from the code's output: {differ:?}. If the format change is intended, run \
         `UPDATE_VECTORS=1 cargo test -p provenance-core --test vectors` and review the diff."
    );
}

/// The committed bundle verifies with the core's own pieces (the full verifier is ledger-verify).
#[test]
fn committed_bundle_is_consistent() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/vectors");
    let bytes = std::fs::read(dir.join("bundle.json")).expect("committed bundle.json");
    let b = EvidenceBundle::from_json(&bytes).unwrap();
    let log = provenance_core::note::NoteVerifier::from_vkey(&b.log_vkey).unwrap();
    let leaf = b.reading.leaf_bytes().unwrap();
    b.reading.tlog_proof().unwrap().verify(&leaf, &log).unwrap();
    for e in &b.registry {
        e.tlog_proof()
            .unwrap()
            .verify(&e.leaf_bytes().unwrap(), &log)
            .unwrap();
    }
}
