//! `ledger-verify monitor`: follows a log through its public checkpoints, hash tiles and
//! registry entries only (no token), as Certificate Transparency monitors do.
//!
//! Each round: the latest checkpoint must be signed by the log key (and cosigned by the witness
//! quorum, if given). Against the checkpoint kept from the last round it must be consistent: the
//! leaf hashes of the new entries (level-0 tiles) appended to the kept frontier must reproduce
//! the new root — a stronger check than a consistency proof, as it recomputes the tree; an older
//! checkpoint must come with a consistency proof to the kept one; another root for the kept size
//! is a fork. Every registry entry in the new range must hash to its leaf in the tiles; they are
//! replayed in log order through `provenance-core`'s registry state machine (an event the rules
//! refuse is reported), and the replayed registry must reproduce the checkpoint's registry
//! commitment (count and map root): a registry entry left out of, or added to, the public feed
//! is caught. Only then is the new checkpoint kept (state file written atomically).
//!
//! Every registry change is a [`Finding`] (enrollment, binding, assignment, rotation,
//! revocation), for all subjects or only the watched devices and issuers; a key change of a
//! watched device not announced with `--expect-key` is an alert, as are forks, inconsistency,
//! an incomplete registry feed and a bad checkpoint.

use crate::findings::{Finding, Severity, Watch};
use crate::report::Report;
use crate::trust::{hex, Trust};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::log_entry::{DecodedBody, EntryKind, LogEntry};
use provenance_core::merkle::{self, CompactRange, Hash};
use provenance_core::registry::RegistryEvent;
use provenance_core::registry_state::{parse_registry_extension, RegistryState};
use provenance_core::tiles::{tile_path, TILE_WIDTH};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// What to follow and report.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The service's base URL.
    pub url: String,
    /// The state file (created if missing).
    pub state: PathBuf,
    /// What to report.
    pub watch: Watch,
    /// Show a progress bar while catching up.
    pub progress: bool,
}

/// The state kept between rounds.
#[derive(Debug, Serialize, Deserialize)]
struct Saved {
    version: u32,
    origin: String,
    /// The latest checkpoint proved consistent (signed note).
    checkpoint: String,
    /// The frontier of its tree (base64 hashes, largest subtree first).
    frontier: Vec<String>,
    /// Every registry entry up to its size: (index, leaf data base64).
    registry: Vec<(u64, String)>,
}

/// A monitor of one log.
pub struct Monitor {
    opts: Options,
    trust: Trust,
    agent: ureq::Agent,
    saved: Option<Saved>,
    kept: Option<Checkpoint>,
    compact: CompactRange,
    registry: RegistryState,
}

/// The most bytes read from one JSON or text answer.
const MAX_ANSWER: u64 = 8 * 1024 * 1024;

