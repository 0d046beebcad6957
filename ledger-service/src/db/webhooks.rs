//! Webhooks: endpoints (with their signing secrets), the outbox the sequencer fills with its
//! batches, claims on outbox messages (contract 5) and the delivery attempts.

use super::{pg, sqlite, Cols, Db, DbResult, DbRow, Sql};
use secrecy::{ExposeSecret, SecretString};

/// A webhook endpoint as stored.
#[derive(Debug, Clone)]
pub struct EndpointRow {
    /// `ep_…`.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// Event types it receives.
    pub event_types: Vec<String>,
    /// Current `whsec_…` secret (never printed, not even by `Debug`).
    pub secret: SecretString,
    /// The secret before the last rotation, still used until `previous_until`.
    pub previous_secret: Option<SecretString>,
    /// Until when the previous secret also signs.
    pub previous_until: Option<u64>,
    /// Why deliveries stopped, if they did.
    pub disabled_reason: Option<String>,
    /// Created, Unix ms.
    pub created_at: u64,
}

/// A claimed outbox message, with what a delivery needs.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    /// The webhook-id.
    pub msg_id: String,
    /// Endpoint.
    pub endpoint_id: String,
    /// Event type.
    pub event_type: String,
    /// JSON body.
    pub payload: String,
    /// Attempts made before this one (numbered on across replays).
    pub attempts: u32,
    /// The attempts made before the current round (the last replay): the retry budget counts
    /// from here.
    pub round_start: u32,
    /// State (pending, delivered, dead).
    pub state: String,
    /// Created, Unix ms.
    pub created_at: u64,
    /// Last HTTP status.
    pub last_status: Option<u16>,
    /// Last error.
    pub last_error: Option<String>,
}

/// One delivery attempt.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct AttemptOut {
    /// Endpoint.
    pub endpoint_id: String,
    /// 1, 2, …
    pub attempt: u32,
    /// When, Unix ms.
    pub at_ms: u64,
    /// HTTP status, if the receiver answered.
    pub status: Option<u16>,
    /// What went wrong.
    pub error: Option<String>,
    /// How long it took.
    pub duration_ms: u64,
}

/// How a delivery attempt ended.
#[derive(Debug, Clone)]
pub enum DeliveryResult {
    /// 2xx.
    Delivered,
    /// Retry at this time.
    Retry(u64),
    /// No more attempts (too many, or the endpoint is gone).
    Dead,
}

const OUTBOX_COLUMNS: &str =
    "msg_id, endpoint_id, event_type, payload, attempts, state, created_at, \
     last_status, last_error, round_start";
const ENDPOINT_COLUMNS: &str =
    "id, url, event_types, secret, previous_secret, previous_until, disabled_reason, created_at";
const OUTBOX_STATES: [&str; 3] = ["pending", "delivered", "dead"];

fn endpoint_of(r: &DbRow) -> DbResult<EndpointRow> {
    let c = Cols::new(r, "webhook_endpoints");
    let id = c.text(0)?;
    let c = c.keyed(&id);
    Ok(EndpointRow {
        url: c.text(1)?,
        event_types: c.string_list(2)?,
        secret: c.text(3)?.into(),
        previous_secret: c.opt_text(4)?.map(SecretString::from),
        previous_until: c.opt_u64(5)?,
        disabled_reason: c.opt_text(6)?,
        created_at: c.u64(7)?,
        id,
    })
}

fn outbox_of(r: &DbRow) -> DbResult<OutboxItem> {
    let c = Cols::new(r, "webhook_outbox");
    let (msg_id, endpoint_id) = (c.text(0)?, c.text(1)?);
    let c = c.keyed(format_args!("{msg_id}/{endpoint_id}"));
    Ok(OutboxItem {
        event_type: c.text(2)?,
        payload: c.text(3)?,
        attempts: c.int(4)?,
        state: c.parsed(5, |s| OUTBOX_STATES.contains(&s).then(|| s.to_string()))?,
        created_at: c.u64(6)?,
        last_status: c.opt_int(7)?,
        last_error: c.opt_text(8)?,
        round_start: c.int(9)?,
        msg_id,
        endpoint_id,
    })
}

