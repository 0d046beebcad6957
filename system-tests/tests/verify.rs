//! ledger-verify against evidence and archives from the real service (PostgreSQL, real HTTP),
//! and against tampered copies of them: each tampering is refused, with the right step named.
//! Where a tampering would also break inclusion, the test plays an operator who holds the log
//! key and re-signs a forged tree, so that the one check that must catch it is isolated.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use ledger_testkit as common;

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use common::now_ms;
use common::{Devices, Engine, TestApp};
use coset::{CoseSign1, TaggedCborSerializable};
use provenance_core::bundle::{EvidenceBundle, ProvedEntry};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::log_entry::{DecodedBody, EntryKind, LogEntry};
use provenance_core::merkle::{self, MemoryTree};
use provenance_core::note::{NoteSigner, NoteVerifier};
use provenance_core::registry::RegistryEvent;
use provenance_core::tlog_proof::TlogProof;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use verifier_cli::report::Report;
use verifier_cli::trust::Trust;

struct World {
    app: TestApp,
    dev: Devices,
    vkey: String,
    /// Log indices of the readings of sensor 0 (through gateway 0).
    readings: Vec<u64>,
    dir: PathBuf,
}

impl World {
    async fn new(name: &str) -> Self {
        let app = TestApp::spawn(Engine::preferred()).await;
        let dev = Devices::new("Acme Sensors", 2, 2);
        dev.enroll(&app).await;
        let now = now_ms();
        let envs: Vec<Vec<u8>> = (0..20u64)
            .map(|seq| {
                let s = (seq % 2) as usize;
                dev.envelope(s, s, seq, now - 60_000 + seq * 100, 70 + seq as i64)
            })
            .collect();
        let (status, body) = app.ingest(&envs).await;
        assert_eq!(status, 200, "{body}");
        let readings = body["results"]
            .as_array()
            .unwrap()
            .iter()
            .step_by(2)
            .map(|r| r["index"].as_u64().unwrap())
            .collect();
        let k: Value = app.get("/v1/log/key", None).await.json().await.unwrap();
        let dir = std::env::temp_dir().join(format!("ledger-verify-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), dev.ca.to_pem()).unwrap();
        std::fs::write(dir.join("fleet.pem"), dev.fleet.to_pem()).unwrap();
        Self {
            app,
            dev,
            vkey: k["vkey"].as_str().unwrap().to_string(),
            readings,
            dir,
        }
    }

    fn trust(&self) -> Trust {
        let mut t = Trust::log_only(NoteVerifier::from_vkey(&self.vkey).unwrap());
        t.issuers.push(self.dev.ca.clone());
        t.issuers.push(self.dev.fleet.clone());
        t
    }

    fn signer(&self) -> NoteSigner {
        NoteSigner::from_skey(&self.app.log_skey).unwrap()
    }

    async fn settle(&self) -> u64 {
        let size = self.app.shared.committed();
        self.app.wait_for_checkpoint(size).await;
        size
    }

    async fn bundle(&self, idx: u64) -> EvidenceBundle {
        self.settle().await;
        let resp = self
            .app
            .get(
                &format!("/v1/readings/{idx}/evidence"),
                Some(&self.app.reader),
            )
            .await;
        let status = resp.status();
        let body = resp.bytes().await.unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        EvidenceBundle::from_json(&body).unwrap()
    }

    async fn finish(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        self.app.finish().await;
    }
}

fn verify(b: &EvidenceBundle, trust: &Trust) -> Report {
    verifier_cli::bundle::verify_bundle(&b.to_json(), "test bundle", trust)
}

/// Asserts the report failed exactly at `steps`.
fn fails_at(r: &Report, steps: &[&str]) {
    assert!(!r.verified, "{}", r.human());
    assert_eq!(r.failed_steps(), steps, "{}", r.human());
}

fn entries(b: &EvidenceBundle) -> Vec<(u64, Vec<u8>)> {
    std::iter::once(&b.reading)
        .chain(&b.registry)
        .map(|e| (e.tlog_proof().unwrap().index, e.leaf_bytes().unwrap()))
        .collect()
}

/// Plays an operator holding the log key: a new tree holding the bundle's entries (with
/// `replaced` ones swapped in) at their indices and filler elsewhere, a checkpoint signed with
/// `signer`, and the bundle re-proved against it.
fn forge(b: &EvidenceBundle, replaced: &[(u64, Vec<u8>)], signer: &NoteSigner) -> EvidenceBundle {
    let mut leaves: std::collections::BTreeMap<u64, Vec<u8>> = entries(b).into_iter().collect();
    for (i, l) in replaced {
        leaves.insert(*i, l.clone());
    }
    let size = leaves.keys().max().unwrap() + 1;
    let mut tree = MemoryTree::new();
    for i in 0..size {
        let filler = i.to_be_bytes();
        tree.push_data(leaves.get(&i).map_or(&filler[..], |l| l.as_slice()));
    }
    let cp = Checkpoint {
        origin: signer.name().into(),
        size,
        root: tree.root_at(size).unwrap(),
        // The registry commitment as the operator published it.
        extensions: checkpoint_of(b).extensions,
    };
    let note = cp.sign(signer).unwrap();
    let prove = |i: u64| {
        let proof = TlogProof {
            extra: None,
            index: i,
            hashes: merkle::inclusion_proof(&tree, i, size).unwrap(),
            checkpoint: note.clone(),
        };
        ProvedEntry::new(&leaves[&i], &proof)
    };
    let mut out = b.clone();
    out.reading = prove(b.reading.tlog_proof().unwrap().index);
    out.registry = b
        .registry
        .iter()
        .map(|e| prove(e.tlog_proof().unwrap().index))
        .collect();
    out
}

/// The reading entry and its two COSE layers, for tampering.
fn layers(b: &EvidenceBundle) -> (LogEntry, CoseSign1, CoseSign1) {
    let entry = LogEntry::from_cbor(&b.reading.leaf_bytes().unwrap()).unwrap();
    let gw = CoseSign1::from_tagged_slice(&entry.body).unwrap();
    let sensor = CoseSign1::from_tagged_slice(gw.payload.as_deref().unwrap()).unwrap();
    (entry, gw, sensor)
}

/// Puts the layers back together (coset keeps the original protected-header bytes).
fn rebuild(mut entry: LogEntry, mut gw: CoseSign1, sensor: CoseSign1) -> Vec<u8> {
    gw.payload = Some(sensor.to_tagged_vec().unwrap());
    entry.body = gw.to_tagged_vec().unwrap();
    entry.to_cbor()
}

fn checkpoint_of(b: &EvidenceBundle) -> Checkpoint {
    let note = b.reading.tlog_proof().unwrap().checkpoint;
    Checkpoint::from_text(provenance_core::note::split(&note).unwrap().text).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_verify_and_every_tampering_names_its_step() {
    let w = World::new("bundles").await;
    let trust = w.trust();
    let idx = w.readings[3];
    let b = w.bundle(idx).await;

    // A genuine bundle verifies with only the issuer CA and the log's vkey.
    let r = verify(&b, &trust);
    assert!(r.verified, "{}", r.human());
    for step in [
        "checkpoint.signature",
        "reading.inclusion",
        "registry.inclusion",
        "registry.complete",
        "sensor.certificate",
        "gateway.certificate",
        "registry.enrolled",
        "registry.bound",
        "registry.not_revoked",
        "sensor.signature",
        "gateway.signature",
    ] {
        assert!(
            r.checks.iter().any(|c| c.step == step && c.ok),
            "{step}: {}",
            r.human()
        );
    }
    assert!(r.subject.contains("patient-0"), "{}", r.subject);

    // A changed value: the signatures no longer cover the bytes.
    let (entry, gw, mut sensor) = layers(&b);
    let env = provenance_core::cose::GatewayEnvelope::decode(&entry.body).unwrap();
    let mut reading = env.sensor.reading.clone();
    reading.measurements[0] = provenance_core::reading::Measurement::new(
        "8867-4",
        provenance_core::reading::Decimal::new(199, 0),
    )
    .unwrap();
    sensor.payload = Some(reading.to_cbor().unwrap());
    let leaf = rebuild(entry.clone(), gw.clone(), sensor);
    fails_at(
        &verify(&forge(&b, &[(idx, leaf.clone())], &w.signer()), &trust),
        &["sensor.signature", "gateway.signature"],
    );
    // Without the log key, the changed leaf is simply not in the log.
    let mut plain = b.clone();
    plain.reading = ProvedEntry {
        leaf_data: B64.encode(&leaf),
        ..b.reading.clone()
    };
    let r = verify(&plain, &trust);
    assert_eq!(
        r.failed_steps().first(),
        Some(&"reading.inclusion"),
        "{}",
        r.human()
    );

    // A swapped signature: the gateway's countersignature of another envelope…
    let other = w.bundle(w.readings[5]).await;
    let (_, other_gw, other_sensor) = layers(&other);
    let (entry, mut gw, sensor) = layers(&b);
    gw.signature = other_gw.signature.clone();
    let leaf = rebuild(entry, gw, sensor);
    fails_at(
        &verify(&forge(&b, &[(idx, leaf)], &w.signer()), &trust),
        &["gateway.signature"],
    );
    // …and the sensor's signature of another reading (the gateway signed the original bytes).
    let (entry, gw, mut sensor) = layers(&b);
    sensor.signature = other_sensor.signature.clone();
    let leaf = rebuild(entry, gw, sensor);
    fails_at(
        &verify(&forge(&b, &[(idx, leaf)], &w.signer()), &trust),
        &["sensor.signature", "gateway.signature"],
    );

    // A sensor bound to another gateway: the binding entry names GW-0001, not GW-0000.
    let (bind_idx, bind) = entries(&b)
        .into_iter()
        .find(|(_, l)| {
            matches!(
                LogEntry::from_cbor(l).unwrap().decode_body().unwrap(),
                DecodedBody::Registry(RegistryEvent::Bind { .. })
            )
        })
        .unwrap();
    let mut e = LogEntry::from_cbor(&bind).unwrap();
    let DecodedBody::Registry(RegistryEvent::Bind {
        sensor_id,
        from_ms,
        until_ms,
        ..
    }) = e.decode_body().unwrap()
    else {
        unreachable!()
    };
    e.body = RegistryEvent::Bind {
        sensor_id,
        gateway_id: "GW-0001".into(),
        from_ms,
        until_ms,
    }
    .to_cbor()
    .unwrap();
    fails_at(
        &verify(&forge(&b, &[(bind_idx, e.to_cbor())], &w.signer()), &trust),
        // GW-0001 is not enrolled in this history: the binding itself breaks the rules.
        &["registry.decode", "registry.complete", "registry.bound"],
    );

    // An inclusion proof against a different checkpoint: a proof's hashes for another size.
    let (s, _) = w
        .app
        .ingest(&[w.dev.envelope(0, 0, 100, now_ms() - 1000, 70)])
        .await;
    assert_eq!(s, 200);
    let later = w.bundle(idx).await;
    assert_ne!(checkpoint_of(&later).size, checkpoint_of(&b).size);
    let mut mixed = later.clone();
    let mut p = later.reading.tlog_proof().unwrap();
    p.hashes = b.reading.tlog_proof().unwrap().hashes;
    mixed.reading = ProvedEntry::new(&later.reading.leaf_bytes().unwrap(), &p);
    fails_at(&verify(&mixed, &trust), &["reading.inclusion"]);

    // A checkpoint signed by an unknown key (the log's name, another key)…
    let stranger = NoteSigner::new(
        w.signer().name(),
        ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng),
    )
    .unwrap();
    fails_at(
        &verify(&forge(&b, &[], &stranger), &trust),
        &["checkpoint.signature"],
    );
    // …and the genuine bundle checked against another log's key.
    let other_log = Trust {
        log_key: stranger.verifier(),
        ..w.trust()
    };
    fails_at(&verify(&b, &other_log), &["checkpoint.signature"]);

    // A forked log: the auditor kept a checkpoint of the same size with another root.
    let fork = Checkpoint {
        root: [7u8; 32],
        ..checkpoint_of(&b)
    }
    .sign(&w.signer())
    .unwrap();
    let mut kept = w.trust();
    kept.known_checkpoints.push(fork);
    fails_at(&verify(&b, &kept), &["checkpoint.fork"]);
    let mut kept = w.trust();
    kept.known_checkpoints
        .push(b.reading.tlog_proof().unwrap().checkpoint);
    assert!(
        verify(&b, &kept).verified,
        "the same checkpoint kept is no fork"
    );

    // Witnesses: a C2SP cosignature/v1 witness (type 0x04 vkey) and a plain note-signing one; a
    // quorum the checkpoint does not meet fails, cosignatures meet it.
    let witness = provenance_core::note::Cosigner::new(
        "witness.example/w1",
        ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng),
    )
    .unwrap();
    let plain_witness = NoteSigner::new(
        "witness.example/w2",
        ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng),
    )
    .unwrap();
    let mut t = w.trust();
    t.witnesses
        .push(NoteVerifier::from_vkey(&witness.verifier().to_vkey()).unwrap());
    t.witnesses.push(plain_witness.verifier());
    t.quorum = 2;
    fails_at(&verify(&b, &t), &["checkpoint.witnesses"]);
    let note = b.reading.tlog_proof().unwrap().checkpoint;
    let text = provenance_core::note::split(&note)
        .unwrap()
        .text
        .to_string();
    let restamp = |e: &ProvedEntry, cosigned: &str| {
        let mut p = e.tlog_proof().unwrap();
        p.checkpoint = cosigned.to_string();
        ProvedEntry::new(&e.leaf_bytes().unwrap(), &p)
    };
    let with = |cosigned: &str| {
        let mut wb = b.clone();
        wb.reading = restamp(&b.reading, cosigned);
        wb.registry = b.registry.iter().map(|e| restamp(e, cosigned)).collect();
        wb
    };
    let one = format!("{note}{}", witness.signature_line(&text, now_ms() / 1000));
    let r = verify(&with(&one), &t);
    fails_at(&r, &["checkpoint.witnesses"]);
    assert!(
        r.checks.iter().any(|c| c.detail.starts_with("1 of 2")),
        "{}",
        r.human()
    );
    let both = format!("{one}{}", plain_witness.signature_line(&text));
    let r = verify(&with(&both), &t);
    assert!(r.verified, "{}", r.human());
    // The log's own key under a witness's name (its holder can sign under any name), or one
    // witness given twice, does not make a quorum.
    // PRIVATE+KEY+<name>+<hash>+<base64>: the base64 may itself hold '+'.
    let seed: [u8; 32] = B64
        .decode(w.app.log_skey.splitn(5, '+').nth(4).unwrap())
        .unwrap()[1..33]
        .try_into()
        .unwrap();
    let fake = NoteSigner::new(
        "witness.example/not-really",
        ed25519_dalek::SigningKey::from_bytes(&seed),
    )
    .unwrap();
    let mut t2 = w.trust();
    t2.witnesses.push(fake.verifier());
    t2.witnesses
        .push(NoteVerifier::from_vkey(&witness.verifier().to_vkey()).unwrap());
    t2.witnesses
        .push(NoteVerifier::from_vkey(&witness.verifier().to_vkey()).unwrap());
    t2.quorum = 2;
    // The log's own verifier given as a witness (same name, same key): its signature on the
    // checkpoint is no cosignature.
    let mut t3 = w.trust();
    t3.witnesses.push(NoteVerifier::from_vkey(&w.vkey).unwrap());
    t3.quorum = 1;
    fails_at(&verify(&b, &t3), &["checkpoint.witnesses"]);
    let forged = format!("{one}{}", fake.signature_line(&text));
    let r = verify(&with(&forged), &t2);
    fails_at(&r, &["checkpoint.witnesses"]);
    assert!(
        r.checks.iter().any(|c| c.detail.starts_with("1 of 3")),
        "{}",
        r.human()
    );

