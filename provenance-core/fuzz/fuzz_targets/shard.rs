//! Shard start and carried entries: decode never panics, and what decodes round-trips.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::shard::{Carried, ShardStart};

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = ShardStart::from_cbor(data) {
        assert_eq!(s.to_cbor(), data);
        let _ = s.takes(0);
    }
    if let Ok(c) = Carried::from_cbor(data) {
        assert_eq!(c.to_cbor(), data);
    }
});
