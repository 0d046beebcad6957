//! Sensor reading CBOR: decode never panics, and whatever decodes re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::reading::Reading;

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = Reading::from_cbor(data) {
        assert_eq!(r.to_cbor().expect("decoded reading re-encodes"), data);
    }
});
