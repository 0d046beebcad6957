//! What the auditor brings: the log's public key, the issuers' CA certificates, optionally
//! witness keys with a quorum and checkpoints kept from earlier. Nothing else is trusted; in
//! particular not the `log_vkey` a bundle or archive states about itself.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::audit::report::Report;
use crate::cert::DeviceCert;
use crate::checkpoint::Checkpoint;
use crate::note::{self, NoteVerifier};

/// The auditor's trust anchors.
pub struct Trust {
    /// The log's key (a C2SP vkey).
    pub log_key: NoteVerifier,
    /// Trusted issuer (manufacturer and fleet) CA certificates.
    pub issuers: Vec<DeviceCert>,
    /// Witness keys.
    pub witnesses: Vec<NoteVerifier>,
    /// How many of the witnesses must have cosigned a checkpoint.
    pub quorum: usize,
    /// Checkpoints the auditor kept earlier (signed notes), to detect a fork.
    pub known_checkpoints: Vec<String>,
}

impl Trust {
    /// Trust in a log key alone.
    pub fn log_only(log_key: NoteVerifier) -> Self {
        Self {
            log_key,
            issuers: Vec::new(),
            witnesses: Vec::new(),
            quorum: 0,
            known_checkpoints: Vec::new(),
        }
    }

