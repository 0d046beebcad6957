//! The log's hash storage in C2SP tlog-tiles layout.
//!
//! Tile level `L` holds the hashes of tree level `8L`, 256 to a tile; tile `N` of level `L` holds
//! row entries `[256N, 256N + 256)`. A tile with fewer than 256 hashes is partial; its first `W`
//! hashes never change, so `.p/W` views are prefixes. Any complete subtree hash `(level, index)`
//! is computed from at most 128 hashes of one tile, so an inclusion or consistency proof reads
//! O(log n) tiles and no other state grows with the log.

use crate::db::TileRow;
use provenance_core::merkle::{self, Hash, HashReader};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};

pub use provenance_core::tiles::{parse_tile_path, TILE_WIDTH};

/// A set of tiles, addressable as a [`HashReader`].
#[derive(Debug, Default, Clone)]
pub struct TileSet {
    tiles: HashMap<(u8, u64), Vec<Hash>>,
}

/// Where the node `(level, index)` lives: tile level, tile index, offset, count of row entries.
fn locate(level: u8, index: u64) -> (u8, u64, usize, usize) {
    let tile_level = level / 8;
    let sub = u32::from(level % 8);
    let first = index << sub;
    let tile = first / TILE_WIDTH as u64;
    let offset = (first % TILE_WIDTH as u64) as usize;
    (tile_level, tile, offset, 1usize << sub)
}

impl TileSet {
    /// Adds or replaces a tile.
    pub fn insert(&mut self, level: u8, idx: u64, hashes: Vec<Hash>) {
        self.tiles.insert((level, idx), hashes);
    }

    /// Adds fetched rows.
    pub fn extend(&mut self, rows: impl IntoIterator<Item = TileRow>) {
        for r in rows {
            self.insert(r.level, r.idx, r.hashes);
        }
    }

    /// A tile, if present.
    pub fn get(&self, level: u8, idx: u64) -> Option<&Vec<Hash>> {
        self.tiles.get(&(level, idx))
    }

    /// Number of tiles held.
    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    /// True if no tiles are held.
    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }
}

impl HashReader for TileSet {
    fn node(&self, level: u8, index: u64) -> Option<Hash> {
        let (tl, tile, offset, count) = locate(level, index);
        let hashes = self.tiles.get(&(tl, tile))?;
        let slice = hashes.get(offset..offset + count)?;
        Some(if count == 1 {
            slice[0]
        } else {
            merkle::root_from_leaf_hashes(slice)
        })
    }
}

/// Reads through a [`TileSet`], recording which tiles were missing (answering zeros for them),
/// so a caller learns every tile a proof needs in one pass, fetches them, and runs again.
pub struct Recorder<'a> {
    tiles: &'a TileSet,
    missing: RefCell<BTreeSet<(u8, u64)>>,
}

impl<'a> Recorder<'a> {
    /// Wraps a tile set.
    pub fn new(tiles: &'a TileSet) -> Self {
        Self {
            tiles,
            missing: RefCell::new(BTreeSet::new()),
        }
    }

    /// The tiles that were asked for and missing.
    pub fn missing(self) -> Vec<(u8, u64)> {
        self.missing.into_inner().into_iter().collect()
    }
}

impl HashReader for Recorder<'_> {
    fn node(&self, level: u8, index: u64) -> Option<Hash> {
        // Only which tiles are touched matters here: answer without hashing.
        let (tl, tile, offset, count) = locate(level, index);
        let present = self
            .tiles
            .get(tl, tile)
            .is_some_and(|t| t.len() >= offset + count);
        if !present {
            self.missing.borrow_mut().insert((tl, tile));
        }
        Some([0u8; 32])
    }
}

/// The right edge of the tree: the last (partial or just completed) tile of every tile level.
/// The sequencer appends leaf hashes here; it yields the tiles to write and the tree's root.
#[derive(Debug, Clone, Default)]
pub struct Frontier {
    size: u64,
    /// Per tile level: the index of its last tile and that tile's hashes.
    rows: Vec<(u64, Vec<Hash>)>,
    /// Tiles that became full since the last [`Frontier::clear_completed`].
    completed: HashMap<(u8, u64), Vec<Hash>>,
}

impl Frontier {
    /// The frontier of a tree of `size` leaves, from its stored right-edge tiles.
    pub fn load(size: u64, tiles: &TileSet) -> Result<Self, String> {
        let mut rows = Vec::new();
        let mut level = 0u8;
        loop {
            let row_len = size >> (8 * u32::from(level));
            if row_len == 0 && level > 0 {
                break;
            }
            let idx = row_len / TILE_WIDTH as u64;
            let width = (row_len % TILE_WIDTH as u64) as usize;
            let hashes = if width == 0 {
                Vec::new()
            } else {
                let t = tiles
                    .get(level, idx)
                    .ok_or_else(|| format!("tile {level}/{idx} is missing"))?;
                if t.len() < width {
                    return Err(format!(
                        "tile {level}/{idx} has {} hashes, expected {width}",
                        t.len()
                    ));
                }
                t[..width].to_vec()
            };
            rows.push((idx, hashes));
            level += 1;
            if row_len < TILE_WIDTH as u64 {
                break;
            }
        }
        Ok(Self {
            size,
            rows,
            completed: HashMap::new(),
        })
    }

