//! C2SP `tlog-witness` (`c2sp.org/tlog-witness`): the `add-checkpoint` request a log sends to a
//! witness, the witness's answers, and the witness's decision as a pure function.
//!
//! Request body: `old <size>\n`, zero to 63 consistency proof lines (one base64 hash each), an
//! empty line, then the signed checkpoint. Answers: `200` with one or more `cosignature/v1`
//! signature lines; `400` (malformed, or old size above the checkpoint's), `403` (no trusted
//! signature), `404` (unknown origin), `409` (the old size is not the witness's latest cosigned
//! size: the body is that size and a newline, `Content-Type: text/x.tlog.size`; or, with the old
//! size equal to the checkpoint's, a different root), `422` (the consistency proof does not
//! verify). The checks run in the order of the specification; the caller persists the accepted
//! checkpoint atomically with the check before answering.

use crate::checkpoint::Checkpoint;
use crate::merkle::{self, Hash};
use crate::note::{self, NoteError, NoteVerifier};
use alloc::{format, string::String, vec::Vec};
use base64::{engine::general_purpose::STANDARD as B64, Engine};

/// Most consistency proof lines a request may carry.
pub const MAX_PROOF_LINES: usize = 63;
/// Largest request body accepted: the proof lines plus a note of at most [`note::MAX_NOTE_LEN`].
pub const MAX_REQUEST_LEN: usize = note::MAX_NOTE_LEN + 64 * (MAX_PROOF_LINES + 1);
/// The content type of a 409 answer's body.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";

/// A parsed `add-checkpoint` request (nothing verified but the syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint<'a> {
    /// The size of the previous checkpoint the client believes the witness holds.
    pub old_size: u64,
    /// The consistency proof from `old_size` to the checkpoint's size.
    pub proof: Vec<Hash>,
    /// The signed checkpoint note (may carry several signatures).
    pub checkpoint: &'a str,
}

/// Parses an ASCII decimal without leading zeroes (`0` itself allowed).
pub fn parse_decimal(s: &str) -> Option<u64> {
    let ok =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    s.parse().ok().filter(|_| ok)
}

impl<'a> AddCheckpoint<'a> {
    /// The request body.
    pub fn encode(old_size: u64, proof: &[Hash], checkpoint: &str) -> String {
        let mut s = format!("old {old_size}\n");
        for h in proof {
            s.push_str(&B64.encode(h));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(checkpoint);
        s
    }

    /// Parses a request body strictly (any error is a `400`).
    pub fn parse(body: &'a str) -> Result<Self, Refusal> {
        if body.len() > MAX_REQUEST_LEN {
            return Err(Refusal::BadRequest("request body too long".into()));
        }
        let (head, checkpoint) = body
            .split_once("\n\n")
            .ok_or_else(|| Refusal::BadRequest("no empty line before the checkpoint".into()))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or_else(|| Refusal::BadRequest("the first line must be `old <size>`".into()))?;
        let old_size = parse_decimal(old).ok_or_else(|| {
            Refusal::BadRequest("the old size must be decimal without leading zeroes".into())
        })?;
        let mut proof = Vec::new();
        for line in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(Refusal::BadRequest(format!(
                    "more than {MAX_PROOF_LINES} consistency proof lines"
                )));
            }
            let hash: Hash = B64
                .decode(line)
                .ok()
                .filter(|_| !line.is_empty())
                .and_then(|h| h.try_into().ok())
                .ok_or_else(|| {
                    Refusal::BadRequest(format!(
                        "consistency proof line {} is not one base64 hash",
                        proof.len() + 1
                    ))
                })?;
            proof.push(hash);
        }
        note::split(checkpoint).map_err(|e| {
            Refusal::BadRequest(format!("the checkpoint is not a signed note: {e}"))
        })?;
        Ok(Self {
            old_size,
            proof,
            checkpoint,
        })
    }

    /// The checkpoint's origin line, if the note text has one.
    pub fn origin(&self) -> Option<&'a str> {
        self.checkpoint.split('\n').next().filter(|o| !o.is_empty())
    }
}

/// What the witness holds for one origin: the latest checkpoint it cosigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosigned {
    /// Its size.
    pub size: u64,
    /// Its root hash.
    pub root: Hash,
}

/// Why a witness refuses a request, with the HTTP status the specification gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// `400`: malformed, or an old size above the checkpoint's.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// `403`: no signature by a trusted key of the origin verifies.
    #[error("the checkpoint is not signed by a key this witness trusts for its origin")]
    Forbidden,
    /// `404`: the witness follows no log of this origin.
    #[error("unknown log origin")]
    UnknownOrigin,
    /// `409` with the latest cosigned size: the old size is not it.
    #[error("the old size is not the latest cosigned size {latest}")]
    WrongOldSize {
        /// The size of the latest checkpoint the witness cosigned (0 if none).
        latest: u64,
    },
    /// `409`: the old size is the checkpoint's size, but the root differs from the cosigned one.
    #[error("a different root for the cosigned size {size}")]
    RootMismatch {
        /// The size.
        size: u64,
    },
    /// `422`: the consistency proof does not verify.
    #[error("the consistency proof from {from} to {to} does not verify")]
    BadProof {
        /// Old size.
        from: u64,
        /// Checkpoint size.
        to: u64,
    },
}

