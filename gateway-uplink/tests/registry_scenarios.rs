//! The committed registry scenarios (`provenance-core/testdata/registry-scenarios.json`) run
//! through the gateway's own frame check: for every reading, the registry events logged before
//! it, synced and replayed as the gateway does, and the sensor's frame received at the
//! envelope's received-at get the verdict the state machine gives (`frame`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use gateway_uplink::frames::{self, FrameReject, GatewayRegistry, SyncedEvent, SyncedEvents};
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::scenario;
use std::collections::HashMap;

#[test]
fn the_gateway_reaches_every_expected_frame_verdict() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../provenance-core/testdata/registry-scenarios.json"
    );
    let scenarios = scenario::parse(&std::fs::read(path).unwrap()).unwrap();
    let mut frames_checked = 0;
    for s in &scenarios {
        let logged = std::cell::RefCell::new(Vec::new());
        frames_checked += scenario::drive(
            s,
            |e| {
                // Refused events were never logged: a gateway never sees them.
                if e.applied {
                    let entry = LogEntry {
                        kind: EntryKind::Registry,
                        body: e.event.to_cbor().unwrap(),
                        logged_at_ms: e.logged_at_ms,
                    };
                    logged.borrow_mut().push(SyncedEvent {
                        index: e.index,
                        leaf_data: B64.encode(entry.to_cbor()),
                    });
                }
            },
            |r| {
                let synced = SyncedEvents {
                    gateway_id: r.gateway_id.clone(),
                    events: logged.borrow().clone(),
                };
                let reg = GatewayRegistry::from_events(&r.gateway_id, &synced).unwrap();
                let got = frames::check(
                    r.decoded.sensor_bytes(),
                    &reg,
                    r.decoded.received_at_ms,
                    &mut HashMap::new(),
                );
                let got = match got {
                    Ok(_) => Ok(()),
                    Err(FrameReject::Refused(r, _)) => Err(r),
                    Err(e) => panic!("{}: {e}", s.name),
                };
                assert_eq!(
                    got, r.frame,
                    "{}: frame of the reading at {}",
                    s.name, r.index
                );
            },
            |_| {},
        );
    }
    assert!(frames_checked >= 30);
}