    /// The right-edge tiles a tree of `size` leaves needs to rebuild its frontier.
    pub fn tiles_needed(size: u64) -> Vec<(u8, u64)> {
        let mut out = Vec::new();
        let mut level = 0u8;
        loop {
            let row_len = size >> (8 * u32::from(level));
            if row_len % TILE_WIDTH as u64 != 0 {
                out.push((level, row_len / TILE_WIDTH as u64));
            }
            if row_len < TILE_WIDTH as u64 {
                break;
            }
            level += 1;
        }
        out
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; records every tile it changes in `dirty`.
    pub fn push(&mut self, leaf: Hash, dirty: &mut BTreeSet<(u8, u64)>) {
        let mut level = 0usize;
        let mut hash = leaf;
        loop {
            if self.rows.len() == level {
                self.rows.push((0, Vec::new()));
            }
            let (idx, hashes) = &mut self.rows[level];
            hashes.push(hash);
            dirty.insert((level as u8, *idx));
            if hashes.len() < TILE_WIDTH {
                break;
            }
            // The tile is full: its root is the next row's new entry; start the next tile.
            hash = merkle::root_from_leaf_hashes(hashes);
            *idx += 1;
            // Keep the full tile's content reachable for this batch's writes via `tile`.
            let full = std::mem::take(hashes);
            self.completed.insert((level as u8, *idx - 1), full);
            level += 1;
        }
        self.size += 1;
    }

    /// The current content of a tile on the frontier (or completed during this batch).
    pub fn tile(&self, level: u8, idx: u64) -> Option<&Vec<Hash>> {
        if let Some(t) = self.completed.get(&(level, idx)) {
            return Some(t);
        }
        let (i, h) = self.rows.get(usize::from(level))?;
        (*i == idx).then_some(h)
    }

    /// Forgets the tiles completed during the batch (after they were written).
    pub fn clear_completed(&mut self) {
        self.completed.clear();
    }

    /// The current content of every tile in `dirty` (what a batch must write), emptying `dirty`
    /// and forgetting the tiles completed meanwhile.
    pub fn take_dirty(&mut self, dirty: &mut BTreeSet<(u8, u64)>) -> Vec<TileRow> {
        let tiles = std::mem::take(dirty)
            .into_iter()
            .filter_map(|(level, idx)| {
                self.tile(level, idx)
                    .filter(|t| !t.is_empty())
                    .map(|t| TileRow {
                        level,
                        idx,
                        hashes: t.clone(),
                    })
            })
            .collect();
        self.clear_completed();
        tiles
    }

    /// The root of the current tree.
    pub fn root(&self) -> Hash {
        let reader = FrontierReader(self);
        merkle::subtree_root(&reader, 0, self.size).unwrap_or(merkle::EMPTY_ROOT)
    }
}

struct FrontierReader<'a>(&'a Frontier);

impl HashReader for FrontierReader<'_> {
    fn node(&self, level: u8, index: u64) -> Option<Hash> {
        let (tl, tile, offset, count) = locate(level, index);
        let hashes = self.0.tile(tl, tile)?;
        let slice = hashes.get(offset..offset + count)?;
        Some(if count == 1 {
            slice[0]
        } else {
            merkle::root_from_leaf_hashes(slice)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use provenance_core::merkle::MemoryTree;
    use provenance_core::tiles::tile_index_path;

    #[test]
    fn tile_paths() {
        for (path, want) in [
            ("0/000", Some((0, 0, None))),
            ("0/x001/x234/067", Some((0, 1_234_067, None))),
            ("1/005.p/17", Some((1, 5, Some(17)))),
            ("0/5", None),
            ("0/x000/005", None),
            ("0/001/002", None),
            ("0/000.p/0", None),
            ("0/000.p/256", None),
            ("0/000.p/017", None),
            ("9/000", None),
            ("0/abc", None),
        ] {
            assert_eq!(parse_tile_path(path), want, "{path}");
        }
        assert_eq!(tile_index_path(1_234_067), "x001/x234/067");
        assert_eq!(tile_index_path(5), "005");
        assert_eq!(
            parse_tile_path(&format!("0/{}", tile_index_path(987_654_321))),
            Some((0, 987_654_321, None))
        );
    }

    /// The frontier's roots and the tiles it writes agree with an independent in-memory tree,
    /// across tile boundaries, and proofs served from the written tiles verify.
    #[test]
    fn frontier_matches_memory_tree() {
        let mut f = Frontier::default();
        let mut mem = MemoryTree::new();
        let mut stored = TileSet::default();
        let n = 70_000u64;
        let mut dirty = BTreeSet::new();
        for i in 0..n {
            let h = merkle::leaf_hash(&i.to_le_bytes());
            f.push(h, &mut dirty);
            mem.push_leaf_hash(h);
            if i % 997 == 0 || i + 1 == n || i == 255 || i == 65_535 {
                for &(l, t) in &dirty {
                    stored.insert(l, t, f.tile(l, t).unwrap().clone());
                }
                dirty.clear();
                f.clear_completed();
                assert_eq!(
                    f.root(),
                    mem.root_at(i + 1).unwrap(),
                    "root at size {}",
                    i + 1
                );
                // A restart: the frontier rebuilt from stored tiles is the same.
                let reloaded = Frontier::load(i + 1, &stored).unwrap();
                assert_eq!(reloaded.root(), f.root());
            }
        }
        for (idx, size) in [
            (0u64, n),
            (65_535, 65_536),
            (69_999, n),
            (256, 257),
            (12_345, 54_321),
        ] {
            let p = merkle::inclusion_proof(&stored, idx, size).unwrap();
            assert_eq!(p, merkle::inclusion_proof(&mem, idx, size).unwrap());
        }
        let empty = TileSet::default();
        let rec = Recorder::new(&empty);
        let _ = merkle::inclusion_proof(&rec, 12_345, n);
        let missing = rec.missing();
        assert!(!missing.is_empty() && missing.len() <= 6, "{missing:?}");
        // 70,000 = 273·256 + 112 leaves; 273 = 256 + 17 level-8 nodes; 1 level-16 node.
        assert_eq!(Frontier::tiles_needed(n), vec![(0, 273), (1, 1), (2, 0)]);
    }
}
