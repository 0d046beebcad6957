//! Security alerts: one row per de-duplication key, counting occurrences; the webhook message of
//! an alert is written in the same transaction as the occurrence that makes it cross its
//! threshold, so it is sent exactly once per key.

use super::{Cols, Db, DbResult, DbRow, Sql};

/// A security alert as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct SecurityAlert {
    /// Its number.
    pub id: u64,
    /// `equivocation`, `revoked_key_used`, `bad_signatures` or `split_view`.
    pub kind: String,
    /// What it is about: a sensor id, or a key id (hex).
    pub subject: String,
    /// The de-duplication key (kind, subject and, for repeated events, the hour).
    pub key: String,
    /// What happened (the first occurrence).
    pub detail: String,
    /// Occurrences.
    pub count: u64,
    /// First occurrence, Unix ms.
    pub first_at: u64,
    /// Latest occurrence, Unix ms.
    pub last_at: u64,
}

/// One occurrence (or `n` of one key) to record.
#[derive(Debug, Clone)]
pub struct Occurrence {
    /// Kind.
    pub kind: &'static str,
    /// Subject.
    pub subject: String,
    /// De-duplication key.
    pub key: String,
    /// What happened.
    pub detail: String,
    /// When, ms.
    pub at: u64,
    /// How many.
    pub n: u64,
    /// SHA-256 of an envelope that showed it.
    pub sample_sha256: Vec<u8>,
    /// The count at which the alert is raised (its webhook sent).
    pub threshold: u64,
}

/// A webhook message to send when an occurrence crosses its threshold.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The webhook-id.
    pub msg_id: String,
    /// Subscribed endpoints.
    pub endpoints: Vec<String>,
    /// JSON body.
    pub payload: String,
}

const COLUMNS: &str = "id, kind, subject, dedup_key, detail, count, at, last_at";

fn alert_of(r: &DbRow) -> DbResult<SecurityAlert> {
    let c = Cols::new(r, "security_alerts");
    let id = c.u64(0)?;
    let c = c.keyed(id);
    Ok(SecurityAlert {
        id,
        kind: c.text(1)?,
        subject: c.text(2)?,
        key: c.text(3)?,
        detail: c.text(4)?,
        count: c.u64(5)?,
        first_at: c.u64(6)?,
        last_at: c.u64(7)?,
    })
}

impl Db {
    /// Records an occurrence: a new key is a new alert, a known one counts on. When this
    /// occurrence makes the count cross the threshold, `notice` is queued in the same
    /// transaction (once per key, whatever the concurrency).
    pub(crate) async fn record_security(
        &self,
        o: &Occurrence,
        notice: Option<&Notice>,
    ) -> DbResult<()> {
        let upsert = Sql::new(
            "INSERT INTO security_alerts (at, kind, sensor_id, seq, logged_idx, envelope_sha256, dedup_key, subject, detail, count, last_at) \
             VALUES ($1, $2, $3, 0, 0, $4, $5, $3, $6, $7, $1) \
             ON CONFLICT (dedup_key) DO UPDATE SET count = security_alerts.count + excluded.count, last_at = excluded.last_at",
        )
        .u64(o.at)
        .text(o.kind)
        .text(&o.subject)
        .bytes(&o.sample_sha256)
        .text(&o.key)
        .text(&o.detail)
        .u64(o.n);
        let mut stmts = vec![upsert];
        if let Some(n) = notice {
            for endpoint in &n.endpoints {
                // Only if this occurrence crossed the threshold.
                let guarded = Sql::new(
                    "INSERT INTO webhook_outbox (msg_id, endpoint_id, event_type, payload, created_at, state, attempts, next_attempt_at, locked_until) \
                     SELECT $1, $2, 'security.alert', $3, $4, 'pending', 0, $4, 0 WHERE EXISTS (SELECT 1 FROM security_alerts \
                     WHERE dedup_key = $5 AND count >= $6 AND count - $7 < $6)",
                )
                .text(&n.msg_id)
                .text(endpoint)
                .text(&n.payload)
                .u64(o.at)
                .text(&o.key)
                .u64(o.threshold)
                .u64(o.n);
                stmts.push(guarded);
            }
        }
        self.exec_all(stmts).await.map(drop)
    }

    /// Security alerts in id order after `after`, of one kind if given, at most `limit`.
    pub(crate) async fn security_alerts(
        &self,
        kind: Option<&str>,
        after: u64,
        limit: u32,
    ) -> DbResult<Vec<SecurityAlert>> {
        let (text, s) = match kind {
            Some(k) => (
                format!("SELECT {COLUMNS} FROM security_alerts WHERE id > $1 AND kind = $3 ORDER BY id LIMIT $2"),
                Some(k),
            ),
            None => (
                format!("SELECT {COLUMNS} FROM security_alerts WHERE id > $1 ORDER BY id LIMIT $2"),
                None,
            ),
        };
        let mut q = Sql::new(text).u64(after).u64(u64::from(limit));
        if let Some(k) = s {
            q = q.text(k);
        }
        self.decode_all(q, alert_of).await
    }
}
