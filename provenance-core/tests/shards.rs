//! Time-sharded logs end to end in the core: a log of registry events and a reading, then a
//! shard that starts from its final checkpoint and carries its registry forward. Evidence of a
//! reading in the shard verifies on its own with only the log's pinned key, and every way an
//! operator could fake the hand-over fails, with the step named.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

mod common;

use common::*;
use provenance_core::audit::bundle::verify_bundle;
use provenance_core::audit::trust::Trust;
use provenance_core::bundle::{EvidenceBundle, ProvedEntry, SubjectProof, BUNDLE_MEDIA_TYPE};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::cose::{GatewayEnvelope, SignedReading};
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::merkle::{self, MemoryTree};
use provenance_core::note::NoteSigner;
use provenance_core::registry::RegistryEvent;
use provenance_core::registry_state::{registry_extension, RegistryState};
use provenance_core::shard::{shard_origin, Carried, Period, ShardStart};
use provenance_core::tlog_proof::TlogProof;

use base64::{engine::general_purpose::STANDARD as B64, Engine};

/// How to build (or fake) the shard.
#[derive(Clone, Copy, Default)]
struct Fake {
    /// Leave out the carried event at this original position.
    drop_carried: Option<u64>,
    /// Sign the previous checkpoint with a foreign key.
    foreign_previous: bool,
    /// Name another log as the previous shard (signed with the log's own key).
    other_previous_log: bool,
    /// Carry the events at their positions moved up to the base (not from before it).
    carried_at_base: bool,
    /// Measure the last reading a day after the shard's period.
    measured_late: bool,
    /// Leave the shard start out of the bundle.
    no_start: bool,
    /// Put the reading's entry where the shard start belongs.
    start_is_reading: bool,
    /// Leave the carried proofs out of the bundle.
    no_carried_proofs: bool,
    /// Enroll, bind and assign the devices in the shard: the previous log holds the issuers
    /// only, so the devices are absent from its registry.
    enrolled_in_shard: bool,
    /// Carry none of the sensor's events (its enrollment, binding and assignment) but log them
    /// anew in the shard, claiming the sensor absent from the previous registry.
    sensor_logged_anew: bool,
}

fn envelope(f: &Fixture, seq: u64, late: bool) -> Vec<u8> {
    let mut r = reading(seq);
    if late {
        r.measured_at_ms += 86_400_000;
    }
    let sensor = SignedReading::sign(&r, &f.sensor_key).unwrap();
    GatewayEnvelope::wrap(&sensor, r.measured_at_ms + 250, &f.gateway_key)
}

struct Built {
    bundle: EvidenceBundle,
    trust: Trust,
    /// The first shard's final registry (count, root) and the second's after the carry.
    previous_registry: (u64, [u8; 32]),
    carried_registry: (u64, [u8; 32]),
}

