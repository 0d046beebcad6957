//! Uploads the spool in order: batches to `POST /v1/ingest`, the cursor moved only after the
//! service answered; failures retried with exponential backoff and full jitter — and not before
//! the service's `Retry-After` (an overloaded or standby service says when to come back).

use crate::Gateway;
use rand::Rng;
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// The longest `Retry-After` honoured, ms.
const MAX_RETRY_AFTER_MS: u64 = 600_000;

/// What one attempt achieved.
enum Attempt {
    /// Nothing to send.
    Idle,
    /// A batch was acknowledged.
    Sent(usize),
    /// The service was unreachable or answered an error worth retrying (not before this many
    /// ms, if it said so); the last field: whether another service node may do better (it was
    /// unreachable or not ready), with the position of the URL that failed.
    Retry(String, Option<u64>, Option<usize>),
}

async fn attempt(gw: &Gateway) -> Attempt {
    let batch = match gw.spool.lock().map(|mut s| s.peek(gw.cfg.batch.max(1))) {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => return Attempt::Retry(format!("spool read: {e}"), None, None),
        Err(_) => return Attempt::Retry("spool lock poisoned".into(), None, None),
    };
    let Some(last) = batch.last() else {
        return Attempt::Idle;
    };
    let end = last.end;
    let body = provenance_core::batch::encode(
        &batch.iter().map(|r| r.bytes.as_slice()).collect::<Vec<_>>(),
    );
    let (at, base) = gw.services.active();
    let resp = gw
        .http
        .post(format!("{base}/v1/ingest"))
        .bearer_auth(secrecy::ExposeSecret::expose_secret(&gw.cfg.token))
        .header("content-type", "application/cbor")
        .body(body)
        .send()
        .await;
    let resp = match resp {
        Ok(r) => r,
        Err(e) => {
            return Attempt::Retry(format!("service {base} unreachable: {e}"), None, Some(at))
        }
    };
    let status = resp.status();
    // 200: per-item answers; 422: every item rejected for good. Both are final for this batch.
    if status.is_success() || status.as_u16() == 422 {
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let results = v["results"].as_array().cloned().unwrap_or_default();
        for (i, r) in results.iter().enumerate() {
            if r["status"] == "rejected" {
                tracing::error!(item = i, reason = %r["reason"], detail = %r["detail"], "the service rejected a reading for good");
            }
        }
        if results.len() != batch.len() {
            return Attempt::Retry(
                format!(
                    "the service answered {} results for {} readings",
                    results.len(),
                    batch.len()
                ),
                None,
                None,
            );
        }
        return match gw.ack(end) {
            Ok(()) => {
                gw.stats.uploaded.inc_by(batch.len() as u64);
                Attempt::Sent(batch.len())
            }
            Err(e) => Attempt::Retry(format!("spool cursor: {e:#}"), None, None),
        };
    }
    // Retry-After in seconds (RFC 9110 §10.2.3; an HTTP date is read as "soon").
    let after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|secs| secs.saturating_mul(1000));
    let other = crate::services::move_on(status.as_u16()).then_some(at);
    Attempt::Retry(format!("{base}: HTTP {status}"), after, other)
}

/// The upload loop.
pub async fn run(gw: Arc<Gateway>) {
    let mut failures: u32 = 0;
    loop {
        let gw2 = Arc::clone(&gw);
        match attempt(&gw2).await {
            Attempt::Idle => {
                failures = 0;
                let _ = tokio::time::timeout(Duration::from_millis(500), gw.wake.notified()).await;
            }
            Attempt::Sent(n) => {
                failures = 0;
                tracing::debug!(readings = n, "batch acknowledged");
            }
            Attempt::Retry(why, after, failed_at) => {
                failures = failures.saturating_add(1);
                gw.stats.upload_retries.inc();
                // Another node may be ready: move to it and try at once, until every URL failed
                // in this run of failures (then back off as with one).
                let n = gw.services.len() as u32;
                if let Some(at) = failed_at.filter(|&at| gw.services.fail_over(at)) {
                    gw.stats.service_failovers.inc();
                    if failures % n != 0 {
                        tracing::warn!(from = %gw.services.all()[at], to = %gw.services.active().1, "upload failed: {why}; moving to the next service node");
                        continue;
                    }
                }
                let cap = gw
                    .cfg
                    .backoff_ms
                    .saturating_mul(1u64 << failures.min(20))
                    .min(gw.cfg.backoff_max_ms)
                    .max(1);
                let jittered = rand::thread_rng().gen_range(cap / 2..=cap);
                // Not before the service asked (at most 10 minutes: a service cannot park the
                // gateway for longer).
                let delay = jittered.max(after.unwrap_or(0).min(MAX_RETRY_AFTER_MS));
                tracing::warn!(
                    attempt = failures,
                    retry_in_ms = delay,
                    "upload failed: {why}"
                );
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
        }
    }
}
