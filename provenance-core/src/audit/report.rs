//! What a verification found: one named check per step, each passed or failed with its reason,
//! printed for humans (one line per check) or as JSON for machines.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::Serialize;

/// One step of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable step name, e.g. `sensor.signature`.
    pub step: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found (on failure: why).
    pub detail: String,
}

/// The checks of one verification, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// What was verified (a file, a folder, a pair of checkpoints).
    pub subject: String,
    /// True when there was at least one check and every check passed.
    pub verified: bool,
    /// The checks.
    pub checks: Vec<Check>,
}

impl Report {
    /// An empty report about `subject`.
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            ..Self::default()
        }
    }

    /// Records a check's outcome.
    pub fn check(&mut self, step: &str, outcome: Result<String, String>) {
        let (ok, detail) = match outcome {
            Ok(d) => (true, d),
            Err(d) => (false, d),
        };
        self.checks.push(Check {
            step: step.into(),
            ok,
            detail,
        });
        self.verified = self.checks.iter().all(|c| c.ok);
    }

    /// Records a passed check.
    pub fn pass(&mut self, step: &str, detail: impl Into<String>) {
        self.check(step, Ok(detail.into()));
    }

    /// Records a failed check.
    pub fn fail(&mut self, step: &str, detail: impl Into<String>) {
        self.check(step, Err(detail.into()));
    }

    /// The names of the failed steps, in order.
    pub fn failed_steps(&self) -> Vec<&str> {
        self.checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| c.step.as_str())
            .collect()
    }

    /// The human-readable report: one line per check, then the verdict.
    pub fn human(&self) -> String {
        let width = self.checks.iter().map(|c| c.step.len()).max().unwrap_or(0);
        let mut out = format!("{}\n", self.subject);
        for c in &self.checks {
            let mark = if c.ok { "ok  " } else { "FAIL" };
            out.push_str(&format!("  {mark}  {:width$}  {}\n", c.step, c.detail));
        }
        let failed = self.checks.iter().filter(|c| !c.ok).count();
        if self.verified {
            out.push_str(&format!("VERIFIED ({} checks)\n", self.checks.len()));
        } else {
            out.push_str(&format!(
                "NOT VERIFIED: {failed} of {} checks failed\n",
                self.checks.len()
            ));
        }
        out
    }

    /// The report as pretty JSON.
    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
