//! C2SP `tlog-tiles` paths: hash tiles of 256 hashes, `tile/<L>/<N>[.p/<W>]`, with the tile
//! index `N` in 3-digit groups, all but the last prefixed with `x` (`x001/x234/067`). The
//! service serves them; monitors fetch them.

use alloc::{format, string::String, vec, vec::Vec};

/// Hashes per full tile.
pub const TILE_WIDTH: usize = 256;

/// Parses the path of a C2SP tile request after `/tile/`: `<L>/<N>[.p/<W>]`, where `N` is
/// written in 3-digit groups, all but the last prefixed with `x` (`x001/x234/067`).
pub fn parse_tile_path(path: &str) -> Option<(u8, u64, Option<usize>)> {
    let (level, rest) = path.split_once('/')?;
    if level.is_empty() || level.len() > 2 || !level.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let level: u8 = level.parse().ok().filter(|l| *l < 8)?;
    let (index_part, width) = match rest.split_once(".p/") {
        Some((i, w)) => {
            if w.is_empty()
                || w.len() > 3
                || !w.bytes().all(|b| b.is_ascii_digit())
                || (w.len() > 1 && w.starts_with('0'))
            {
                return None;
            }
            let w: usize = w.parse().ok().filter(|w| (1..TILE_WIDTH).contains(w))?;
            (i, Some(w))
        }
        None => (rest, None),
    };
    let groups: Vec<&str> = index_part.split('/').collect();
    let mut index: u64 = 0;
    for (k, g) in groups.iter().enumerate() {
        let digits = if k + 1 < groups.len() {
            g.strip_prefix('x')?
        } else {
            g
        };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index = index.checked_mul(1000)?.checked_add(digits.parse().ok()?)?;
    }
    // The encoding is canonical: no leading all-zero groups.
    if groups.len() > 1 && groups[0] == "x000" {
        return None;
    }
    Some((level, index, width))
}

/// The C2SP path of a tile index (`1234067` → `x001/x234/067`).
pub fn tile_index_path(mut index: u64) -> String {
    let mut groups = vec![format!("{:03}", index % 1000)];
    index /= 1000;
    while index > 0 {
        groups.push(format!("x{:03}", index % 1000));
        index /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// The path after `/tile/` of tile `index` at `level`: full, or partial of `width` hashes.
pub fn tile_path(level: u8, index: u64, width: Option<usize>) -> String {
    match width {
        Some(w) => format!("{level}/{}.p/{w}", tile_index_path(index)),
        None => format!("{level}/{}", tile_index_path(index)),
    }
}
