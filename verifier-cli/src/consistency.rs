//! `ledger-verify consistency`: two checkpoints of the same log and the RFC 9162 consistency
//! proof between them: the newer log is the older one with entries appended, nothing changed.
//! Online, the newer checkpoint and the proof come from the service (`--url`).

use crate::report::Report;
use crate::trust::{hex, Trust};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use provenance_core::merkle::{self, Hash};

/// Parses a consistency proof file: the service's JSON answer (`{"hashes": [base64…]}`) or one
/// base64 hash per line.
pub fn parse_proof(text: &str) -> Result<Vec<Hash>, String> {
    let items: Vec<String> = if text.trim_start().starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("proof JSON: {e}"))?;
        v["hashes"]
            .as_array()
            .ok_or("proof JSON has no \"hashes\" array")?
            .iter()
            .map(|h| {
                h.as_str()
                    .map(String::from)
                    .ok_or("a proof hash is not a string")
            })
            .collect::<Result<_, _>>()?
    } else {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect()
    };
    items
        .iter()
        .enumerate()
        .map(|(i, h)| {
            B64.decode(h)
                .ok()
                .and_then(|b| Hash::try_from(b.as_slice()).ok())
                .ok_or_else(|| format!("proof hash #{} is not 32 bytes of base64", i + 1))
        })
        .collect()
}

/// Verifies that `new` extends `old` with `proof`, both signed by the log key (the newer one
/// also checked for witnesses and against kept checkpoints).
pub fn verify_consistency(
    old: &str,
    new: &str,
    proof: &[Hash],
    subject: &str,
    trust: &Trust,
) -> Report {
    let mut report = Report::new(subject);
    let old_cp = match provenance_core::checkpoint::Checkpoint::open(old, &trust.log_key) {
        Ok(cp) => {
            report.pass(
                "old.signature",
                format!("size {}, root {}", cp.size, hex(&cp.root)),
            );
            cp
        }
        Err(e) => {
            report.fail(
                "old.signature",
                format!("the older checkpoint is not signed by the log key: {e}"),
            );
            return report;
        }
    };
    let mut with_old = Trust {
        log_key: trust.log_key.clone(),
        issuers: Vec::new(),
        witnesses: trust.witnesses.clone(),
        quorum: trust.quorum,
        known_checkpoints: trust.known_checkpoints.clone(),
    };
    with_old.known_checkpoints.push(old.to_string());
    let Some(new_cp) = with_old.check_checkpoint(new, &mut report) else {
        return report;
    };
    let outcome = if new_cp.size < old_cp.size {
        Err(format!(
            "the newer checkpoint has {} entries, fewer than the older one's {}: the log shrank",
            new_cp.size, old_cp.size
        ))
    } else if new_cp.size == old_cp.size {
        if new_cp.root == old_cp.root {
            Ok(format!(
                "same size {} and root: nothing appended",
                new_cp.size
            ))
        } else {
            // Reported by checkpoint.fork already; restated here.
            Err(format!("FORK: two roots for size {}", new_cp.size))
        }
    } else if old_cp.size == 0 {
        Ok(format!(
            "every log of size {} extends the empty log",
            new_cp.size
        ))
    } else {
        merkle::verify_consistency(old_cp.size, new_cp.size, &old_cp.root, &new_cp.root, proof)
            .map(|()| {
                format!(
                    "the log of size {} is the log of size {} with entries appended",
                    new_cp.size, old_cp.size
                )
            })
            .map_err(|e| {
                format!(
                    "the consistency proof from {} to {} does not verify: {e}",
                    old_cp.size, new_cp.size
                )
            })
    };
    report.check("consistency", outcome);
    report
}

/// Online mode: fetches the service's latest checkpoint and the consistency proof from the
/// older checkpoint's size to it. Returns (newer checkpoint, proof).
pub fn fetch(url: &str, old: &str, trust: &Trust) -> Result<(String, Vec<Hash>), String> {
    let base = url.trim_end_matches('/');
    let old_cp = provenance_core::checkpoint::Checkpoint::open(old, &trust.log_key)
        .map_err(|e| format!("the older checkpoint is not signed by the log key: {e}"))?;
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(30))
        .build();
    let new = agent
        .get(&format!("{base}/v1/log/checkpoint"))
        .call()
        .map_err(|e| format!("GET {base}/v1/log/checkpoint: {e}"))?
        .into_string()
        .map_err(|e| format!("reading the checkpoint: {e}"))?;
    let new_cp = provenance_core::checkpoint::Checkpoint::open(&new, &trust.log_key)
        .map_err(|e| format!("the service's checkpoint is not signed by the log key: {e}"))?;
    if old_cp.size == 0 || new_cp.size <= old_cp.size {
        return Ok((new, Vec::new()));
    }
    let proof = agent
        .get(&format!(
            "{base}/v1/log/proof/consistency?from={}&to={}",
            old_cp.size, new_cp.size
        ))
        .call()
        .map_err(|e| format!("GET consistency proof: {e}"))?
        .into_string()
        .map_err(|e| format!("reading the consistency proof: {e}"))?;
    Ok((
        new,
        parse_proof(&proof).map_err(|e| format!("{e}: {proof}"))?,
    ))
}
