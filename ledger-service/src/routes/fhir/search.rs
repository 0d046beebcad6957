//! FHIR R4 search parameters of the facade (FHIR R4 §3.1.1 "Search"), parsed from the raw query
//! string into typed filters before anything touches storage.
//!
//! Rules kept here, for every resource type:
//! - a parameter the resource does not support is an error with `Prefer: handling=strict` and
//!   ignored (and reported in the Bundle's `OperationOutcome` entry) with `handling=lenient`,
//!   the default; a known parameter with a modifier it does not support is always an error
//!   (R4: "servers SHALL reject … an unsupported modifier");
//! - a malformed value (a date, a `_count`, a cursor this service did not give) is always an
//!   error;
//! - dates follow the R4 precision rules: `2026-12-03` is that whole UTC day, and each prefix
//!   compares the reading's instant with that range (`eq` inside it, `ge` from its start, `gt`
//!   from its end on, `le` before its end, `lt` before its start; `sa`/`eb` as `gt`/`lt`).

use std::collections::BTreeSet;

/// Most results on a page.
pub const MAX_COUNT: u32 = 1000;
/// Results on a page without `_count`.
pub const DEFAULT_COUNT: u32 = 100;

/// Why a search is refused: the message for the `OperationOutcome`, and whether the parameter
/// (or modifier, or prefix) is one this server does not support (`not-supported`) rather than
/// a malformed value (`invalid`).
#[derive(Debug, PartialEq, Eq)]
pub struct SearchError {
    /// The diagnostics.
    pub detail: String,
    /// Unsupported rather than malformed.
    pub unsupported: bool,
}

impl SearchError {
    fn invalid(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            unsupported: false,
        }
    }

    fn unsupported(detail: impl Into<String>) -> Self {
        Self {
            detail: detail.into(),
            unsupported: true,
        }
    }
}

/// A half-open range of Unix milliseconds `[lo, hi)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    /// Inclusive lower bound.
    pub lo: u64,
    /// Exclusive upper bound.
    pub hi: u64,
}

impl Range {
    /// Every instant.
    pub const ALL: Range = Range {
        lo: 0,
        hi: i64::MAX as u64,
    };

    /// The intersection.
    pub fn and(self, other: Range) -> Range {
        Range {
            lo: self.lo.max(other.lo),
            hi: self.hi.min(other.hi),
        }
    }

    /// Whether it holds no instant.
    pub fn is_empty(&self) -> bool {
        self.lo >= self.hi
    }
}

/// The parameters as given: name (with its modifier, if any) and value, in order.
pub struct Params {
    items: Vec<(String, String)>,
    strict: bool,
    ignored: BTreeSet<String>,
    pending_ignored: Vec<String>,
    used: Vec<(String, String)>,
}

impl Params {
    /// Parses a raw query string (`a=b&c=d`, percent-decoded); `strict` from the request's
    /// `Prefer: handling=strict`.
    pub fn parse(query: Option<&str>, strict: bool) -> Result<Self, SearchError> {
        let query = query.unwrap_or_default();
        if query.len() > 4096 {
            return Err(SearchError::invalid("the query is longer than 4096 bytes"));
        }
        let items: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if items.len() > 64 {
            return Err(SearchError::invalid("more than 64 search parameters"));
        }
        if let Some((k, _)) = items
            .iter()
            .find(|(k, v)| k.chars().chain(v.chars()).any(char::is_control))
        {
            return Err(SearchError::invalid(format!(
                "parameter {:?} holds a control character",
                k.chars().filter(|c| !c.is_control()).collect::<String>()
            )));
        }
        Ok(Self {
            items,
            strict,
            ignored: BTreeSet::new(),
            pending_ignored: Vec::new(),
            used: Vec::new(),
        })
    }

    /// Every value of the parameter `name` (exact: no modifier), marked as used.
    pub fn all(&mut self, name: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (k, v) in &self.items {
            if k == name {
                out.push(v.clone());
                self.used.push((k.clone(), v.clone()));
            }
        }
        out
    }

