//! `ledger-verify bundle`: one reading's evidence bundle, checked step by step with only the
//! auditor's trust anchors.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use crate::audit::registry::{KeyUse, RegistryView};
use crate::audit::report::Report;
use crate::audit::trust::Trust;
use crate::bundle::{EvidenceBundle, ProvedEntry};
use crate::checkpoint::Checkpoint;
use crate::keys;
use crate::log_entry::{DecodedBody, LogEntry};
use crate::merkle;
use crate::shard::ShardStart;

/// Verifies a bundle (its JSON bytes) and reports every step.
pub fn verify_bundle(bytes: &[u8], subject: &str, trust: &Trust) -> Report {
    let mut report = Report::new(subject);
    let bundle = match EvidenceBundle::from_json(bytes) {
        Ok(b) => {
            report.pass(
                "bundle.format",
                format!("evidence bundle with {} registry entries", b.registry.len()),
            );
            b
        }
        Err(e) => {
            report.fail("bundle.format", e.to_string());
            return report;
        }
    };
    // Every proof refers to the same checkpoint (checked by the parser).
    let proof = match bundle.reading.tlog_proof() {
        Ok(p) => p,
        Err(e) => {
            report.fail("bundle.format", e.to_string());
            return report;
        }
    };
    let Some(cp) = trust.check_checkpoint(&proof.checkpoint, &mut report) else {
        return report;
    };
    let shard = shard_of(&mut report, &bundle, &cp, trust);
    let Some(shard) = shard else {
        return report;
    };
    let base = shard.as_ref().map_or(0, |s| s.base);
    let leaf = inclusion(&mut report, "reading.inclusion", &bundle.reading, &cp);
    let mut registry = Vec::new();
    let mut registry_err = None;
    for (i, e) in bundle.registry.iter().enumerate() {
        match included(e, &cp) {
            Ok(entry) => registry.push(entry),
            Err(why) => {
                registry_err.get_or_insert_with(|| format!("registry entry #{}: {why}", i + 1));
            }
        }
    }
    report.check(
        "registry.inclusion",
        match registry_err {
            None => Ok(format!(
                "{} registry entries included in the checkpoint",
                registry.len()
            )),
            Some(e) => Err(e),
        },
    );
    let Some((local, leaf)) = leaf else {
        return report;
    };
    // Ledger positions go on across shards: the state machine sees base + index.
    let idx = base + local;
    let (logged_at, env) = match LogEntry::from_cbor(&leaf).and_then(|e| {
        let at = e.logged_at_ms;
        e.decode_body().map(|b| (at, b))
    }) {
        Ok((at, DecodedBody::Reading(env))) => {
            let r = &env.sensor.reading;
            report.pass(
                "reading.decode",
                format!(
                    "entry {idx}: sensor {} seq {} measured at {}, received at {}, logged at {at}, {} measurements",
                    r.sensor_id,
                    r.seq,
                    r.measured_at_ms,
                    env.received_at_ms,
                    r.measurements.len()
                ),
            );
            (at, env)
        }
        Ok((_, DecodedBody::Registry(_))) => {
            report.fail(
                "reading.decode",
                format!("entry {idx} is a registry event, not a reading"),
            );
            return report;
        }
        Ok((_, DecodedBody::Private(_))) => {
            report.fail(
                "reading.decode",
                format!("entry {idx} is a private message: only its household's key opens it (vitals-home verifies it)"),
            );
            return report;
        }
        Ok((_, DecodedBody::ShardStart(_) | DecodedBody::Carried(..))) => {
            report.fail(
                "reading.decode",
                format!("entry {idx} is a shard's start or carried registry event, not a reading"),
            );
            return report;
        }
        Err(e) => {
            report.fail("reading.decode", format!("entry {idx}: {e}"));
            return report;
        }
    };
    if let Some(s) = &shard {
        report.check(
            "shard.period",
            crate::audit::shard::check_period(s, env.sensor.reading.measured_at_ms),
        );
    }
    // The registry, rebuilt by the state machine from every proved registry entry in log
    // order. A bad entry is reported and skipped; the others still apply.
    let mut view = RegistryView::default();
    // In a shard, the carried events alone: the previous shard's registry, per subject.
    let mut carried_view = RegistryView::default();
    let mut problems = Vec::new();
    if registry.windows(2).any(|w| w[0].0 >= w[1].0) {
        problems.push("the registry entries are not in log order, each once".to_string());
    }
    registry.sort_by_key(|(i, _)| *i);
    // Logging times never go back along the log (the sequencer gives every batch a later
    // one): an entry moved in time, with the log key, shows here.
    let mut times: Vec<(u64, u64)> = registry
        .iter()
        .filter_map(|(i, d)| LogEntry::from_cbor(d).ok().map(|e| (*i, e.logged_at_ms)))
        .chain(core::iter::once((idx, logged_at)))
        .collect();
    times.sort_unstable();
    if let Some(w) = times.windows(2).find(|w| w[1].1 < w[0].1) {
        problems.push(format!(
            "entry {} is logged at {}, before entry {} at {}: logging times go back",
            w[1].0, w[1].1, w[0].0, w[0].1
        ));
    }
    for (local, data) in &registry {
        let i = base + local;
        let applied = match LogEntry::from_cbor(data).and_then(|e| {
            let at = e.logged_at_ms;
            e.decode_body().map(|b| (at, b))
        }) {
            Ok((at, DecodedBody::Registry(ev))) => view.apply(i, at, &ev),
            // A carried event applies at its original position with its original logging
            // time: the chains, and so the registry commitment, are the previous shard's.
            Ok((_, DecodedBody::Carried(pos, orig, ev))) if shard.is_some() && pos < base => {
                carried_view
                    .apply(pos, orig.logged_at_ms, &ev)
                    .and_then(|()| view.apply(pos, orig.logged_at_ms, &ev))
            }
            Ok((_, DecodedBody::Carried(pos, ..))) => Err(format!(
                "entry {i} carries an event from position {pos}, not from before this shard's base {base}"
            )),
            Ok((_, _)) => Err(format!("registry entry {i} is not a registry event")),
            Err(e) => Err(format!("registry entry {i}: {e}")),
        };
        if let Err(e) = applied {
            problems.push(e);
        }
    }
    report.check(
        "registry.decode",
        if problems.is_empty() {
            Ok(format!(
                "{} registry events replayed by the registry rules",
                view.events()
            ))
        } else {
            Err(problems.join("; "))
        },
    );
    report.check(
        "registry.complete",
        view.check_complete(&cp.extensions, &env, &bundle.registry_proofs),
    );
    if let Some(s) = &shard {
        // The previous shard's final checkpoint was opened by `shard.start`.
        report.check(
            "shard.carried",
            s.previous(&trust.log_key).and_then(|prev| {
                carried_view
                    .check_complete_subjects(
                        &prev.extensions,
                        &view.required_subjects(&env),
                        &bundle.carried_proofs,
                    )
                    .map(|_| format!(
                        "the carried events of every deciding subject are its complete history in {}'s final registry of size {}",
                        s.previous_origin, prev.size
                    ))
                    .map_err(|e| format!("against the previous shard's final registry: {e}"))
            }),
        );
    }
    let facts = view.check_reading(idx, logged_at, &env, trust);
    for (step, outcome) in facts.checks {
        report.check(step, outcome);
    }
    report.check(
        "registry.not_revoked",
        view.check_not_revoked(&KeyUse::of(idx, logged_at, &env)),
    );
    report.pass(
        "registry.patient",
        match &facts.patient {
            Some((p, i)) => format!("patient {p}: the assignment logged at entry {i} was in force when the gateway received the reading"),
            None => "no patient assignment was in force when the gateway received the reading".to_string(),
        },
    );
    report.check(
        "sensor.signature",
        match facts.sensor_key {
            None => Err("cannot check: the sensor key is not in the evidence".into()),
            Some(k) => env
                .sensor
                .verify(&k)
                .map(|()| "the sensor's COSE_Sign1 signature is valid".into())
                .map_err(|e| e.to_string()),
        },
    );
    report.check(
        "gateway.signature",
        match facts.gateway_key {
            None => Err("cannot check: the gateway key is not in the evidence".into()),
            Some(k) => {
                let (msg, sig) = env.signed_data();
                if keys::verify_signature(&k, &msg, &sig) {
                    Ok("the gateway's countersignature is valid".into())
                } else {
                    Err("the gateway's countersignature does not verify".into())
                }
            }
        },
    );
    if let Some((p, _)) = facts.patient {
        report.subject = format!("{subject} (patient {p})");
    }
    report
}

