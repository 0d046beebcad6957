//! The registry commitment: extension-line parsing never panics, and a map proof made of fuzz
//! bytes never proves a key the map does not hold, nor another value for a key it holds.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::registry_state::parse_registry_extension;
use provenance_core::smt::{self, SparseMap};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let lines: Vec<String> = text.lines().map(String::from).collect();
    let _ = parse_registry_extension(&lines);
    if data.len() < 2 {
        return;
    }
    let n = data[0] % 32 + 1;
    let mut map = SparseMap::new();
    for i in 0..n {
        let mut k = [0u8; 32];
        k[0] = i.wrapping_mul(37);
        k[1] = data[1] & i;
        map.insert(k, [i; 32]);
    }
    let root = map.root();
    let hashes: Vec<[u8; 32]> = data[2..].chunks_exact(32).map(|c| c.try_into().unwrap()).collect();
    let absent = [0xffu8; 32];
    assert!(!smt::verify(&root, &absent, &[1; 32], &hashes));
    let mut present = [0u8; 32];
    present[1] = 0;
    assert!(!smt::verify(&root, &present, &[0xee; 32], &hashes));
});
