//! C2SP tlog-proof text: parsing never panics, and parsed proofs re-encode to the same text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::tlog_proof::TlogProof;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(p) = TlogProof::parse(s) {
        assert_eq!(TlogProof::parse(&p.encode()).ok(), Some(p));
    }
});