/// `shard.start` for a bundle: in a shard of the pinned log, its entry 0 (proved against the
/// same checkpoint) is the shard's start ([`crate::audit::shard::check_start`]).
/// `Some(None)`: a log without shards; `None`: failed.
fn shard_of(
    report: &mut Report,
    bundle: &EvidenceBundle,
    cp: &Checkpoint,
    trust: &Trust,
) -> Option<Option<ShardStart>> {
    let pinned = trust.log_key.name();
    let Some(name) = crate::shard::shard_name(pinned, &cp.origin) else {
        if bundle.shard_start.is_some() {
            report.fail(
                "shard.start",
                format!("the bundle has a shard start but the checkpoint is of the log {pinned:?} itself, not of a shard"),
            );
            return None;
        }
        return Some(None);
    };
    let outcome = bundle
        .shard_start
        .as_ref()
        .ok_or_else(|| {
            format!("the checkpoint is of the shard {name}, but the bundle has no shard start")
        })
        .and_then(|e| included(e, cp))
        .and_then(|(i, leaf)| crate::audit::shard::check_start(trust, name, i, &leaf));
    crate::audit::shard::record_start(report, outcome)
}

/// Checks that a proved entry is included in `cp`: its index and leaf data, or why not.
pub fn included(e: &ProvedEntry, cp: &Checkpoint) -> Result<(u64, Vec<u8>), String> {
    let leaf = e.leaf_bytes().map_err(|e| e.to_string())?;
    let proof = e.tlog_proof().map_err(|e| e.to_string())?;
    merkle::verify_inclusion(
        proof.index,
        cp.size,
        &merkle::leaf_hash(&leaf),
        &proof.hashes,
        &cp.root,
    )
    .map_err(|err| {
        format!(
            "entry {} is not in the checkpoint of size {}: {err}",
            proof.index, cp.size
        )
    })?;
    Ok((proof.index, leaf))
}

/// [`included`], recorded under `step`.
fn inclusion(
    report: &mut Report,
    step: &str,
    e: &ProvedEntry,
    cp: &Checkpoint,
) -> Option<(u64, Vec<u8>)> {
    match included(e, cp) {
        Ok((idx, leaf)) => {
            report.pass(
                step,
                format!("entry {idx} is in the checkpoint of size {}", cp.size),
            );
            Some((idx, leaf))
        }
        Err(e) => {
            report.fail(step, e);
            None
        }
    }
}
