//! The committed registry scenarios (`provenance-core/testdata/registry-scenarios.json`) run
//! through the service's own registry — the sequencer's copy, which judges every reading at the
//! log position and logged-at it gets: every event applied or refused, every reading accepted
//! (with its patient) or refused with the same code as the state machine's.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use ledger_service::registry::Registry;
use provenance_core::registry_state::ReadingClaims;
use provenance_core::scenario;
use std::cell::RefCell;

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
        let reg = RefCell::new(Registry::default());
        readings += scenario::drive(
            s,
            |e| {
                let got = reg.borrow_mut().apply(e.index, e.logged_at_ms, &e.event);
                assert_eq!(
                    got.is_ok(),
                    e.applied,
                    "{}: event {}: {got:?}",
                    s.name,
                    e.index
                );
            },
            |r| {
                let got =
                    reg.borrow_mut()
                        .admit(r.index, r.logged_at_ms, &ReadingClaims::of(&r.decoded));
                let what = format!("{}: reading at {}", s.name, r.index);
                assert_eq!(got.as_ref().map(drop).map_err(|r| *r), r.verdict, "{what}");
                assert_eq!(got.ok().and_then(|(v, _)| v.patient), r.patient, "{what}");
            },
            |r| {
                let got = reg
                    .borrow()
                    .state()
                    .revocation_check(r.logged_at_ms, &ReadingClaims::of(&r.decoded))
                    .map(drop)
                    .map_err(|(r, _)| r);
                assert_eq!(
                    got, r.at_end,
                    "{}: reading at {} at the end",
                    s.name, r.index
                );
            },
        );
    }
    assert!(readings >= 30, "{readings} readings");
}
