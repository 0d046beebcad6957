//! # web-verifier
//!
//! The web app's "Verify in this browser": `provenance-core`'s
//! [`verify_bundle`](provenance_core::audit::bundle::verify_bundle) — the very code behind
//! `ledger-verify bundle`, with the same step names and verdicts — compiled to WebAssembly
//! (`wasm32-unknown-unknown`, no JavaScript glue generator). The browser passes the bundle's bytes
//! and the trust the user pinned (kept in the browser, never taken from the service), and gets
//! the report as JSON.
//!
//! The ABI ([`abi`]) is four functions over the module's linear memory; `ledger-service`'s
//! `web/verify.js` is its one caller. Everything else is plain Rust, tested natively.

use provenance_core::audit::report::Report;
use provenance_core::audit::trust::Trust;
use serde::Deserialize;

pub mod abi;

/// The trust anchors a user pinned in the browser (JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedTrust {
    /// The log's vkey (C2SP signed-note verifier key).
    pub log_key: String,
    /// Trusted issuer CA certificates, PEM.
    #[serde(default)]
    pub issuers: Vec<String>,
    /// Witness vkeys.
    #[serde(default)]
    pub witnesses: Vec<String>,
    /// How many witnesses must have cosigned.
    #[serde(default)]
    pub quorum: usize,
    /// Checkpoints kept earlier (signed notes), for the fork check.
    #[serde(default)]
    pub checkpoints: Vec<String>,
}

/// The largest pinned-trust document accepted (many issuers and kept checkpoints fit).
pub const MAX_TRUST_LEN: usize = 1024 * 1024;

/// Parses the pinned trust, with the same checks as `ledger-verify`'s command line.
pub fn parse_trust(json: &[u8]) -> Result<Trust, String> {
    if json.len() > MAX_TRUST_LEN {
        return Err(format!(
            "the pinned trust is {} bytes, more than the {MAX_TRUST_LEN} allowed",
            json.len()
        ));
    }
    let p: PinnedTrust =
        serde_json::from_slice(json).map_err(|e| format!("the pinned trust is not valid: {e}"))?;
    let issuers: Vec<&str> = p.issuers.iter().map(String::as_str).collect();
    let witnesses: Vec<&str> = p.witnesses.iter().map(String::as_str).collect();
    Trust::pinned(&p.log_key, &issuers, &witnesses, p.quorum, p.checkpoints)
}

/// Verifies a bundle against pinned trust: the report as JSON (`{"subject", "verified",
/// "checks": [{"step", "ok", "detail"}]}`, exactly `ledger-verify bundle --json`'s shape), or
/// `{"error": "…"}` when the pinned trust itself is unusable (nothing was verified).
pub fn verify(bundle: &[u8], trust_json: &[u8]) -> String {
    match parse_trust(trust_json) {
        Ok(trust) => {
            let report: Report =
                provenance_core::audit::bundle::verify_bundle(bundle, "bundle", &trust);
            serde_json::to_string(&report).unwrap_or_default()
        }
        Err(e) => serde_json::json!({ "error": e }).to_string(),
    }
}

/// This crate's version, for the page's footer.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