impl Monitor {
    /// A monitor resuming from `opts.state` if it exists (its checkpoint must be signed by the
    /// log key, its frontier reproduce the root and its registry the commitment: a state file
    /// that does not is an error, never silently replaced).
    pub fn open(opts: Options, trust: Trust) -> Result<Self, String> {
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(30))
            .redirects(0)
            .build();
        let mut m = Self {
            opts,
            trust,
            agent,
            saved: None,
            kept: None,
            compact: CompactRange::new(),
            registry: RegistryState::new(),
        };
        let path = m.opts.state.clone();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(m),
            Err(e) => return Err(format!("reading the state {}: {e}", path.display())),
        };
        let bad = |why: String| format!("the state {} is not usable: {why}", path.display());
        let saved: Saved = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let cp = Checkpoint::open(&saved.checkpoint, &m.trust.log_key)
            .map_err(|e| bad(format!("its checkpoint: {e}")))?;
        let frontier: Vec<Hash> = saved
            .frontier
            .iter()
            .map(|h| b64_hash(h).ok_or_else(|| bad("a frontier hash".into())))
            .collect::<Result<_, _>>()?;
        let compact = CompactRange::from_frontier(cp.size, &frontier)
            .map_err(|e| bad(format!("its frontier: {e}")))?;
        if compact.root() != cp.root {
            return Err(bad(
                "its frontier does not give its checkpoint's root".into()
            ));
        }
        let registry = replay(&saved.registry, u64::MAX).map_err(bad)?;
        check_commitment(&cp, &registry).map_err(bad)?;
        m.kept = Some(cp);
        m.compact = compact;
        m.registry = registry;
        m.saved = Some(saved);
        Ok(m)
    }

    /// The size of the kept checkpoint.
    pub fn size(&self) -> u64 {
        self.kept.as_ref().map_or(0, |c| c.size)
    }

    fn get(&self, path: &str) -> Result<ureq::Response, String> {
        let url = format!("{}{path}", self.opts.url.trim_end_matches('/'));
        self.agent
            .get(&url)
            .call()
            .map_err(|e| format!("GET {url}: {e}"))
    }

    fn get_text(&self, path: &str) -> Result<String, String> {
        let mut s = String::new();
        self.get(path)?
            .into_reader()
            .take(MAX_ANSWER)
            .read_to_string(&mut s)
            .map_err(|e| format!("reading {path}: {e}"))?;
        Ok(s)
    }

    /// One round: fetch the latest checkpoint and everything up to it. Findings are returned;
    /// an `Err` is a network or I/O problem (nothing was decided, the state is unchanged).
    pub fn poll(&mut self) -> Result<Vec<Finding>, String> {
        let note = self.get_text("/v1/log/checkpoint")?;
        let origin = self.trust.log_key.name().to_string();
        let finding = |kind: &str, severity, subject: String, detail: String| Finding {
            kind: kind.into(),
            severity,
            origin: origin.clone(),
            index: None,
            subject,
            detail,
            checkpoint: Some(note.clone()),
            kept_checkpoint: self.saved.as_ref().map(|s| s.checkpoint.clone()),
        };
        let mut report = Report::new("checkpoint");
        let Some(cp) = self.trust.check_checkpoint(&note, &mut report) else {
            let why = failures(&report);
            return Ok(vec![finding(
                "bad_checkpoint",
                Severity::Alert,
                "checkpoint".into(),
                why,
            )]);
        };
        if !report.verified {
            let why = failures(&report);
            return Ok(vec![finding(
                "bad_checkpoint",
                Severity::Alert,
                format!("size {}", cp.size),
                why,
            )]);
        }
        let kept_size = self.size();
        if let Some(kept) = &self.kept {
            if cp.size == kept.size {
                return Ok(if cp == *kept {
                    Vec::new()
                } else if cp.root == kept.root {
                    vec![finding(
                        "fork",
                        Severity::Alert,
                        format!("size {}", cp.size),
                        format!(
                            "the log signed two checkpoints for size {} with the same root but other extension lines (registry commitment): {:?} (kept) and {:?} (now)",
                            cp.size, kept.extensions, cp.extensions
                        ),
                    )]
                } else {
                    vec![finding(
                        "fork",
                        Severity::Alert,
                        format!("size {}", cp.size),
                        format!(
                            "the log signed two roots for size {}: {} (kept) and {} (now)",
                            cp.size,
                            hex(&kept.root),
                            hex(&cp.root)
                        ),
                    )]
                });
            }
            if cp.size < kept.size {
                return Ok(vec![self.older(&cp, kept, &finding)]);
            }
        }
        // Catch up: registry entries first (few), then every leaf hash from the tiles.
        let entries = self.registry_entries(kept_size, cp.size)?;
        let mut wanted: BTreeMap<u64, Hash> = BTreeMap::new();
        let mut decoded = Vec::with_capacity(entries.len());
        let mut findings = Vec::new();
        for (index, leaf) in &entries {
            match decode_registry(leaf) {
                Ok((entry, event)) => {
                    wanted.insert(*index, entry.leaf_hash());
                    decoded.push((*index, entry, event));
                }
                Err(why) => findings.push(Finding {
                    index: Some(*index),
                    ..finding(
                        "registry_incomplete",
                        Severity::Alert,
                        "registry feed".into(),
                        why,
                    )
                }),
            }
        }
        if !findings.is_empty() {
            return Ok(findings);
        }
        let mut compact = self.compact.clone();
        let mismatch = self.leaves(&mut compact, cp.size, &wanted)?;
        if compact.root() != cp.root {
            return Ok(vec![finding(
                "inconsistent",
                Severity::Alert,
                format!("size {}", cp.size),
                format!(
                    "the checkpoint of size {} (root {}) is not the kept tree of size {kept_size} with entries appended: its tiles give root {}; a split view or a rewritten log",
                    cp.size,
                    hex(&cp.root),
                    hex(&compact.root())
                ),
            )]);
        }
        if let Some(index) = mismatch {
            return Ok(vec![Finding {
                index: Some(index),
                ..finding(
                    "registry_incomplete",
                    Severity::Alert,
                    "registry feed".into(),
                    format!(
                        "the registry entry served for index {index} is not the log's leaf there"
                    ),
                )
            }]);
        }
        // Replay in log order through the one registry state machine.
        let mut registry = self.registry.clone();
        for (index, entry, event) in &decoded {
            let subject = registry.subject_of(event).ok();
            if let Err(e) = registry.apply(*index, entry.logged_at_ms, event) {
                findings.push(Finding {
                    index: Some(*index),
                    ..finding(
                        "registry_rule_broken",
                        Severity::Alert,
                        subject.map_or_else(|| "registry".into(), |s| s.name()),
                        format!("the log holds a registry event the rules refuse: {e}"),
                    )
                });
                continue;
            }
            if let Some(f) =
                self.opts
                    .watch
                    .describe(*index, event, subject.as_ref(), &origin, &registry)
            {
                findings.push(f);
            }
        }
        if let Err(why) = check_commitment(&cp, &registry) {
            findings.push(finding(
                "registry_incomplete",
                Severity::Alert,
                "registry feed".into(),
                format!("{why}: the public registry entries are not the log's"),
            ));
            return Ok(findings);
        }
        // Keep it.
        let mut saved = self.saved.take().unwrap_or(Saved {
            version: 1,
            origin: origin.clone(),
            checkpoint: String::new(),
            frontier: Vec::new(),
            registry: Vec::new(),
        });
        saved.checkpoint = note.clone();
        saved.frontier = compact.frontier().iter().map(|h| B64.encode(h)).collect();
        saved.registry.extend(entries);
        write_state(&self.opts.state, &saved)?;
        self.saved = Some(saved);
        self.kept = Some(cp);
        self.compact = compact;
        self.registry = registry;
        Ok(findings)
    }

    /// A checkpoint older than the kept one: it must be proved a prefix of it.
    fn older(
        &self,
        cp: &Checkpoint,
        kept: &Checkpoint,
        finding: &dyn Fn(&str, Severity, String, String) -> Finding,
    ) -> Finding {
        let proof = self
            .get_text(&format!(
                "/v1/log/proof/consistency?from={}&to={}",
                cp.size, kept.size
            ))
            .ok()
            .and_then(|t| crate::consistency::parse_proof(&t).ok());
        let consistent = cp.size == 0
            || proof.is_some_and(|p| {
                merkle::verify_consistency(cp.size, kept.size, &cp.root, &kept.root, &p).is_ok()
            });
        // Its registry commitment must be the registry replayed up to its size.
        let kept_entries = self.saved.as_ref().map_or(&[][..], |s| &s.registry[..]);
        let registry = consistent.then(|| replay(kept_entries, cp.size));
        if let Some(Err(why)) = registry.map(|r| r.and_then(|r| check_commitment(cp, &r))) {
            return finding(
                "registry_incomplete",
                Severity::Alert,
                format!("size {}", cp.size),
                format!("an older checkpoint, consistent with the kept one, commits to another registry: {why}"),
            );
        }
        if consistent {
            finding(
                "stale_checkpoint",
                Severity::Warning,
                format!("size {}", cp.size),
                format!(
                    "the service serves a checkpoint of size {}, older than the kept {} (consistent with it)",
                    cp.size, kept.size
                ),
            )
        } else {
            finding(
                "fork",
                Severity::Alert,
                format!("size {}", cp.size),
                format!(
                    "the checkpoint of size {} (root {}) is not a prefix of the kept one of size {} (root {}): the log showed two views",
                    cp.size,
                    hex(&cp.root),
                    kept.size,
                    hex(&kept.root)
                ),
            )
        }
    }

    fn registry_entries(&self, start: u64, end: u64) -> Result<Vec<(u64, String)>, String> {
        #[derive(Deserialize)]
        struct Page {
            entries: Vec<Entry>,
            next: Option<u64>,
        }
        #[derive(Deserialize)]
        struct Entry {
            index: u64,
            leaf_data: String,
        }
        let mut out: Vec<(u64, String)> = Vec::new();
        let mut from = start;
        loop {
            let text = self.get_text(&format!(
                "/v1/log/registry-entries?start={from}&end={end}&limit=1000"
            ))?;
            let page: Page = serde_json::from_str(&text)
                .map_err(|e| format!("the registry entries are not the expected JSON: {e}"))?;
            for e in page.entries {
                let in_order = out.last().map_or(e.index >= start, |(l, _)| e.index > *l);
                if !in_order || e.index >= end {
                    return Err(format!(
                        "the registry feed gave index {} out of order or out of [{start}, {end})",
                        e.index
                    ));
                }
                out.push((e.index, e.leaf_data));
            }
            match page.next {
                Some(n) if n > from && n < end => from = n,
                Some(n) => {
                    return Err(format!(
                        "the registry feed's next page {n} does not advance"
                    ))
                }
                None => return Ok(out),
            }
        }
    }

    /// Appends the leaf hashes `[compact.size(), size)` from level-0 tiles; returns the first
    /// index whose registry entry does not hash to the leaf there.
    fn leaves(
        &self,
        compact: &mut CompactRange,
        size: u64,
        wanted: &BTreeMap<u64, Hash>,
    ) -> Result<Option<u64>, String> {
        let width = TILE_WIDTH as u64;
        let start = compact.size();
        let bar = (self.opts.progress && size - start > 50_000).then(|| {
            let b = indicatif::ProgressBar::new(size - start);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} following {pos}/{len} entries ({per_sec}, eta {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b
        });
        let mut mismatch = None;
        let mut tile = start / width;
        while tile * width < size {
            let first = tile * width;
            let w = (size - first).min(width);
            let path = tile_path(0, tile, (w < width).then_some(w as usize));
            let mut body = Vec::with_capacity(w as usize * 32);
            self.get(&format!("/tile/{path}"))?
                .into_reader()
                .take(w * 32 + 1)
                .read_to_end(&mut body)
                .map_err(|e| format!("reading tile {path}: {e}"))?;
            if body.len() as u64 != w * 32 {
                return Err(format!(
                    "tile {path} holds {} bytes, not {}",
                    body.len(),
                    w * 32
                ));
            }
            for (k, chunk) in body.chunks_exact(32).enumerate() {
                let index = first + k as u64;
                if index < compact.size() {
                    continue;
                }
                let mut h = [0u8; 32];
                h.copy_from_slice(chunk);
                if mismatch.is_none() && wanted.get(&index).is_some_and(|want| *want != h) {
                    mismatch = Some(index);
                }
                compact.push(h);
            }
            if let Some(b) = &bar {
                b.set_position(compact.size() - start);
            }
            tile += 1;
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        Ok(mismatch)
    }
}

fn failures(report: &Report) -> String {
    report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.step, c.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

fn b64_hash(s: &str) -> Option<Hash> {
    B64.decode(s).ok().and_then(|b| b.try_into().ok())
}

fn decode_registry(leaf_b64: &str) -> Result<(LogEntry, RegistryEvent), String> {
    let leaf = B64
        .decode(leaf_b64)
        .map_err(|_| "a registry entry is not base64".to_string())?;
    let entry = LogEntry::from_cbor(&leaf).map_err(|e| format!("a registry entry: {e}"))?;
    if entry.kind != EntryKind::Registry {
        return Err("the registry feed served an entry that is not a registry event".into());
    }
    match entry.decode_body() {
        Ok(DecodedBody::Registry(event)) => Ok((entry, event)),
        Ok(_) => Err("not a registry event".into()),
        Err(e) => Err(format!("a registry entry: {e}")),
    }
}

/// The registry replayed from `entries` (index, leaf data) logged before `size`.
fn replay(entries: &[(u64, String)], size: u64) -> Result<RegistryState, String> {
    let mut registry = RegistryState::new();
    for (index, leaf) in entries.iter().take_while(|(i, _)| *i < size) {
        let (entry, event) = decode_registry(leaf)?;
        registry
            .apply(*index, entry.logged_at_ms, &event)
            .map_err(|e| format!("registry entry {index}: {e}"))?;
    }
    Ok(registry)
}

/// The replayed registry must be the checkpoint's registry commitment.
fn check_commitment(cp: &Checkpoint, registry: &RegistryState) -> Result<(), String> {
    let (count, root) = parse_registry_extension(&cp.extensions)?;
    if count != registry.event_count() || root != registry.registry_root() {
        return Err(format!(
            "the checkpoint of size {} commits to {count} registry events with map root {}, the replayed entries give {} and {}",
            cp.size,
            hex(&root),
            registry.event_count(),
            hex(&registry.registry_root())
        ));
    }
    Ok(())
}

fn write_state(path: &Path, saved: &Saved) -> Result<(), String> {
    let text = serde_json::to_string(saved).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("tmp");
    let io = |e: std::io::Error| format!("writing the state {}: {e}", path.display());
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(text.as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)?;
    Ok(())
}
