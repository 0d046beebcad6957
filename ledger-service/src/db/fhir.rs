//! The FHIR facade's Observation search: one query over `readings` — by patient, sensor,
//! measured-at range, vital sign (the value columns of migration 0011) and a range of log
//! positions (the search's snapshot and `_lastUpdated`, since logging times never go back
//! along the log) — keyset-paged on (measured-at, index) in either direction, so a page never
//! skips or repeats a reading. Pruned readings (their content exported and removed) are not
//! found.

use super::{Cols, Db, DbResult, Sql};
use crate::db::charts::VALUE_COLUMNS;

/// A range of Unix milliseconds or log positions, `[lo, hi)`.
pub type Span = (u64, u64);

/// What a reading's vital signs must match (one of several: OR).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeMatch {
    /// `code`: the reading is this one sign (its Observation's code).
    Single(usize),
    /// `code` of the vital-signs panel: the reading holds several signs (components).
    Panel,
    /// `component-code`: a panel holding this sign.
    Component(usize),
    /// `combo-code`: this sign, alone or in a panel.
    Any(usize),
}

/// An Observation search.
#[derive(Debug, Clone, Default)]
pub struct ObsFilter {
    /// Patient pseudonym.
    pub patient: Option<String>,
    /// Sensor id.
    pub sensor: Option<String>,
    /// Measured-at range.
    pub measured: Option<Span>,
    /// Log positions: `[lo, hi)`.
    pub positions: Option<Span>,
    /// Vital signs: each inner list is ORed (one parameter's comma-separated values), the
    /// lists ANDed (several parameters); empty: any.
    pub codes: Vec<Vec<CodeMatch>>,
}

/// One reading found.
#[derive(Debug)]
pub struct ObsRow {
    /// Log index.
    pub idx: u64,
    /// Measured at, Unix ms.
    pub measured_at: u64,
    /// Patient pseudonym in force.
    pub patient: Option<String>,
    /// Leaf data (the log entry).
    pub leaf: Vec<u8>,
}

/// How many of the value columns a row holds.
fn signs_held() -> String {
    let parts: Vec<String> = VALUE_COLUMNS
        .iter()
        .map(|c| format!("CASE WHEN r.{c} IS NOT NULL THEN 1 ELSE 0 END"))
        .collect();
    format!("({})", parts.join(" + "))
}

fn code_condition(c: CodeMatch) -> String {
    match c {
        CodeMatch::Single(i) => format!(
            "(r.{} IS NOT NULL AND {} = 1)",
            VALUE_COLUMNS[i],
            signs_held()
        ),
        CodeMatch::Panel => format!("{} >= 2", signs_held()),
        CodeMatch::Component(i) => format!(
            "(r.{} IS NOT NULL AND {} >= 2)",
            VALUE_COLUMNS[i],
            signs_held()
        ),
        CodeMatch::Any(i) => format!("r.{} IS NOT NULL", VALUE_COLUMNS[i]),
    }
}

/// The WHERE clause (from `$1`) and its parameters, in order.
fn where_clause(f: &ObsFilter, first: usize) -> (String, Vec<Param>) {
    let mut text = String::from("p.idx IS NULL");
    let mut params = Vec::new();
    let mut n = first;
    let mut next = |v: Param, params: &mut Vec<Param>| {
        params.push(v);
        n += 1;
        format!("${}", n - 1)
    };
    if let Some((lo, hi)) = f.measured {
        let (a, b) = (
            next(Param::U(lo), &mut params),
            next(Param::U(hi), &mut params),
        );
        text.push_str(&format!(
            " AND r.measured_at >= {a} AND r.measured_at < {b}"
        ));
    }
    if let Some((lo, hi)) = f.positions {
        let (a, b) = (
            next(Param::U(lo), &mut params),
            next(Param::U(hi), &mut params),
        );
        text.push_str(&format!(" AND r.idx >= {a} AND r.idx < {b}"));
    }
    if let Some(p) = &f.patient {
        let a = next(Param::T(p.clone()), &mut params);
        text.push_str(&format!(" AND r.patient = {a}"));
    }
    if let Some(s) = &f.sensor {
        let a = next(Param::T(s.clone()), &mut params);
        text.push_str(&format!(" AND r.sensor_id = {a}"));
    }
    for any_of in &f.codes {
        let any: Vec<String> = any_of.iter().map(|c| code_condition(*c)).collect();
        text.push_str(&format!(" AND ({})", any.join(" OR ")));
    }
    (text, params)
}

