//! Property tests: for random tree sizes and indices, generated proofs verify, and every
//! mutation (a flipped bit, an extra or missing hash, a wrong index or size) is rejected.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic on broken fixtures

use proptest::prelude::*;
use provenance_core::merkle::{self, Hash, MemoryTree};

fn tree(size: u64) -> MemoryTree {
    let mut t = MemoryTree::new();
    for i in 0..size {
        t.push_data(&i.to_be_bytes());
    }
    t
}

/// Size, then a position inside it.
fn size_and_index() -> impl Strategy<Value = (u64, u64)> {
    (1u64..600).prop_flat_map(|n| (Just(n), 0..n))
}

fn sizes() -> impl Strategy<Value = (u64, u64)> {
    (2u64..600).prop_flat_map(|n| (1..n, Just(n)))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn inclusion_round_trip_and_mutations((size, index) in size_and_index(), bit in 0usize..256, pick in any::<prop::sample::Index>()) {
        // Twice as large, so the true roots of other sizes exist to test wrong-size claims.
        let t = tree(size * 2 + 1);
        let root = t.root_at(size).unwrap();
        let leaf = merkle::leaf_hash(&index.to_be_bytes());
        let proof = merkle::inclusion_proof(&t, index, size).unwrap();
        prop_assert_eq!(proof.len(), merkle::inclusion_proof_len(index, size));
        prop_assert!(merkle::verify_inclusion(index, size, &leaf, &proof, &root).is_ok());

        // Flip one bit of one proof hash.
        if !proof.is_empty() {
            let mut bad = proof.clone();
            let i = pick.index(bad.len());
            bad[i][bit / 8] ^= 1 << (bit % 8);
            prop_assert!(merkle::verify_inclusion(index, size, &leaf, &bad, &root).is_err());
        }
        // Flip a bit of the leaf or the root.
        let mut bad_leaf = leaf;
        bad_leaf[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(merkle::verify_inclusion(index, size, &bad_leaf, &proof, &root).is_err());
        let mut bad_root = root;
        bad_root[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(merkle::verify_inclusion(index, size, &leaf, &proof, &bad_root).is_err());
        // An extra hash at the end or the start, or a missing one.
        let mut longer = proof.clone();
        longer.push([0u8; 32]);
        prop_assert!(merkle::verify_inclusion(index, size, &leaf, &longer, &root).is_err());
        let mut longer = proof.clone();
        longer.insert(0, leaf);
        prop_assert!(merkle::verify_inclusion(index, size, &leaf, &longer, &root).is_err());
        if !proof.is_empty() {
            let shorter = &proof[..proof.len() - 1];
            prop_assert!(merkle::verify_inclusion(index, size, &leaf, shorter, &root).is_err());
            prop_assert!(merkle::verify_inclusion(index, size, &leaf, &proof[1..], &root).is_err());
        }
        // The wrong index or size (the leaf really sits at `index`, so any other is a lie).
        // A wrong size is checked against the true root of that size: the checkpoint binds
        // size and root together, and RFC 9162 proofs are only meaningful for that pair (the
        // proof for leaf 0 of 3 leaves also "verifies" as leaf 0 of 4 against the 3-leaf root).
        for wrong in [index ^ 1, index + 1, index.wrapping_sub(1), index + size] {
            if wrong != index {
                prop_assert!(merkle::verify_inclusion(wrong, size, &leaf, &proof, &root).is_err());
            }
        }
        for wrong_size in [size + 1, size - 1, size * 2] {
            if wrong_size != size && wrong_size > index {
                let wrong_root = t.root_at(wrong_size).unwrap();
                prop_assert!(merkle::verify_inclusion(index, wrong_size, &leaf, &proof, &wrong_root).is_err());
            }
        }
    }

    #[test]
    fn consistency_round_trip_and_mutations((from, to) in sizes(), bit in 0usize..256, pick in any::<prop::sample::Index>()) {
        let t = tree(to + 1);
        let (r1, r2) = (t.root_at(from).unwrap(), t.root_at(to).unwrap());
        let proof = merkle::consistency_proof(&t, from, to).unwrap();
        prop_assert_eq!(proof.len(), merkle::consistency_proof_len(from, to));
        prop_assert!(merkle::verify_consistency(from, to, &r1, &r2, &proof).is_ok());

        let mut bad = proof.clone();
        let i = pick.index(bad.len());
        bad[i][bit / 8] ^= 1 << (bit % 8);
        prop_assert!(merkle::verify_consistency(from, to, &r1, &r2, &bad).is_err());
        let mut flipped: Hash = r1;
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(merkle::verify_consistency(from, to, &flipped, &r2, &proof).is_err());
        prop_assert!(merkle::verify_consistency(from, to, &r1, &flipped, &proof).is_err());
        prop_assert!(merkle::verify_consistency(from, to, &r2, &r1, &proof).is_err());
        let mut longer = proof.clone();
        longer.push([7u8; 32]);
        prop_assert!(merkle::verify_consistency(from, to, &r1, &r2, &longer).is_err());
        prop_assert!(merkle::verify_consistency(from, to, &r1, &r2, &proof[..proof.len() - 1]).is_err());
        prop_assert!(merkle::verify_consistency(from, to, &r1, &r2, &proof[1..]).is_err());
        prop_assert!(merkle::verify_consistency(from, to, &r1, &r2, &[]).is_err());
        // Claiming other sizes, with the true roots of those sizes, fails.
        let root = |n| t.root_at(n).unwrap();
        if from + 1 < to {
            prop_assert!(merkle::verify_consistency(from + 1, to, &root(from + 1), &r2, &proof).is_err());
        }
        if from > 1 {
            prop_assert!(merkle::verify_consistency(from - 1, to, &root(from - 1), &r2, &proof).is_err());
        }
        prop_assert!(merkle::verify_consistency(from, to + 1, &r1, &root(to + 1), &proof).is_err());
        prop_assert!(merkle::verify_consistency(from, to - 1, &r1, &root(to - 1), &proof).is_err());
    }

    /// Our subtree hashing and rs_merkle's (with the RFC 6962 hasher) agree on every root.
    #[test]
    fn roots_agree_with_rs_merkle(size in 0u64..700) {
        let t = tree(size);
        let leaves: Vec<Hash> = (0..size).map(|i| merkle::leaf_hash(&i.to_be_bytes())).collect();
        prop_assert_eq!(t.root_at(size).unwrap(), merkle::root_from_leaf_hashes(&leaves));
    }

    /// A compact range started from the frontier of `[0, a)` and fed leaves `a..b` has the root
    /// of `[0, b)`; a missing, extra, changed or swapped leaf, or a changed frontier hash, does
    /// not.
    #[test]
    fn compact_range_from_frontier((a, b) in sizes(), pick in any::<prop::sample::Index>(), bit in 0usize..256) {
        let t = tree(b);
        let want = t.root_at(b).unwrap();
        let front = merkle::frontier(&t, a).unwrap();
        let leaves: Vec<Hash> = (a..b).map(|i| merkle::leaf_hash(&i.to_be_bytes())).collect();
        let root_of = |front: &[Hash], leaves: &[Hash]| {
            let mut r = merkle::CompactRange::from_frontier(a, front).unwrap();
            for l in leaves {
                r.push(*l);
            }
            r.root()
        };
        prop_assert_eq!(root_of(&front, &leaves), want);
        let i = pick.index(leaves.len());
        let mut changed = leaves.clone();
        changed[i][bit / 8] ^= 1 << (bit % 8);
        prop_assert_ne!(root_of(&front, &changed), want);
        prop_assert_ne!(root_of(&front, &leaves[1..]), want);
        let mut extra = leaves.clone();
        extra.push(leaves[i]);
        prop_assert_ne!(root_of(&front, &extra), want);
        if leaves.len() > 1 && leaves[0] != leaves[1] {
            let mut swapped = leaves.clone();
            swapped.swap(0, 1);
            prop_assert_ne!(root_of(&front, &swapped), want);
        }
        if !front.is_empty() {
            let mut f = front.clone();
            let j = pick.index(f.len());
            f[j][bit / 8] ^= 1 << (bit % 8);
            prop_assert_ne!(root_of(&f, &leaves), want);
        }
        prop_assert!(merkle::CompactRange::from_frontier(a, &front[..front.len().saturating_sub(1)]).is_err() || front.is_empty());
    }
}

#[test]
fn out_of_range_requests_are_errors() {
    let t = tree(10);
    assert!(merkle::inclusion_proof(&t, 10, 10).is_err());
    assert!(merkle::inclusion_proof(&t, 0, 11).is_err()); // the store lacks those nodes
    assert!(merkle::consistency_proof(&t, 5, 4).is_err());
    assert!(merkle::consistency_proof(&t, 0, 4).is_err());
    assert_eq!(
        merkle::consistency_proof(&t, 4, 4).unwrap(),
        Vec::<Hash>::new()
    );
    assert_eq!(t.root_at(0).unwrap(), merkle::EMPTY_ROOT);
}

/// Found by the `merkle_verify` fuzz target: sizes above 2^63 overflowed a shift in the proof
/// length computation. Verification must simply reject such claims.
#[test]
fn huge_sizes_are_rejected_without_panicking() {
    let h = [0u8; 32];
    for (i, n) in [
        (0u64, u64::MAX),
        (u64::MAX - 1, u64::MAX),
        (1 << 63, (1 << 63) + 1),
        (0, 1 << 63),
    ] {
        assert!(merkle::verify_inclusion(i, n, &h, &[h; 3], &h).is_err());
    }
    for (m, n) in [
        (1u64, u64::MAX),
        (1 << 63, u64::MAX),
        (u64::MAX - 1, u64::MAX),
    ] {
        assert!(merkle::verify_consistency(m, n, &h, &h, &[h; 3]).is_err());
    }
    assert_eq!(merkle::inclusion_proof_len(0, u64::MAX), 64);
}

/// A large tree, sampled: proofs at sizes well past one tile (256) and across levels.
#[test]
fn large_tree_samples() {
    let t = tree(70_000);
    for (i, n) in [
        (0u64, 70_000u64),
        (65_535, 65_536),
        (65_536, 70_000),
        (69_999, 70_000),
        (12_345, 54_321),
    ] {
        let p = merkle::inclusion_proof(&t, i, n).unwrap();
        let root = t.root_at(n).unwrap();
        merkle::verify_inclusion(i, n, &merkle::leaf_hash(&i.to_be_bytes()), &p, &root).unwrap();
    }
    for (m, n) in [
        (1u64, 70_000u64),
        (65_536, 70_000),
        (33_333, 66_666),
        (69_999, 70_000),
    ] {
        let p = merkle::consistency_proof(&t, m, n).unwrap();
        merkle::verify_consistency(m, n, &t.root_at(m).unwrap(), &t.root_at(n).unwrap(), &p)
            .unwrap();
    }
}
