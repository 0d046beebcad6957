//! A sparse Merkle map from 256-bit keys to 32-byte values, with short inclusion proofs: the
//! registry's commitment (each checkpoint carries its root; see
//! [`crate::registry_state::RegistryState::registry_root`]).
//!
//! The tree has 256 levels, a key's bits (most significant first) choosing left (0) or right
//! (1). A subtree holding no key hashes to [`EMPTY`] (32 zero bytes); a subtree holding exactly
//! one key hashes to that key's leaf, wherever the subtree sits (so a proof has only as many
//! hashes as the key needs to be told apart from every other key, about log2 of the number of
//! keys); any other subtree is an inner node:
//!
//! ```text
//! leaf(key, value) = SHA-256(0x00 ‖ key ‖ value)
//! node(left, right) = SHA-256(0x01 ‖ left ‖ right)
//! ```
//!
//! A proof of `(key, value)` is the list of sibling hashes from the root down to the depth of
//! the key's leaf; [`verify`] folds them from the leaf up. The domain bytes keep a leaf from
//! passing for a node, so a root binds the value of every key: proving another value for a key
//! needs a SHA-256 collision. Written here rather than taken from the `jmt` crate (std only, a
//! versioned node store for blockchains, a large dependency tree) or `sparse-merkle-tree` (whose
//! authors state that its proof format may still change, and which defaults to BLAKE2b): an
//! auditor must be able to check these proofs for years, from this page and `docs/FORMATS.md`.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use sha2::{Digest, Sha256};

/// A 32-byte hash (also a key).
pub type Hash = [u8; 32];

/// The hash of an empty subtree.
pub const EMPTY: Hash = [0; 32];

/// Most sibling hashes in a proof (the tree's depth).
pub const MAX_PROOF_LEN: usize = 256;

/// `SHA-256(0x00 ‖ key ‖ value)`.
pub fn leaf_hash(key: &Hash, value: &Hash) -> Hash {
    Sha256::new()
        .chain_update([0u8])
        .chain_update(key)
        .chain_update(value)
        .finalize()
        .into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([1u8])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// Bit `d` of `key`, most significant first.
fn bit(key: &Hash, d: usize) -> bool {
    key[d / 8] & (0x80 >> (d % 8)) != 0
}

/// `key` with every bit from `d` on cleared: the prefix naming the subtree at depth `d`.
fn prefix(key: &Hash, d: usize) -> Hash {
    let mut p = *key;
    for (i, b) in p.iter_mut().enumerate() {
        let keep = d.saturating_sub(i * 8).min(8);
        *b &= !(0xffu8.checked_shr(keep as u32).unwrap_or(0));
    }
    p
}

/// The last key of the subtree `(d, prefix)`: the prefix with every later bit set.
fn last_of(prefix: &Hash, d: usize) -> Hash {
    let mut p = *prefix;
    for (i, b) in p.iter_mut().enumerate() {
        let keep = d.saturating_sub(i * 8).min(8);
        *b |= 0xffu8.checked_shr(keep as u32).unwrap_or(0);
    }
    p
}

fn with_bit(p: &Hash, d: usize, set: bool) -> Hash {
    let mut p = *p;
    if set {
        p[d / 8] |= 0x80 >> (d % 8);
    } else {
        p[d / 8] &= !(0x80 >> (d % 8));
    }
    p
}

/// Folds a proof from the leaf up: whether `(key, value)` is in the map with this `root`.
pub fn verify(root: &Hash, key: &Hash, value: &Hash, siblings: &[Hash]) -> bool {
    if siblings.len() > MAX_PROOF_LEN {
        return false;
    }
    let mut h = leaf_hash(key, value);
    for (d, s) in siblings.iter().enumerate().rev() {
        h = if bit(key, d) {
            node_hash(s, &h)
        } else {
            node_hash(&h, s)
        };
    }
    h == *root
}

/// A proof that a key is not in the map: the sibling hashes from the root down to the depth
/// where the key's path ends, and the subtree found there: empty (`other: None`), or holding
/// exactly one other key, whose leaf is given (`other: Some((key, value))`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsenceProof {
    /// Sibling hashes from the root down.
    pub siblings: Vec<Hash>,
    /// The one other key (and its value) in the subtree where the path ends, if any.
    pub other: Option<(Hash, Hash)>,
}

/// Verifies that `key` is absent from the map with `root`: the subtree where the key's path
/// ends is empty, or is the leaf of another key sharing that path, and the siblings fold it to
/// the root. (A subtree of one key hashes to its leaf wherever it sits, so the other key must
/// share the key's first `siblings.len()` bits and differ from it; a present key cannot be
/// shown absent without a SHA-256 collision or preimage.)
pub fn verify_absent(root: &Hash, key: &Hash, proof: &AbsenceProof) -> bool {
    let d = proof.siblings.len();
    if d > MAX_PROOF_LEN {
        return false;
    }
    let mut h = match &proof.other {
        None => EMPTY,
        Some((k, v)) => {
            if k == key || (d > 0 && prefix(k, d) != prefix(key, d)) {
                return false;
            }
            leaf_hash(k, v)
        }
    };
    for (d, s) in proof.siblings.iter().enumerate().rev() {
        h = if bit(key, d) {
            node_hash(s, &h)
        } else {
            node_hash(&h, s)
        };
    }
    h == *root
}

