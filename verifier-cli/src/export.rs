//! `ledger-verify export DIR`: a whole log archive, in parallel. It proves the archive is
//! exactly the log's range `[start, end)` — every index present once, in order, and the leaves
//! with the manifest's frontier reproduce the signed checkpoint's root, so no entry is missing,
//! added or changed — then checks every reading as `ledger-verify bundle` does (certificates,
//! registry, both signatures, batch-verified), against the registry events in the archive and
//! its prelude.

use crate::files::{read_bounded, MAX_ENTRY_FILE};
use crate::registry::{KeyUse, RegistryView};
use crate::report::Report;
use crate::trust::Trust;
use ed25519_dalek::{Signature, VerifyingKey};
use indicatif::{ProgressBar, ProgressStyle};
use provenance_core::archive::{ArchiveManifest, EntryLine, Leaf, MANIFEST_FILE, MAX_MANIFEST_LEN};
use provenance_core::audit::shard::{check_period, check_start, record_start};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::cose::GatewayEnvelope;
use provenance_core::keys::BatchVerifier;
use provenance_core::log_entry::{DecodedBody, LogEntry};
use provenance_core::merkle::{self, CompactRange};
use provenance_core::registry_state::Sequences;
use provenance_core::shard::{shard_name, ShardStart};
use rayon::prelude::*;
use std::path::Path;

/// Failures kept per step to show (the count is always exact).
const EXAMPLES: usize = 5;
/// Readings per signature batch.
const BATCH: usize = 64;

/// Failures of one kind: how many, and the first few.
#[derive(Default)]
struct Failures {
    count: u64,
    examples: Vec<String>,
}

impl Failures {
    fn add(&mut self, what: String) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(what);
        }
    }

    fn merge(&mut self, other: Failures) {
        self.count += other.count;
        for e in other.examples {
            if self.examples.len() < EXAMPLES {
                self.examples.push(e);
            }
        }
    }

    fn outcome(&self, ok: String) -> Result<String, String> {
        if self.count == 0 {
            Ok(ok)
        } else {
            Err(format!(
                "{} failed; first: {}",
                self.count,
                self.examples.join("; ")
            ))
        }
    }
}

/// Logging times never go back along the log (the sequencer gives every batch a later one):
/// an entry moved in time by someone holding the log key shows here.
fn logged_in_order(idx: u64, at: u64, last: &mut u64, fail: &mut Failures) {
    if at < *last {
        fail.add(format!(
            "entry {idx} is logged at {at}, before an entry ahead of it ({last}): logging times go back"
        ));
    }
    *last = (*last).max(at);
}

/// `shard.start` for an archive whose checkpoint is of a shard of the pinned log: entry 0 is
/// taken from the prelude (and removed from it: it is no registry event) or, when the range
/// starts at 0, from the first entry file (`archive.completeness` proves it there; its leaf is
/// returned to be compared when the pass reads it). `Some((None, None))`: a log without shards;
/// `None`: failed (reported).
fn shard_start(
    dir: &Path,
    manifest: &ArchiveManifest,
    cp: &Checkpoint,
    trust: &Trust,
    prelude: &mut Vec<(u64, Vec<u8>)>,
    report: &mut Report,
) -> Option<(Option<ShardStart>, Option<Vec<u8>>)> {
    let Some(name) = shard_name(trust.log_key.name(), &cp.origin) else {
        return Some((None, None));
    };
    let (entry0, peeked) = if manifest.start > 0 {
        match prelude.iter().position(|(i, _)| *i == 0) {
            Some(p) => (Ok(prelude.remove(p).1), None),
            None => (
                Err(format!(
                    "the archive of the shard {name} starts at entry {}, but its prelude has no shard start (entry 0)",
                    manifest.start
                )),
                None,
            ),
        }
    } else {
        let first = manifest
            .entry_files
            .first()
            .ok_or_else(|| "the archive has no entry file".to_string())
            .and_then(|f| read_bounded(&dir.join(f), MAX_ENTRY_FILE))
            .and_then(|data| {
                let line = data.split(|b| *b == b'\n').next().unwrap_or_default();
                match EntryLine::parse_leaf(line) {
                    Ok((0, Leaf::Data(leaf))) => Ok(leaf),
                    Ok(_) => Err("the first entry line is not entry 0 with its data".to_string()),
                    Err(e) => Err(format!("the first entry line: {e}")),
                }
            });
        match first {
            Ok(leaf) => (Ok(leaf.clone()), Some(leaf)),
            Err(e) => (Err(e), None),
        }
    };
    let outcome = entry0.and_then(|leaf| check_start(trust, name, 0, &leaf));
    record_start(report, outcome).map(|s| (s, peeked))
}

