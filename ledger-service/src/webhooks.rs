//! Clinician webhooks per the Standard Webhooks specification: `whsec_` secrets, the
//! `webhook-id`, `webhook-timestamp` and `webhook-signature` headers (`v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`, one signature per live secret while a rotation overlaps), and delivery
//! from the durable outbox: workers claim due messages (several nodes never claim the same one),
//! retry with exponential backoff and jitter, honour `Retry-After`, stop for good on
//! `410 Gone` (the endpoint is disabled), log every attempt, and dead-letter a message after the
//! last attempt; the admin API can replay it.
//!
//! Invariant: a message is marked delivered only after a 2xx answer, and its `webhook-id` never
//! changes, so a receiver that deduplicates on it sees every alert exactly once.

use crate::config::AlertSettings;
use crate::db::{DeliveryResult, EndpointRow, OutboxItem};
use crate::state::{now_ms, Shared};
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use rand::Rng;
use secrecy::ExposeSecret;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Messages claimed per round.
const CLAIM: u64 = 32;

/// A new `whsec_` secret (24 random bytes).
pub fn new_secret() -> String {
    let mut b = [0u8; 24];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut b);
    format!("whsec_{}", B64.encode(b))
}

pub use provenance_core::webhook::sign;

/// The `webhook-signature` header value: the current secret's signature, and the previous
/// secret's while the rotation overlap lasts.
pub fn signature_header(
    e: &EndpointRow,
    msg_id: &str,
    timestamp: u64,
    body: &str,
    now: u64,
) -> String {
    let mut sigs: Vec<String> = sign(e.secret.expose_secret(), msg_id, timestamp, body)
        .into_iter()
        .collect();
    if let (Some(prev), Some(until)) = (&e.previous_secret, e.previous_until) {
        if now < until {
            sigs.extend(sign(prev.expose_secret(), msg_id, timestamp, body));
        }
    }
    sigs.join(" ")
}

/// The delay before retry number `attempt` (1-based): the receiver's `Retry-After` if it gave
/// one (capped), else exponential with jitter (between half and all of the doubled delay).
pub fn retry_delay(s: &AlertSettings, attempt: u32, retry_after: Option<u64>) -> u64 {
    if let Some(secs) = retry_after {
        return secs.saturating_mul(1000).min(s.webhook_backoff_max_ms);
    }
    let cap = s
        .webhook_backoff_ms
        .saturating_mul(1u64 << attempt.saturating_sub(1).min(30))
        .min(s.webhook_backoff_max_ms)
        .max(1);
    rand::thread_rng().gen_range(cap / 2..=cap)
}

