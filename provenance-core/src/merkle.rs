//! RFC 9162 Merkle tree hashing, proof generation and proof verification.
//!
//! Hashing follows RFC 9162 §2.1.1: a leaf hash is `SHA-256(0x00 ‖ leaf data)`, an interior node
//! is `SHA-256(0x01 ‖ left ‖ right)`, and a tree of `n` leaves splits at the largest power of two
//! smaller than `n`. Any RFC 6962 / RFC 9162 implementation computes the same roots.
//!
//! Proofs are *generated* from a [`HashReader`], which hands out the hashes of complete
//! ("perfect") subtrees by `(level, index)`, the C2SP tlog-tiles addressing. The service backs it
//! with stored tiles; tests back it with [`MemoryTree`]. Generating one proof costs O(log n) reads.
//!
//! Proofs are *verified* exactly as RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency)
//! describe, with the edge cases of the transparency-dev reference implementation. `rs_merkle`
//! computes in-memory roots (with an RFC 6962 hasher) but never verifies an untrusted proof: its
//! own `verify` accepts a trailing extra hash.

use alloc::vec::Vec;
use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf hash, a node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree: `SHA-256("")`.
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24,
    0x27, 0xae, 0x41, 0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

/// The most hashes a proof can hold for a tree of up to 2^63 leaves.
pub const MAX_PROOF_HASHES: usize = 64;

/// Why a proof was rejected, or could not be produced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index is not inside the tree.
    #[error("index {index} is not inside a tree of size {size}")]
    IndexOutOfRange {
        /// Leaf index asked for.
        index: u64,
        /// Tree size.
        size: u64,
    },
    /// The two tree sizes are not in order (`from` > `to`), or a size is out of range.
    #[error("tree sizes out of order or out of range: {from} > {to}")]
    SizesOutOfOrder {
        /// Older size.
        from: u64,
        /// Newer size.
        to: u64,
    },
    /// The proof has the wrong number of hashes for these sizes and index.
    #[error("proof has {got} hashes, expected {want}")]
    WrongLength {
        /// Hashes in the proof.
        got: usize,
        /// Hashes the sizes call for.
        want: usize,
    },
    /// A consistency proof from the empty tree was asked for or offered; RFC 9162 defines none.
    #[error("there is no consistency proof from the empty tree")]
    FromEmptyTree,
    /// The proof does not lead to the expected root.
    #[error("proof does not lead to the expected root hash")]
    RootMismatch,
    /// The hash store could not supply a hash the proof needs.
    #[error("hash store has no hash at level {level}, index {index}")]
    MissingHash {
        /// Tile level of the missing node.
        level: u8,
        /// Index of the node in its level.
        index: u64,
    },
}

/// `SHA-256(0x00 ‖ data)`: the RFC 9162 leaf hash.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// `SHA-256(0x01 ‖ left ‖ right)`: the RFC 9162 interior node hash.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The RFC 6962 hasher for `rs_merkle`: leaves are hashed by the caller with [`leaf_hash`],
/// interior nodes with the `0x01` prefix, and a lone right-most node is promoted unchanged
/// (which is what the largest-power-of-two split of RFC 9162 amounts to, built bottom-up).
#[derive(Clone, Copy, Debug)]
pub struct Rfc6962Hasher;

impl rs_merkle::Hasher for Rfc6962Hasher {
    type Hash = Hash;

    fn hash(data: &[u8]) -> Hash {
        leaf_hash(data)
    }

    fn concat_and_hash(left: &Hash, right: Option<&Hash>) -> Hash {
        match right {
            Some(right) => node_hash(left, right),
            None => *left,
        }
    }

    fn hash_size() -> usize {
        32
    }
}

/// The RFC 9162 root of a tree whose leaf hashes are given in order (in memory).
pub fn root_from_leaf_hashes(leaf_hashes: &[Hash]) -> Hash {
    if leaf_hashes.is_empty() {
        return EMPTY_ROOT;
    }
    rs_merkle::MerkleTree::<Rfc6962Hasher>::from_leaves(leaf_hashes)
        .root()
        .unwrap_or(EMPTY_ROOT)
}

/// Supplies hashes of complete subtrees: level 0 holds leaf hashes, and the node at
/// `(level, index)` covers leaves `[index·2^level, (index+1)·2^level)`. Only nodes whose whole
/// range lies inside the tree being proved are ever asked for.
pub trait HashReader {
    /// The hash of the complete subtree at `(level, index)`, or `None` if it is not stored.
    fn node(&self, level: u8, index: u64) -> Option<Hash>;
}