enum Param {
    U(u64),
    T(String),
}

fn bind(mut s: Sql, params: Vec<Param>) -> Sql {
    for p in params {
        s = match p {
            Param::U(v) => s.u64(v),
            Param::T(v) => s.text(&v),
        };
    }
    s
}

impl Db {
    /// A page of readings matching `f`, in (measured-at, index) order (`desc`: newest first),
    /// after the position `after` (the previous page's last), at most `limit`.
    pub(crate) async fn observation_page(
        &self,
        f: &ObsFilter,
        desc: bool,
        after: Option<(u64, u64)>,
        limit: u32,
    ) -> DbResult<Vec<ObsRow>> {
        let (mut text, mut params) = where_clause(f, 1);
        let mut n = params.len() + 1;
        if let Some((at, idx)) = after {
            let (a, i) = (format!("${n}"), format!("${}", n + 1));
            n += 2;
            let cmp = if desc { "<" } else { ">" };
            text.push_str(&format!(
                " AND (r.measured_at {cmp} {a} OR (r.measured_at = {a} AND r.idx {cmp} {i}))"
            ));
            params.push(Param::U(at));
            params.push(Param::U(idx));
        }
        let dir = if desc { "DESC" } else { "ASC" };
        let sql = format!(
            "SELECT r.idx, r.measured_at, r.patient, e.leaf_data FROM readings r \
             JOIN entries e ON e.idx = r.idx LEFT JOIN pruned_readings p ON p.idx = r.idx \
             WHERE {text} ORDER BY r.measured_at {dir}, r.idx {dir} LIMIT ${n}"
        );
        params.push(Param::U(u64::from(limit)));
        let s = bind(Sql::new(sql), params);
        self.decode_all(s, |r| {
            let c = Cols::new(r, "readings");
            let idx = c.u64(0)?;
            let c = c.keyed(idx);
            Ok(ObsRow {
                idx,
                measured_at: c.u64(1)?,
                patient: c.opt_text(2)?,
                leaf: c.bytes(3)?,
            })
        })
        .await
    }

    /// How many readings match `f`, if at most `cap` (a count beyond it is not worth its
    /// cost: `None`).
    pub(crate) async fn observation_count(&self, f: &ObsFilter, cap: u64) -> DbResult<Option<u64>> {
        let (text, mut params) = where_clause(f, 1);
        let n = params.len() + 1;
        params.push(Param::U(cap + 1));
        let sql = format!(
            "SELECT COUNT(*) FROM (SELECT 1 FROM readings r LEFT JOIN pruned_readings p \
             ON p.idx = r.idx WHERE {text} LIMIT ${n}) AS found"
        );
        let s = bind(Sql::new(sql), params);
        let count = self
            .decode_one(s, |r| Cols::new(r, "readings").u64(0))
            .await?
            .unwrap_or(0);
        Ok((count <= cap).then_some(count))
    }

    /// The first log position logged after `at_ms` (logging times never go back along the
    /// log, so a binary search over positions `[0, size)` finds it), or `size`.
    pub(crate) async fn first_logged_after(&self, at_ms: u64, size: u64) -> DbResult<u64> {
        let (mut lo, mut hi) = (0u64, size);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let s = Sql::new("SELECT logged_at FROM entries WHERE idx = $1").u64(mid);
            let at = self
                .decode_one(s, |r| Cols::new(r, "entries").u64(0))
                .await?
                .unwrap_or(u64::MAX);
            if at > at_ms {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Ok(lo)
    }
}