/// Queues a message for one endpoint (a side row of the sequencer's batch).
pub(super) fn write_outbox(
    msg_id: &str,
    endpoint_id: &str,
    event_type: &str,
    payload: &str,
    at: u64,
) -> Sql {
    Sql::new(
        "INSERT INTO webhook_outbox (msg_id, endpoint_id, event_type, payload, created_at, state, attempts, next_attempt_at, locked_until) \
         VALUES ($1, $2, $3, $4, $5, 'pending', 0, $5, 0)",
    )
    .text(msg_id)
    .text(endpoint_id)
    .text(event_type)
    .text(payload)
    .u64(at)
}

impl Db {
    /// Webhook endpoints.
    pub(crate) async fn webhook_endpoints(&self) -> DbResult<Vec<EndpointRow>> {
        let s = Sql::new(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
        ));
        self.decode_all(s, endpoint_of).await
    }

    /// Stores a new endpoint.
    pub(crate) async fn insert_endpoint(&self, e: &EndpointRow) -> DbResult<()> {
        let types = serde_json::Value::from(e.event_types.clone()).to_string();
        let s = Sql::new(
            "INSERT INTO webhook_endpoints (id, url, event_types, secret, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .text(&e.id)
        .text(&e.url)
        .text(&types)
        .text(e.secret.expose_secret())
        .u64(e.created_at);
        self.exec(s).await.map(drop)
    }

    /// Rotates an endpoint's secret; the old one keeps signing until `until`.
    pub(crate) async fn rotate_endpoint_secret(
        &self,
        id: &str,
        secret: &str,
        until: u64,
    ) -> DbResult<bool> {
        let s = Sql::new(
            "UPDATE webhook_endpoints SET previous_secret = secret, previous_until = $3, secret = $2 WHERE id = $1",
        )
        .text(id)
        .text(secret)
        .u64(until);
        Ok(self.exec(s).await? == 1)
    }

    /// Stops (with a reason) or resumes (`None`) deliveries to an endpoint.
    pub(crate) async fn set_endpoint_disabled(
        &self,
        id: &str,
        reason: Option<&str>,
    ) -> DbResult<bool> {
        let s = Sql::new("UPDATE webhook_endpoints SET disabled_reason = $2 WHERE id = $1")
            .text(id)
            .opt_text(reason);
        Ok(self.exec(s).await? == 1)
    }

    /// Claims up to `limit` due messages of enabled endpoints for `lease_ms` (contract 5:
    /// several workers, even on several nodes, never claim the same message).
    pub(crate) async fn claim_outbox(
        &self,
        now: u64,
        lease_ms: u64,
        limit: u64,
    ) -> DbResult<Vec<OutboxItem>> {
        let pick = "SELECT o.msg_id, o.endpoint_id FROM webhook_outbox o JOIN webhook_endpoints e ON e.id = o.endpoint_id \
                    WHERE o.state = 'pending' AND o.next_attempt_at <= $1 AND o.locked_until <= $1 AND e.disabled_reason IS NULL \
                    ORDER BY o.created_at LIMIT $3";
        let sql = match self {
            Db::Pg(_) => pg::claim_outbox(pick),
            Db::Lite(_) => sqlite::claim_outbox(pick, OUTBOX_COLUMNS),
        };
        let s = Sql::new(sql)
            .u64(now)
            .u64(now.saturating_add(lease_ms))
            .u64(limit);
        self.decode_all(s, outbox_of).await
    }

    /// Records a delivery attempt and its outcome, in one transaction: the attempt numbered
    /// after the claimed item's, and the message's new state — only if no other worker recorded
    /// an attempt since the claim (its lease lapsed and it was claimed again). Returns whether
    /// it was recorded.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn record_attempt(
        &self,
        item: &OutboxItem,
        at: u64,
        status: Option<u16>,
        error: Option<&str>,
        duration_ms: u64,
        result: &DeliveryResult,
    ) -> DbResult<bool> {
        let prev = i32::try_from(item.attempts).unwrap_or(i32::MAX);
        let attempt = prev.saturating_add(1);
        let (state, next, delivered) = match result {
            DeliveryResult::Delivered => ("delivered", at, Some(at)),
            DeliveryResult::Retry(t) => ("pending", *t, None),
            DeliveryResult::Dead => ("dead", at, None),
        };
        let status = status.map(i32::from);
        let upd = Sql::new(
            "UPDATE webhook_outbox SET state = $3, attempts = $4, next_attempt_at = $5, locked_until = 0, \
             last_status = $6, last_error = $7, delivered_at = $8 \
             WHERE msg_id = $1 AND endpoint_id = $2 AND attempts = $9 AND state = 'pending'",
        )
        .text(&item.msg_id)
        .text(&item.endpoint_id)
        .text(state)
        .i32(Some(attempt))
        .u64(next)
        .i32(status)
        .opt_text(error)
        .opt_u64(delivered)
        .i32(Some(prev));
        let ins = Sql::new(
            "INSERT INTO webhook_attempts (msg_id, endpoint_id, attempt, at, status, error, duration_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .text(&item.msg_id)
        .text(&item.endpoint_id)
        .i32(Some(attempt))
        .u64(at)
        .i32(status)
        .opt_text(error)
        .u64(duration_ms);
        self.exec_guarded(upd, vec![ins]).await
    }

    /// Outbox messages by state, oldest first.
    #[cfg(test)]
    pub(crate) async fn outbox_messages(
        &self,
        state: Option<&str>,
        limit: u64,
    ) -> DbResult<Vec<OutboxItem>> {
        self.outbox_page(state, None, limit).await
    }

    /// A page of outbox messages by state, oldest first (by created-at, then msg id, endpoint),
    /// after `after` (the last page's last (created-at, "msg_id endpoint_id")).
    pub(crate) async fn outbox_page(
        &self,
        state: Option<&str>,
        after: Option<(u64, &str)>,
        limit: u64,
    ) -> DbResult<Vec<OutboxItem>> {
        let mut text = format!("SELECT {OUTBOX_COLUMNS} FROM webhook_outbox WHERE 1 = 1");
        let mut n = 0;
        let mut param = || {
            n += 1;
            format!("${n}")
        };
        if state.is_some() {
            text.push_str(&format!(" AND state = {}", param()));
        }
        let key = after.map(|(at, k)| {
            let (m, e) = k.split_once(' ').unwrap_or((k, ""));
            (at, m.to_string(), e.to_string())
        });
        if key.is_some() {
            let (at, m, e) = (param(), param(), param());
            text.push_str(&format!(
                " AND (created_at > {at} OR (created_at = {at} AND (msg_id > {m} OR (msg_id = {m} AND endpoint_id > {e}))))"
            ));
        }
        text.push_str(&format!(
            " ORDER BY created_at, msg_id, endpoint_id LIMIT {}",
            param()
        ));
        let mut s = Sql::new(text);
        if let Some(v) = state {
            s = s.text(v);
        }
        if let Some((at, m, e)) = &key {
            s = s.u64(*at).text(m).text(e);
        }
        self.decode_all(s.u64(limit), outbox_of).await
    }

    /// Delivery attempts of a message.
    pub(crate) async fn attempts(&self, msg_id: &str) -> DbResult<Vec<AttemptOut>> {
        let s = Sql::new(
            "SELECT endpoint_id, attempt, at, status, error, duration_ms FROM webhook_attempts \
             WHERE msg_id = $1 ORDER BY endpoint_id, attempt",
        )
        .text(msg_id);
        self.decode_all(s, |r| {
            let c = Cols::new(r, "webhook_attempts").keyed(msg_id);
            Ok(AttemptOut {
                endpoint_id: c.text(0)?,
                attempt: c.int(1)?,
                at_ms: c.u64(2)?,
                status: c.opt_int(3)?,
                error: c.opt_text(4)?,
                duration_ms: c.u64(5)?,
            })
        })
        .await
    }

    /// Sends a message again (dead or delivered): pending now, a new round of attempts (their
    /// numbers go on; the retry budget starts afresh). Returns how many endpoint copies were
    /// re-queued.
    pub(crate) async fn replay_message(&self, msg_id: &str, now: u64) -> DbResult<u64> {
        let s = Sql::new(
            "UPDATE webhook_outbox SET state = 'pending', round_start = attempts, next_attempt_at = $2, \
             locked_until = 0 WHERE msg_id = $1 AND state <> 'pending'",
        )
        .text(msg_id)
        .u64(now);
        self.exec(s).await
    }
}
