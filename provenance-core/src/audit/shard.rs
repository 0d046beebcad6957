//! The checks of a time-sharded log's shard, shared by evidence bundles and log archives:
//! `shard.start` (entry 0 commits to the previous shard's final checkpoint, signed by the
//! pinned key) and `shard.period` (a reading belongs in the shard's period).

use alloc::format;
use alloc::string::String;

use crate::audit::report::Report;
use crate::audit::trust::Trust;
use crate::checkpoint::Checkpoint;
use crate::log_entry::{DecodedBody, LogEntry};
use crate::shard::ShardStart;

/// Checks the entry at `index` of the shard `name` of the pinned log, with leaf data `leaf`
/// (already proved in the shard's checkpoint): it is entry 0, a shard start naming this
/// shard; its previous origin is the log or an earlier shard of it; its previous final
/// checkpoint is signed by the pinned key under that name; and no checkpoint of the previous
/// shard the auditor kept is larger, or of the same size with another root (a start naming an
/// earlier checkpoint as final, leaving out what the previous shard logged after it, or a
/// fork). The detail for the report, and the start.
pub fn check_start(
    trust: &Trust,
    name: &str,
    index: u64,
    leaf: &[u8],
) -> Result<(String, ShardStart), String> {
    let pinned = trust.log_key.name();
    if index != 0 {
        return Err(format!("the shard start is entry {index}, not entry 0"));
    }
    let start = match LogEntry::from_cbor(leaf).and_then(|e| e.decode_body()) {
        Ok(DecodedBody::ShardStart(s)) => *s,
        Ok(_) => return Err("entry 0 of the shard is not a shard start".into()),
        Err(e) => return Err(format!("entry 0: {e}")),
    };
    if start.name != name {
        return Err(format!(
            "entry 0 starts the shard {:?}, but the checkpoint is of {name:?}",
            start.name
        ));
    }
    let prev_is_ours = start.previous_origin == pinned
        || crate::shard::shard_name(pinned, &start.previous_origin).is_some_and(|p| p < name);
    if !prev_is_ours {
        return Err(format!(
            "the previous shard {:?} is not an earlier shard of {pinned:?}",
            start.previous_origin
        ));
    }
    let prev = start.previous(&trust.log_key)?;
    for k in &trust.known_checkpoints {
        let kept = trust
            .key_for(k)
            .ok()
            .and_then(|key| Checkpoint::open(k, &key).ok())
            .filter(|c| c.origin == prev.origin);
        if let Some(kept) = kept {
            if kept.size > prev.size || (kept.size == prev.size && kept != prev) {
                return Err(format!(
                    "the shard start names a checkpoint of {} of size {} as final, but a kept checkpoint of it has size {}{}",
                    prev.origin,
                    prev.size,
                    kept.size,
                    if kept.size == prev.size { " and another root (a fork)" } else { "" }
                ));
            }
        }
    }
    Ok((
        format!(
            "shard {name} (entries from position {}): entry 0 commits to {}'s final checkpoint of size {}",
            start.base, start.previous_origin, prev.size
        ),
        start,
    ))
}

/// Records the outcome of [`check_start`] as `shard.start`: the start, or `None` if it failed.
pub fn record_start(
    report: &mut Report,
    outcome: Result<(String, ShardStart), String>,
) -> Option<Option<ShardStart>> {
    match outcome {
        Ok((detail, start)) => {
            report.pass("shard.start", detail);
            Some(Some(start))
        }
        Err(e) => {
            report.fail("shard.start", e);
            None
        }
    }
}

/// `shard.period`: a reading measured at `measured_at_ms` belongs in the shard `s`: in its
/// period or within its grace before it, and not after its end by more than the clock skew.
pub fn check_period(s: &ShardStart, measured_at_ms: u64) -> Result<String, String> {
    let m = measured_at_ms;
    if s.takes(m)
        && m < s
            .end_ms
            .saturating_add(crate::registry_state::MAX_CLOCK_SKEW_MS)
    {
        Ok(format!(
            "measured at {m}: in the shard's period {} ({}..{}, grace {} ms)",
            s.name, s.start_ms, s.end_ms, s.grace_ms
        ))
    } else {
        Err(format!(
            "measured at {m}, outside the shard's period {} ({}..{}, grace {} ms)",
            s.name, s.start_ms, s.end_ms, s.grace_ms
        ))
    }
}