impl Refusal {
    /// The HTTP status code of this answer.
    pub fn status(&self) -> u16 {
        match self {
            Self::BadRequest(_) => 400,
            Self::Forbidden => 403,
            Self::UnknownOrigin => 404,
            Self::WrongOldSize { .. } | Self::RootMismatch { .. } => 409,
            Self::BadProof { .. } => 422,
        }
    }

    /// Whether a log-signed request refused this way may be evidence of log misbehaviour (the
    /// specification lets the witness keep it).
    pub fn is_evidence(&self) -> bool {
        matches!(self, Self::RootMismatch { .. } | Self::BadProof { .. })
    }
}

/// The witness's decision on a parsed request, in the specification's order: origin known
/// (`logs` gives the trusted keys of an origin), a trusted signature, old size not above the
/// checkpoint's, old size equal to `stored`'s (0 if none), the consistency proof (empty from
/// size 0; from equal sizes, the same root). Returns the checkpoint to cosign and persist.
pub fn judge<'k>(
    req: &AddCheckpoint<'_>,
    logs: impl Fn(&str) -> Option<Vec<&'k NoteVerifier>>,
    stored: Option<&Cosigned>,
) -> Result<Checkpoint, Refusal> {
    let origin = req
        .origin()
        .ok_or_else(|| Refusal::BadRequest("the checkpoint has no origin line".into()))?;
    let keys = logs(origin).ok_or(Refusal::UnknownOrigin)?;
    let text = match note::open(req.checkpoint, &keys) {
        Ok((text, _)) => text,
        Err(NoteError::Malformed(m)) => return Err(Refusal::BadRequest(m.into())),
        Err(_) => return Err(Refusal::Forbidden),
    };
    let cp = Checkpoint::from_text(text)
        .map_err(|e| Refusal::BadRequest(format!("not a checkpoint: {e}")))?;
    if req.old_size > cp.size {
        return Err(Refusal::BadRequest(format!(
            "old size {} is above the checkpoint's size {}",
            req.old_size, cp.size
        )));
    }
    let latest = stored.map_or(0, |s| s.size);
    if req.old_size != latest {
        return Err(Refusal::WrongOldSize { latest });
    }
    match stored {
        None => {
            if !req.proof.is_empty() {
                return Err(Refusal::BadProof {
                    from: 0,
                    to: cp.size,
                });
            }
        }
        Some(s) if s.size == cp.size => {
            if s.root != cp.root {
                return Err(Refusal::RootMismatch { size: s.size });
            }
            if !req.proof.is_empty() {
                return Err(Refusal::BadProof {
                    from: s.size,
                    to: cp.size,
                });
            }
        }
        Some(s) if s.size == 0 => {
            if !req.proof.is_empty() {
                return Err(Refusal::BadProof {
                    from: 0,
                    to: cp.size,
                });
            }
        }
        Some(s) => {
            merkle::verify_consistency(s.size, cp.size, &s.root, &cp.root, &req.proof).map_err(
                |_| Refusal::BadProof {
                    from: s.size,
                    to: cp.size,
                },
            )?;
        }
    }
    Ok(cp)
}

/// The body of a `409` answer for the latest cosigned size.
pub fn size_body(latest: u64) -> String {
    format!("{latest}\n")
}

/// Parses a `409` answer's body (`<size>\n`).
pub fn parse_size_body(body: &str) -> Option<u64> {
    body.strip_suffix('\n').and_then(parse_decimal)
}

/// Checks a `200` answer's body: one or more signature lines, each `— ` … `\n`. Returns the
/// lines (each ending in `\n`); verify them by appending them to the checkpoint and opening the
/// note with the witness keys ([`cosigned_by`]).
pub fn parse_cosignatures(body: &str) -> Result<Vec<&str>, NoteError> {
    if body.is_empty() || !body.ends_with('\n') || body.len() > note::MAX_NOTE_LEN {
        return Err(NoteError::Malformed(
            "a cosignature answer is signature lines ending in a newline",
        ));
    }
    let lines: Vec<&str> = body.split_inclusive('\n').collect();
    if lines.len() > note::MAX_SIGNATURES {
        return Err(NoteError::Malformed("too many signatures"));
    }
    for l in &lines {
        if !l.starts_with("\u{2014} ") {
            return Err(NoteError::Malformed(
                "signature line must start with an em dash and a space",
            ));
        }
    }
    Ok(lines)
}

/// The names of the `witnesses` whose valid cosignatures `note` carries (none if no line is
/// theirs). Fails if a line claiming to be a witness's does not verify.
pub fn cosigned_by(note: &str, witnesses: &[&NoteVerifier]) -> Result<Vec<String>, NoteError> {
    match note::open(note, witnesses) {
        Ok((_, names)) => Ok(names),
        Err(NoteError::UnknownSigner) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals() {
        assert_eq!(parse_decimal("0"), Some(0));
        assert_eq!(parse_decimal("20852014"), Some(20852014));
        for bad in [
            "",
            "00",
            "01",
            "-1",
            "+1",
            " 1",
            "1 ",
            "18446744073709551616",
            "1a",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn size_bodies() {
        assert_eq!(parse_size_body(&size_body(42)), Some(42));
        assert_eq!(parse_size_body("42"), None);
        assert_eq!(parse_size_body("042\n"), None);
    }
}