/// Runs delivery until the process ends.
pub async fn run(shared: Arc<Shared>, settings: AlertSettings) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(settings.webhook_timeout_ms))
        .redirect(reqwest::redirect::Policy::none())
        // The outbound policy: names resolve only to allowed addresses, and no proxy from the
        // environment connects on our behalf.
        .dns_resolver(Arc::new(crate::outbound::Resolver(Arc::clone(
            &shared.outbound,
        ))))
        .no_proxy()
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook delivery cannot start");
            return;
        }
    };
    let lease = settings.webhook_timeout_ms.saturating_mul(2) + 1000;
    // Up to CLAIM deliveries in flight; a slow receiver holds one slot, not the whole round.
    let mut in_flight = tokio::task::JoinSet::new();
    loop {
        let wake = shared.webhook_wake.notified();
        let free = CLAIM.saturating_sub(in_flight.len() as u64);
        if free > 0 {
            match shared.db.claim_outbox(now_ms(), lease, free).await {
                Ok(items) if !items.is_empty() => {
                    for item in items {
                        let (shared, client) = (Arc::clone(&shared), client.clone());
                        in_flight
                            .spawn(async move { deliver(&shared, &client, &settings, item).await });
                    }
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "webhook outbox unavailable");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            }
        }
        // Wait for a delivery to finish, new messages, or retries to come due.
        tokio::select! {
            _ = in_flight.join_next(), if !in_flight.is_empty() => {}
            _ = wake => {}
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
}

async fn deliver(shared: &Shared, client: &reqwest::Client, s: &AlertSettings, item: OutboxItem) {
    let mut endpoint = shared.endpoint(&item.endpoint_id);
    if endpoint.is_none() {
        // Created through another node since this one cached the list: reload it.
        if let Ok(all) = shared.db.webhook_endpoints().await {
            shared.set_webhooks(all);
        }
        endpoint = shared.endpoint(&item.endpoint_id);
    }
    let Some(endpoint) = endpoint else {
        return; // gone: the lease expires and nothing is sent
    };
    let now = now_ms();
    let timestamp = now / 1000;
    let started = Instant::now();
    // Checked at each delivery: the policy may be stricter than when the endpoint was
    // registered, and an IP literal does not go through the resolver.
    let refused = reqwest::Url::parse(&endpoint.url)
        .map_err(|e| format!("the URL no longer parses: {e}"))
        .and_then(|u| shared.outbound.refuses_url(&u).map_or(Ok(()), Err));
    let resp = match refused {
        Err(why) => Err(Refused(why)),
        Ok(()) => client
            .post(&endpoint.url)
            .header("content-type", "application/json")
            .header("webhook-id", &item.msg_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header(
                "webhook-signature",
                signature_header(&endpoint, &item.msg_id, timestamp, &item.payload, now),
            )
            .body(item.payload.clone())
            .send()
            .await
            .map_err(|e| Refused(without_url(&e))),
    };
    let took = started.elapsed().as_millis() as u64;
    let attempt = item.attempts + 1;
    // The retry budget counts from the current round (a replay starts a new one).
    let in_round = attempt.saturating_sub(item.round_start);
    let (status, error, result) = match resp {
        Ok(r) if r.status().is_success() => {
            (Some(r.status().as_u16()), None, DeliveryResult::Delivered)
        }
        Ok(r) if r.status().as_u16() == 410 => {
            let reason = format!("the receiver answered 410 Gone at {now}");
            if let Err(e) = shared
                .db
                .set_endpoint_disabled(&endpoint.id, Some(&reason))
                .await
            {
                tracing::error!(error = %e, "cannot disable the endpoint");
            }
            if let Ok(all) = shared.db.webhook_endpoints().await {
                shared.set_webhooks(all);
            }
            tracing::warn!(endpoint = %endpoint.id, "webhook endpoint is gone (410): disabled");
            (
                Some(410),
                Some("410 Gone: endpoint disabled".to_string()),
                DeliveryResult::Dead,
            )
        }
        Ok(r) => {
            let code = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let result = if in_round >= s.webhook_max_attempts {
                DeliveryResult::Dead
            } else {
                DeliveryResult::Retry(now + retry_delay(s, in_round, retry_after))
            };
            (Some(code), Some(format!("HTTP {code}")), result)
        }
        Err(Refused(e)) => {
            let result = if in_round >= s.webhook_max_attempts {
                DeliveryResult::Dead
            } else {
                DeliveryResult::Retry(now + retry_delay(s, in_round, None))
            };
            (None, Some(e), result)
        }
    };
    match &result {
        DeliveryResult::Delivered => {
            tracing::debug!(msg = %item.msg_id, endpoint = %endpoint.id, attempt, "webhook delivered")
        }
        DeliveryResult::Retry(at) => {
            tracing::warn!(msg = %item.msg_id, endpoint = %endpoint.id, attempt, retry_at = at, error = ?error, "webhook delivery failed; will retry")
        }
        DeliveryResult::Dead => {
            tracing::error!(msg = %item.msg_id, endpoint = %endpoint.id, attempt, error = ?error, "webhook message dead-lettered")
        }
    }
    shared.metrics.count_webhook(match result {
        DeliveryResult::Delivered => "delivered",
        DeliveryResult::Retry(_) => "retry",
        DeliveryResult::Dead => "dead",
    });
    match shared
        .db
        .record_attempt(&item, now, status, error.as_deref(), took, &result)
        .await
    {
        Ok(true) => {}
        // This claim's lease lapsed and another worker tried the message and recorded first;
        // its record stands.
        Ok(false) => {
            tracing::warn!(msg = %item.msg_id, attempt, "another worker recorded this webhook attempt first")
        }
        // The lease runs out and the message is tried again: at least once, never lost.
        Err(e) => {
            tracing::error!(error = %e, msg = %item.msg_id, "cannot record a webhook attempt")
        }
    }
}

/// Why no answer came: a transport error (without the URL) or the outbound policy.
struct Refused(String);

/// A transport error without the URL (which may carry credentials in its query).
fn without_url(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut detail = String::new();
    while let Some(s) = src {
        detail = s.to_string();
        src = s.source();
    }
    if detail.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}: {detail}")
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn endpoint_secrets_never_print() {
        let e = crate::db::EndpointRow {
            id: "ep_1".into(),
            url: "https://receiver.example/hook".into(),
            event_types: vec![],
            secret: "whsec_c2VjcmV0LXRoYXQtbXVzdC1ub3QtbGVhaw=="
                .to_string()
                .into(),
            previous_secret: Some("whsec_b2xkLXNlY3JldA==".to_string().into()),
            previous_until: None,
            disabled_reason: None,
            created_at: 0,
        };
        let shown = format!("{e:?}");
        assert!(
            !shown.contains("c2VjcmV0") && !shown.contains("b2xk"),
            "{shown}"
        );
    }

    use super::*;

    #[test]
    fn signature_matches_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification (and its reference libraries).
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body).unwrap(),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
        assert!(new_secret().starts_with("whsec_"));
        assert!(sign("whsec_%%%", "m", 1, "b").is_none());
    }

    #[test]
    fn retry_delays_double_with_jitter_and_honour_retry_after() {
        let s = AlertSettings {
            webhook_backoff_ms: 1000,
            webhook_backoff_max_ms: 60_000,
            ..Default::default()
        };
        for attempt in 1..=10u32 {
            let cap = (1000u64 << (attempt - 1)).min(60_000);
            let d = retry_delay(&s, attempt, None);
            assert!(d >= cap / 2 && d <= cap, "attempt {attempt}: {d}");
        }
        assert_eq!(retry_delay(&s, 1, Some(7)), 7000);
        assert_eq!(retry_delay(&s, 1, Some(100_000)), 60_000, "capped");
    }
}
