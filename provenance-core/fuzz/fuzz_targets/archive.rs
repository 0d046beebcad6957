//! Log archive manifests and entry lines: parsing never panics; a manifest that parses has a
//! frontier of the right length and only safe paths; a compact range built from it never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::archive::{safe_relative_path, ArchiveManifest, EntryLine};
use provenance_core::merkle::CompactRange;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = ArchiveManifest::from_json(data) {
        let f = m.frontier_hashes().expect("checked by from_json");
        assert!(m.entry_files.iter().all(|p| safe_relative_path(p)));
        let mut r = CompactRange::from_frontier(m.start, &f).expect("frontier length checked");
        r.push([0u8; 32]);
        let _ = r.root();
    }
    let _ = EntryLine::parse_leaf(data);
});
