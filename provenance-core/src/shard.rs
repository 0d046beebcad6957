//! Time-sharded logs, as Certificate Transparency shards by time: a log per period, each with
//! its own origin `<log origin>/<period>` (`ledger.example.org/vitals/2027-01`) signed by the
//! same Ed25519 key under that name.
//!
//! A shard's entry 0 is a *shard start* ([`ShardStart`]): its period, its base (the ledger
//! position of its entry 0, so positions go on across shards), and the previous shard's origin
//! and final signed checkpoint. Its next entries *carry* the registry forward ([`Carried`]):
//! every registry event of the previous shard's final state, each with its original position
//! and its original leaf data, so that replaying them gives the registry commitment of that
//! final checkpoint exactly, and the shard verifies on its own.
//!
//! ```cddl
//! shard-start = {
//!   0: tstr,   ; period name: "2027", "2027-01", "2027-01-15" or "20270115T103005Z"
//!   1: uint,   ; period start, Unix ms (inclusive)
//!   2: uint,   ; period end, Unix ms (exclusive)
//!   3: uint,   ; grace, ms: readings measured up to this long before the start are taken
//!   4: uint,   ; base: the ledger position of this entry
//!   5: tstr,   ; previous shard's origin
//!   6: tstr,   ; previous shard's final checkpoint, a signed note
//!   7: uint,   ; previous shard's base (base = previous base + previous final size)
//! }
//! carried = {
//!   0: uint,   ; the event's original ledger position (below the shard's base)
//!   1: bstr,   ; its original leaf data: a log-entry of kind 2 (registry event)
//! }
//! ```

use crate::cbor::{self, CborError, MapReader};
use crate::checkpoint::Checkpoint;
use crate::note;
use alloc::{format, string::String, vec, vec::Vec};
use ciborium::value::Value;

/// Largest shard-start body (the previous checkpoint with its cosignatures dominates).
pub const MAX_SHARD_START_LEN: usize = 16 * 1024;
/// Largest leaf data a carried entry holds: a registry event's log entry.
pub const MAX_CARRIED_LEAF_LEN: usize = crate::registry::MAX_EVENT_LEN + 64;
/// Unix ms per day.
const DAY_MS: u64 = 86_400_000;

/// How long a shard lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A calendar year (UTC).
    Year,
    /// A calendar month (UTC).
    Month,
    /// A day (UTC).
    Day,
    /// A fixed number of seconds from the Unix epoch (drills and tests).
    Seconds(u64),
}

/// Why a shard format was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShardError {
    /// Bad CBOR.
    #[error(transparent)]
    Cbor(#[from] CborError),
    /// The content breaks a rule.
    #[error("{0}")]
    Invalid(String),
}

impl Period {
    /// Parses `year`, `month`, `day` or `<n>s` (n ≥ 1).
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "year" => Ok(Self::Year),
            "month" => Ok(Self::Month),
            "day" => Ok(Self::Day),
            other => other
                .strip_suffix('s')
                .and_then(|n| n.parse::<u64>().ok())
                .filter(|n| (1..=366 * 86_400).contains(n))
                .map(Self::Seconds)
                .ok_or_else(|| {
                    format!("{other:?} is not a shard period: year, month, day or <seconds>s")
                }),
        }
    }

    /// The configuration spelling.
    pub fn as_config(&self) -> String {
        match self {
            Self::Year => "year".into(),
            Self::Month => "month".into(),
            Self::Day => "day".into(),
            Self::Seconds(n) => format!("{n}s"),
        }
    }

    /// The period holding `at_ms`: (start inclusive, end exclusive, name).
    pub fn span(&self, at_ms: u64) -> (u64, u64, String) {
        let days = at_ms / DAY_MS;
        let (y, m, d) = civil_from_days(days);
        match self {
            Self::Year => (
                days_from_civil(y, 1, 1) * DAY_MS,
                days_from_civil(y + 1, 1, 1) * DAY_MS,
                format!("{y:04}"),
            ),
            Self::Month => {
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (
                    days_from_civil(y, m, 1) * DAY_MS,
                    days_from_civil(ny, nm, 1) * DAY_MS,
                    format!("{y:04}-{m:02}"),
                )
            }
            Self::Day => (
                days * DAY_MS,
                (days + 1) * DAY_MS,
                format!("{y:04}-{m:02}-{d:02}"),
            ),
            Self::Seconds(n) => {
                let len = n * 1000;
                let start = at_ms - at_ms % len;
                let secs = (start % DAY_MS) / 1000;
                (
                    start,
                    start + len,
                    format!(
                        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
                        secs / 3600,
                        secs / 60 % 60,
                        secs % 60
                    ),
                )
            }
        }
    }
}

