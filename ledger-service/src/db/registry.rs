//! The registry's storage: nothing of its own but the logged registry events (entries of kind 2,
//! indexed by migration 0004): the registry is rebuilt from them.

use super::log::index_and_data;
use super::{Db, DbResult, Sql};

impl Db {
    /// The logged registry events before index `size`, in log order (the registry as of a
    /// checkpoint of that size).
    pub(crate) async fn registry_entries_before(&self, size: u64) -> DbResult<Vec<(u64, Vec<u8>)>> {
        let s =
            Sql::new("SELECT idx, leaf_data FROM entries WHERE kind = 2 AND idx < $1 ORDER BY idx")
                .u64(size);
        self.decode_all(s, index_and_data).await
    }

    /// At most `limit` logged registry events (with shard starts and carried events) with
    /// index in `[start, end)`, in log order.
    pub(crate) async fn registry_entries_in(
        &self,
        start: u64,
        end: u64,
        limit: u64,
    ) -> DbResult<Vec<(u64, Vec<u8>)>> {
        let s = Sql::new(
            "SELECT idx, leaf_data FROM entries WHERE kind IN (2, 4, 5) AND idx >= $1 AND idx < $2 \
             ORDER BY idx LIMIT $3",
        )
        .u64(start)
        .u64(end)
        .u64(limit);
        self.decode_all(s, index_and_data).await
    }
}