/// The largest power of two strictly smaller than `n` (`n` ≥ 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The root of the subtree over leaves `[start, end)`; complete aligned subtrees are read from
/// `reader`, the ragged right edge is combined from at most log2(n) of them.
pub fn subtree_root<R: HashReader + ?Sized>(
    reader: &R,
    start: u64,
    end: u64,
) -> Result<Hash, ProofError> {
    let size = end - start;
    if size == 0 {
        return Ok(EMPTY_ROOT);
    }
    if size.is_power_of_two() && start % size == 0 {
        let level = size.trailing_zeros() as u8;
        let index = start >> level;
        return reader
            .node(level, index)
            .ok_or(ProofError::MissingHash { level, index });
    }
    let k = split_point(size);
    let left = subtree_root(reader, start, start + k)?;
    let right = subtree_root(reader, start + k, end)?;
    Ok(node_hash(&left, &right))
}

/// The inclusion proof (RFC 9162 §2.1.3.1 `PATH`) of leaf `index` in the tree of `size` leaves,
/// leaf to root.
pub fn inclusion_proof<R: HashReader + ?Sized>(
    reader: &R,
    index: u64,
    size: u64,
) -> Result<Vec<Hash>, ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut path = Vec::new();
    let (mut start, mut end) = (0u64, size);
    // Walk from the root down to the leaf, collecting siblings, then reverse (leaf to root).
    while end - start > 1 {
        let k = split_point(end - start);
        if index - start < k {
            path.push(subtree_root(reader, start + k, end)?);
            end = start + k;
        } else {
            path.push(subtree_root(reader, start, start + k)?);
            start += k;
        }
    }
    path.reverse();
    Ok(path)
}

/// The consistency proof (RFC 9162 §2.1.4.1 `PROOF`) between tree sizes `from` and `to`.
pub fn consistency_proof<R: HashReader + ?Sized>(
    reader: &R,
    from: u64,
    to: u64,
) -> Result<Vec<Hash>, ProofError> {
    if from > to {
        return Err(ProofError::SizesOutOfOrder { from, to });
    }
    let mut proof = Vec::new();
    if from == to {
        return Ok(proof);
    }
    if from == 0 {
        return Err(ProofError::FromEmptyTree);
    }
    // SUBPROOF(m, D[start:end], b), iteratively from the root down.
    let (mut start, mut end, mut m, mut complete) = (0u64, to, from, true);
    loop {
        let n = end - start;
        if m == n {
            if !complete {
                proof.push(subtree_root(reader, start, end)?);
            }
            break;
        }
        let k = split_point(n);
        if m <= k {
            proof.push(subtree_root(reader, start + k, end)?);
            end = start + k;
        } else {
            proof.push(subtree_root(reader, start, start + k)?);
            start += k;
            m -= k;
            complete = false;
        }
    }
    proof.reverse();
    Ok(proof)
}

