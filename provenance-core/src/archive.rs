//! The log archive: a folder holding a contiguous range `[start, end)` of the log's entries, the
//! signed checkpoint of size `end`, and what an auditor needs to prove, offline, that the range
//! is exactly that part of the log: the frontier of `[0, start)` (see
//! [`crate::merkle::CompactRange`]) and, for registry events before `start`, each entry with its
//! inclusion proof.
//!
//! ```text
//! manifest.json                  ArchiveManifest (written last: no manifest, no archive)
//! log/entries-<start>.ndjson     one EntryLine per line, indices consecutive across files
//! ```
//!
//! Export jobs of the service write it; `ledger-verify export DIR` checks it. Every path in a
//! manifest is relative and stays inside the archive folder; unknown fields and other versions
//! are rejected.

use crate::bundle::ProvedEntry;
use crate::merkle::Hash;
use alloc::{format, string::String, vec::Vec};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use serde::{Deserialize, Serialize};

/// The media type (and version) of archive manifests.
pub const ARCHIVE_MEDIA_TYPE: &str = "application/vnd.vitals-ledger.log-archive+json;version=1";
/// The manifest's file name in the archive folder.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Largest manifest accepted.
pub const MAX_MANIFEST_LEN: usize = 64 * 1024 * 1024;
/// Entries per entry file written by the service.
pub const ENTRIES_PER_FILE: u64 = 100_000;

/// Why a manifest or an entry line was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Over the size limit.
    #[error("manifest is {0} bytes, more than 64 MiB")]
    TooLong(usize),
    /// Not valid JSON of the expected shape.
    #[error("malformed {0}")]
    Json(String),
    /// Another media type or version.
    #[error("unsupported archive media type {0:?}")]
    MediaType(String),
    /// A field has an impossible value.
    #[error("invalid manifest: {0}")]
    Invalid(String),
}

/// The archive's manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveManifest {
    /// Always [`ARCHIVE_MEDIA_TYPE`].
    pub media_type: String,
    /// The log's origin.
    pub origin: String,
    /// First index in the archive.
    pub start: u64,
    /// One past the last index; the checkpoint's size.
    pub end: u64,
    /// The signed checkpoint of size `end`.
    pub checkpoint: String,
    /// Base64 hashes of the complete subtrees of `[0, start)`, largest first.
    pub frontier: Vec<String>,
    /// Entry files, relative to the archive folder, in index order.
    pub entry_files: Vec<String>,
    /// Registry entries before `start`, each with its tlog-proof against `checkpoint`.
    pub registry_prelude: Vec<ProvedEntry>,
    /// When the archive was written, Unix ms.
    pub created_at_ms: u64,
}

/// One line of an entry file: the leaf data, or — for a reading whose payload was pruned after
/// an earlier archive took it — only its leaf hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryLine {
    /// Log index.
    pub index: u64,
    /// Leaf data, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_data: Option<String>,
    /// Leaf hash, base64 (pruned entries only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leaf_hash: Option<String>,
}

/// What an entry line holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leaf {
    /// The leaf data.
    Data(Vec<u8>),
    /// Only the leaf hash (the payload was pruned).
    Pruned(Hash),
}

impl EntryLine {
    /// Parses one line of an entry file and decodes its leaf data.
    pub fn parse(line: &[u8]) -> Result<(u64, Vec<u8>), ArchiveError> {
        match Self::parse_leaf(line)? {
            (i, Leaf::Data(d)) => Ok((i, d)),
            (i, Leaf::Pruned(_)) => Err(ArchiveError::Json(format!(
                "entry line {i}: pruned (leaf hash only)"
            ))),
        }
    }

