//! One sequencer per log. On PostgreSQL, the node whose dedicated connection holds the log's
//! advisory lock is the leader and runs the sequencer; other nodes are hot standbys: they
//! answer `503` (problem type `standby`) to the API, report not ready, and block on the lock;
//! when the leader dies its session ends, the lock is released, and a standby takes over — it
//! reloads the log's state from the database and starts its sequencer. On SQLite (one process)
//! the node is always the leader.
//!
//! Fencing: each new leader increments `sequencer_epoch` in `log_meta`; every batch transaction
//! locks that row and commits only if it still holds the leader's epoch, so a leader that lost
//! its lock without noticing cannot write after its successor started.

/// The advisory lock key of a log: derived from its vkey (so two logs in one database never
/// share it).
pub fn lock_key(vkey: &str) -> i64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(format!("vitals-ledger sequencer {vkey}").as_bytes());
    i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The leader's lock: a dedicated connection (not from the pool, so its session — and the lock
/// — ends exactly when it is dropped or the process dies).
pub struct LeaderLock {
    conn: sqlx::PgConnection,
}

impl LeaderLock {
    /// Connects; takes the lock if it is free, else returns the connection as a [`Standby`].
    pub async fn try_acquire(
        url: &str,
        key: i64,
    ) -> Result<Result<Self, Standby>, crate::db::StorageError> {
        // The primary's, when the URL names several hosts (`db/hosts.rs`).
        let mut conn = crate::db::hosts::connect_url(url).await?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        Ok(if got {
            Ok(Self { conn })
        } else {
            Err(Standby { conn, key })
        })
    }

    /// Whether the lock's session is still alive.
    pub async fn alive(&mut self) -> bool {
        sqlx::query("SELECT 1")
            .execute(&mut self.conn)
            .await
            .is_ok()
    }
}

/// A standby's connection, waiting for the lock.
pub struct Standby {
    conn: sqlx::PgConnection,
    key: i64,
}

impl Standby {
    /// Blocks until the lock is free, then holds it.
    pub async fn wait(mut self) -> Result<LeaderLock, sqlx::Error> {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(self.key)
            .execute(&mut self.conn)
            .await?;
        Ok(LeaderLock { conn: self.conn })
    }
}
