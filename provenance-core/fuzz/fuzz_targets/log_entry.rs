//! Log entry (leaf data): decode never panics, round-trips, and body decoding never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::log_entry::LogEntry;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = LogEntry::from_cbor(data) {
        assert_eq!(e.to_cbor(), data);
        let _ = e.decode_body();
    }
});