    /// Parses one line of an entry file: exactly one of leaf data and leaf hash.
    pub fn parse_leaf(line: &[u8]) -> Result<(u64, Leaf), ArchiveError> {
        if !is_object(line) {
            return Err(ArchiveError::Json("entry line: not a JSON object".into()));
        }
        let e: Self = serde_json::from_slice(line)
            .map_err(|e| ArchiveError::Json(format!("entry line: {e}")))?;
        let leaf = match (&e.leaf_data, &e.leaf_hash) {
            (Some(d), None) => {
                Leaf::Data(B64.decode(d).map_err(|_| {
                    ArchiveError::Json("entry line: leaf_data is not base64".into())
                })?)
            }
            (None, Some(h)) => Leaf::Pruned(
                B64.decode(h)
                    .ok()
                    .and_then(|b| Hash::try_from(b.as_slice()).ok())
                    .ok_or_else(|| {
                        ArchiveError::Json("entry line: leaf_hash is not 32 bytes of base64".into())
                    })?,
            ),
            _ => {
                return Err(ArchiveError::Json(
                    "entry line: needs exactly one of leaf_data and leaf_hash".into(),
                ))
            }
        };
        Ok((e.index, leaf))
    }

    /// The line (without its newline) for an entry.
    pub fn encode(index: u64, leaf_data: &[u8]) -> String {
        serde_json::to_string(&Self {
            index,
            leaf_data: Some(B64.encode(leaf_data)),
            leaf_hash: None,
        })
        .unwrap_or_default()
    }

    /// The line for an entry whose payload was pruned: its leaf hash only.
    pub fn encode_pruned(index: u64, leaf_hash: &Hash) -> String {
        serde_json::to_string(&Self {
            index,
            leaf_data: None,
            leaf_hash: Some(B64.encode(leaf_hash)),
        })
        .unwrap_or_default()
    }
}

/// Whether JSON text is an object (serde would also take a struct as an array).
fn is_object(json: &[u8]) -> bool {
    json.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

/// Whether `path` is a safe relative path inside the archive: non-empty `/`-separated names,
/// none empty, `.` or `..`, no backslash, no leading `/`.
pub fn safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && path.len() <= 255
        && !path.contains('\\')
        && !path.contains('\0')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

impl ArchiveManifest {
    /// Parses and structurally checks a manifest: media type, range, frontier length, paths.
    /// Signatures and proofs are not verified here.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ArchiveError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(ArchiveError::TooLong(bytes.len()));
        }
        if !is_object(bytes) {
            return Err(ArchiveError::Json("manifest: not a JSON object".into()));
        }
        let m: Self = serde_json::from_slice(bytes)
            .map_err(|e| ArchiveError::Json(format!("manifest: {e}")))?;
        if m.media_type != ARCHIVE_MEDIA_TYPE {
            return Err(ArchiveError::MediaType(m.media_type));
        }
        if m.start > m.end || m.end >= 1 << 62 {
            return Err(ArchiveError::Invalid(format!(
                "range [{}, {}) is not a range of a log",
                m.start, m.end
            )));
        }
        m.frontier_hashes()?;
        if let Some(p) = m.entry_files.iter().find(|p| !safe_relative_path(p)) {
            return Err(ArchiveError::Invalid(format!(
                "entry file path {p:?} leaves the archive folder"
            )));
        }
        Ok(m)
    }

    /// The frontier as hashes (one per set bit of `start`).
    pub fn frontier_hashes(&self) -> Result<Vec<Hash>, ArchiveError> {
        if self.frontier.len() != self.start.count_ones() as usize {
            return Err(ArchiveError::Invalid(format!(
                "the frontier of {} entries has {} hashes, not {}",
                self.start,
                self.frontier.len(),
                self.start.count_ones()
            )));
        }
        self.frontier
            .iter()
            .map(|h| {
                B64.decode(h)
                    .ok()
                    .and_then(|b| <Hash>::try_from(b.as_slice()).ok())
                    .ok_or_else(|| {
                        ArchiveError::Invalid("a frontier hash is not 32 bytes of base64".into())
                    })
            })
            .collect()
    }

    /// Pretty JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }
}

