//! `vitals-home`: the owner's app in private mode (issue #17).
//!
//! A household's recipient keeps its X25519 key in its own folder (never sent anywhere), fetches
//! the household's feed from the cloud, and trusts nothing the cloud says: every page is checked
//! by [`provenance_core::audit::home::verify_feed`] (checkpoint, proofs, the registry replayed,
//! the household's key history against what this app accepted, replays, the gateway's and the
//! sensor's signatures) with the log's key and the trusted issuers the owner pinned. Verified
//! readings are appended to `readings.jsonl`; [`hourly`], [`periods`], [`sparkline`] and [`svg`]
//! make them readable.
//!
//! The folder: `recipient.key` (hex, mode 0600), `state.json` ([`HomeState`]: what was
//! accepted and shown), `pending.json` (the household's registry changes not yet accepted),
//! `readings.jsonl` (one [`HomeReading`] per line).

use anyhow::Context;
use provenance_core::audit::home::{verify_feed, FeedCheck, HomeReading, HomeState};
use provenance_core::audit::trust::Trust;
use provenance_core::private::{RecipientKey, RecipientSecret};
use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// LOINC of the room temperature the home profile measures.
pub const ROOM_TEMPERATURE: &str = "60832-3";

/// The owner's app state in its folder.
pub struct Home {
    dir: PathBuf,
    secret: RecipientSecret,
    /// What was accepted and shown.
    pub state: HomeState,
}

/// What one `fetch` did.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Pages fetched.
    pub pages: usize,
    /// Readings verified, decrypted and stored.
    pub shown: Vec<HomeReading>,
    /// Messages refused: (log index if known, the failed steps and their reasons).
    pub refused: Vec<(Option<u64>, String)>,
    /// Page-level failures (then nothing of the page was shown).
    pub page_failures: Vec<String>,
    /// The household's registry changes this app has not accepted.
    pub warnings: Vec<String>,
}

impl Fetched {
    /// Whether everything fetched verified (warnings aside).
    pub fn clean(&self) -> bool {
        self.refused.is_empty() && self.page_failures.is_empty()
    }
}

fn write_private(path: &Path, content: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    f.write_all(content.as_bytes())?;
    f.sync_all()?;
    Ok(())
}

fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    Ok(())
}

impl Home {
    /// Makes a new folder for household `household`: a fresh key pair and an empty state.
    pub fn init(dir: &Path, household: &str) -> anyhow::Result<Self> {
        anyhow::ensure!(
            provenance_core::reading::valid_device_id(household),
            "household {household:?}: 1 to 64 letters, digits, '.', '_', ':' or '-'"
        );
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let secret = RecipientSecret::generate_os();
        write_private(&dir.join("recipient.key"), &hex::encode(secret.to_bytes()))?;
        let home = Self {
            dir: dir.into(),
            secret,
            state: HomeState {
                household: household.into(),
                ..HomeState::default()
            },
        };
        home.save()?;
        Ok(home)
    }