    /// The trust an auditor pinned: the log's vkey, issuer CA certificates (PEM), witness vkeys,
    /// the quorum and kept checkpoints (signed notes), each checked. A witness vouches for the
    /// log only if it holds another key than the log's (the log's key holder can sign under any
    /// name), and counts once: both are refused with the reason.
    pub fn pinned(
        log_vkey: &str,
        issuer_pems: &[&str],
        witness_vkeys: &[&str],
        quorum: usize,
        known_checkpoints: Vec<String>,
    ) -> Result<Self, String> {
        let log_key = NoteVerifier::from_vkey(log_vkey.trim())
            .map_err(|e| format!("the log key is not a vkey: {e}"))?;
        let issuers = issuer_pems
            .iter()
            .enumerate()
            .map(|(i, pem)| {
                DeviceCert::from_pem(pem)
                    .map_err(|e| format!("issuer #{} is not an issuer certificate: {e}", i + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let witnesses = witness_vkeys
            .iter()
            .map(|w| {
                NoteVerifier::from_vkey(w.trim())
                    .map_err(|e| format!("{w:?} is not a witness vkey: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::new(log_key, issuers, witnesses, quorum, known_checkpoints)
    }

    /// Trust from parsed anchors, with the witness rule of [`Trust::pinned`]: a witness holding
    /// the log's key, or one given twice, is refused.
    pub fn new(
        log_key: NoteVerifier,
        issuers: Vec<DeviceCert>,
        witnesses: Vec<NoteVerifier>,
        quorum: usize,
        known_checkpoints: Vec<String>,
    ) -> Result<Self, String> {
        for (i, w) in witnesses.iter().enumerate() {
            if w.key() == log_key.key() {
                return Err(format!(
                    "witness {}: that is the log's own key; a witness must hold another key",
                    w.name()
                ));
            }
            if witnesses[..i].iter().any(|o| o.key() == w.key()) {
                return Err(format!(
                    "witness {}: the same key is given twice; each witness counts once",
                    w.name()
                ));
            }
        }
        Ok(Self {
            log_key,
            issuers,
            witnesses,
            quorum,
            known_checkpoints,
        })
    }

    /// Checks a signed checkpoint: the log's signature (`checkpoint.signature`), the witness
    /// quorum (`checkpoint.witnesses`, when witnesses or a quorum were given) and, against the
    /// kept checkpoints, that no other checkpoint (root or extension lines) was signed for the
    /// same size (`checkpoint.fork`).
    /// Returns the checkpoint if the log signed it.
    pub fn check_checkpoint(&self, signed: &str, report: &mut Report) -> Option<Checkpoint> {
        let key = match self.key_for(signed) {
            Ok(k) => k,
            Err(e) => {
                report.fail("checkpoint.signature", e);
                return None;
            }
        };
        let cp = match Checkpoint::open(signed, &key) {
            Ok(cp) => {
                report.pass(
                    "checkpoint.signature",
                    format!(
                        "signed by the log key {:?}: size {}, root {}",
                        key.name(),
                        cp.size,
                        hex(&cp.root)
                    ),
                );
                cp
            }
            Err(e) => {
                report.fail(
                    "checkpoint.signature",
                    format!(
                        "not a checkpoint signed by the log key {:?}: {e}",
                        key.name()
                    ),
                );
                return None;
            }
        };
        if !self.witnesses.is_empty() || self.quorum > 0 {
            // Only keys other than the log's count, each once (the command line refuses both).
            let mut refs: Vec<&NoteVerifier> = Vec::new();
            for w in &self.witnesses {
                if w.key() != self.log_key.key() && !refs.iter().any(|r| r.key() == w.key()) {
                    refs.push(w);
                }
            }
            let signed_by = match note::open(signed, &refs) {
                Ok((_, mut names)) => {
                    names.sort();
                    names.dedup();
                    Ok(names)
                }
                Err(note::NoteError::UnknownSigner) => Ok(Vec::new()),
                Err(e) => Err(format!("a witness signature is invalid: {e}")),
            };
            report.check(
                "checkpoint.witnesses",
                signed_by.and_then(|names| {
                    let msg = format!(
                        "{} of {} witnesses cosigned (quorum {}){}",
                        names.len(),
                        self.witnesses.len(),
                        self.quorum,
                        if names.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", names.join(", "))
                        }
                    );
                    if names.len() >= self.quorum {
                        Ok(msg)
                    } else {
                        Err(msg)
                    }
                }),
            );
        }
        if !self.known_checkpoints.is_empty() {
            report.check("checkpoint.fork", self.fork_check(&cp));
        }
        Some(cp)
    }

    /// The log's key under the origin a signed checkpoint names: the pinned key itself for the
    /// pinned origin, the same key renamed for one of its shards (`<origin>/<period>`,
    /// [`crate::shard`]); any other origin is refused.
    pub fn key_for(&self, signed: &str) -> Result<NoteVerifier, String> {
        let origin = signed.split('\n').next().unwrap_or_default();
        if origin == self.log_key.name() {
            return Ok(self.log_key.clone());
        }
        if crate::shard::shard_name(self.log_key.name(), origin).is_some() {
            return self
                .log_key
                .renamed(origin)
                .map_err(|e| format!("shard origin {origin:?}: {e}"));
        }
        Err(format!(
            "the checkpoint's origin {origin:?} is neither the pinned log {:?} nor one of its shards",
            self.log_key.name()
        ))
    }

    fn fork_check(&self, cp: &Checkpoint) -> Result<String, String> {
        let mut same = 0;
        let mut other = 0;
        for (i, k) in self.known_checkpoints.iter().enumerate() {
            let key = self
                .key_for(k)
                .map_err(|e| format!("kept checkpoint #{}: {e}", i + 1))?;
            let known = Checkpoint::open(k, &key).map_err(|e| {
                format!(
                    "kept checkpoint #{} is not signed by the log key: {e}",
                    i + 1
                )
            })?;
            if known.origin != cp.origin {
                other += 1;
                continue;
            }
            if known.size == cp.size {
                if known.root != cp.root {
                    return Err(format!(
                        "FORK: the log signed two different roots for size {}: {} (kept) and {} (here)",
                        cp.size,
                        hex(&known.root),
                        hex(&cp.root)
                    ));
                }
                // Same tree, other extension lines: two registry commitments for one log
                // state (witnesses cosign trees only, so only this check sees it).
                if known != *cp {
                    return Err(format!(
                        "FORK: the log signed two different checkpoints for size {} with the same root: {:?} (kept) and {:?} (here)",
                        cp.size, known.extensions, cp.extensions
                    ));
                }
                same += 1;
            } else {
                other += 1;
            }
        }
        Ok(format!(
            "same root as {same} kept checkpoint(s) of this size; {other} of other sizes \
             (prove those with `ledger-verify consistency`)"
        ))
    }
}

/// Lower-case hex of a hash, for reports.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