/// The origin of the shard `name` of the log `origin`.
pub fn shard_origin(origin: &str, name: &str) -> String {
    format!("{origin}/{name}")
}

/// The period name of `shard_origin` if it is a shard of the log `origin`.
pub fn shard_name<'a>(origin: &str, shard_origin: &'a str) -> Option<&'a str> {
    shard_origin
        .strip_prefix(origin)?
        .strip_prefix('/')
        .filter(|n| valid_name(n))
}

/// A period name: digits, `-`, `T` and `Z`, 4 to 16 characters.
fn valid_name(n: &str) -> bool {
    (4..=16).contains(&n.len())
        && n.bytes()
            .all(|b| b.is_ascii_digit() || b == b'-' || b == b'T' || b == b'Z')
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's algorithm).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day since 1970-01-01.
fn civil_from_days(z: u64) -> (u64, u64, u64) {
    let z = z + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

/// A shard's entry 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardStart {
    /// The period name (the last part of the shard's origin).
    pub name: String,
    /// Period start, Unix ms.
    pub start_ms: u64,
    /// Period end (exclusive), Unix ms.
    pub end_ms: u64,
    /// Readings measured up to this long before the start are still taken.
    pub grace_ms: u64,
    /// The ledger position of this entry.
    pub base: u64,
    /// The previous shard's origin.
    pub previous_origin: String,
    /// The previous shard's final checkpoint (a signed note).
    pub previous_checkpoint: String,
    /// The previous shard's base.
    pub previous_base: u64,
}

impl ShardStart {
    /// Deterministic CBOR.
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::encode(&cbor::map(vec![
            (0, Value::Text(self.name.clone())),
            (1, cbor::uint(self.start_ms)),
            (2, cbor::uint(self.end_ms)),
            (3, cbor::uint(self.grace_ms)),
            (4, cbor::uint(self.base)),
            (5, Value::Text(self.previous_origin.clone())),
            (6, Value::Text(self.previous_checkpoint.clone())),
            (7, cbor::uint(self.previous_base)),
        ]))
    }

    /// Decodes and checks the structure: a valid period name, start before end, a previous
    /// checkpoint that is a note of the previous origin, and the base that follows from it.
    /// Signatures are not checked here ([`ShardStart::previous`]).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ShardError> {
        let value = cbor::decode_deterministic(bytes, MAX_SHARD_START_LEN)?;
        let mut m = MapReader::new(value, &[0, 1, 2, 3, 4, 5, 6, 7])?;
        let s = Self {
            name: m.text(0, "period name")?,
            start_ms: m.u64(1, "period start")?,
            end_ms: m.u64(2, "period end")?,
            grace_ms: m.u64(3, "grace")?,
            base: m.u64(4, "base")?,
            previous_origin: m.text(5, "previous origin")?,
            previous_checkpoint: m.text(6, "previous checkpoint")?,
            previous_base: m.u64(7, "previous base")?,
        };
        let bad = |why: String| Err(ShardError::Invalid(why));
        if !valid_name(&s.name) {
            return bad(format!("{:?} is not a period name", s.name));
        }
        if s.start_ms >= s.end_ms {
            return bad("the period ends before it starts".into());
        }
        if !note::valid_key_name(&s.previous_origin) {
            return bad("the previous origin is not a log name".into());
        }
        let prev = s.previous_text()?;
        if prev.origin != s.previous_origin {
            return bad(format!(
                "the previous checkpoint is of {:?}, not of the previous origin {:?}",
                prev.origin, s.previous_origin
            ));
        }
        if s.previous_base.checked_add(prev.size) != Some(s.base) {
            return bad(format!(
                "base {} is not the previous base {} plus the previous final size {}",
                s.base, s.previous_base, prev.size
            ));
        }
        Ok(s)
    }

    /// The previous checkpoint's content (unverified).
    fn previous_text(&self) -> Result<Checkpoint, ShardError> {
        let text = self
            .previous_checkpoint
            .split_once("\n\n")
            .map(|(t, _)| format!("{t}\n"))
            .ok_or_else(|| {
                ShardError::Invalid("the previous checkpoint is not a signed note".into())
            })?;
        Checkpoint::from_text(&text)
            .map_err(|e| ShardError::Invalid(format!("previous checkpoint: {e}")))
    }

    /// The previous shard's final checkpoint, verified with the log key `key` under the
    /// previous origin's name.
    pub fn previous(&self, key: &note::NoteVerifier) -> Result<Checkpoint, String> {
        let named = key
            .renamed(&self.previous_origin)
            .map_err(|e| format!("previous origin {:?}: {e}", self.previous_origin))?;
        Checkpoint::open(&self.previous_checkpoint, &named)
            .map_err(|e| format!("the previous shard's final checkpoint: {e}"))
    }

    /// Whether a reading measured at `measured_at_ms` belongs in this shard: in its period or
    /// within the grace before it. (Readings measured after the end cannot be logged in it:
    /// the shard closes at its end.)
    pub fn takes(&self, measured_at_ms: u64) -> bool {
        measured_at_ms.saturating_add(self.grace_ms) >= self.start_ms
    }
}