    /// Opens an existing folder.
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        let key_path = dir.join("recipient.key");
        let raw = fs::read_to_string(&key_path).with_context(|| {
            format!(
                "reading {} (run `vitals-home init` first)",
                key_path.display()
            )
        })?;
        let bytes: [u8; 32] = hex::decode(raw.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| {
                format!(
                    "{} must hold a 32-byte X25519 key in hex",
                    key_path.display()
                )
            })?;
        let state_path = dir.join("state.json");
        let state: HomeState = serde_json::from_slice(
            &fs::read(&state_path).with_context(|| format!("reading {}", state_path.display()))?,
        )
        .with_context(|| format!("{} is corrupt", state_path.display()))?;
        Ok(Self {
            dir: dir.into(),
            secret: RecipientSecret::from_bytes(bytes),
            state,
        })
    }

    /// Saves the state (durably: replay protection survives a crash).
    pub fn save(&self) -> anyhow::Result<()> {
        write_durably(
            &self.dir.join("state.json"),
            &serde_json::to_vec_pretty(&self.state)?,
        )
    }

    /// This app's public key (what an administrator enrolls for the household).
    pub fn public_key(&self) -> RecipientKey {
        self.secret.public()
    }

    /// The household's registry changes not yet accepted, as the last fetch found them.
    pub fn pending(&self) -> BTreeSet<u64> {
        fs::read(self.dir.join("pending.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Accepts changes the last fetch reported (all of them, or the given log indices): from
    /// now on messages encrypted to those recipients are shown.
    pub fn accept(&mut self, which: Option<&[u64]>) -> anyhow::Result<Vec<u64>> {
        let pending = self.pending();
        let chosen: Vec<u64> = match which {
            None => pending.iter().copied().collect(),
            Some(list) => {
                for i in list {
                    anyhow::ensure!(
                        pending.contains(i),
                        "entry {i} is not a pending change of the household (run fetch first)"
                    );
                }
                list.to_vec()
            }
        };
        self.state.accepted.extend(chosen.iter().copied());
        let rest: BTreeSet<u64> = pending.difference(&self.state.accepted).copied().collect();
        write_durably(&self.dir.join("pending.json"), &serde_json::to_vec(&rest)?)?;
        self.save()?;
        Ok(chosen)
    }

    /// Fetches every page after what was shown (`get(after)` returns a page's bytes), verifies
    /// each, stores the readings that pass and the state after each page.
    pub fn fetch(
        &mut self,
        trust: &Trust,
        mut get: impl FnMut(Option<u64>) -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<Fetched> {
        let mut out = Fetched::default();
        let mut after = self.state.last_index;
        let mut pending = BTreeSet::new();
        loop {
            let bytes = get(after)?;
            out.pages += 1;
            let check: FeedCheck = verify_feed(&bytes, trust, &self.secret, &mut self.state);
            pending.extend(check.unaccepted.iter().copied());
            for w in check.warnings {
                if !out.warnings.contains(&w) {
                    out.warnings.push(w);
                }
            }
            if !check.page.verified {
                out.page_failures.push(failures(&check.page));
                break;
            }
            let mut stored = Vec::new();
            for m in check.messages {
                match m.reading {
                    Some(r) => stored.push(r),
                    None => out.refused.push((m.index, failures(&m.report))),
                }
            }
            self.append(&stored)?;
            out.shown.extend(stored);
            self.save()?;
            match check.next_after {
                Some(n) if Some(n) > after => after = Some(n),
                _ => break,
            }
        }
        write_durably(
            &self.dir.join("pending.json"),
            &serde_json::to_vec(&pending)?,
        )?;
        Ok(out)
    }

    fn append(&self, readings: &[HomeReading]) -> anyhow::Result<()> {
        if readings.is_empty() {
            return Ok(());
        }
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("readings.jsonl"))?;
        let mut buf = Vec::new();
        for r in readings {
            serde_json::to_writer(&mut buf, r)?;
            buf.push(b'\n');
        }
        f.write_all(&buf)?;
        f.sync_data()?;
        Ok(())
    }

    /// Every reading shown so far.
    pub fn readings(&self) -> anyhow::Result<Vec<HomeReading>> {
        let path = self.dir.join("readings.jsonl");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l).with_context(|| format!("{} is corrupt", path.display()))
            })
            .collect()
    }
}

fn failures(r: &provenance_core::audit::report::Report) -> String {
    r.checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: {}", c.step, c.detail))
        .collect::<Vec<_>>()
        .join("; ")
}

/// One hour of one measurement.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Hour {
    /// Start of the hour, Unix ms.
    pub start_ms: u64,
    /// Mean, minimum, maximum.
    pub mean: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
    /// How many values.
    pub count: usize,
}

/// The values of one LOINC code, (measured-at, value), in time order.
pub fn values(readings: &[HomeReading], loinc: &str) -> Vec<(u64, f64)> {
    let mut v: Vec<(u64, f64)> = readings
        .iter()
        .flat_map(|r| {
            r.measurements
                .iter()
                .filter(|(l, _, _)| l == loinc)
                .filter_map(move |(_, v, _)| v.parse::<f64>().ok().map(|v| (r.measured_at_ms, v)))
        })
        .collect();
    v.sort_by_key(|(t, _)| *t);
    v
}

/// Hourly mean, minimum and maximum of one measurement.
pub fn hourly(values: &[(u64, f64)]) -> Vec<Hour> {
    let mut out: Vec<Hour> = Vec::new();
    for &(t, v) in values {
        let start = t - t % 3_600_000;
        match out.last_mut() {
            Some(h) if h.start_ms == start => {
                h.mean += (v - h.mean) / (h.count + 1) as f64;
                h.min = h.min.min(v);
                h.max = h.max.max(v);
                h.count += 1;
            }
            _ => out.push(Hour {
                start_ms: start,
                mean: v,
                min: v,
                max: v,
                count: 1,
            }),
        }
    }
    out
}

