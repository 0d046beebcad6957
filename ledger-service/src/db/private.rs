//! Private messages (issue #17): the query copy of what a private envelope exposes, never its
//! content. Written with the entry in the sequencer's transaction (a side row).

use super::{Cols, Db, DbResult, Sql};
use std::collections::HashMap;

/// The query row of a logged private message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateRow {
    /// Log index.
    pub idx: u64,
    /// Household.
    pub household: String,
    /// Gateway id.
    pub gateway_id: String,
    /// The gateway's message number.
    pub msg_seq: u64,
    /// Received-at (gateway), ms.
    pub received_at: u64,
    /// SHA-256 of the envelope bytes (duplicate vs equivocation).
    pub envelope_sha256: [u8; 32],
}

/// One message of a household's feed.
#[derive(Debug, Clone)]
pub struct FeedItem {
    /// Log index.
    pub idx: u64,
    /// The entry's leaf data.
    pub leaf: Vec<u8>,
}

pub(super) fn write_private(r: &PrivateRow) -> Sql {
    Sql::new(
        "INSERT INTO private_messages (idx, household, gateway_id, msg_seq, received_at, envelope_sha256) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .u64(r.idx)
    .text(&r.household)
    .text(&r.gateway_id)
    .u64(r.msg_seq)
    .u64(r.received_at)
    .bytes(&r.envelope_sha256)
}

impl Db {
    /// Logged private messages by (gateway, message number): (index, envelope hash).
    pub(crate) async fn existing_private(
        &self,
        keys: &[(String, u64)],
    ) -> DbResult<HashMap<(String, u64), (u64, [u8; 32])>> {
        let mut out = HashMap::new();
        for (gateway, seq) in keys {
            let s = Sql::new(
                "SELECT idx, envelope_sha256 FROM private_messages WHERE gateway_id = $1 AND msg_seq = $2",
            )
            .text(gateway)
            .u64(*seq);
            let found = self
                .decode_one(s, |r| {
                    let c = Cols::new(r, "private_messages");
                    let idx = c.u64(0)?;
                    Ok((idx, c.keyed(idx).hash(1)?))
                })
                .await?;
            if let Some(e) = found {
                out.insert((gateway.clone(), *seq), e);
            }
        }
        Ok(out)
    }

    /// Each gateway's highest logged private message number.
    pub(crate) async fn max_private_seqs(&self) -> DbResult<Vec<(String, u64)>> {
        let s =
            Sql::new("SELECT gateway_id, MAX(msg_seq) FROM private_messages GROUP BY gateway_id");
        self.decode_all(s, |r| {
            let c = Cols::new(r, "private_messages");
            let gateway = c.text(0)?;
            let c = c.keyed(&gateway);
            Ok((gateway, c.u64(1)?))
        })
        .await
    }

    /// A household's messages logged after index `after` (from the start if `None`), below
    /// `end`, oldest first, at most `limit`.
    pub(crate) async fn private_feed(
        &self,
        household: &str,
        after: Option<u64>,
        end: u64,
        limit: u64,
    ) -> DbResult<Vec<FeedItem>> {
        let s = Sql::new(
            "SELECT p.idx, e.leaf_data FROM private_messages p \
             JOIN entries e ON e.idx = p.idx \
             WHERE p.household = $1 AND p.idx >= $2 AND p.idx < $3 ORDER BY p.idx LIMIT $4",
        )
        .text(household)
        .u64(after.map_or(0, |a| a + 1))
        .u64(end)
        .u64(limit);
        self.decode_all(s, |r| {
            let c = Cols::new(r, "private_messages");
            let idx = c.u64(0)?;
            let c = c.keyed(idx);
            Ok(FeedItem {
                idx,
                leaf: c.bytes(1)?,
            })
        })
        .await
    }

    /// Number of private messages stored.
    pub async fn count_private(&self) -> DbResult<u64> {
        let s = Sql::new("SELECT COUNT(*) FROM private_messages");
        Ok(self.number("private_messages", s).await?.unwrap_or(0))
    }
}
