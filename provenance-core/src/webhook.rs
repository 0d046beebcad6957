//! Standard Webhooks signatures (`standardwebhooks.com`): `v1,` base64 HMAC-SHA256 over
//! `<msg id>.<unix seconds>.<body>`, keyed by the base64 bytes of a `whsec_` secret. Used by the
//! service's alert webhooks and by the monitor's findings.

use alloc::{format, string::String};
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `v1,<signature>` of a message with one secret (`None` if the secret is malformed).
pub fn sign(secret: &str, msg_id: &str, timestamp: u64, body: &str) -> Option<String> {
    let key = B64
        .decode(secret.strip_prefix("whsec_").unwrap_or(secret))
        .ok()?;
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(format!("{msg_id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    Some(format!("v1,{}", B64.encode(mac.finalize().into_bytes())))
}
