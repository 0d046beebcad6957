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
            if let Step::Event {
                event: RegistryEvent::EnrollIssuer { cert, .. },
                ..
            } = st
            {
                trust
                    .issuers
                    .push(provenance_core::cert::DeviceCert::from_der(cert).unwrap());
            }
        }
        let expected = scenario::expected(s);
        let mut view = RegistryView::default();
        let mut seqs = Sequences::default();
        let mut uses = Vec::new();
        let mut n = 0;
        for st in &s.steps {
            match st {
                Step::Event {
                    index,
                    logged_at_ms,
                    event,
                    applied,
                } => {
                    let got = view.apply(*index, *logged_at_ms, event);
                    assert_eq!(got.is_ok(), *applied, "{}: {got:?}", s.name);
                }
                Step::Reading {
                    index,
                    logged_at_ms,
                    decoded,
                    ..
                } => {
                    let (want, patient, _, _) = &expected[n];
                    let facts = view.check_reading(*index, *logged_at_ms, decoded, &trust);
                    let first = facts
                        .checks
                        .iter()
                        .find_map(|(_, o)| o.as_ref().err())
                        .map(|d| refusal_of(d));
                    let u = KeyUse::of(*index, *logged_at_ms, decoded);
                    let seq_ok = seqs.observe(&u.sensor_id, u.seq);
                    match want {
                        Err(r) if is_revocation(*r) => {}
                        Err(Refusal::StaleSequence) => {
                            assert_eq!(first, None, "{}: #{n}", s.name);
                            assert_eq!(seq_ok, Err(Refusal::StaleSequence), "{}: #{n}", s.name);
                        }
                        Err(r) => assert_eq!(first, Some(*r), "{}: #{n}", s.name),
                        Ok(()) => {
                            assert_eq!(first, None, "{}: #{n}: {:?}", s.name, facts.checks);
                            assert_eq!(
                                facts.patient.map(|(p, _)| p),
                                *patient,
                                "{}: patient of #{n}",
                                s.name
                            );
                        }
                    }
                    uses.push(u);
                    n += 1;
                    checked += 1;
                }
            }
        }
        // Revocations count whenever logged.
        for (i, u) in uses.iter().enumerate() {
            let got = view
                .check_not_revoked(u)
                .map(drop)
                .map_err(|d| refusal_of(&d));
            assert_eq!(got, expected[i].3, "{}: #{i} at the end", s.name);
        }
    }
    assert!(checked >= 30);
}
