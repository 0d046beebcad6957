//! tlog-witness requests and answers: parsing never panics, a parsed request re-encodes to the
//! same bytes, and the witness's decision never panics on it.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::{note, witness};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = witness::parse_cosignatures(s);
    let _ = witness::parse_size_body(s);
    let _ = note::Cosigner::from_skey(s);
    if let Ok(req) = witness::AddCheckpoint::parse(s) {
        assert_eq!(
            witness::AddCheckpoint::encode(req.old_size, &req.proof, req.checkpoint),
            s
        );
        let stored = witness::Cosigned { size: 3, root: [0; 32] };
        let _ = witness::judge(&req, |_| Some(Vec::new()), Some(&stored));
    }
});