/// A registry event carried into a new shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// The event's original ledger position.
    pub position: u64,
    /// Its original leaf data (a registry log entry).
    pub leaf_data: Vec<u8>,
}

impl Carried {
    /// Deterministic CBOR.
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::encode(&cbor::map(vec![
            (0, cbor::uint(self.position)),
            (1, Value::Bytes(self.leaf_data.clone())),
        ]))
    }

    /// Decodes the structure. That the carried leaf is a registry entry (never a reading,
    /// never carried again) is checked where entries are decoded
    /// ([`crate::log_entry::LogEntry::decode_body`]).
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, ShardError> {
        let value = cbor::decode_deterministic(bytes, MAX_CARRIED_LEAF_LEN + 32)?;
        let mut m = MapReader::new(value, &[0, 1])?;
        let c = Self {
            position: m.u64(0, "position")?,
            leaf_data: m.bytes(1, "leaf data")?,
        };
        if c.leaf_data.len() > MAX_CARRIED_LEAF_LEN {
            return Err(ShardError::Invalid("the carried leaf is too long".into()));
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_2027: u64 = 1_798_761_600_000; // 2027-01-01T00:00:00Z

    #[test]
    fn periods_and_names() {
        assert_eq!(
            Period::Month.span(JAN_2027 + 5),
            (JAN_2027, JAN_2027 + 31 * DAY_MS, "2027-01".into())
        );
        assert_eq!(Period::Month.span(JAN_2027 - 1).2, "2026-12");
        assert_eq!(Period::Month.span(JAN_2027 - 1).1, JAN_2027);
        // 2028 is a leap year: February has 29 days.
        let feb = days_from_civil(2028, 2, 1) * DAY_MS;
        assert_eq!(Period::Month.span(feb).1 - feb, 29 * DAY_MS);
        assert_eq!(Period::Year.span(JAN_2027).1 - JAN_2027, 365 * DAY_MS);
        assert_eq!(Period::Year.span(JAN_2027).2, "2027");
        assert_eq!(Period::Day.span(JAN_2027 + DAY_MS + 1).2, "2027-01-02");
        let (s, e, n) = Period::Seconds(10).span(JAN_2027 + 3_725_001);
        assert_eq!(
            (s, e, n.as_str()),
            (
                JAN_2027 + 3_720_000,
                JAN_2027 + 3_730_000,
                "20270101T010200Z"
            )
        );
        for d in [0, 1, 59, 365, 10_957, 20_819, 100_000] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        for p in ["year", "month", "day", "10s"] {
            assert_eq!(Period::parse(p).map(|p| p.as_config()), Ok(p.into()));
        }
        for bad in ["", "week", "0s", "s", "-1s", "99999999999s", "10 s"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            shard_name("log.example/v", "log.example/v/2027-01"),
            Some("2027-01")
        );
        for bad in [
            "log.example/v",
            "log.example/v/",
            "log.example/vx/2027",
            "log.example/v/2027/01",
            "log.example/v/abcd",
        ] {
            assert_eq!(shard_name("log.example/v", bad), None, "{bad}");
        }
    }

    fn start(prev: &str) -> ShardStart {
        ShardStart {
            name: "2027-01".into(),
            start_ms: JAN_2027,
            end_ms: JAN_2027 + 31 * DAY_MS,
            grace_ms: 3_600_000,
            base: 17,
            previous_origin: "log.example/v".into(),
            previous_checkpoint: prev.into(),
            previous_base: 0,
        }
    }

    fn signed_prev(size: u64) -> (String, note::NoteVerifier) {
        let signer = note::NoteSigner::new(
            "log.example/v",
            ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
        )
        .unwrap();
        let cp = Checkpoint {
            origin: "log.example/v".into(),
            size,
            root: [1; 32],
            extensions: vec![],
        };
        (cp.sign(&signer).unwrap(), signer.verifier())
    }

    #[test]
    fn shard_start_round_trip_and_rejections() {
        let (prev, key) = signed_prev(17);
        let s = start(&prev);
        let bytes = s.to_cbor();
        assert_eq!(ShardStart::from_cbor(&bytes), Ok(s.clone()));
        assert_eq!(s.previous(&key).map(|c| c.size), Ok(17));
        assert!(s.takes(JAN_2027) && s.takes(JAN_2027 - 3_600_000));
        assert!(!s.takes(JAN_2027 - 3_600_001));
        // Another key, or another name under the same key, does not open it.
        let other = note::NoteSigner::new(
            "log.example/v",
            ed25519_dalek::SigningKey::from_bytes(&[8; 32]),
        )
        .unwrap();
        assert!(s.previous(&other.verifier()).is_err());
        let mut renamed = s.clone();
        renamed.previous_origin = "log.example/w".into();
        assert!(ShardStart::from_cbor(&renamed.to_cbor()).is_err());
        let cases: Vec<(&str, ShardStart)> = vec![
            (
                "bad name",
                ShardStart {
                    name: "2027 01".into(),
                    ..s.clone()
                },
            ),
            (
                "empty name",
                ShardStart {
                    name: String::new(),
                    ..s.clone()
                },
            ),
            (
                "ends first",
                ShardStart {
                    end_ms: s.start_ms,
                    ..s.clone()
                },
            ),
            (
                "wrong base",
                ShardStart {
                    base: 18,
                    ..s.clone()
                },
            ),
            (
                "wrong previous base",
                ShardStart {
                    previous_base: 1,
                    ..s.clone()
                },
            ),
            (
                "not a note",
                ShardStart {
                    previous_checkpoint: "log.example/v\n17\n".into(),
                    ..s.clone()
                },
            ),
            (
                "bad origin",
                ShardStart {
                    previous_origin: "a b".into(),
                    ..s.clone()
                },
            ),
        ];
        for (why, c) in cases {
            assert!(ShardStart::from_cbor(&c.to_cbor()).is_err(), "{why}");
        }
        // Unknown keys, a missing key, trailing bytes, truncation.
        let mut extra = cbor::decode_deterministic(&bytes, MAX_SHARD_START_LEN).unwrap();
        if let Value::Map(m) = &mut extra {
            m.push((cbor::uint(8), cbor::uint(0)));
        }
        assert!(ShardStart::from_cbor(&cbor::encode(&extra)).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(ShardStart::from_cbor(&trailing).is_err());
        for cut in [0, 1, bytes.len() / 2, bytes.len() - 1] {
            assert!(ShardStart::from_cbor(&bytes[..cut]).is_err());
        }
        assert!(ShardStart::from_cbor(&vec![0u8; MAX_SHARD_START_LEN + 1]).is_err());
    }

    #[test]
    fn carried_round_trip_and_rejections() {
        let c = Carried {
            position: 3,
            leaf_data: vec![0xa0; 40],
        };
        assert_eq!(Carried::from_cbor(&c.to_cbor()), Ok(c.clone()));
        let bytes = c.to_cbor();
        for cut in [0, 1, bytes.len() - 1] {
            assert!(Carried::from_cbor(&bytes[..cut]).is_err());
        }
        let long = Carried {
            position: 3,
            leaf_data: vec![0; MAX_CARRIED_LEAF_LEN + 1],
        };
        assert!(Carried::from_cbor(&long.to_cbor()).is_err());
    }
}
