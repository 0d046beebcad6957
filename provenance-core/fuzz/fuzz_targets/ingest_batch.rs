//! The ingest batch: decoding never panics, never returns more or longer items than allowed,
//! and whatever decodes re-encodes to the same bytes.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::batch;

fuzz_target!(|data: &[u8]| {
    if let Ok(items) = batch::decode(data, 64, 512) {
        assert!(!items.is_empty() && items.len() <= 64 && items.iter().all(|i| i.len() <= 512));
        assert_eq!(batch::encode(&items), data);
    }
});
