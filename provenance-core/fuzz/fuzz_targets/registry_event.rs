//! Registry event CBOR: decode never panics, and whatever decodes re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::registry::RegistryEvent;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = RegistryEvent::from_cbor(data) {
        assert_eq!(e.to_cbor().expect("decoded event re-encodes"), data);
    }
});