    /// The one value of `name`, if given; given twice is an error.
    pub fn one(&mut self, name: &str) -> Result<Option<String>, SearchError> {
        let mut v = self.all(name);
        match v.len() {
            0 => Ok(None),
            1 => Ok(v.pop()),
            _ => Err(SearchError::invalid(format!(
                "{name} is given {} times; give it once",
                v.len()
            ))),
        }
    }

    /// Finishes: every parameter not taken is either a known one with an unsupported modifier
    /// (an error), unknown and refused (strict), or unknown and ignored (lenient: listed by
    /// [`Params::ignored`]). `known` are the resource's parameter names.
    pub fn finish(&mut self, known: &[&str]) -> Result<(), SearchError> {
        let used: BTreeSet<&String> = self.used.iter().map(|(k, _)| k).collect();
        let mut ignored = BTreeSet::new();
        for (k, v) in &self.items {
            if used.contains(k)
                || k == "_format"
                || self.pending_ignored.contains(&format!("{k}={v}"))
            {
                continue;
            }
            let base = k.split(':').next().unwrap_or_default();
            if known.contains(&base) {
                return Err(SearchError::unsupported(format!(
                    "the modifier of {k:?} is not supported (see /fhir/metadata)"
                )));
            }
            if self.strict {
                return Err(SearchError::unsupported(format!(
                    "the search parameter {k:?} is not supported (see /fhir/metadata; send Prefer: handling=lenient to have it ignored)"
                )));
            }
            ignored.insert(k.clone());
        }
        ignored.extend(self.pending_ignored.iter().cloned());
        self.ignored = ignored;
        Ok(())
    }

    /// A value this server does not support for a parameter it knows (`_sort`, `_include`):
    /// refused when strict, else ignored and listed.
    pub fn unsupported_value(&mut self, name: &str, value: &str) -> Result<(), SearchError> {
        if self.strict {
            return Err(SearchError::unsupported(format!(
                "{name}={value:?} is not supported (see /fhir/metadata)"
            )));
        }
        self.used.retain(|(k, v)| !(k == name && v == value));
        self.pending_ignored.push(format!("{name}={value}"));
        Ok(())
    }

    /// The parameters ignored (lenient handling).
    pub fn ignored(&self) -> Vec<String> {
        self.ignored.iter().cloned().collect()
    }

    /// The parameters used, in order, without the paging ones (for `self` and `next` links,
    /// and the cursor's binding to its search).
    pub fn used_for_link(&self) -> Vec<(String, String)> {
        self.used
            .iter()
            .filter(|(k, _)| k != "_cursor")
            .cloned()
            .collect()
    }
}

/// `_count`: 1 to [`MAX_COUNT`] (default [`DEFAULT_COUNT`]); 0 asks for the total only.
pub fn count(p: &mut Params) -> Result<u32, SearchError> {
    match p.one("_count")? {
        None => Ok(DEFAULT_COUNT),
        Some(v) => match v.parse::<u32>() {
            Ok(n) if n <= MAX_COUNT => Ok(n),
            _ => Err(SearchError::invalid(format!(
                "_count {v:?}: give a whole number from 0 to {MAX_COUNT}"
            ))),
        },
    }
}

/// A date parameter (every value, ANDed) as one range of instants.
pub fn date_range(p: &mut Params, name: &str) -> Result<Range, SearchError> {
    let mut r = Range::ALL;
    for v in p.all(name) {
        if v.contains(',') {
            return Err(SearchError::unsupported(format!(
                "{name}={v:?}: several dates in one value (OR) are not supported; repeat the parameter to AND them"
            )));
        }
        r = r.and(prefixed_date(name, &v)?);
    }
    Ok(r)
}

