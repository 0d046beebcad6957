//! The committed registry scenarios (`provenance-core/testdata/registry-scenarios.json`) run
//! through the service's own registry — the sequencer's copy, which judges every reading at the
//! log position and logged-at it gets: every event applied or refused, every reading accepted
//! (with its patient) or refused with the same code as the state machine's.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use ledger_service::registry::Registry;
use provenance_core::registry_state::ReadingClaims;
use provenance_core::scenario::{self, Step};

#[test]
fn the_service_reaches_every_expected_verdict() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../provenance-core/testdata/registry-scenarios.json"
    );
    let scenarios = scenario::parse(&std::fs::read(path).unwrap()).unwrap();
    assert!(scenarios.len() >= 12);
    let mut readings = 0;
    for s in &scenarios {
        let mut reg = Registry::default();
        let expected = scenario::expected(s);
        let mut n = 0;
        let mut ends = Vec::new();
        for step in &s.steps {
            match step {
                Step::Event {
                    index,
                    logged_at_ms,
                    event,
                    applied,
                } => {
                    let got = reg.apply(*index, *logged_at_ms, event);
                    assert_eq!(got.is_ok(), *applied, "{}: event {index}: {got:?}", s.name);
                }
                Step::Reading {
                    index,
                    logged_at_ms,
                    decoded,
                    ..
                } => {
                    let claims = ReadingClaims::of(decoded);
                    let got = reg.admit(*index, *logged_at_ms, &claims);
                    let (want, patient, _, _) = &expected[n];
                    assert_eq!(
                        got.as_ref().map(drop).map_err(|r| *r),
                        *want,
                        "{}: reading at {index}",
                        s.name
                    );
                    assert_eq!(
                        got.ok().and_then(|(v, _)| v.patient),
                        *patient,
                        "{}: patient of the reading at {index}",
                        s.name
                    );
                    ends.push((*logged_at_ms, decoded.clone()));
                    n += 1;
                }
            }
        }
        for (i, (logged, env)) in ends.iter().enumerate() {
            let got = reg
                .state()
                .revocation_check(*logged, &ReadingClaims::of(env))
                .map(drop)
                .map_err(|(r, _)| r);
            assert_eq!(got, expected[i].3, "{}: reading #{i} at the end", s.name);
        }
        readings += n;
    }
    assert!(readings >= 30, "{readings} readings");
}