    // Not trusting the issuer: both certificate checks fail.
    let no_issuer = Trust::log_only(NoteVerifier::from_vkey(&w.vkey).unwrap());
    fails_at(
        &verify(&b, &no_issuer),
        &["sensor.certificate", "gateway.certificate"],
    );

    // Registry evidence left out: the keys are unknown, nothing can be vouched for.
    let mut bare = b.clone();
    bare.registry.clear();
    let r = verify(&bare, &trust);
    assert!(
        r.failed_steps().contains(&"registry.enrolled")
            && r.failed_steps().contains(&"sensor.signature"),
        "{}",
        r.human()
    );
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_before_the_reading_fails_registry_not_revoked() {
    let w = World::new("revoked").await;
    let idx = w.readings[2];
    let sensor_kid = w.dev.sensors[0].1.key_id.to_hex();
    // After the reading was logged, the sensor key is revoked from a time before it.
    let r = w
        .app
        .post_json(
            "/v1/registry/revocations",
            Some(&w.app.admin),
            &json!({"key_id": sensor_kid, "from_ms": now_ms() - 3_600_000, "reason": "key extracted from a stolen sensor"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let b = w.bundle(idx).await;
    fails_at(&verify(&b, &w.trust()), &["registry.not_revoked"]);

    // In an archive, the same revocation taints exactly that sensor's ten readings.
    let dir = w.dir.join("archive");
    ledger_service::write_log_archive(w.app.shared.db(), &dir, 0)
        .await
        .unwrap();
    let r = verifier_cli::export::verify_export(&dir, &w.trust(), false);
    fails_at(&r, &["readings.not_revoked"]);
    assert!(
        r.checks.iter().any(|c| c.detail.starts_with("10 failed")),
        "{}",
        r.human()
    );
    w.finish().await;

    // A revocation from a time after the reading does not taint it.
    let w = World::new("revoked-later").await;
    let gw_kid = w.dev.gateways[0].1.key_id.to_hex();
    let r = w
        .app
        .post_json(
            "/v1/registry/revocations",
            Some(&w.app.admin),
            &json!({"key_id": gw_kid, "from_ms": now_ms(), "reason": "retired"}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let b = w.bundle(w.readings[2]).await;
    let r = verify(&b, &w.trust());
    assert!(r.verified, "{}", r.human());
    assert!(r
        .checks
        .iter()
        .any(|c| c.step == "registry.not_revoked" && c.detail.contains("after the reading")));
    w.finish().await;
}

/// Issue #11: registry evidence an operator leaves out of a bundle — a revocation, a key
/// rotation, a newer patient assignment, a subject's proof — fails `registry.complete`: each
/// checkpoint commits to every subject's event chain, and the bundle must show them whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_evidence_left_out_of_a_bundle_is_caught() {
    let w = World::new("omitted").await;
    let trust = w.trust();
    let admin = Some(w.app.admin.as_str());
    let now = now_ms();
    // Sensor 0 moves to another patient; a reading after that is attributed to them.
    let r = w
        .app
        .post_json(
            "/v1/registry/assignments",
            admin,
            &json!({"sensor_id": "SN-0000", "pseudonym": "patient-x", "from_ms": now - 10_000}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let (s, body) = w
        .app
        .ingest(&[w.dev.envelope(0, 0, 20, now - 1000, 70)])
        .await;
    assert_eq!(s, 200, "{body}");
    let idx_new = body["results"][0]["index"].as_u64().unwrap();
    // Then its key is rotated out, and sensor 1's key is revoked from before its readings.
    let new_key = ed25519_dalek::SigningKey::from_bytes(&[77; 32]);
    let cert = w.dev.sensor_cert("SN-0000", &new_key, 4242);
    let r = w
        .app
        .post_json(
            "/v1/registry/rotations",
            admin,
            &json!({"device_id": "SN-0000", "certificate_pem": cert.to_pem(), "from_ms": now_ms()}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let kid1 = w.dev.sensors[1].1.key_id.to_hex();
    let r = w
        .app
        .post_json(
            "/v1/registry/revocations",
            admin,
            &json!({"key_id": kid1, "from_ms": now - 3_600_000, "reason": "cloned"}),
        )
        .await;
    assert_eq!(r.status(), 201);

    let kind_of = |e: &ProvedEntry| match LogEntry::from_cbor(&e.leaf_bytes().unwrap())
        .unwrap()
        .decode_body()
        .unwrap()
    {
        DecodedBody::Registry(ev) => ev.type_name(),
        DecodedBody::Reading(_) => "reading",
        DecodedBody::Private(_) => "private",
        DecodedBody::ShardStart(_) => "shard start",
        DecodedBody::Carried(_, _, ev) => ev.type_name(),
    };
    let without = |b: &EvidenceBundle, kind: &str, nth: usize| {
        let mut out = b.clone();
        let i = out
            .registry
            .iter()
            .enumerate()
            .filter(|(_, e)| kind_of(e) == kind)
            .map(|(i, _)| i)
            .nth(nth)
            .unwrap_or_else(|| panic!("no {kind} #{nth} in the bundle"));
        out.registry.remove(i);
        out
    };

    // The genuine bundle of the new reading: patient-x, the rotation in its history.
    let b = w.bundle(idx_new).await;
    let r = verify(&b, &trust);
    assert!(r.verified, "{}", r.human());
    assert!(r.subject.contains("patient-x"), "{}", r.subject);
    // The newer assignment left out: the reading would pass as patient-0's.
    let r = verify(&without(&b, "assign-patient", 1), &trust);
    fails_at(&r, &["registry.complete"]);
    // The rotation left out.
    fails_at(
        &verify(&without(&b, "rotate-key", 0), &trust),
        &["registry.complete"],
    );
    // A subject's proof left out, or another subject's proof in its place.
    let mut no_proof = b.clone();
    no_proof
        .registry_proofs
        .retain(|p| !p.subject.starts_with("issuer:"));
    fails_at(&verify(&no_proof, &trust), &["registry.complete"]);
    let mut wrong = b.clone();
    let other = wrong.registry_proofs[0].hashes.clone();
    let last = wrong.registry_proofs.len() - 1;
    wrong.registry_proofs[last].hashes = other;
    fails_at(&verify(&wrong, &trust), &["registry.complete"]);

    // Sensor 1's reading: the revocation taints it; leaving the revocation out is caught.
    let b1 = w.bundle(w.readings[3] + 1).await;
    fails_at(&verify(&b1, &trust), &["registry.not_revoked"]);
    fails_at(
        &verify(&without(&b1, "revoke", 0), &trust),
        &["registry.complete"],
    );
    // The same with a log-key holder re-proving the smaller bundle against a new tree with the
    // published registry commitment: the commitment still names the revocation.
    let forged = forge(&without(&b1, "revoke", 0), &[], &w.signer());
    fails_at(&verify(&forged, &trust), &["registry.complete"]);

    // The evidence is exactly what decides the reading, in log order, once each.
    let mut reordered = b.clone();
    reordered.registry.swap(0, 1);
    fails_at(&verify(&reordered, &trust), &["registry.decode"]);
    let mut twice = b.clone();
    twice.registry.push(twice.registry[0].clone());
    assert!(verify(&twice, &trust)
        .failed_steps()
        .contains(&"registry.decode"));
    let mut extra_proof = b.clone();
    extra_proof.registry_proofs.push(
        b1.registry_proofs
            .iter()
            .find(|p| p.subject == "device:SN-0001")
            .unwrap()
            .clone(),
    );
    fails_at(&verify(&extra_proof, &trust), &["registry.complete"]);
    // A log-key holder moves the reading back in time (before its sensor's enrollment was
    // logged, to escape a later rule): logging times then go back along the log.
    let (mut entry, gw, sensor) = layers(&b);
    let first = LogEntry::from_cbor(&b.registry[0].leaf_bytes().unwrap()).unwrap();
    entry.logged_at_ms = first.logged_at_ms - 1;
    let leaf = rebuild(entry, gw, sensor);
    let r = verify(&forge(&b, &[(idx_new, leaf)], &w.signer()), &trust);
    assert!(
        r.failed_steps().contains(&"registry.decode"),
        "{}",
        r.human()
    );
    w.finish().await;
}

/// A sweep of tamperings not written for any one fix: every string of a genuine bundle with one
/// character changed, every array element removed or doubled (an operator without the log
/// key); every registry entry left out, or moved in time, with the tree re-proved and the
/// checkpoint re-signed (an operator with the log key). Each must fail; only the informational
/// `log_vkey` may change freely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_of_tamperings_all_fail() {
    let w = World::new("sweep").await;
    let trust = w.trust();
    let b = w.bundle(w.readings[4]).await;
    assert!(verify(&b, &trust).verified);
    let json: Value = serde_json::from_slice(&b.to_json()).unwrap();
    let check = |v: &Value, what: &str| {
        let r = verifier_cli::bundle::verify_bundle(v.to_string().as_bytes(), "sweep", &trust);
        assert!(!r.verified, "{what} verified:\n{}", r.human());
    };
    // Every string leaf, one character changed (in the middle and at the end).
    fn strings(v: &Value, path: String, out: &mut Vec<String>) {
        match v {
            Value::String(_) => out.push(path),
            Value::Array(a) => a
                .iter()
                .enumerate()
                .for_each(|(i, x)| strings(x, format!("{path}/{i}"), out)),
            Value::Object(o) => o
                .iter()
                .for_each(|(k, x)| strings(x, format!("{path}/{k}"), out)),
            _ => {}
        }
    }
    let mut leaves = Vec::new();
    strings(&json, String::new(), &mut leaves);
    let mut n = 0;
    for path in leaves.iter().filter(|p| *p != "/log_vkey") {
        let text = json.pointer(path).unwrap().as_str().unwrap().to_string();
        for at in [text.len() / 2, text.len().saturating_sub(3)] {
            let mut chars: Vec<char> = text.chars().collect();
            let Some(c) = chars.get_mut(at) else { continue };
            *c = if *c == 'A' {
                'B'
            } else if c.is_ascii_digit() {
                if *c == '9' {
                    '8'
                } else {
                    '9'
                }
            } else {
                'A'
            };
            let mut t = json.clone();
            *t.pointer_mut(path).unwrap() = Value::String(chars.into_iter().collect());
            if t != json {
                check(&t, &format!("{path} changed at {at}"));
                n += 1;
            }
        }
    }
    // Every array element removed, or doubled.
    for key in ["registry", "registry_proofs"] {
        let len = json[key].as_array().unwrap().len();
        for i in 0..len {
            let mut t = json.clone();
            t[key].as_array_mut().unwrap().remove(i);
            check(&t, &format!("{key}[{i}] removed"));
            let mut t = json.clone();
            let e = t[key][i].clone();
            t[key].as_array_mut().unwrap().insert(i, e);
            check(&t, &format!("{key}[{i}] doubled"));
            n += 2;
        }
    }
    // The log key's holder: each registry entry left out, or moved a millisecond in time, with
    // a new tree and a new signed checkpoint carrying the published registry line.
    for i in 0..b.registry.len() {
        let mut smaller = b.clone();
        smaller.registry.remove(i);
        let r = verify(&forge(&smaller, &[], &w.signer()), &trust);
        assert!(
            !r.verified,
            "registry[{i}] left out, re-signed:\n{}",
            r.human()
        );
        let idx = b.registry[i].tlog_proof().unwrap().index;
        for delta in [-1i64, 1] {
            let mut e = LogEntry::from_cbor(&b.registry[i].leaf_bytes().unwrap()).unwrap();
            e.logged_at_ms = e.logged_at_ms.saturating_add_signed(delta);
            let r = verify(&forge(&b, &[(idx, e.to_cbor())], &w.signer()), &trust);
            assert!(
                !r.verified,
                "registry[{i}] moved by {delta} ms, re-signed:\n{}",
                r.human()
            );
        }
        n += 3;
    }
    // The log key's holder moves the reading itself before every registry entry of the bundle
    // (its sensor not yet enrolled there).
    let (reading_idx, _) = entries(&b)[0].clone();
    let first_reg = b.registry[0].tlog_proof().unwrap().index;
    let mut moved = b.clone();
    let proof = moved.reading.tlog_proof().unwrap();
    moved.reading = ProvedEntry::new(
        &b.reading.leaf_bytes().unwrap(),
        &TlogProof {
            index: first_reg,
            ..proof
        },
    );
    let mut shifted = moved.clone();
    shifted.registry.remove(0);
    let r = verify(&forge(&shifted, &[], &w.signer()), &trust);
    assert!(
        !r.verified,
        "the reading moved from {reading_idx} to {first_reg}:\n{}",
        r.human()
    );
    assert!(n > 100, "{n} tamperings");
    eprintln!("{n} tamperings, all refused");
    w.finish().await;
}

fn run_cli(args: &[&str]) -> (i32, String) {
    let out = Command::new(ledger_testkit::binary("verifier-cli", "ledger-verify"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_line_offline_and_online() {
    let w = World::new("cli").await;
    let b = w.bundle(w.readings[1]).await;
    let bundle = w.dir.join("evidence.json");
    std::fs::write(&bundle, b.to_json()).unwrap();
    let vkey = w.dir.join("log.vkey");
    std::fs::write(&vkey, &w.vkey).unwrap();
    let ca = w.dir.join("ca.pem");
    let fleet = w.dir.join("fleet.pem");
    // Verified: exit 0, one line per check.
    let (code, out) = run_cli(&[
        "bundle",
        path(&bundle),
        "--log-key",
        path(&vkey),
        "--issuer",
        path(&ca),
        "--issuer",
        path(&fleet),
    ]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("ok    sensor.signature") && out.contains("VERIFIED"),
        "{out}"
    );
    // JSON for machines; the vkey may be given inline.
    let (code, out) = run_cli(&[
        "bundle",
        path(&bundle),
        "--log-key",
        &w.vkey,
        "--issuer",
        path(&ca),
        "--issuer",
        path(&fleet),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verified"], true);
    // A witness holding the log's own key is a usage error (exit 2).
    let (code, out) = run_cli(&[
        "bundle",
        path(&bundle),
        "--log-key",
        path(&vkey),
        "--witness",
        &w.vkey,
        "--quorum",
        "1",
    ]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("the log's own key"), "{out}");
    // Failed verification: exit 1, the failing step named.
    let (code, out) = run_cli(&["bundle", path(&bundle), "--log-key", path(&vkey)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  sensor.certificate"), "{out}");
    // Usage and I/O errors: exit 2.
    assert_eq!(
        run_cli(&["bundle", "/nonexistent.json", "--log-key", path(&vkey)]).0,
        2
    );
    assert_eq!(
        run_cli(&["bundle", path(&bundle), "--log-key", "not a vkey"]).0,
        2
    );
    assert_eq!(run_cli(&["bundle"]).0, 2);
    std::fs::write(w.dir.join("garbage.json"), b"{\"media_type\": 1}").unwrap();
    let (code, out) = run_cli(&[
        "bundle",
        path(&w.dir.join("garbage.json")),
        "--log-key",
        path(&vkey),
    ]);
    assert_eq!(code, 1, "a malformed bundle fails verification: {out}");
    assert!(out.contains("FAIL  bundle.format"), "{out}");
    // An oversized bundle fails verification too (refused before reading it); a folder is not a
    // bundle file at all (exit 2); a symbolic link the auditor names is followed.
    let big = w.dir.join("big.json");
    std::fs::write(
        &big,
        vec![b' '; provenance_core::bundle::MAX_BUNDLE_LEN + 1],
    )
    .unwrap();
    let (code, out) = run_cli(&["bundle", path(&big), "--log-key", path(&vkey)]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  bundle.format"), "{out}");
    assert_eq!(
        run_cli(&["bundle", path(&w.dir), "--log-key", path(&vkey)]).0,
        2
    );
    let link = w.dir.join("link.json");
    std::os::unix::fs::symlink(&bundle, &link).unwrap();
    let (code, out) = run_cli(&["bundle", path(&link), "--log-key", path(&vkey)]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  sensor.certificate"),
        "no issuer given: {out}"
    );

    // Consistency from files: the old checkpoint, a newer one, the service's proof.
    let log_key = NoteVerifier::from_vkey(&w.vkey).unwrap();
    let old = w.dir.join("old.cp");
    let old_note = w
        .app
        .get("/v1/log/checkpoint", None)
        .await
        .text()
        .await
        .unwrap();
    std::fs::write(&old, &old_note).unwrap();
    let old_cp = Checkpoint::open(&old_note, &log_key).unwrap();
    let (s, _) = w
        .app
        .ingest(&[w.dev.envelope(1, 1, 500, now_ms() - 500, 80)])
        .await;
    assert_eq!(s, 200);
    let size = w.settle().await;
    let new = w.dir.join("new.cp");
    std::fs::write(
        &new,
        w.app
            .get("/v1/log/checkpoint", None)
            .await
            .text()
            .await
            .unwrap(),
    )
    .unwrap();
    let proof = w.dir.join("proof.json");
    let p = w
        .app
        .get(
            &format!("/v1/log/proof/consistency?from={}&to={size}", old_cp.size),
            None,
        )
        .await
        .text()
        .await
        .unwrap();
    std::fs::write(&proof, &p).unwrap();
    let consistency = |old: &Path, new: &Path, proof: &Path| {
        run_cli(&[
            "consistency",
            path(old),
            path(new),
            path(proof),
            "--log-key",
            path(&vkey),
        ])
    };
    let (code, out) = consistency(&old, &new, &proof);
    assert_eq!(code, 0, "{out}");
    // A wrong proof (as base64 lines), a reversed pair, a fork.
    let v: Value = serde_json::from_str(&p).unwrap();
    let mut hashes: Vec<String> = serde_json::from_value(v["hashes"].clone()).unwrap();
    hashes[0] = B64.encode([0u8; 32]);
    let bad = w.dir.join("bad.proof");
    std::fs::write(&bad, hashes.join("\n")).unwrap();
    let (code, out) = consistency(&old, &new, &bad);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL  consistency"), "{out}");
    let (code, out) = consistency(&new, &old, &proof);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("the log shrank"), "{out}");
    let fork = w.dir.join("fork.cp");
    std::fs::write(
        &fork,
        Checkpoint {
            root: [9u8; 32],
            ..old_cp
        }
        .sign(&w.signer())
        .unwrap(),
    )
    .unwrap();
    let (code, out) = consistency(&old, &fork, &proof);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("FAIL  checkpoint.fork") && out.contains("FORK"),
        "{out}"
    );

    // Online: fetch the newer checkpoint and the proof from the service; keep the new one.
    let saved = w.dir.join("saved.cp");
    let (code, out) = run_cli(&[
        "consistency",
        path(&old),
        "--url",
        &w.app.base,
        "--log-key",
        path(&vkey),
        "--save",
        path(&saved),
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(&saved).unwrap(),
        std::fs::read_to_string(&new).unwrap()
    );
    let (code, out) = run_cli(&[
        "consistency",
        path(&fork),
        "--url",
        &w.app.base,
        "--log-key",
        path(&vkey),
    ]);
    assert_eq!(code, 1, "a kept checkpoint the log does not extend: {out}");
    let (code, out) = run_cli(&[
        "consistency",
        path(&old),
        "--url",
        "http://127.0.0.1:9",
        "--log-key",
        path(&vkey),
    ]);
    assert_eq!(code, 2, "{out}");
    w.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_verify_in_full_and_incrementally_and_tampering_is_caught() {
    let w = World::new("archive").await;
    let trust = w.trust();
    let size = w.settle().await;
    let full = w.dir.join("full");
    let m = ledger_service::write_log_archive(w.app.shared.db(), &full, 0)
        .await
        .unwrap();
    assert_eq!((m.start, m.end), (0, size));
    let r = verifier_cli::export::verify_export(&full, &trust, false);
    assert!(r.verified, "{}", r.human());
    // Incremental: from index 13 (3 subtrees of [0, 13)); the registry before it comes with
    // proofs.
    let incr = w.dir.join("incr");
    let m = ledger_service::write_log_archive(w.app.shared.db(), &incr, 13)
        .await
        .unwrap();
    assert!(!m.registry_prelude.is_empty() && m.frontier.len() == 3);
    let r = verifier_cli::export::verify_export(&incr, &trust, false);
    assert!(r.verified, "{}", r.human());
    // Writing over an archive is refused.
    assert!(
        ledger_service::write_log_archive(w.app.shared.db(), &incr, 0)
            .await
            .is_err()
    );
    // The command line.
    let vkey = w.dir.join("log.vkey");
    std::fs::write(&vkey, &w.vkey).unwrap();
    let ca = w.dir.join("ca.pem");
    let fleet = w.dir.join("fleet.pem");
    let (code, out) = run_cli(&[
        "export",
        path(&incr),
        "--log-key",
        path(&vkey),
        "--issuer",
        path(&ca),
        "--issuer",
        path(&fleet),
        "--json",
    ]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = run_cli(&["export", path(&incr), "--log-key", path(&vkey)]);
    assert_eq!(code, 1, "no trusted issuer: {out}");
    assert!(out.contains("FAIL  readings.registry"), "{out}");

    // Tamperings, each on a copy of the full archive.
    let manifest = provenance_core::archive::ArchiveManifest::from_json(
        &std::fs::read(full.join("manifest.json")).unwrap(),
    )
    .unwrap();
    let file = manifest.entry_files[0].clone();
    let lines: Vec<String> = std::fs::read_to_string(full.join(&file))
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let tampered = |name: &str, f: &dyn Fn(&mut Vec<String>, &mut Value)| -> Report {
        let d = w.dir.join(name);
        std::fs::create_dir_all(d.join("log")).unwrap();
        let mut l = lines.clone();
        let mut m: Value =
            serde_json::from_slice(&std::fs::read(full.join("manifest.json")).unwrap()).unwrap();
        f(&mut l, &mut m);
        std::fs::write(d.join(&file), l.join("\n") + "\n").unwrap();
        std::fs::write(d.join("manifest.json"), m.to_string()).unwrap();
        verifier_cli::export::verify_export(&d, &trust, false)
    };
    let leaf_of = |line: &str| {
        let v: Value = serde_json::from_str(line).unwrap();
        LogEntry::from_cbor(&B64.decode(v["leaf_data"].as_str().unwrap()).unwrap()).unwrap()
    };
    // An entry removed: a gap in the sequence, and the root no longer matches.
    fails_at(
        &tampered("removed", &|l, _| {
            l.remove(15);
        }),
        &["archive.sequence", "archive.completeness"],
    );
    // Two entries swapped.
    fails_at(
        &tampered("swapped", &|l, _| l.swap(14, 15)),
        &["archive.sequence", "archive.completeness"],
    );
    // An entry added at the end.
    let extra = provenance_core::archive::EntryLine::encode(size, &leaf_of(&lines[14]).to_cbor());
    fails_at(
        &tampered("added", &|l, _| l.push(extra.clone())),
        // The added line is a reading again: its sensor's sequence number repeats too.
        &[
            "archive.sequence",
            "archive.completeness",
            "readings.sequence",
        ],
    );
    // A reading's entry changed (its index kept): the root differs.
    fails_at(
        &tampered("changed", &|l, _| {
            let mut e = leaf_of(&l[14]);
            e.logged_at_ms += 1;
            l[14] = provenance_core::archive::EntryLine::encode(14, &e.to_cbor());
        }),
        // Its logging time moved after the entries behind it, too.
        &["archive.sequence", "archive.completeness"],
    );
    // A frontier that does not belong to the range.
    let incr_m: Value =
        serde_json::from_slice(&std::fs::read(incr.join("manifest.json")).unwrap()).unwrap();
    let r = tampered("frontier", &|_, m| {
        m["frontier"] = incr_m["frontier"].clone()
    });
    assert_eq!(r.failed_steps(), ["archive.manifest"], "{}", r.human());
    // A manifest that claims another range than the checkpoint's, or a path out of the folder.
    fails_at(
        &tampered("range", &|_, m| m["end"] = json!(size - 1)),
        &["archive.checkpoint"],
    );
    fails_at(
        &tampered("path", &|_, m| {
            m["entry_files"] = json!(["../../etc/passwd"])
        }),
        &["archive.manifest"],
    );
    // Issue #11: a registry entry replaced by its leaf hash, as a pruned reading is: the tree
    // still matches, but the registry no longer gives the checkpoint's commitment.
    let reg_line = (0..lines.len())
        .find(|&i| leaf_of(&lines[i]).kind == EntryKind::Registry && i >= 6)
        .unwrap();
    let r = tampered("registry-pruned", &|l, _| {
        let leaf = leaf_of(&l[reg_line]).to_cbor();
        l[reg_line] = provenance_core::archive::EntryLine::encode_pruned(
            reg_line as u64,
            &merkle::leaf_hash(&leaf),
        );
    });
    assert!(!r.verified, "{}", r.human());
    assert!(
        r.failed_steps().contains(&"registry.complete"),
        "{}",
        r.human()
    );
    assert!(
        !r.failed_steps().contains(&"archive.completeness"),
        "{}",
        r.human()
    );
    // Every registry line, each in turn, replaced by its hash: always caught; a reading line
    // replaced by its hash (what pruning does) still verifies, reported as not checked here.
    for i in 0..lines.len() {
        let leaf = leaf_of(&lines[i]);
        let r = tampered(&format!("hash-{i}"), &|l, _| {
            l[i] = provenance_core::archive::EntryLine::encode_pruned(
                i as u64,
                &merkle::leaf_hash(&leaf.to_cbor()),
            );
        });
        if leaf.kind == EntryKind::Registry {
            assert!(
                r.failed_steps().contains(&"registry.complete"),
                "line {i}: {}",
                r.human()
            );
        } else {
            assert!(r.verified, "line {i}: {}", r.human());
        }
    }
    // An incremental archive whose registry prelude lost an entry.
    let short = w.dir.join("incr-short");
    std::fs::create_dir_all(short.join("log")).unwrap();
    for f in &incr_m["entry_files"].as_array().unwrap().clone() {
        let f = f.as_str().unwrap();
        std::fs::copy(incr.join(f), short.join(f)).unwrap();
    }
    let mut m = incr_m.clone();
    m["registry_prelude"].as_array_mut().unwrap().remove(1);
    std::fs::write(short.join("manifest.json"), m.to_string()).unwrap();
    let r = verifier_cli::export::verify_export(&short, &trust, false);
    assert!(
        r.failed_steps().contains(&"registry.complete"),
        "{}",
        r.human()
    );
    w.finish().await;
}