fn build(fake: Fake) -> Built {
    let f = fixture();
    let events = registry_events(&f);
    let fleet = fleet_enrollment(&f);
    let logged: Vec<&RegistryEvent> = vec![
        &events[0], &fleet, &events[1], &events[2], &events[3], &events[4],
    ];
    // Which of them the previous log holds, and which the shard logs itself.
    let previous: &[usize] = if fake.enrolled_in_shard {
        &[0, 1]
    } else {
        &[0, 1, 2, 3, 4, 5]
    };
    let anew: &[usize] = if fake.enrolled_in_shard {
        &[2, 3, 4, 5]
    } else if fake.sensor_logged_anew {
        &[2, 4, 5]
    } else {
        &[]
    };

    // The first log (no shards): five registry events and reading 1.
    let mut state = RegistryState::new();
    let mut leaves = Vec::new();
    for (i, e) in previous.iter().map(|&p| logged[p]).enumerate() {
        let at = T0 + i as u64;
        state.apply(i as u64, at, e).unwrap();
        leaves.push(
            LogEntry {
                kind: EntryKind::Registry,
                body: e.to_cbor().unwrap(),
                logged_at_ms: at,
            }
            .to_cbor(),
        );
    }
    leaves.push(
        LogEntry {
            kind: EntryKind::Reading,
            body: envelope(&f, 1, false),
            logged_at_ms: T0 + 3_600_000 + 6000,
        }
        .to_cbor(),
    );
    let mut tree = MemoryTree::new();
    for l in &leaves {
        tree.push_data(l);
    }
    let final_cp = Checkpoint {
        origin: ORIGIN.into(),
        size: tree.size(),
        root: tree.root_at(tree.size()).unwrap(),
        extensions: vec![registry_extension(
            state.event_count(),
            &state.registry_root(),
        )],
    };
    let previous_registry = (state.event_count(), state.registry_root());
    let previous_signer = if fake.foreign_previous {
        NoteSigner::new(ORIGIN, key("a stranger")).unwrap()
    } else if fake.other_previous_log {
        f.log.renamed("other.example/log").unwrap()
    } else {
        f.log.renamed(ORIGIN).unwrap()
    };
    let final_cp = Checkpoint {
        origin: previous_signer.name().into(),
        ..final_cp
    };
    let previous_checkpoint = final_cp.sign(&previous_signer).unwrap();
    let base = final_cp.size;

    // The shard of the day 2026-01-01.
    let (start_ms, end_ms, name) = Period::Day.span(T0 + 3_600_000);
    let origin = shard_origin(ORIGIN, &name);
    let start = ShardStart {
        name: name.clone(),
        start_ms,
        end_ms,
        grace_ms: 0,
        base,
        previous_origin: previous_signer.name().into(),
        previous_checkpoint,
        previous_base: 0,
    };
    let mut shard = vec![LogEntry {
        kind: EntryKind::ShardStart,
        body: start.to_cbor(),
        logged_at_ms: T0 + 3_600_000 + 7000,
    }
    .to_cbor()];
    let mut carried_state = RegistryState::new();
    let mut local_of = std::collections::BTreeMap::new();
    for (pos, &which) in previous.iter().enumerate() {
        let e = logged[which];
        let pos = pos as u64;
        if fake.drop_carried == Some(pos) || anew.contains(&which) {
            continue;
        }
        let position = if fake.carried_at_base {
            base + pos
        } else {
            pos
        };
        carried_state.apply(position, T0 + pos, e).unwrap();
        local_of.insert(position, shard.len() as u64);
        let c = Carried {
            position,
            leaf_data: leaves[pos as usize].clone(),
        };
        shard.push(
            LogEntry {
                kind: EntryKind::Carried,
                body: c.to_cbor(),
                logged_at_ms: T0 + 3_600_000 + 7000,
            }
            .to_cbor(),
        );
    }
    let carried_registry = (carried_state.event_count(), carried_state.registry_root());
    let prev_state = carried_state.clone();
    // The events the shard logs itself, after the carried ones.
    for &which in anew {
        let local = shard.len() as u64;
        let at = T0 + 3_600_000 + 8000 + local;
        carried_state
            .apply(base + local, at, logged[which])
            .unwrap();
        local_of.insert(base + local, local);
        shard.push(
            LogEntry {
                kind: EntryKind::Registry,
                body: logged[which].to_cbor().unwrap(),
                logged_at_ms: at,
            }
            .to_cbor(),
        );
    }
    // Reading 2, a new patient assignment logged in the shard, reading 3.
    shard.push(
        LogEntry {
            kind: EntryKind::Reading,
            body: envelope(&f, 2, false),
            logged_at_ms: T0 + 3_600_000 + 11_000,
        }
        .to_cbor(),
    );
    let assign = RegistryEvent::AssignPatient {
        sensor_id: "SN-0001".into(),
        pseudonym: "patient-b".into(),
        from_ms: T0 + 3_600_000 + 12_000,
    };
    let assign_local = shard.len() as u64;
    carried_state
        .apply(base + assign_local, T0 + 3_600_000 + 12_500, &assign)
        .unwrap();
    local_of.insert(base + assign_local, assign_local);
    shard.push(
        LogEntry {
            kind: EntryKind::Registry,
            body: assign.to_cbor().unwrap(),
            logged_at_ms: T0 + 3_600_000 + 12_500,
        }
        .to_cbor(),
    );
    let reading_local = shard.len() as u64;
    shard.push(
        LogEntry {
            kind: EntryKind::Reading,
            body: envelope(&f, 3, fake.measured_late),
            logged_at_ms: T0 + 3_600_000 + 16_000,
        }
        .to_cbor(),
    );
    let mut tree = MemoryTree::new();
    for l in &shard {
        tree.push_data(l);
    }
    let size = tree.size();
    let signer = f.log.renamed(&origin).unwrap();
    let cp = Checkpoint {
        origin: origin.clone(),
        size,
        root: tree.root_at(size).unwrap(),
        extensions: vec![registry_extension(
            carried_state.event_count(),
            &carried_state.registry_root(),
        )],
    }
    .sign(&signer)
    .unwrap();
    let proof = |i: u64| TlogProof {
        extra: None,
        index: i,
        hashes: merkle::inclusion_proof(&tree, i, size).unwrap(),
        checkpoint: cp.clone(),
    };
    let subjects = carried_state.subjects_for("SN-0001", "GW-0001");
    let map_proofs = |s: &RegistryState| {
        subjects
            .iter()
            .map(|sub| SubjectProof::of(s, sub))
            .collect::<Vec<_>>()
    };
    let registry = carried_state
        .history_of("SN-0001", "GW-0001")
        .into_iter()
        .map(|p| {
            let i = local_of[&p];
            ProvedEntry::new(&shard[i as usize], &proof(i))
        })
        .collect();
    let start_entry = if fake.start_is_reading {
        reading_local
    } else {
        0
    };
    let bundle = EvidenceBundle {
        media_type: BUNDLE_MEDIA_TYPE.into(),
        log_vkey: f.log.verifier().to_vkey(),
        reading: ProvedEntry::new(&shard[reading_local as usize], &proof(reading_local)),
        registry,
        registry_proofs: map_proofs(&carried_state),
        shard_start: (!fake.no_start)
            .then(|| ProvedEntry::new(&shard[start_entry as usize], &proof(start_entry))),
        carried_proofs: if fake.no_carried_proofs {
            vec![]
        } else {
            map_proofs(&prev_state)
        },
    };
    let trust = Trust::new(
        f.log.renamed(ORIGIN).unwrap().verifier(),
        vec![f.ca.clone(), f.fleet.clone()],
        vec![],
        0,
        vec![],
    )
    .unwrap();
    Built {
        bundle,
        trust,
        previous_registry,
        carried_registry,
    }
}

