//! The committed registry scenarios (`provenance-core/testdata/registry-scenarios.json`) run
//! through the gateway's own frame check: for every reading, the registry events logged before
//! it, synced and replayed as the gateway does, and the sensor's frame received at the
//! envelope's received-at get the verdict the state machine gives (`frame`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use base64::{engine::general_purpose::STANDARD as B64, Engine};
use gateway_uplink::frames::{self, FrameReject, GatewayRegistry, SyncedEvent, SyncedEvents};
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::scenario::{self, Step};
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
        let expected = scenario::expected(s);
        let mut logged = Vec::new();
        let mut n = 0;
        for step in &s.steps {
            match step {
                Step::Event {
                    index,
                    logged_at_ms,
                    event,
                    applied,
                } => {
                    // Refused events were never logged: a gateway never sees them.
                    if *applied {
                        logged.push(SyncedEvent {
                            index: *index,
                            leaf_data: B64.encode(
                                LogEntry {
                                    kind: EntryKind::Registry,
                                    body: event.to_cbor().unwrap(),
                                    logged_at_ms: *logged_at_ms,
                                }
                                .to_cbor(),
                            ),
                        });
                    }
                }
                Step::Reading {
                    decoded,
                    gateway_id,
                    ..
                } => {
                    let synced = SyncedEvents {
                        gateway_id: gateway_id.clone(),
                        events: logged.clone(),
                    };
                    let reg = GatewayRegistry::from_events(gateway_id, &synced).unwrap();
                    let got = frames::check(
                        decoded.sensor_bytes(),
                        &reg,
                        decoded.received_at_ms,
                        &mut HashMap::new(),
                    );
                    let got = match got {
                        Ok(_) => Ok(()),
                        Err(FrameReject::Refused(r, _)) => Err(r),
                        Err(e) => panic!("{}: {e}", s.name),
                    };
                    assert_eq!(got, expected[n].2, "{}: frame of reading #{n}", s.name);
                    n += 1;
                    frames_checked += 1;
                }
            }
        }
    }
    assert!(frames_checked >= 30);
}
