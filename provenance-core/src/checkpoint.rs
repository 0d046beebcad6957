//! C2SP checkpoints (`c2sp.org/tlog-checkpoint`): the signed tree head of the log.
//!
//! The note text is the origin line, the tree size in decimal (no leading zeros), the root hash
//! in base64, and optional extension lines, each ending in `\n`. The log signs it as a signed
//! note with its Ed25519 key, whose name is the origin.

use crate::merkle::Hash;
use crate::note::{self, NoteError, NoteSigner, NoteVerifier};
use alloc::{format, string::String, vec::Vec};
use base64::{engine::general_purpose::STANDARD as B64, Engine};

/// A checkpoint's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// Log origin (unique log identity).
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// Extension lines (opaque, non-empty).
    pub extensions: Vec<String>,
}

/// Why a checkpoint was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// The signed note failed.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The text is not a checkpoint.
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The origin is not the expected log's.
    #[error("checkpoint origin {got:?} is not the log's {want:?}")]
    Origin {
        /// Found.
        got: String,
        /// Expected.
        want: String,
    },
}

impl Checkpoint {
    /// The note text.
    pub fn to_text(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Parses note text.
    pub fn from_text(text: &str) -> Result<Self, CheckpointError> {
        let body = text
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("no final newline"))?;
        let mut lines = body.split('\n');
        let (Some(origin), Some(size), Some(root)) = (lines.next(), lines.next(), lines.next())
        else {
            return Err(CheckpointError::Malformed(
                "needs origin, size and root lines",
            ));
        };
        if origin.is_empty() {
            return Err(CheckpointError::Malformed("empty origin"));
        }
        let size_ok = !size.is_empty()
            && size.bytes().all(|b| b.is_ascii_digit())
            && (size == "0" || !size.starts_with('0'));
        let size: u64 = size
            .parse()
            .ok()
            .filter(|_| size_ok)
            .ok_or(CheckpointError::Malformed(
                "size must be decimal without leading zeros",
            ))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .ok_or(CheckpointError::Malformed(
                "root must be 32 bytes of base64",
            ))?;
        let extensions: Vec<String> = lines.map(String::from).collect();
        if extensions.iter().any(String::is_empty) {
            return Err(CheckpointError::Malformed("empty extension line"));
        }
        Ok(Self {
            origin: origin.into(),
            size,
            root,
            extensions,
        })
    }

    /// Signs the checkpoint with the log key (whose name must be the origin).
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, CheckpointError> {
        if signer.name() != self.origin {
            return Err(CheckpointError::Origin {
                got: signer.name().into(),
                want: self.origin.clone(),
            });
        }
        Ok(signer.sign(&self.to_text())?)
    }

    /// Opens a signed checkpoint: the log key must have signed it and its origin must be the
    /// key's name. Other signatures are ignored.
    pub fn open(signed: &str, log_key: &NoteVerifier) -> Result<Self, CheckpointError> {
        let (text, _) = note::open(signed, &[log_key])?;
        let cp = Self::from_text(text)?;
        if cp.origin != log_key.name() {
            return Err(CheckpointError::Origin {
                got: cp.origin,
                want: log_key.name().into(),
            });
        }
        Ok(cp)
    }
}