fn failed(fake: Fake) -> Vec<String> {
    let b = build(fake);
    let r = verify_bundle(&b.bundle.to_json(), "shard", &b.trust);
    assert!(!r.verified, "a faked shard verified: {}", r.human());
    r.failed_steps().into_iter().map(String::from).collect()
}

#[test]
fn evidence_in_a_shard_verifies_on_its_own() {
    let b = build(Fake::default());
    // The carry gives exactly the previous shard's final registry commitment.
    assert_eq!(b.carried_registry, b.previous_registry);
    let json = b.bundle.to_json();
    assert_eq!(EvidenceBundle::from_json(&json).unwrap(), b.bundle);
    let r = verify_bundle(&json, "shard", &b.trust);
    assert!(r.verified, "{}", r.human());
    for step in [
        "shard.start",
        "shard.period",
        "shard.carried",
        "registry.complete",
        "registry.patient",
    ] {
        assert!(
            r.checks.iter().any(|c| c.step == step && c.ok),
            "{step}: {}",
            r.human()
        );
    }
    // The assignment logged inside the shard decides the patient.
    assert!(r.subject.contains("patient-b"), "{}", r.subject);
}

#[test]
fn a_faked_hand_over_fails_with_its_step() {
    let cases: Vec<(&str, Fake, &str)> = vec![
        (
            "no shard start",
            Fake {
                no_start: true,
                no_carried_proofs: true,
                ..Fake::default()
            },
            "shard.start",
        ),
        (
            "a reading as the start",
            Fake {
                start_is_reading: true,
                ..Fake::default()
            },
            "shard.start",
        ),
        (
            "previous checkpoint from another key",
            Fake {
                foreign_previous: true,
                ..Fake::default()
            },
            "shard.start",
        ),
        (
            "previous shard of another log",
            Fake {
                other_previous_log: true,
                ..Fake::default()
            },
            "shard.start",
        ),
        // An event left out of the carry: the shard's own registry is self-consistent, but
        // the subject's carried history is not the previous shard's.
        (
            "the binding left out",
            Fake {
                drop_carried: Some(4),
                ..Fake::default()
            },
            "shard.carried",
        ),
        (
            "the earlier patient assignment left out",
            Fake {
                drop_carried: Some(5),
                ..Fake::default()
            },
            "shard.carried",
        ),
        (
            "carried events moved to the shard",
            Fake {
                carried_at_base: true,
                ..Fake::default()
            },
            "registry.decode",
        ),
        (
            "measured after the period",
            Fake {
                measured_late: true,
                ..Fake::default()
            },
            "shard.period",
        ),
        (
            "no carried proofs",
            Fake {
                no_carried_proofs: true,
                ..Fake::default()
            },
            "shard.carried",
        ),
    ];
    for (why, fake, step) in cases {
        let steps = failed(fake);
        assert!(
            steps.iter().any(|s| s == step),
            "{why}: failed {steps:?}, not {step}"
        );
    }
}

