//! Evidence bundle JSON: parsing never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::bundle::EvidenceBundle;

fuzz_target!(|data: &[u8]| {
    let _ = EvidenceBundle::from_json(data);
});