/// One `[prefix]date` value as the range of instants it selects.
pub fn prefixed_date(name: &str, v: &str) -> Result<Range, SearchError> {
    let (prefix, date) = match v.get(..2) {
        Some(p) if p.bytes().all(|b| b.is_ascii_lowercase()) => (p, &v[2..]),
        _ => ("eq", v),
    };
    let d = date_span(date).ok_or_else(|| {
        SearchError::invalid(format!(
            "{name}={v:?}: not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss[.sss] with Z or ±hh:mm)"
        ))
    })?;
    Ok(match prefix {
        "eq" => d,
        "ge" => Range {
            lo: d.lo,
            ..Range::ALL
        },
        "gt" | "sa" => Range {
            lo: d.hi,
            ..Range::ALL
        },
        "le" => Range {
            hi: d.hi,
            ..Range::ALL
        },
        "lt" | "eb" => Range {
            hi: d.lo,
            ..Range::ALL
        },
        other => {
            return Err(SearchError::unsupported(format!(
                "{name}={v:?}: the prefix {other:?} is not supported (eq, ge, gt, le, lt, sa, eb)"
            )))
        }
    })
}

/// The instants a FHIR date or dateTime of its precision covers: a year, a month, a day, or
/// the second (or millisecond) of a full dateTime.
pub fn date_span(s: &str) -> Option<Range> {
    // ASCII only: the slicing below is by byte (a multi-byte character would split).
    if !s.is_ascii() {
        return None;
    }
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    // Before 1970 (no reading is): a well-formed date there covers no instant this server
    // holds, so it is the empty range at 0 (`ge1960` is every reading, `le1960` none).
    if s.get(..4).is_some_and(|y| digits(y) && y < "1970") {
        return date_span(&format!("2000{}", &s[4..])).map(|_| Range { lo: 0, hi: 0 });
    }
    let civil = |y: i64, m: i64, d: i64| -> Option<u64> {
        let iso = format!("{y:04}-{m:02}-{d:02}T00:00:00Z");
        crate::fhir::parse_instant(&iso)
    };
    // The end of year 9999 (or of its December) is past every instant this server holds.
    let end = |y: i64, m: i64| civil(y, m, 1).or((y > 9999).then_some(Range::ALL.hi));
    match s.len() {
        4 if digits(s) => {
            let y: i64 = s.parse().ok()?;
            Some(Range {
                lo: civil(y, 1, 1)?,
                hi: end(y + 1, 1)?,
            })
        }
        7 if digits(&s[..4]) && &s[4..5] == "-" && digits(&s[5..]) => {
            let (y, m): (i64, i64) = (s[..4].parse().ok()?, s[5..].parse().ok()?);
            if !(1..=12).contains(&m) {
                return None;
            }
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            Some(Range {
                lo: civil(y, m, 1)?,
                hi: end(ny, nm)?,
            })
        }
        10 => {
            let lo = crate::fhir::parse_instant(&format!("{s}T00:00:00Z"))?;
            // The date must be a real one: it prints back the same.
            (crate::fhir::iso8601(lo).get(..10) == Some(s)).then_some(Range {
                lo,
                hi: lo + 86_400_000,
            })
        }
        _ => {
            let at = crate::fhir::parse_instant(s)?;
            let has_ms = s.get(19..20) == Some(".");
            Some(Range {
                lo: at,
                hi: at + if has_ms { 1 } else { 1000 },
            })
        }
    }
}

/// A reference parameter's target id of resource type `kind`: `Kind/id`, or a bare `id`
/// (R4: a bare id is allowed when the parameter has one target type), or an absolute URL of
/// this server's `…/fhir/Kind/id`. `None` for a reference to another type.
pub fn reference_id<'a>(kind: &str, v: &'a str) -> Option<&'a str> {
    let tail = match v.rfind(&format!("{kind}/")) {
        Some(at) if at == 0 || v[..at].ends_with("/fhir/") => &v[at + kind.len() + 1..],
        Some(_) => return None,
        None if v.contains('/') => return None,
        None => v,
    };
    valid_id(tail).then_some(tail)
}