#[test]
fn shard_fields_without_a_shard_are_refused() {
    // A shard start on evidence of the log itself; carried proofs without a start.
    let b = build(Fake::default());
    let unsharded = build(Fake::default());
    let mut json: serde_json::Value = serde_json::from_slice(&b.bundle.to_json()).unwrap();
    json.as_object_mut().unwrap().remove("shard_start");
    assert!(EvidenceBundle::from_json(json.to_string().as_bytes()).is_err());
    // Two carried proofs for one subject.
    let mut twice = b.bundle.clone();
    twice.carried_proofs.push(twice.carried_proofs[0].clone());
    assert!(EvidenceBundle::from_json(&twice.to_json()).is_err());
    // A shard start proved against another checkpoint than the reading's (another tree).
    let late = build(Fake {
        measured_late: true,
        ..Fake::default()
    });
    let mut other_cp = b.bundle.clone();
    other_cp.shard_start = late.bundle.shard_start.clone();
    assert!(EvidenceBundle::from_json(&other_cp.to_json()).is_err());
    // A checkpoint of a log that is not the pinned one, nor one of its shards.
    let f = fixture();
    let other = Trust::new(
        f.log
            .renamed("ledger.example.org/vitals")
            .unwrap()
            .verifier(),
        vec![],
        vec![],
        0,
        vec![],
    )
    .unwrap();
    let r = verify_bundle(&unsharded.bundle.to_json(), "x", &other);
    assert_eq!(
        r.failed_steps(),
        vec!["checkpoint.signature"],
        "{}",
        r.human()
    );
}

#[test]
fn a_carried_entry_holds_a_registry_event_only() {
    let f = fixture();
    let event = registry_events(&f).remove(0);
    let registry = LogEntry {
        kind: EntryKind::Registry,
        body: event.to_cbor().unwrap(),
        logged_at_ms: T0,
    };
    let carried = |leaf: Vec<u8>| LogEntry {
        kind: EntryKind::Carried,
        body: Carried {
            position: 0,
            leaf_data: leaf,
        }
        .to_cbor(),
        logged_at_ms: T0 + 1,
    };
    match carried(registry.to_cbor()).decode_body() {
        Ok(provenance_core::log_entry::DecodedBody::Carried(0, orig, ev)) => {
            assert_eq!((*orig, ev), (registry.clone(), event.clone()));
        }
        other => panic!("{other:?}"),
    }
    let reading = LogEntry {
        kind: EntryKind::Reading,
        body: envelope(&f, 1, false),
        logged_at_ms: T0,
    };
    let twice = carried(registry.to_cbor());
    for (why, leaf) in [
        ("a reading", reading.to_cbor()),
        ("a carried entry", twice.to_cbor()),
        ("not an entry", vec![1, 2, 3]),
    ] {
        assert!(carried(leaf).decode_body().is_err(), "{why}");
    }
}

#[test]
fn a_start_naming_an_earlier_checkpoint_than_a_kept_one_fails() {
    // The operator, holding the log key, starts the shard from an earlier checkpoint of the
    // previous log (leaving out what it logged after); an auditor who kept a later checkpoint
    // of it sees that the start's "final" one was not final.
    let f = fixture();
    let b = build(Fake::default());
    // A checkpoint of the previous log (final size 7) signed with the log key.
    let of_previous = |size: u64| {
        Checkpoint {
            origin: ORIGIN.into(),
            size,
            root: [9; 32],
            extensions: vec![],
        }
        .sign(&f.log.renamed(ORIGIN).unwrap())
        .unwrap()
    };
    let later = of_previous(8);
    let kept = |cps: Vec<String>| {
        Trust::new(
            f.log.renamed(ORIGIN).unwrap().verifier(),
            vec![f.ca.clone(), f.fleet.clone()],
            vec![],
            0,
            cps,
        )
        .unwrap()
    };
    let r = verify_bundle(&b.bundle.to_json(), "kept", &kept(vec![later]));
    assert!(r.failed_steps().contains(&"shard.start"), "{}", r.human());
    // The same size with another root: a fork of the previous log.
    let forked = of_previous(7);
    let r = verify_bundle(&b.bundle.to_json(), "fork", &kept(vec![forked]));
    assert!(r.failed_steps().contains(&"shard.start"), "{}", r.human());
    // A kept earlier checkpoint of the previous log is no objection.
    let earlier = of_previous(3);
    let r = verify_bundle(&b.bundle.to_json(), "earlier", &kept(vec![earlier]));
    assert!(r.verified, "{}", r.human());
}

