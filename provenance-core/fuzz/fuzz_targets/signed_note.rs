//! Signed notes, checkpoints and vkeys: parsing never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::{checkpoint::Checkpoint, note};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    let _ = note::split(s);
    let _ = note::NoteVerifier::from_vkey(s);
    if let Ok(cp) = Checkpoint::from_text(s) {
        assert_eq!(Checkpoint::from_text(&cp.to_text()).ok(), Some(cp));
    }
});