/// A stretch of time when the room was warm or cold.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Period {
    /// `warm` (above the warm threshold) or `cold` (below the cold one).
    pub kind: &'static str,
    /// First and last value's time, Unix ms.
    pub from_ms: u64,
    /// Last value's time.
    pub to_ms: u64,
    /// The extreme value reached.
    pub extreme: f64,
}

/// When the values were above `warm` or below `cold`: runs of consecutive values.
pub fn periods(values: &[(u64, f64)], warm: f64, cold: f64) -> Vec<Period> {
    let mut out: Vec<Period> = Vec::new();
    let mut open: Option<Period> = None;
    for &(t, v) in values {
        let kind = if v > warm {
            Some("warm")
        } else if v < cold {
            Some("cold")
        } else {
            None
        };
        match (&mut open, kind) {
            (Some(p), Some(k)) if p.kind == k => {
                p.to_ms = t;
                p.extreme = if k == "warm" {
                    p.extreme.max(v)
                } else {
                    p.extreme.min(v)
                };
            }
            (_, k) => {
                if let Some(p) = open.take() {
                    out.push(p);
                }
                open = k.map(|kind| Period {
                    kind,
                    from_ms: t,
                    to_ms: t,
                    extreme: v,
                });
            }
        }
    }
    out.extend(open);
    out
}

/// A terminal sparkline of the values (one character each).
pub fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (lo, hi) = values
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
            (l.min(*v), h.max(*v))
        });
    values
        .iter()
        .map(|v| {
            let x = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
            BARS[((x * 7.0).round() as usize).min(7)]
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// An SVG chart of hourly values: the mean as a line, the min–max band shaded, warm and cold
/// periods marked.
pub fn svg(title: &str, hours: &[Hour], marks: &[Period]) -> String {
    let (w, h, pad) = (900.0, 320.0, 40.0);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-label=\"{}\">\n<title>{}</title>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n",
        escape(title),
        escape(title)
    );
    if hours.is_empty() {
        s.push_str("<text x=\"40\" y=\"40\">no readings yet</text>\n</svg>\n");
        return s;
    }
    let t0 = hours[0].start_ms as f64;
    let t1 = (hours[hours.len() - 1].start_ms + 3_600_000) as f64;
    let lo = hours.iter().map(|x| x.min).fold(f64::INFINITY, f64::min) - 0.5;
    let hi = hours
        .iter()
        .map(|x| x.max)
        .fold(f64::NEG_INFINITY, f64::max)
        + 0.5;
    let x = |t: f64| pad + (t - t0) / (t1 - t0) * (w - 2.0 * pad);
    let y = |v: f64| h - pad - (v - lo) / (hi - lo) * (h - 2.0 * pad);
    for p in marks {
        let colour = if p.kind == "warm" {
            "#fde2e2"
        } else {
            "#dbeafe"
        };
        s.push_str(&format!(
            "<rect x=\"{:.1}\" y=\"{pad}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{colour}\"><title>{} until {}: {:.1}</title></rect>\n",
            x(p.from_ms as f64),
            (x(p.to_ms as f64) - x(p.from_ms as f64)).max(1.0),
            h - 2.0 * pad,
            p.kind,
            p.to_ms,
            p.extreme
        ));
    }
    let mid = |hr: &Hour| hr.start_ms as f64 + 1_800_000.0;
    let band: Vec<String> = hours
        .iter()
        .map(|hr| format!("{:.1},{:.1}", x(mid(hr)), y(hr.max)))
        .chain(
            hours
                .iter()
                .rev()
                .map(|hr| format!("{:.1},{:.1}", x(mid(hr)), y(hr.min))),
        )
        .collect();
    s.push_str(&format!(
        "<polygon points=\"{}\" fill=\"#c7d2fe\" stroke=\"none\"/>\n",
        band.join(" ")
    ));
    let line: Vec<String> = hours
        .iter()
        .map(|hr| format!("{:.1},{:.1}", x(mid(hr)), y(hr.mean)))
        .collect();
    s.push_str(&format!(
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1e3a8a\" stroke-width=\"2\"/>\n",
        line.join(" ")
    ));
    for v in [lo + 0.5, (lo + hi) / 2.0, hi - 0.5] {
        s.push_str(&format!(
            "<text x=\"4\" y=\"{:.1}\" font-size=\"12\" font-family=\"sans-serif\">{v:.1}</text>\n",
            y(v) + 4.0
        ));
    }
    s.push_str(&format!(
        "<text x=\"{pad}\" y=\"20\" font-size=\"14\" font-family=\"sans-serif\">{} — {} hours</text>\n</svg>\n",
        escape(title),
        hours.len()
    ));
    s
}
