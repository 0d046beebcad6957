//! Gateway envelope (both COSE layers): decode never panics; accepted input is canonical.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::cose::{GatewayEnvelope, SignedReading};

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = GatewayEnvelope::decode(data) {
        let _ = env.signed_data();
        assert!(SignedReading::decode(env.sensor_bytes()).is_ok());
    }
    let _ = SignedReading::decode(data);
});
