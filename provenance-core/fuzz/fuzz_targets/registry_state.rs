//! The registry state machine on arbitrary event sequences (length-prefixed registry-event
//! CBOR): applying and evaluating never panics, and a refused event changes nothing.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::keys::KeyId;
use provenance_core::registry::RegistryEvent;
use provenance_core::registry_state::{ReadingClaims, RegistryState};

fuzz_target!(|data: &[u8]| {
    let mut state = RegistryState::new();
    let mut rest = data;
    let mut index = 0u64;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (event, tail) = rest[2..].split_at(len);
        rest = tail;
        index += 1 + u64::from(event.first().copied().unwrap_or(0));
        if let Ok(ev) = RegistryEvent::from_cbor(event) {
            let before = (state.event_count(), state.registry_root());
            if state.apply(index, 1_767_225_600_000 + index, &ev).is_err() {
                assert_eq!(before, (state.event_count(), state.registry_root()));
            }
        }
    }
    let claims = ReadingClaims {
        gateway_kid: KeyId([1; 20]),
        sensor_kid: KeyId([2; 20]),
        sensor_id: "SN-0001",
        seq: 1,
        measured_at_ms: 1_767_225_600_000,
        received_at_ms: 1_767_225_600_100,
    };
    let _ = state.evaluate(index + 1, 1_767_225_600_200, &claims).verdict();
    let _ = state.revocation_check(1_767_225_600_200, &claims);
    let _ = state.history_of("SN-0001", "GW-0001");
});
