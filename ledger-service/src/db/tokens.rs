//! API tokens: stored only as the SHA-256 of the secret, with a public id, role, expiry,
//! revocation, last use and (for a gateway token) the gateway it speaks for.

use super::{Cols, Db, DbResult, DbRow, Sql};

/// A token as stored (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct TokenRow {
    /// Public id, `tok_<16 hex>` (the first 8 bytes of the hash).
    pub id: String,
    /// Role name.
    pub role: String,
    /// A name to recognise it by (recorded as the actor of what it does).
    pub name: String,
    /// For a gateway token: the gateway id it may submit for, or `*` for any gateway.
    pub gateway: Option<String>,
    /// Created, ms.
    pub created_at: u64,
    /// Who created it: `cli` or the creating token's name.
    pub created_by: String,
    /// Refused from this time on, ms.
    pub expires_at: u64,
    /// Revoked at, ms.
    pub revoked_at: Option<u64>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// Last accepted use (recorded at most once a minute), ms.
    pub last_used_at: Option<u64>,
}

impl TokenRow {
    /// `active`, `expired` or `revoked` at `now`.
    pub fn state(&self, now: u64) -> &'static str {
        if self.revoked_at.is_some() {
            "revoked"
        } else if self.expires_at <= now {
            "expired"
        } else {
            "active"
        }
    }
}

const COLUMNS: &str = "id, role, name, gateway_id, created_at, created_by, expires_at, revoked_at, revoked_by, last_used_at";

fn token_row(r: &DbRow) -> DbResult<TokenRow> {
    let c = Cols::new(r, "tokens");
    let id = c.text(0)?;
    let c = c.keyed(&id);
    Ok(TokenRow {
        id,
        role: c.text(1)?,
        name: c.text(2)?,
        gateway: c.opt_text(3)?,
        created_at: c.u64(4)?,
        created_by: c.text(5)?,
        expires_at: c.u64(6)?,
        revoked_at: c.opt_u64(7)?,
        revoked_by: c.opt_text(8)?,
        last_used_at: c.opt_u64(9)?,
    })
}

impl Db {
    /// Stores a token by the hash of its secret.
    pub(crate) async fn insert_token(&self, hash: &[u8], t: &TokenRow) -> DbResult<()> {
        let s = Sql::new(
            "INSERT INTO tokens (token_hash, id, role, name, gateway_id, created_at, created_by, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bytes(hash)
        .text(&t.id)
        .text(&t.role)
        .text(&t.name)
        .opt_text(t.gateway.as_deref())
        .u64(t.created_at)
        .text(&t.created_by)
        .u64(t.expires_at);
        self.exec(s).await.map(drop)
    }

    /// The token with this secret hash (whatever its state).
    pub(crate) async fn token(&self, hash: &[u8]) -> DbResult<Option<TokenRow>> {
        let s = Sql::new(format!(
            "SELECT {COLUMNS} FROM tokens WHERE token_hash = $1"
        ))
        .bytes(hash);
        self.decode_one(s, token_row).await
    }

    /// The token with this public id.
    pub(crate) async fn token_by_id(&self, id: &str) -> DbResult<Option<TokenRow>> {
        let s = Sql::new(format!("SELECT {COLUMNS} FROM tokens WHERE id = $1")).text(id);
        self.decode_one(s, token_row).await
    }

    /// Tokens in (created-at, id) order after `after`, at most `limit`.
    pub(crate) async fn tokens_page(
        &self,
        after: Option<(u64, &str)>,
        limit: u32,
    ) -> DbResult<Vec<TokenRow>> {
        let (at, id) = after.map_or((None, None), |(a, i)| (Some(a), Some(i)));
        let s = Sql::new(format!(
            "SELECT {COLUMNS} FROM tokens \
             WHERE ($1 IS NULL OR created_at > $1 OR (created_at = $1 AND id > $2)) \
             ORDER BY created_at, id LIMIT $3"
        ))
        .opt_u64(at)
        .opt_text(id)
        .u64(limit.into());
        self.decode_all(s, token_row).await
    }

    /// Revokes a token that is not revoked yet; false if it was (or does not exist).
    pub(crate) async fn revoke_token(&self, id: &str, at: u64, by: &str) -> DbResult<bool> {
        let s = Sql::new(
            "UPDATE tokens SET revoked_at = $2, revoked_by = $3 WHERE id = $1 AND revoked_at IS NULL",
        )
        .text(id)
        .u64(at)
        .text(by);
        Ok(self.exec(s).await? == 1)
    }

    /// Brings a token's expiry forward to `at` (never later than it was).
    pub(crate) async fn expire_token_by(&self, id: &str, at: u64) -> DbResult<()> {
        let s = Sql::new(
            "UPDATE tokens SET expires_at = CASE WHEN expires_at > $2 THEN $2 ELSE expires_at END WHERE id = $1",
        )
        .text(id)
        .u64(at);
        self.exec(s).await.map(drop)
    }

    /// Records a token's use.
    pub(crate) async fn touch_token(&self, hash: &[u8], at: u64) -> DbResult<()> {
        let s = Sql::new("UPDATE tokens SET last_used_at = $2 WHERE token_hash = $1")
            .bytes(hash)
            .u64(at);
        self.exec(s).await.map(drop)
    }
}
