//! RFC 9162 proof verification on arbitrary proofs, sizes and indices: never panics, and never
//! accepts an inclusion proof for a leaf that is not in the tree it claims.
#![no_main]
use libfuzzer_sys::fuzz_target;
use provenance_core::merkle::{self, MemoryTree};

fuzz_target!(|data: &[u8]| {
    if data.len() < 17 {
        return;
    }
    let a = u64::from_le_bytes(data[0..8].try_into().unwrap());
    let b = u64::from_le_bytes(data[8..16].try_into().unwrap());
    let hashes: Vec<[u8; 32]> = data[16..].chunks_exact(32).map(|c| c.try_into().unwrap()).collect();
    let root = hashes.first().copied().unwrap_or([0; 32]);
    let _ = merkle::verify_inclusion(a, b, &root, &hashes, &root);
    let _ = merkle::verify_consistency(a, b, &root, &root, &hashes);
    // A small real tree: a proof made of fuzz bytes must not prove a leaf that is not there.
    let mut t = MemoryTree::new();
    for i in 0..(b % 64 + 1) {
        t.push_data(&i.to_le_bytes());
    }
    let size = t.size();
    let real_root = t.root_at(size).unwrap();
    let bogus_leaf = merkle::leaf_hash(b"not in the tree");
    assert!(merkle::verify_inclusion(a % size, size, &bogus_leaf, &hashes, &real_root).is_err());
});