/// A FHIR id: 1 to 64 of `A-Z a-z 0-9 - .`.
pub fn valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A token parameter's values (comma-separated: OR), each as (system, code); a value without
/// `|` has no system given (`None`), `|code` the empty system (`Some("")`).
pub fn tokens(v: &str) -> Vec<(Option<&str>, &str)> {
    v.split(',')
        .map(|t| match t.split_once('|') {
            Some((sys, code)) => (Some(sys), code),
            None => (None, t),
        })
        .collect()
}

/// `Prefer: handling=strict` among the request's `Prefer` headers.
pub fn prefers_strict(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("handling=strict"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> u64 {
        crate::fhir::parse_instant(s).unwrap()
    }

    #[test]
    fn date_precision_and_prefixes() {
        let day = date_span("2026-12-03").unwrap();
        assert_eq!(day.lo, ms("2026-12-03T00:00:00Z"));
        assert_eq!(day.hi, ms("2026-12-04T00:00:00Z"));
        assert_eq!(date_span("9999").unwrap().hi, Range::ALL.hi);
        assert_eq!(date_span("9999-12").unwrap().hi, Range::ALL.hi);
        let none = Some(Range { lo: 0, hi: 0 });
        assert_eq!(
            date_span("0000"),
            none,
            "before 1970: no instant this server holds"
        );
        assert_eq!(date_span("1960-05-01"), none);
        assert_eq!(prefixed_date("date", "ge1960").unwrap().lo, 0);
        assert!(prefixed_date("date", "le1960").unwrap().is_empty());
        assert_eq!(date_span("1960-13"), None);
        let month = date_span("2026-12").unwrap();
        assert_eq!(month.hi, ms("2027-01-01T00:00:00Z"));
        let year = date_span("2024").unwrap();
        assert_eq!(year.hi - year.lo, 366 * 86_400_000);
        let sec = date_span("2026-12-03T10:00:00+01:00").unwrap();
        assert_eq!(
            (sec.lo, sec.hi - sec.lo),
            (ms("2026-12-03T09:00:00Z"), 1000)
        );
        let milli = date_span("2026-12-03T10:00:00.250Z").unwrap();
        assert_eq!(milli.hi - milli.lo, 1);
        for bad in [
            "",
            "26",
            "2026-13",
            "2026-02-30",
            "2026-12-03T10:00",
            "2026-12-03T10:00:00",
            "yesterday",
            "2026-1-01",
            "+2026",
        ] {
            assert_eq!(date_span(bad), None, "{bad}");
        }
        let p = |v: &str| prefixed_date("date", v);
        assert_eq!(p("2026-12-03").unwrap(), day);
        assert_eq!(p("ge2026-12-03").unwrap().lo, day.lo);
        assert_eq!(p("gt2026-12-03").unwrap().lo, day.hi);
        assert_eq!(p("sa2026-12-03").unwrap().lo, day.hi);
        assert_eq!(p("le2026-12-03").unwrap().hi, day.hi);
        assert_eq!(p("lt2026-12-03").unwrap().hi, day.lo);
        assert_eq!(p("eb2026-12-03").unwrap().hi, day.lo);
        assert!(p("ap2026-12-03").unwrap_err().unsupported);
        assert!(p("ne2026-12-03").unwrap_err().unsupported);
        assert!(!p("ge2026-99").unwrap_err().unsupported);
        // Repeated: ANDed; disjoint gives an empty range.
        let mut q = Params::parse(Some("date=ge2026-12-03&date=lt2026-12-04"), false).unwrap();
        assert_eq!(date_range(&mut q, "date").unwrap(), day);
        let mut q = Params::parse(Some("date=lt2026-01-01&date=gt2026-02-01"), false).unwrap();
        assert!(date_range(&mut q, "date").unwrap().is_empty());
        let mut q = Params::parse(Some("date=2026,2027"), false).unwrap();
        assert!(date_range(&mut q, "date").unwrap_err().unsupported);
    }

    #[test]
    fn unknown_parameters_strict_and_lenient_and_modifiers() {
        let mut q = Params::parse(Some("patient=p1&color=red&_elements=id"), false).unwrap();
        assert_eq!(q.one("patient").unwrap().as_deref(), Some("p1"));
        q.finish(&["patient", "code"]).unwrap();
        assert_eq!(q.ignored(), vec!["_elements".to_string(), "color".into()]);
        let mut q = Params::parse(Some("patient=p1&color=red"), true).unwrap();
        q.one("patient").unwrap();
        assert!(q.finish(&["patient"]).unwrap_err().unsupported);
        // A known parameter with a modifier we do not support: refused even when lenient.
        let mut q = Params::parse(Some("code:text=heart"), false).unwrap();
        assert!(q.finish(&["code"]).unwrap_err().unsupported);
        let mut q = Params::parse(Some("patient=a&patient=b"), false).unwrap();
        assert!(!q.one("patient").unwrap_err().unsupported);
        assert!(Params::parse(Some("patient=%00"), false).is_err());
        assert!(Params::parse(Some(&"a=b&".repeat(65)), false).is_err());
        for (v, ok) in [
            ("0", true),
            ("1000", true),
            ("1001", false),
            ("-1", false),
            ("x", false),
        ] {
            let mut q = Params::parse(Some(&format!("_count={v}")), false).unwrap();
            assert_eq!(count(&mut q).is_ok(), ok, "{v}");
        }
    }

    #[test]
    fn references_and_tokens() {
        assert_eq!(reference_id("Patient", "Patient/p-1"), Some("p-1"));
        assert_eq!(reference_id("Patient", "p-1"), Some("p-1"));
        assert_eq!(
            reference_id("Patient", "http://127.0.0.1:8080/fhir/Patient/p-1"),
            Some("p-1")
        );
        assert_eq!(reference_id("Patient", "Device/p-1"), None);
        assert_eq!(reference_id("Patient", "Group/x/Patient/p"), None);
        assert_eq!(reference_id("Patient", "Patient/a b"), None);
        assert_eq!(reference_id("Patient", ""), None);
        assert_eq!(
            tokens("http://loinc.org|8867-4,8310-5,|x"),
            vec![
                (Some("http://loinc.org"), "8867-4"),
                (None, "8310-5"),
                (Some(""), "x")
            ]
        );
        let mut h = axum::http::HeaderMap::new();
        assert!(!prefers_strict(&h));
        h.insert("prefer", "return=minimal, handling=strict".parse().unwrap());
        assert!(prefers_strict(&h));
    }

    proptest::proptest! {
        // Hostile query strings: parsing and every value parser answer, never panic.
        #[test]
        fn any_query_is_answered(q in "[a-z_:=&%0-9.|,/+TZ-]{0,200}") {
            if let Ok(mut p) = Params::parse(Some(&q), false) {
                let _ = date_range(&mut p, "date");
                let _ = count(&mut p);
                for v in p.all("patient") {
                    let _ = reference_id("Patient", &v);
                    let _ = tokens(&v);
                }
                let _ = p.finish(&["date", "_count", "patient"]);
            }
            let _ = date_span(&q);
            let _ = prefixed_date("date", &q);
        }

        // Any characters at all (multi-byte ones where a date has its separators).
        #[test]
        fn any_text_is_no_date_or_a_date(q in "\\PC{0,40}") {
            let _ = date_span(&q);
            let _ = prefixed_date("date", &q);
            let _ = crate::fhir::parse_instant(&q);
            let _ = date_span(&format!("2026{q}"));
            let _ = crate::fhir::parse_instant(&format!("2026-12-03T10:00:00{q}"));
        }

        // Every instant this server writes reads back as itself, to the millisecond.
        #[test]
        fn written_instants_read_back(ms in 0u64..253_402_300_799_000) {
            let r = date_span(&crate::fhir::iso8601(ms)).unwrap();
            proptest::prop_assert_eq!(r, Range { lo: ms, hi: ms + 1 });
        }
    }
}