#[test]
fn devices_enrolled_in_the_shard_are_proved_absent_from_the_previous_registry() {
    let b = build(Fake {
        enrolled_in_shard: true,
        ..Fake::default()
    });
    // The devices have no carried history: their carried proofs are absence proofs.
    let absent: Vec<&str> = b
        .bundle
        .carried_proofs
        .iter()
        .filter(|p| p.absent.is_some())
        .map(|p| p.subject.as_str())
        .collect();
    assert_eq!(absent, ["device:GW-0001", "device:SN-0001"]);
    let json = b.bundle.to_json();
    assert_eq!(EvidenceBundle::from_json(&json).unwrap(), b.bundle);
    let r = verify_bundle(&json, "enrolled in the shard", &b.trust);
    assert!(r.verified, "{}", r.human());
    assert!(
        r.checks.iter().any(|c| c.step == "shard.carried" && c.ok),
        "{}",
        r.human()
    );
}

#[test]
fn a_subject_left_out_of_the_carry_is_not_absent_from_the_previous_registry() {
    // The operator carries nothing of the sensor (so not what the previous shard held about
    // it), logs it anew in the shard and proves it "absent" in the registry it carried.
    let fake = Fake {
        sensor_logged_anew: true,
        ..Fake::default()
    };
    let b = build(fake);
    assert!(b
        .bundle
        .carried_proofs
        .iter()
        .any(|p| p.subject == "device:SN-0001" && p.absent.is_some()));
    let r = verify_bundle(&b.bundle.to_json(), "left out", &b.trust);
    assert_eq!(r.failed_steps(), vec!["shard.carried"], "{}", r.human());
    assert!(r.human().contains("not absent"), "{}", r.human());

    // An absence proof for a subject whose events the evidence carries (from an empty map,
    // so it is a well-formed proof of something), in the carry and in the shard's registry.
    let honest = build(Fake::default());
    let empty = RegistryState::new();
    let absent_of = |proofs: &[SubjectProof]| {
        proofs
            .iter()
            .map(|p| {
                if p.subject == "device:SN-0001" {
                    let (subject, _) = p.parse().unwrap();
                    SubjectProof::of(&empty, &subject)
                } else {
                    p.clone()
                }
            })
            .collect::<Vec<_>>()
    };
    let mut in_carry = honest.bundle.clone();
    in_carry.carried_proofs = absent_of(&in_carry.carried_proofs);
    let r = verify_bundle(&in_carry.to_json(), "absent in carry", &honest.trust);
    assert_eq!(r.failed_steps(), vec!["shard.carried"], "{}", r.human());
    assert!(r.human().contains("says it has none"), "{}", r.human());
    let mut in_shard = honest.bundle.clone();
    in_shard.registry_proofs = absent_of(&in_shard.registry_proofs);
    let r = verify_bundle(&in_shard.to_json(), "absent in shard", &honest.trust);
    assert_eq!(r.failed_steps(), vec!["registry.complete"], "{}", r.human());

    // A device enrolled in the shard, but an absence proof whose other leaf is the device's
    // own key in the previous registry of the honest log: refused.
    let enrolled = build(Fake {
        enrolled_in_shard: true,
        ..Fake::default()
    });
    let mut forged = enrolled.bundle.clone();
    for p in forged.carried_proofs.iter_mut() {
        if let Some(a) = p.absent.as_mut() {
            a.key = Some(B64.encode([0u8; 32]));
            a.value = Some(B64.encode([1u8; 32]));
        }
    }
    let r = verify_bundle(&forged.to_json(), "forged end", &enrolled.trust);
    assert!(r.failed_steps().contains(&"shard.carried"), "{}", r.human());
}
