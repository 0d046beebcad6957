//! The registry's storage: nothing of its own but the logged registry events (entries of kind 2,
//! indexed by migration 0004) — the registry is rebuilt from them — and the API tokens.

use super::log::index_and_data;
use super::{Cols, Db, DbResult, Sql};

impl Db {
    /// The logged registry events before index `size`, in log order (the registry as of a
    /// checkpoint of that size).
    pub(crate) async fn registry_entries_before(&self, size: u64) -> DbResult<Vec<(u64, Vec<u8>)>> {
        let s =
            Sql::new("SELECT idx, leaf_data FROM entries WHERE kind = 2 AND idx < $1 ORDER BY idx")
                .u64(size);
        self.decode_all(s, index_and_data).await
    }

    /// Stores a token hash with its role.
    pub(crate) async fn insert_token(
        &self,
        hash: &[u8],
        role: &str,
        name: &str,
        at: u64,
    ) -> DbResult<()> {
        let s = Sql::new(
            "INSERT INTO tokens (token_hash, role, name, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bytes(hash)
        .text(role)
        .text(name)
        .u64(at);
        self.exec(s).await.map(drop)
    }

    /// The role and name of a token hash.
    pub(crate) async fn token(&self, hash: &[u8]) -> DbResult<Option<(String, String)>> {
        let s = Sql::new("SELECT role, name FROM tokens WHERE token_hash = $1").bytes(hash);
        self.decode_one(s, |r| {
            let c = Cols::new(r, "tokens").keyed("(a token hash)");
            Ok((c.text(0)?, c.text(1)?))
        })
        .await
    }
}