/// The map, with the hashes of its inner nodes kept up to date on every insert (so the root and
/// proofs cost O(log n) lookups, and an insert O(log n) hashes).
#[derive(Debug, Clone, Default)]
pub struct SparseMap {
    leaves: BTreeMap<Hash, Hash>,
    nodes: BTreeMap<(u16, Hash), Hash>,
}

enum Subtree {
    Empty,
    One(Hash, Hash),
    Many,
}

impl SparseMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.leaves.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.leaves.is_empty()
    }

    /// The value of a key.
    pub fn get(&self, key: &Hash) -> Option<&Hash> {
        self.leaves.get(key)
    }

    fn subtree(&self, d: usize, p: &Hash) -> Subtree {
        let mut it = self.leaves.range(*p..=last_of(p, d));
        match (it.next(), it.next()) {
            (None, _) => Subtree::Empty,
            (Some((k, v)), None) => Subtree::One(*k, *v),
            _ => Subtree::Many,
        }
    }

    fn hash_of(&self, d: usize, p: &Hash) -> Hash {
        match self.subtree(d, p) {
            Subtree::Empty => EMPTY,
            Subtree::One(k, v) => leaf_hash(&k, &v),
            Subtree::Many => self.nodes.get(&(d as u16, *p)).copied().unwrap_or(EMPTY),
        }
    }

    /// Sets `key` to `value` and updates the inner nodes on its path.
    pub fn insert(&mut self, key: Hash, value: Hash) {
        self.leaves.insert(key, value);
        // The inner nodes on the key's path: every depth whose subtree holds another key too.
        let mut depths = Vec::new();
        for d in 0..MAX_PROOF_LEN {
            if !matches!(self.subtree(d, &prefix(&key, d)), Subtree::Many) {
                break;
            }
            depths.push(d);
        }
        for d in depths.into_iter().rev() {
            let p = prefix(&key, d);
            let left = self.hash_of(d + 1, &with_bit(&p, d, false));
            let right = self.hash_of(d + 1, &with_bit(&p, d, true));
            self.nodes.insert((d as u16, p), node_hash(&left, &right));
        }
    }

    /// The root.
    pub fn root(&self) -> Hash {
        self.hash_of(0, &EMPTY)
    }

    /// The proof of a key's value: sibling hashes from the root down, or `None` if the key is
    /// not in the map.
    pub fn prove(&self, key: &Hash) -> Option<Vec<Hash>> {
        self.leaves.get(key)?;
        let mut siblings = Vec::new();
        let mut d = 0;
        while d < MAX_PROOF_LEN && matches!(self.subtree(d, &prefix(key, d)), Subtree::Many) {
            let sibling = with_bit(&prefix(key, d), d, !bit(key, d));
            siblings.push(self.hash_of(d + 1, &sibling));
            d += 1;
        }
        Some(siblings)
    }

    /// A proof that `key` is absent (`None` if it is present): the sibling hashes from the root
    /// down to where the key's path ends, and what is there — nothing, or the one other key
    /// (with its value) in that subtree.
    pub fn prove_absent(&self, key: &Hash) -> Option<AbsenceProof> {
        if self.leaves.contains_key(key) {
            return None;
        }
        let mut siblings = Vec::new();
        let mut d = 0;
        loop {
            match self.subtree(d, &prefix(key, d)) {
                Subtree::Many if d < MAX_PROOF_LEN => {
                    let sibling = with_bit(&prefix(key, d), d, !bit(key, d));
                    siblings.push(self.hash_of(d + 1, &sibling));
                    d += 1;
                }
                Subtree::One(k, v) => {
                    return Some(AbsenceProof {
                        siblings,
                        other: Some((k, v)),
                    })
                }
                _ => {
                    return Some(AbsenceProof {
                        siblings,
                        other: None,
                    })
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, computed from scratch.
    fn reference(keys: &[(Hash, Hash)], d: usize) -> Hash {
        match keys {
            [] => EMPTY,
            [(k, v)] => leaf_hash(k, v),
            _ => {
                let (l, r): (Vec<_>, Vec<_>) = keys.iter().partition(|(k, _)| !bit(k, d));
                node_hash(&reference(&l, d + 1), &reference(&r, d + 1))
            }
        }
    }

    fn key(i: u32) -> Hash {
        Sha256::digest(i.to_be_bytes()).into()
    }

    #[test]
    fn prefixes() {
        let k = [0xff; 32];
        assert_eq!(prefix(&k, 0), [0; 32]);
        assert_eq!(prefix(&k, 256), k);
        let p = prefix(&k, 9);
        assert_eq!((p[0], p[1], p[2]), (0xff, 0x80, 0));
        assert_eq!(last_of(&[0; 32], 0), [0xff; 32]);
        assert_eq!(last_of(&[0; 32], 256), [0; 32]);
    }

    #[test]
    fn roots_match_the_definition_and_proofs_verify() {
        let mut m = SparseMap::new();
        assert_eq!(m.root(), EMPTY);
        let mut all: BTreeMap<Hash, Hash> = BTreeMap::new();
        for i in 0..300u32 {
            // Updates of earlier keys as well as new keys.
            let k = key(i % 200);
            let v = key(10_000 + i);
            m.insert(k, v);
            all.insert(k, v);
            if i % 37 == 0 || i == 299 {
                let kv: Vec<_> = all.iter().map(|(k, v)| (*k, *v)).collect();
                assert_eq!(m.root(), reference(&kv, 0), "after {i}");
            }
        }
        let root = m.root();
        for (k, v) in &all {
            let p = m.prove(k).unwrap();
            assert!(p.len() < 20, "short proofs: {}", p.len());
            assert!(verify(&root, k, v, &p));
            // Another value, a truncated or extended proof, a changed sibling: refused.
            assert!(!verify(&root, k, &key(1), &p));
            assert!(!verify(&root, k, v, &p[..p.len() - 1]));
            let mut longer = p.clone();
            longer.push(EMPTY);
            assert!(!verify(&root, k, v, &longer));
            let mut bad = p.clone();
            bad[0][0] ^= 1;
            assert!(!verify(&root, k, v, &bad));
        }
        assert!(m.prove(&key(999_999)).is_none());
    }

    #[test]
    fn absence_proofs_verify_for_absent_keys_only() {
        // The empty map: every key is absent, with no siblings.
        let empty = SparseMap::new();
        let p = empty.prove_absent(&key(1)).unwrap();
        assert_eq!(
            p,
            AbsenceProof {
                siblings: Vec::new(),
                other: None
            }
        );
        assert!(verify_absent(&EMPTY, &key(1), &p));
        let mut m = SparseMap::new();
        for i in 0..200u32 {
            m.insert(key(i), key(10_000 + i));
        }
        let root = m.root();
        let (mut empties, mut leaves) = (0, 0);
        for i in 200..600u32 {
            let k = key(i);
            let p = m.prove_absent(&k).unwrap();
            assert!(verify_absent(&root, &k, &p), "absent key {i}");
            match &p.other {
                None => empties += 1,
                Some((o, v)) => {
                    leaves += 1;
                    // The other key's own leaf is no proof that it is absent.
                    assert!(!verify_absent(&root, o, &p));
                    // Nor is its leaf with another value, a changed sibling, or a shorter or
                    // longer path.
                    let mut changed = p.clone();
                    changed.other = Some((*o, key(1)));
                    assert!(!verify_absent(&root, &k, &changed));
                    assert!(verify(&root, o, v, &p.siblings));
                }
            }
            if let Some(s) = p.siblings.first() {
                let mut bad = p.clone();
                bad.siblings[0] = node_hash(s, s);
                assert!(!verify_absent(&root, &k, &bad));
                let mut short = p.clone();
                short.siblings.pop();
                assert!(!verify_absent(&root, &k, &short));
            }
            let mut long = p.clone();
            long.siblings.push(EMPTY);
            assert!(!verify_absent(&root, &k, &long));
        }
        assert!(
            empties > 0 && leaves > 0,
            "{empties} empty, {leaves} leaf ends"
        );
        // A present key has no absence proof, and the proofs of absent keys do not show it
        // absent: neither as an empty subtree nor as its neighbour's leaf.
        for i in 0..200u32 {
            let k = key(i);
            assert!(m.prove_absent(&k).is_none());
            let siblings = m.prove(&k).unwrap();
            for other in [None, Some((key(9_999), key(1)))] {
                let forged = AbsenceProof {
                    siblings: siblings.clone(),
                    other,
                };
                assert!(!verify_absent(&root, &k, &forged), "present key {i}");
            }
        }
    }

    #[test]
    fn one_key_is_its_own_root() {
        let mut m = SparseMap::new();
        m.insert(key(1), key(2));
        assert_eq!(m.root(), leaf_hash(&key(1), &key(2)));
        assert_eq!(m.prove(&key(1)).unwrap(), Vec::<Hash>::new());
        // Keys sharing a long prefix.
        let (mut a, mut b) = ([0u8; 32], [0u8; 32]);
        a[31] = 1;
        b[31] = 3;
        let mut m = SparseMap::new();
        m.insert(a, key(5));
        m.insert(b, key(6));
        let p = m.prove(&a).unwrap();
        assert_eq!(p.len(), 255);
        assert!(verify(&m.root(), &a, &key(5), &p));
        assert_eq!(m.root(), reference(&[(a, key(5)), (b, key(6))], 0));
    }
}