/// The entry file holding `index`, named by its first index.
pub fn entry_file_name(first_index: u64) -> String {
    format!("log/entries-{first_index:012}.ndjson")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> ArchiveManifest {
        ArchiveManifest {
            media_type: ARCHIVE_MEDIA_TYPE.into(),
            origin: "example.org/log".into(),
            start: 5,
            end: 9,
            checkpoint: "example.org/log\n9\nAAAA\n\n— example.org/log AAAA\n".into(),
            frontier: vec![B64.encode([1u8; 32]), B64.encode([2u8; 32])],
            entry_files: vec![entry_file_name(5)],
            registry_prelude: vec![],
            created_at_ms: 1,
        }
    }

    #[test]
    fn manifest_round_trip_and_rejections() {
        let m = manifest();
        assert_eq!(ArchiveManifest::from_json(&m.to_json()).unwrap(), m);
        assert_eq!(m.frontier_hashes().unwrap(), vec![[1u8; 32], [2u8; 32]]);
        let bad = |f: &dyn Fn(&mut serde_json::Value)| {
            let mut v: serde_json::Value = serde_json::from_slice(&m.to_json()).unwrap();
            f(&mut v);
            ArchiveManifest::from_json(v.to_string().as_bytes()).is_err()
        };
        assert!(bad(&|v| v["media_type"] = "application/json".into()));
        assert!(bad(&|v| v["start"] = 10.into()));
        assert!(bad(&|v| v["end"] = (1u64 << 62).into()));
        assert!(bad(&|v| v["frontier"] = serde_json::json!([])));
        assert!(bad(&|v| v["frontier"][0] = "AAAA".into()));
        assert!(bad(&|v| v["frontier"][0] = "not base64!".into()));
        assert!(bad(&|v| v["entry_files"][0] = "../secret".into()));
        assert!(bad(&|v| v["entry_files"][0] = "/etc/passwd".into()));
        assert!(bad(&|v| v["extra"] = 1.into()));
        assert!(ArchiveManifest::from_json(b"{").is_err());
        assert!(ArchiveManifest::from_json(&vec![b' '; MAX_MANIFEST_LEN + 1]).is_err());
    }

    #[test]
    fn entry_lines_round_trip_and_rejections() {
        let pruned = EntryLine::encode_pruned(7, &[9u8; 32]);
        assert_eq!(
            EntryLine::parse_leaf(pruned.as_bytes()).unwrap(),
            (7, Leaf::Pruned([9u8; 32]))
        );
        assert!(EntryLine::parse(pruned.as_bytes()).is_err(), "not data");
        for bad in [
            &b"{\"index\": 1, \"leaf_data\": \"\", \"leaf_hash\": \"\"}"[..],
            b"{\"index\": 1, \"leaf_hash\": \"AAAA\"}",
        ] {
            assert!(
                EntryLine::parse_leaf(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let line = EntryLine::encode(42, b"\x01\x02leaf");
        assert_eq!(
            EntryLine::parse(line.as_bytes()).unwrap(),
            (42, b"\x01\x02leaf".to_vec())
        );
        for bad in [
            &b"{\"index\": 1}"[..],
            b"{\"index\": -1, \"leaf_data\": \"\"}",
            b"{\"index\": 1, \"leaf_data\": \"%%\"}",
            b"{\"index\": 1, \"leaf_data\": \"\", \"x\": 0}",
            b"[1, \"\"]",
        ] {
            assert!(
                EntryLine::parse(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn paths() {
        for ok in ["log/entries-000000000000.ndjson", "a", "a/b/c"] {
            assert!(safe_relative_path(ok), "{ok}");
        }
        for bad in [
            "", "/a", "a/", "a//b", "./a", "a/../b", "..", "a\\b", "a\0b",
        ] {
            assert!(!safe_relative_path(bad), "{bad:?}");
        }
    }
}
