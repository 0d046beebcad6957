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

/// What the household page passes besides the feed page (JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeInput {
    /// The trust the user pinned.
    pub trust: PinnedTrust,
    /// The household's recipient key, 64 hex digits (kept in this browser only).
    pub secret: String,
    /// The app's state ([`HomeState`](provenance_core::audit::home::HomeState)).
    pub state: provenance_core::audit::home::HomeState,
}

fn secret_of(hex_text: &str) -> Result<provenance_core::private::RecipientSecret, String> {
    let mut raw = [0u8; 32];
    let text = hex_text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the recipient key must be 64 hex digits".into());
    }
    for (i, byte) in raw.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
            .map_err(|_| "the recipient key must be 64 hex digits".to_string())?;
    }
    Ok(provenance_core::private::RecipientSecret::from_bytes(raw))
}

/// Private mode (issue #17): verifies and decrypts a household feed page in the browser —
/// `provenance-core`'s [`verify_feed`](provenance_core::audit::home::verify_feed), the code
/// behind `vitals-home fetch`. Answers `{"page", "warnings", "unaccepted", "messages": [{"index",
/// "report", "reading"}], "next_after", "state"}` (the state advanced past every message shown),
/// or `{"error"}` when the input is unusable.
pub fn home(feed: &[u8], input: &[u8]) -> String {
    if input.len() > MAX_TRUST_LEN * 4 {
        return serde_json::json!({ "error": "the input is too large" }).to_string();
    }
    let parsed: Result<HomeInput, String> =
        serde_json::from_slice(input).map_err(|e| format!("the input is not valid: {e}"));
    let run = parsed.and_then(|i| {
        let issuers: Vec<&str> = i.trust.issuers.iter().map(String::as_str).collect();
        let witnesses: Vec<&str> = i.trust.witnesses.iter().map(String::as_str).collect();
        let trust = Trust::pinned(
            &i.trust.log_key,
            &issuers,
            &witnesses,
            i.trust.quorum,
            i.trust.checkpoints.clone(),
        )?;
        let secret = secret_of(&i.secret)?;
        let mut state = i.state;
        let c = provenance_core::audit::home::verify_feed(feed, &trust, &secret, &mut state);
        Ok(serde_json::json!({
            "page": c.page,
            "warnings": c.warnings,
            "unaccepted": c.unaccepted,
            "messages": c.messages.iter().map(|m| serde_json::json!({
                "index": m.index, "report": m.report, "reading": m.reading,
            })).collect::<Vec<_>>(),
            "next_after": c.next_after,
            "state": state,
        }))
    });
    match run {
        Ok(v) => v.to_string(),
        Err(e) => serde_json::json!({ "error": e }).to_string(),
    }
}

/// The public key and KeyId of a recipient key (hex): what the household gives its
/// administrator to enroll, or `{"error"}`.
pub fn recipient_public(secret_hex: &[u8]) -> String {
    match core::str::from_utf8(secret_hex)
        .map_err(|_| "the recipient key must be 64 hex digits".to_string())
        .and_then(secret_of)
    {
        Ok(s) => {
            let pk = s.public();
            let hex: String = pk.0.iter().map(|b| format!("{b:02x}")).collect();
            serde_json::json!({ "public_key": hex, "key_id": pk.key_id().to_hex() }).to_string()
        }
        Err(e) => serde_json::json!({ "error": e }).to_string(),
    }
}
