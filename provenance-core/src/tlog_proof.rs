//! C2SP tlog-proofs (`c2sp.org/tlog-proof@v1`): an entry's index, its inclusion proof and the
//! signed checkpoint it leads to, in one offline-verifiable text.
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! [extra <base64>]
//! index <decimal>
//! <base64 hash>          (zero or more, leaf to root)
//!
//! <signed checkpoint note>
//! ```

use crate::checkpoint::{Checkpoint, CheckpointError};
use crate::merkle::{self, Hash, ProofError, MAX_PROOF_HASHES};
use crate::note::NoteVerifier;
use alloc::{format, string::String, vec::Vec};
use base64::{engine::general_purpose::STANDARD as B64, Engine};

const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// Why a tlog-proof was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogProofError {
    /// Not a well-formed tlog-proof.
    #[error("malformed tlog-proof: {0}")]
    Malformed(&'static str),
    /// The checkpoint did not verify.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// The inclusion proof did not verify.
    #[error("inclusion: {0}")]
    Inclusion(#[from] ProofError),
}

/// A parsed tlog-proof.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlogProof {
    /// Optional application data.
    pub extra: Option<Vec<u8>>,
    /// Leaf index.
    pub index: u64,
    /// Inclusion proof, leaf to root.
    pub hashes: Vec<Hash>,
    /// The signed checkpoint note, exactly as signed.
    pub checkpoint: String,
}

impl TlogProof {
    /// The text form.
    pub fn encode(&self) -> String {
        let mut s = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            s.push_str(&format!("extra {}\n", B64.encode(extra)));
        }
        s.push_str(&format!("index {}\n", self.index));
        for h in &self.hashes {
            s.push_str(&B64.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(&self.checkpoint);
        s
    }

    /// Parses the text form (nothing is verified).
    pub fn parse(text: &str) -> Result<Self, TlogProofError> {
        let rest = text
            .strip_prefix(HEADER)
            .and_then(|r| r.strip_prefix('\n'))
            .ok_or(TlogProofError::Malformed(
                "first line must be c2sp.org/tlog-proof@v1",
            ))?;
        let (head, checkpoint) = rest.split_once("\n\n").ok_or(TlogProofError::Malformed(
            "no blank line before the checkpoint",
        ))?;
        let mut lines = head.split('\n').peekable();
        let mut extra = None;
        if let Some(e) = lines.peek().and_then(|l| l.strip_prefix("extra ")) {
            extra = Some(
                B64.decode(e)
                    .map_err(|_| TlogProofError::Malformed("extra is not base64"))?,
            );
            lines.next();
        }
        let index_str = lines
            .next()
            .and_then(|l| l.strip_prefix("index "))
            .ok_or(TlogProofError::Malformed("missing index line"))?;
        let canonical = !index_str.is_empty()
            && index_str.bytes().all(|b| b.is_ascii_digit())
            && (index_str == "0" || !index_str.starts_with('0'));
        let index =
            index_str
                .parse()
                .ok()
                .filter(|_| canonical)
                .ok_or(TlogProofError::Malformed(
                    "index must be decimal without leading zeros",
                ))?;
        let mut hashes = Vec::new();
        for line in lines {
            if hashes.len() == MAX_PROOF_HASHES {
                return Err(TlogProofError::Malformed("too many proof hashes"));
            }
            let h: Hash = B64
                .decode(line)
                .ok()
                .and_then(|h| h.try_into().ok())
                .ok_or(TlogProofError::Malformed(
                    "proof hash must be 32 bytes of base64",
                ))?;
            hashes.push(h);
        }
        if checkpoint.is_empty() {
            return Err(TlogProofError::Malformed("missing checkpoint"));
        }
        Ok(Self {
            extra,
            index,
            hashes,
            checkpoint: checkpoint.into(),
        })
    }

    /// Verifies the checkpoint signature with the log key, then the inclusion of `leaf_data`
    /// at [`TlogProof::index`]. Returns the checkpoint.
    pub fn verify(
        &self,
        leaf_data: &[u8],
        log_key: &NoteVerifier,
    ) -> Result<Checkpoint, TlogProofError> {
        let cp = Checkpoint::open(&self.checkpoint, log_key)?;
        merkle::verify_inclusion(
            self.index,
            cp.size,
            &merkle::leaf_hash(leaf_data),
            &self.hashes,
            &cp.root,
        )?;
        Ok(cp)
    }
}