/// Verifies the archive in `dir`. `progress` shows a progress bar on standard error.
pub fn verify_export(dir: &Path, trust: &Trust, progress: bool) -> Report {
    let mut report = Report::new(format!("archive {}", dir.display()));
    let manifest = match read_bounded(&dir.join(MANIFEST_FILE), MAX_MANIFEST_LEN as u64)
        .map_err(|e| format!("reading {e}"))
        .and_then(|b| ArchiveManifest::from_json(&b).map_err(|e| e.to_string()))
    {
        Ok(m) => {
            report.pass(
                "archive.manifest",
                format!(
                    "entries [{}, {}) of {:?} in {} files, {} registry entries before the range",
                    m.start,
                    m.end,
                    m.origin,
                    m.entry_files.len(),
                    m.registry_prelude.len()
                ),
            );
            m
        }
        Err(e) => {
            report.fail("archive.manifest", e);
            return report;
        }
    };
    let Some(cp) = trust.check_checkpoint(&manifest.checkpoint, &mut report) else {
        return report;
    };
    if cp.size != manifest.end || cp.origin != manifest.origin {
        report.fail(
            "archive.checkpoint",
            format!(
                "the checkpoint is of {:?} at size {}, the manifest says {:?} up to {}",
                cp.origin, cp.size, manifest.origin, manifest.end
            ),
        );
        return report;
    }

    // The registry before the range, each entry proved against the checkpoint.
    let mut registry: Vec<(u64, Vec<u8>)> = Vec::new();
    let mut prelude = Failures::default();
    for (n, e) in manifest.registry_prelude.iter().enumerate() {
        let checked = e.tlog_proof().map_err(|e| e.to_string()).and_then(|proof| {
            if proof.checkpoint != manifest.checkpoint {
                Err("its proof is against another checkpoint".to_string())
            } else if proof.index >= manifest.start {
                Err(format!("entry {} is not before the range", proof.index))
            } else {
                crate::bundle::included(e, &cp)
            }
        });
        match checked {
            Ok(x) => registry.push(x),
            Err(e) => prelude.add(format!("prelude #{}: {e}", n + 1)),
        }
    }
    report.check(
        "registry.prelude",
        prelude.outcome(format!(
            "{} registry entries before the range are in the checkpoint",
            registry.len()
        )),
    );

    // In a shard of the pinned log, its start (entry 0: in the prelude, or the range's first
    // entry, which archive.completeness then proves) gives the ledger base.
    let Some((shard, entry0)) = shard_start(dir, &manifest, &cp, trust, &mut registry, &mut report)
    else {
        return report;
    };
    let base = shard.as_ref().map_or(0, |s| s.base);

    // Pass over the entry files: sequence, leaf hashes into the compact range, decoding.
    let frontier = match manifest.frontier_hashes() {
        Ok(f) => f,
        Err(e) => {
            report.fail("archive.completeness", e.to_string());
            return report;
        }
    };
    let mut range = match CompactRange::from_frontier(manifest.start, &frontier) {
        Ok(r) => r,
        Err(e) => {
            report.fail("archive.completeness", e.to_string());
            return report;
        }
    };
    let total = manifest.end - manifest.start;
    let bar = if progress {
        let b = ProgressBar::new(total);
        b.set_style(
            ProgressStyle::with_template(
                "{spinner} {msg} [{bar:40}] {pos}/{len} entries ({per_sec}, {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b.set_message("verifying");
        b
    } else {
        ProgressBar::hidden()
    };
    let mut sequence = Failures::default();
    let mut decode = Failures::default();
    let mut pruned = 0u64;
    let (mut reg, mut sigs) = (Failures::default(), Failures::default());
    let mut uses: Vec<KeyUse> = Vec::new();
    let mut seqs = Sequences::default();
    let mut stale = Failures::default();
    let mut view = RegistryView::default();
    // In a shard, the carried events alone: they must be the previous shard's final registry.
    let mut carried_view = RegistryView::default();
    let mut period = Failures::default();
    let mut reg_fail = Failures::default();
    let mut registry_events = 0usize;
    let sharded = shard.is_some();
    let mut apply = |view: &mut RegistryView, idx: u64, leaf: &[u8], fail: &mut Failures| {
        let applied = match LogEntry::from_cbor(leaf).and_then(|e| {
            let at = e.logged_at_ms;
            e.decode_body().map(|b| (at, b))
        }) {
            // Ledger positions go on across shards: the state machine sees base + index.
            Ok((at, DecodedBody::Registry(ev))) => view.apply(base + idx, at, &ev),
            // A carried event applies at its original position with its original logging
            // time: the chains, and so the registry commitment, are the previous shard's.
            Ok((_, DecodedBody::Carried(pos, orig, ev))) if sharded && pos < base => carried_view
                .apply(pos, orig.logged_at_ms, &ev)
                .and_then(|()| view.apply(pos, orig.logged_at_ms, &ev)),
            Ok((_, DecodedBody::Carried(pos, ..))) if sharded => Err(format!(
                "carries an event from position {pos}, not from before this shard's base {base}"
            )),
            Ok((_, DecodedBody::Carried(..))) => {
                Err("a carried registry event in a log without shards".into())
            }
            Ok((_, DecodedBody::Reading(_) | DecodedBody::Private(_))) => {
                Err("a reading, not a registry event".into())
            }
            Ok((_, DecodedBody::ShardStart(_))) => {
                Err("a shard start, not a registry event".into())
            }
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = applied {
            fail.add(format!("entry {idx}: {e}"));
        }
        registry_events += 1;
    };
    registry.sort_by_key(|(i, _)| *i);
    for (idx, leaf) in &registry {
        apply(&mut view, *idx, leaf, &mut reg_fail);
    }
    let mut next = manifest.start;
    // Logging times never go back along the log; the prelude's last one bounds the range's.
    let mut last_logged_at = registry
        .iter()
        .filter_map(|(_, l)| LogEntry::from_cbor(l).ok().map(|e| e.logged_at_ms))
        .max()
        .unwrap_or(0);
    for name in &manifest.entry_files {
        let path = dir.join(name);
        let data = match read_bounded(&path, MAX_ENTRY_FILE) {
            Ok(d) => d,
            Err(e) => {
                sequence.add(e);
                continue;
            }
        };
        let lines: Vec<&[u8]> = data
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .collect();
        let parsed: Vec<_> = lines
            .par_iter()
            .map(|l| {
                let (idx, leaf) = EntryLine::parse_leaf(l).map_err(|e| e.to_string())?;
                Ok::<_, String>(match leaf {
                    Leaf::Data(leaf) => {
                        let hash = merkle::leaf_hash(&leaf);
                        let body = LogEntry::from_cbor(&leaf).and_then(|e| {
                            let at = e.logged_at_ms;
                            e.decode_body().map(|b| (at, b))
                        });
                        (idx, hash, leaf, Some(body))
                    }
                    Leaf::Pruned(hash) => (idx, hash, Vec::new(), None),
                })
            })
            .collect();
        // In order: the sequence, the compact range, the registry events of this file.
        let mut readings: Vec<(u64, u64, GatewayEnvelope)> = Vec::new();
        let mut privates = Vec::new();
        for p in parsed {
            let (idx, hash, leaf, body) = match p {
                Ok(x) => x,
                Err(e) => {
                    sequence.add(format!("{name}: {e}"));
                    continue;
                }
            };
            if idx != next {
                sequence.add(format!("{name}: entry {idx} where {next} was due"));
            }
            if idx == 0 && entry0.as_ref().is_some_and(|l| *l != leaf) {
                sequence.add(format!("{name}: entry 0 changed while it was read"));
            }
            next = idx.saturating_add(1);
            range.push(hash);
            match body {
                None => pruned += 1,
                Some(Ok((at, DecodedBody::Reading(env)))) => {
                    logged_in_order(idx, at, &mut last_logged_at, &mut sequence);
                    // Sequence numbers strictly increase per sensor across the archive.
                    let (sensor, seq) = (&env.sensor.reading.sensor_id, env.sensor.reading.seq);
                    let last = seqs.last(sensor);
                    if seqs.observe(sensor, seq).is_err() {
                        stale.add(format!(
                            "entry {idx}: sensor {sensor} sequence number {seq} is not above its earlier {}",
                            last.unwrap_or_default()
                        ));
                    }
                    if let Some(s) = &shard {
                        if let Err(e) = check_period(s, env.sensor.reading.measured_at_ms) {
                            period.add(format!("entry {idx}: {e}"));
                        }
                    }
                    readings.push((base + idx, at, *env));
                }
                Some(Ok((at, DecodedBody::Registry(_) | DecodedBody::Carried(..)))) => {
                    logged_in_order(idx, at, &mut last_logged_at, &mut sequence);
                    apply(&mut view, idx, &leaf, &mut reg_fail)
                }
                Some(Ok((at, DecodedBody::Private(env)))) => {
                    logged_in_order(idx, at, &mut last_logged_at, &mut sequence);
                    privates.push((base + idx, at, env));
                }
                // The shard's start, checked above.
                Some(Ok((at, DecodedBody::ShardStart(_)))) if idx == 0 && sharded => {
                    logged_in_order(idx, at, &mut last_logged_at, &mut sequence);
                }
                Some(Ok((_, DecodedBody::ShardStart(_)))) => decode.add(format!(
                    "entry {idx}: a shard start, which only entry 0 of a shard may be"
                )),
                Some(Err(e)) => decode.add(format!("entry {idx}: {e}")),
            }
        }
        // This file's readings, in parallel: registry checks (against the events logged before
        // each) and both signatures in batches.
        // Private messages: what the cloud could check, checked again (the gateway's key, its
        // household, every recipient at the message's position, the gateway's signature over
        // the ciphertext); only the household's key opens the content (vitals-home).
        for (idx, at, env) in &privates {
            let claims = provenance_core::registry_state::PrivateClaims::of(env);
            match view.state().check_private(*idx, *at, &claims) {
                Ok(v) => {
                    if env.verify_gateway(&v.gateway_key).is_err() {
                        sigs.add(format!("entry {idx}: the gateway signature over the private message does not verify"));
                    }
                }
                Err((r, d)) => reg.add(format!("entry {idx} {}: {d}", r.step())),
            }
        }
        let results: Vec<(Failures, Failures, Vec<KeyUse>)> = readings
            .par_chunks(BATCH)
            .map(|chunk| {
                let (mut reg, mut sigs) = (Failures::default(), Failures::default());
                let mut chunk_uses = Vec::with_capacity(chunk.len());
                let mut batch = BatchVerifier::new();
                let mut owners: Vec<(u64, &'static str)> = Vec::new();
                for (idx, at, env) in chunk {
                    // The fast path: every check passes and no text is built; else the details.
                    let (sensor_key, gateway_key) = match view.quick_check(*idx, *at, env, trust) {
                        Some((s, g)) => (Some(s), Some(g)),
                        None => {
                            let facts = view.check_reading(*idx, *at, env, trust);
                            for (step, outcome) in &facts.checks {
                                if let Err(e) = outcome {
                                    reg.add(format!("entry {idx} {step}: {e}"));
                                }
                            }
                            (facts.sensor_key, facts.gateway_key)
                        }
                    };
                    chunk_uses.push(KeyUse::of(*idx, *at, env));
                    let mut push = |key: Option<VerifyingKey>,
                                    (msg, sig): (Vec<u8>, Signature),
                                    who: &'static str| {
                        match key {
                            Some(k) => {
                                batch.push(k, msg, sig);
                                owners.push((*idx, who));
                            }
                            None => sigs.add(format!("entry {idx}: the {who} key is unknown")),
                        }
                    };
                    push(sensor_key, env.sensor.signed_data(), "sensor");
                    push(gateway_key, env.signed_data(), "gateway");
                }
                if let Err(bad) = batch.verify() {
                    for i in bad {
                        if let Some((idx, who)) = owners.get(i) {
                            sigs.add(format!("entry {idx}: the {who} signature does not verify"));
                        }
                    }
                }
                (reg, sigs, chunk_uses)
            })
            .collect();
        for (a, b, u) in results {
            reg.merge(a);
            sigs.merge(b);
            uses.extend(u);
        }
        bar.inc(lines.len() as u64);
    }
    bar.finish_and_clear();
    if next != manifest.end {
        sequence.add(format!(
            "the archive ends at {next}, the manifest at {}",
            manifest.end
        ));
    }
    report.check(
        "archive.sequence",
        sequence.outcome(format!(
            "every index of [{}, {}) once, in order",
            manifest.start, manifest.end
        )),
    );
    let root = range.root();
    report.check(
        "archive.completeness",
        if range.size() == cp.size && root == cp.root {
            Ok(format!(
                "the {total} entries with the frontier of [0, {}) give the checkpoint's root: none missing, added or changed",
                manifest.start
            ))
        } else {
            Err(format!(
                "the entries give root {} at size {}, the checkpoint {} at size {}",
                crate::trust::hex(&root),
                range.size(),
                crate::trust::hex(&cp.root),
                cp.size
            ))
        },
    );
    report.check(
        "registry.decode",
        reg_fail.outcome(format!("{registry_events} registry events")),
    );
    report.check("registry.complete", view.check_complete_log(&cp.extensions));
    if let Some(s) = &shard {
        report.check(
            "shard.carried",
            s.previous(&trust.log_key)
                .and_then(|prev| {
                    carried_view.check_complete_log(&prev.extensions).map(|_| {
                        format!(
                            "the carried events are the whole registry of {}'s final checkpoint of size {}",
                            s.previous_origin, prev.size
                        )
                    })
                })
                .map_err(|e| format!("against the previous shard's final registry: {e}")),
        );
        report.check(
            "shard.period",
            period.outcome(format!(
                "every reading measured in the shard's period {} or its grace",
                s.name
            )),
        );
    }
    report.check(
        "readings.decode",
        decode.outcome(if pruned == 0 {
            format!("{} readings decoded", uses.len())
        } else {
            format!(
                "{} readings decoded and checked; {pruned} pruned readings: content not checked \
                 here (leaf hash only, proved in place by archive.completeness; registry.complete \
                 shows no registry event hides behind one; their content is in the archive \
                 acknowledged before pruning)",
                uses.len()
            )
        }),
    );
    // Revocations are known only now: a key revoked (at any later entry) from a time at or
    // before its use taints the reading.
    let mut revoked = Failures::default();
    for u in &uses {
        if let Err(e) = view.check_not_revoked(u) {
            revoked.add(format!("entry {}: {e}", u.idx));
        }
    }
    let n = uses.len();
    report.check(
        "readings.registry",
        reg.outcome(format!(
            "{n} readings: certificates from trusted issuers, keys enrolled and bound before each"
        )),
    );
    report.check(
        "readings.sequence",
        stale.outcome(format!(
            "{n} readings: every sensor's sequence numbers strictly increase across the archive"
        )),
    );
    report.check(
        "readings.not_revoked",
        revoked.outcome(format!("{n} readings: no key revoked at its time")),
    );
    report.check(
        "readings.signatures",
        sigs.outcome(format!(
            "{} signatures valid (sensor and gateway of {n} readings)",
            2 * n
        )),
    );
    report
}
