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
//! A time-sharded log is followed shard by shard (`/v1/log/shards`, each shard's checkpoint,
//! tiles and feed): the kept shard to its final checkpoint, then the next from its entry 0,
//! which must commit to exactly that final checkpoint and the previous base, followed by the
//! carried events, which must be exactly the registry events logged before it, in order (one
//! left out of the carry is caught); the registry is replayed at ledger positions throughout.
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
use provenance_core::shard::{shard_name, ShardStart};
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
    /// Every registry entry up to its size: (ledger position, leaf data base64); in a
    /// time-sharded log, the events logged in every shard so far (not their carried copies).
    registry: Vec<(u64, String)>,
    /// The shard of the checkpoint (0 for a log without shards).
    #[serde(default)]
    shard: u32,
    /// That shard's base: the ledger position of its entry 0.
    #[serde(default)]
    base: u64,
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
    /// The kept checkpoint's shard and its base.
    shard: u32,
    base: u64,
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
            shard: 0,
            base: 0,
        };
        let path = m.opts.state.clone();
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(m),
            Err(e) => return Err(format!("reading the state {}: {e}", path.display())),
        };
        let bad = |why: String| format!("the state {} is not usable: {why}", path.display());
        let saved: Saved = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let cp = m
            .trust
            .key_for(&saved.checkpoint)
            .and_then(|key| Checkpoint::open(&saved.checkpoint, &key).map_err(|e| e.to_string()))
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
        (m.shard, m.base) = (saved.shard, saved.base);
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
    ///
    /// In a time-sharded log, a checkpoint of a later shard than the kept one is reached shard
    /// by shard: the kept shard is followed to its final checkpoint, then each next shard is
    /// entered from its entry 0, which must commit to exactly that final checkpoint (and carry
    /// exactly the registry replayed so far), and followed to its final (or the latest).
    pub fn poll(&mut self) -> Result<Vec<Finding>, String> {
        let note = self.get_text("/v1/log/checkpoint")?;
        let origin = note.split('\n').next().unwrap_or_default().to_string();
        let pinned = self.trust.log_key.name().to_string();
        let kept_origin = self
            .kept
            .as_ref()
            .map_or_else(|| pinned.clone(), |k| k.origin.clone());
        if origin == kept_origin || shard_name(&pinned, &origin).is_none() {
            return self.round(note, false);
        }
        let list = self.shard_list()?;
        let target = list
            .iter()
            .find(|(_, o)| *o == origin)
            .map(|(n, _)| *n)
            .ok_or_else(|| format!("the shard list does not name the checkpoint's {origin:?}"))?;
        if target < self.shard {
            return Ok(vec![Finding {
                kind: "stale_checkpoint".into(),
                severity: Severity::Warning,
                origin: pinned,
                index: None,
                subject: origin,
                detail: format!(
                    "the service serves a checkpoint of shard {target}, before the kept shard {}",
                    self.shard
                ),
                checkpoint: Some(note),
                kept_checkpoint: self.saved.as_ref().map(|s| s.checkpoint.clone()),
            }]);
        }
        let mut findings = Vec::new();
        for n in self.shard..=target {
            let note = if n == target {
                note.clone()
            } else {
                self.get_text(&format!("/v1/log/shards/{n}/checkpoint"))?
            };
            // Shard 0 has the log's origin and no start; any later one is entered at entry 0.
            let entering = n > self.shard || (n > 0 && self.kept.is_none());
            let f = self.round(note, entering)?;
            let stop = f.iter().any(|f| f.severity == Severity::Alert);
            findings.extend(f);
            if stop {
                break;
            }
        }
        Ok(findings)
    }

    /// The shards `(number, origin)` the service lists.
    fn shard_list(&self) -> Result<Vec<(u32, String)>, String> {
        #[derive(Deserialize)]
        struct List {
            shards: Vec<Item>,
        }
        #[derive(Deserialize)]
        struct Item {
            number: u32,
            origin: String,
        }
        let text = self.get_text("/v1/log/shards")?;
        let list: List = serde_json::from_str(&text)
            .map_err(|e| format!("the shard list is not the expected JSON: {e}"))?;
        Ok(list
            .shards
            .into_iter()
            .map(|i| (i.number, i.origin))
            .collect())
    }

    /// A round against one checkpoint `note`: of the kept shard, or (`entering`) of the shard
    /// after it, whose tree starts empty and whose entry 0 must be the start after the kept
    /// final checkpoint.
    fn round(&mut self, note: String, entering: bool) -> Result<Vec<Finding>, String> {
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
        let kept_size = if entering { 0 } else { self.size() };
        if let Some(kept) = self.kept.as_ref().filter(|_| !entering) {
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
        // Entering a shard: its number from its origin, its base from its start (below).
        let (shard, mut base) = if entering {
            (self.shard + 1, self.base)
        } else {
            (self.shard, self.base)
        };
        // Catch up: registry entries first (few), then every leaf hash from the tiles.
        let feed = self.registry_entries(shard, kept_size, cp.size)?;
        let mut wanted: BTreeMap<u64, Hash> = BTreeMap::new();
        let mut decoded = Vec::with_capacity(feed.len());
        let mut entries = Vec::with_capacity(feed.len());
        let mut findings = Vec::new();
        let mut carried = 0usize;
        for (local, leaf) in &feed {
            let at_start = entering && *local == 0;
            // Entering, the feed must open with the start at 0 and the carried events right
            // after it (1, 2, …); a start elsewhere, or one that is not the kept final
            // checkpoint's successor, is another view of the log.
            let checked = decode_feed(leaf)
                .map_err(|e| ("registry_incomplete", e))
                .and_then(|(entry, body)| {
                    let hash = entry.leaf_hash();
                    match body {
                        DecodedBody::ShardStart(start) if at_start => {
                            base = self.check_start(&cp, &start).map_err(|e| ("fork", e))?;
                            Ok((hash, None))
                        }
                        _ if entering && wanted.is_empty() && !at_start => Err((
                            "fork",
                            "the shard's feed does not begin with its start (entry 0)".into(),
                        )),
                        _ if at_start => Err(("fork", "entry 0 of the shard is not its start".into())),
                        DecodedBody::Carried(position, orig, _)
                            if entering && *local == carried as u64 + 1 =>
                        {
                            self.check_carried(carried, position, &orig)
                                .map_err(|e| ("registry_incomplete", e))?;
                            carried += 1;
                            Ok((hash, None))
                        }
                        DecodedBody::Registry(event) => Ok((hash, Some((entry, event)))),
                        _ => Err((
                            "registry_rule_broken",
                            format!("entry {local} of shard {shard} is a shard start or carried event where only registry events belong (a start is entry 0, carried events follow it)"),
                        )),
                    }
                });
            match checked {
                Ok((hash, event)) => {
                    wanted.insert(*local, hash);
                    if let Some((entry, event)) = event {
                        let index = base + *local;
                        entries.push((index, leaf.clone()));
                        decoded.push((index, entry, event));
                    }
                }
                Err((kind, why)) => {
                    findings.push(Finding {
                        index: Some(base + *local),
                        ..finding(kind, Severity::Alert, "registry feed".into(), why)
                    });
                    if kind == "fork" {
                        break; // the rest of this shard is of another view
                    }
                }
            }
        }
        if entering && findings.is_empty() {
            if wanted.is_empty() {
                findings.push(finding(
                    "fork",
                    Severity::Alert,
                    format!("shard {shard}"),
                    "the shard's feed does not begin with its start (entry 0)".into(),
                ));
            } else if carried != self.saved.as_ref().map_or(0, |s| s.registry.len()) {
                findings.push(finding(
                    "registry_incomplete",
                    Severity::Alert,
                    format!("shard {shard}"),
                    format!(
                        "the shard carries {carried} registry events, but the log held {} before it: events left out of the carry",
                        self.saved.as_ref().map_or(0, |s| s.registry.len())
                    ),
                ));
            }
        }
        if !findings.is_empty() {
            return Ok(findings);
        }
        let mut compact = if entering {
            CompactRange::new()
        } else {
            self.compact.clone()
        };
        let mismatch = self.leaves(shard, &mut compact, cp.size, &wanted)?;
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
                        "the registry entry served for index {index} of shard {shard} is not the log's leaf there"
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
            shard: 0,
            base: 0,
        });
        saved.checkpoint = note.clone();
        saved.frontier = compact.frontier().iter().map(|h| B64.encode(h)).collect();
        saved.registry.extend(entries);
        (saved.shard, saved.base) = (shard, base);
        if let Err(e) = write_state(&self.opts.state, &saved) {
            self.saved = Some(saved);
            return Err(e);
        }
        self.saved = Some(saved);
        self.kept = Some(cp);
        self.compact = compact;
        self.registry = registry;
        (self.shard, self.base) = (shard, base);
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
                "/v1/log/proof/consistency?from={}&to={}&shard={}",
                cp.size, kept.size, self.shard
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

    /// The feed of the shard `shard` over `[start, end)` (indices in the shard's tree).
    fn registry_entries(
        &self,
        shard: u32,
        start: u64,
        end: u64,
    ) -> Result<Vec<(u64, String)>, String> {
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
                "/v1/log/registry-entries?shard={shard}&start={from}&end={end}&limit=1000"
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
        shard: u32,
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
            // Shard 0's tiles stay at /tile/ (a cached full tile never changes meaning).
            let url = if shard == 0 {
                format!("/tile/{path}")
            } else {
                format!("/v1/log/shards/{shard}/tile/{path}")
            };
            self.get(&url)?
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

impl Monitor {
    /// The start of the shard after the kept one: it names the checkpoint's shard, and commits
    /// to exactly the kept final checkpoint of the previous shard, signed by the log key; its
    /// base follows. Returns the base.
    fn check_start(&self, cp: &Checkpoint, start: &ShardStart) -> Result<u64, String> {
        let pinned = self.trust.log_key.name();
        let kept = self
            .kept
            .as_ref()
            .ok_or_else(|| "a shard start with no previous shard kept".to_string())?;
        if shard_name(pinned, &cp.origin) != Some(start.name.as_str()) {
            return Err(format!(
                "entry 0 starts the shard {:?}, but the checkpoint is of {:?}",
                start.name, cp.origin
            ));
        }
        let prev = start.previous(&self.trust.log_key)?;
        if start.previous_origin != kept.origin || prev != *kept {
            return Err(format!(
                "the shard's start names {}'s checkpoint of size {} as final, but the monitor proved {}'s final checkpoint of size {} (root {})",
                start.previous_origin,
                prev.size,
                kept.origin,
                kept.size,
                hex(&kept.root)
            ));
        }
        if start.previous_base != self.base {
            return Err(format!(
                "the shard's start gives the previous shard's base as {}, the monitor kept {}",
                start.previous_base, self.base
            ));
        }
        Ok(start.base)
    }

    /// The `n`-th carried event of a shard is the `n`-th registry event logged before it (its
    /// original position and leaf data).
    fn check_carried(&self, n: usize, position: u64, orig: &LogEntry) -> Result<(), String> {
        let expected = self.saved.as_ref().and_then(|s| s.registry.get(n));
        let same = expected.is_some_and(|(pos, leaf)| {
            *pos == position && B64.decode(leaf).is_ok_and(|l| l == orig.to_cbor())
        });
        if same {
            Ok(())
        } else {
            Err(format!(
                "carried event #{} (from position {position}) is not the registry event logged {}",
                n + 1,
                expected.map_or_else(
                    || "before the shard: there are fewer".to_string(),
                    |(pos, _)| format!("at {pos}")
                )
            ))
        }
    }
}

/// A feed entry: its log entry and decoded body.
fn decode_feed(leaf_b64: &str) -> Result<(LogEntry, DecodedBody), String> {
    let leaf = B64
        .decode(leaf_b64)
        .map_err(|_| "a registry entry is not base64".to_string())?;
    let entry = LogEntry::from_cbor(&leaf).map_err(|e| format!("a registry entry: {e}"))?;
    let body = entry
        .decode_body()
        .map_err(|e| format!("a registry entry: {e}"))?;
    Ok((entry, body))
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