/// Verifies an inclusion proof exactly per RFC 9162 §2.1.3.2: `leaf` at `index` is in the tree
/// of `size` leaves whose root is `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &[u8],
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let want = inclusion_proof_len(index, size);
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want,
        });
    }
    let (mut f_n, mut s_n) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            // Unreachable after the length check, but the RFC says: stop and fail.
            return Err(ProofError::RootMismatch);
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 || r[..] != *root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Verifies a consistency proof exactly per RFC 9162 §2.1.4.2: the tree of `from` leaves with
/// root `from_root` is a prefix of the tree of `to` leaves with root `to_root`.
///
/// Roots are taken as byte strings and compared as such: when the sizes are equal, the proof is
/// empty and the roots must simply be equal (as in the reference implementation).
pub fn verify_consistency(
    from: u64,
    to: u64,
    from_root: &[u8],
    to_root: &[u8],
    proof: &[Hash],
) -> Result<(), ProofError> {
    if from > to {
        return Err(ProofError::SizesOutOfOrder { from, to });
    }
    if from == 0 {
        // RFC 9162 defines no proof from the empty tree; a verifier must not accept one.
        return Err(ProofError::FromEmptyTree);
    }
    if from == to {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: 0,
            });
        }
        return if from_root == to_root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    let want = consistency_proof_len(from, to);
    if proof.len() != want {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want,
        });
    }
    // 1. If first is an exact power of 2, prepend first_hash to the path.
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if from.is_power_of_two() {
        path.push(from_root.try_into().map_err(|_| ProofError::RootMismatch)?);
    }
    path.extend_from_slice(proof);
    // 2-3.
    let (mut f_n, mut s_n) = (from - 1, to - 1);
    // 4.
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    // 5.
    let mut f_r = path[0];
    let mut s_r = path[0];
    // 6.
    for c in &path[1..] {
        if s_n == 0 {
            return Err(ProofError::RootMismatch);
        }
        if f_n & 1 == 1 || f_n == s_n {
            f_r = node_hash(c, &f_r);
            s_r = node_hash(c, &s_r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            s_r = node_hash(&s_r, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    // 7.
    if s_n != 0 || f_r[..] != *from_root || s_r[..] != *to_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// The number of hashes in the inclusion proof of `index` in a tree of `size` leaves.
pub fn inclusion_proof_len(index: u64, size: u64) -> usize {
    // Levels where the path has a sibling: the bits of the full-depth path, minus the levels
    // skipped where the leaf is on the ragged right edge with no sibling.
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    (inner + border) as usize
}

/// The number of hashes in the consistency proof between sizes `from` < `to`, `from` > 0.
pub fn consistency_proof_len(from: u64, to: u64) -> usize {
    let inner = 64 - ((from - 1) ^ (to - 1)).leading_zeros();
    let border = (from - 1).checked_shr(inner).unwrap_or(0).count_ones();
    // The proof starts at the largest complete subtree shared by both trees, of size 2^shift;
    // its hash is sent unless it is the whole old tree, whose root the verifier already has.
    let shift = from.trailing_zeros();
    let seed = u32::from(!from.is_power_of_two());
    (seed + inner - shift + border) as usize
}

/// The hashes of the complete subtrees that make up the tree `[0, size)`, left to right (one per
/// set bit of `size`, largest first): what a reader needs to extend a log it only partly holds.
pub fn frontier<R: HashReader + ?Sized>(reader: &R, size: u64) -> Result<Vec<Hash>, ProofError> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for level in (0..64u32).rev() {
        if size & (1u64 << level) != 0 {
            out.push(subtree_root(reader, start, start + (1u64 << level))?);
            start += 1u64 << level;
        }
    }
    Ok(out)
}

/// A compact range: the tree `[0, size)` held as its [`frontier`] only, extended leaf by leaf.
/// Starting from the frontier of `[0, a)` and pushing leaves `a..b` gives the root of `[0, b)`
/// with O(log n) memory, so a reader holding only `[a, b)` proves it is exactly that part of the
/// log: no entry missing, added, changed or reordered.
#[derive(Clone, Debug, Default)]
pub struct CompactRange {
    size: u64,
    /// (level, hash) of each complete subtree, levels strictly decreasing.
    stack: Vec<(u32, Hash)>,
}

impl CompactRange {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tree `[0, size)` from its frontier; fails if the number of hashes is not the number
    /// of set bits of `size`.
    pub fn from_frontier(size: u64, hashes: &[Hash]) -> Result<Self, ProofError> {
        if hashes.len() != size.count_ones() as usize {
            return Err(ProofError::WrongLength {
                got: hashes.len(),
                want: size.count_ones() as usize,
            });
        }
        let levels = (0..64u32).rev().filter(|l| size & (1u64 << l) != 0);
        Ok(Self {
            size,
            stack: levels.zip(hashes.iter().copied()).collect(),
        })
    }

    /// Number of leaves covered.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The frontier: the complete subtree hashes, largest first (what
    /// [`CompactRange::from_frontier`] takes back).
    pub fn frontier(&self) -> Vec<Hash> {
        self.stack.iter().map(|(_, h)| *h).collect()
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(level, left)) = self.stack.last() {
            if level != node.0 {
                break;
            }
            self.stack.pop();
            node = (level + 1, node_hash(&left, &node.1));
        }
        self.stack.push(node);
        self.size += 1;
    }

    /// The RFC 9162 root of `[0, size)`.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return EMPTY_ROOT;
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }
}

/// An in-memory tree that keeps every complete subtree hash: for tests, test vectors and tools
/// that hold a whole (small) log in memory.
#[derive(Clone, Debug, Default)]
pub struct MemoryTree {
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends leaf data, returning its index.
    pub fn push_data(&mut self, data: &[u8]) -> u64 {
        self.push_leaf_hash(leaf_hash(data))
    }

    /// Appends a leaf hash, returning its index; completes every subtree it closes.
    pub fn push_leaf_hash(&mut self, hash: Hash) -> u64 {
        if self.levels.is_empty() {
            self.levels.push(Vec::new());
        }
        self.levels[0].push(hash);
        let index = (self.levels[0].len() - 1) as u64;
        let mut level = 0;
        while self.levels[level].len() % 2 == 0 {
            let n = self.levels[level].len();
            let parent = node_hash(&self.levels[level][n - 2], &self.levels[level][n - 1]);
            if self.levels.len() == level + 1 {
                self.levels.push(Vec::new());
            }
            self.levels[level + 1].push(parent);
            level += 1;
        }
        index
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Root of the tree at an earlier (or the current) size.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.size() {
            return Err(ProofError::SizesOutOfOrder {
                from: size,
                to: self.size(),
            });
        }
        subtree_root(self, 0, size)
    }
}

impl HashReader for MemoryTree {
    fn node(&self, level: u8, index: u64) -> Option<Hash> {
        self.levels
            .get(usize::from(level))?
            .get(usize::try_from(index).ok()?)
            .copied()
    }
}
