//! The committed registry scenarios (`provenance-core/testdata/registry-scenarios.json`) run
//! through the auditor's replay (`RegistryView`, as `ledger-verify bundle` and `export` use it):
//! every event applied or refused as the state machine says, every reading's registry checks
//! failing at the expected refusal (revocations judged over every event, as the verifier
//! does), the per-sensor sequence rule as `export` applies it, and the patient it reports.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use ed25519_dalek::SigningKey;
use provenance_core::note::NoteSigner;
use provenance_core::registry::RegistryEvent;
use provenance_core::registry_state::{Refusal, Sequences};
use provenance_core::scenario::{self, Step};
use std::cell::RefCell;
use verifier_cli::registry::{KeyUse, RegistryView};
use verifier_cli::trust::Trust;

fn refusal_of(detail: &str) -> Refusal {
    let code = detail.split(':').next().unwrap();
    Refusal::from_code(code).unwrap_or_else(|| panic!("not a refusal code: {detail}"))
}

fn is_revocation(r: Refusal) -> bool {
    matches!(r, Refusal::SensorKeyRevoked | Refusal::GatewayKeyRevoked)
}

#[test]
fn the_verifier_reaches_every_expected_verdict() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../provenance-core/testdata/registry-scenarios.json"
    );
    let scenarios = scenario::parse(&std::fs::read(path).unwrap()).unwrap();
    let log = NoteSigner::new("scenarios.example/log", SigningKey::from_bytes(&[5; 32])).unwrap();
    let mut checked = 0;
    for s in &scenarios {
        // The auditor trusts every issuer the scenario enrolls: the scenarios test the rules.
        let mut trust = Trust::log_only(log.verifier());
        for st in &s.steps {
            if let Step::Event(scenario::EventStep {
                event: RegistryEvent::EnrollIssuer { cert, .. },
                ..
            }) = st
            {
                trust
                    .issuers
                    .push(provenance_core::cert::DeviceCert::from_der(cert).unwrap());
            }
        }
        let view = RefCell::new(RegistryView::default());
        let seqs = RefCell::new(Sequences::default());
        checked += scenario::drive(
            s,
            |e| {
                let got = view.borrow_mut().apply(e.index, e.logged_at_ms, &e.event);
                assert_eq!(got.is_ok(), e.applied, "{}: {got:?}", s.name);
            },
            |r| {
                let what = format!("{}: reading at {}", s.name, r.index);
                let facts =
                    view.borrow()
                        .check_reading(r.index, r.logged_at_ms, &r.decoded, &trust);
                let first = facts
                    .checks
                    .iter()
                    .find_map(|(_, o)| o.as_ref().err())
                    .map(|d| refusal_of(d));
                let u = KeyUse::of(r.index, r.logged_at_ms, &r.decoded);
                let seq_ok = seqs.borrow_mut().observe(&u.sensor_id, u.seq);
                match r.verdict {
                    // Revocations: judged over every event, at the end.
                    Err(x) if is_revocation(x) => {}
                    Err(Refusal::StaleSequence) => {
                        assert_eq!(first, None, "{what}");
                        assert_eq!(seq_ok, Err(Refusal::StaleSequence), "{what}");
                    }
                    Err(x) => assert_eq!(first, Some(x), "{what}"),
                    Ok(()) => {
                        assert_eq!(first, None, "{what}: {:?}", facts.checks);
                        assert_eq!(facts.patient.map(|(p, _)| p), r.patient, "{what}");
                    }
                }
            },
            |r| {
                // Revocations count whenever logged.
                let u = KeyUse::of(r.index, r.logged_at_ms, &r.decoded);
                let got = view
                    .borrow()
                    .check_not_revoked(&u)
                    .map(drop)
                    .map_err(|d| refusal_of(&d));
                assert_eq!(
                    got, r.at_end,
                    "{}: reading at {} at the end",
                    s.name, r.index
                );
            },
        );
    }
    assert!(checked >= 30);
}
