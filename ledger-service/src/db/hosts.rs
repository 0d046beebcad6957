//! Several PostgreSQL hosts in one `DATABASE_URL`, as libpq writes them
//! (`postgres://user@h1:5432,h2:5432,h3:5432/ledger`), and finding the primary among them: the
//! first host that answers and is not in recovery (libpq's `target_session_attrs=read-write`).
//! After a fail-over (Patroni promotes a standby) the pool's watcher finds the new primary and
//! points new connections at it; a connection that would land on a standby is refused when it
//! is made, so no write reaches a read-only server and no read is served from one by accident.

use super::{DbResult, StorageError};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool};
use sqlx::{ConnectOptions, Connection};
use std::str::FromStr;
use std::time::Duration;

/// How long one host may take to answer when the primary is looked for.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How often a pool over several hosts checks that it still points at the primary.
const WATCH_EVERY: Duration = Duration::from_millis(500);

/// The connect options of each host in `url`, in order (one for a plain URL).
pub fn targets(url: &str) -> DbResult<Vec<PgConnectOptions>> {
    let bad = |detail: String| StorageError::Unavailable(sqlx::Error::Configuration(detail.into()));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("DATABASE_URL has no scheme".into()))?;
    // The authority ends at the first '/', '?' or '#'; user info before the last '@'.
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => (&authority[..=at], &authority[at + 1..]),
        None => ("", authority),
    };
    // target_session_attrs is what this module does; sqlx does not know the parameter.
    let tail = strip_param(tail, "target_session_attrs");
    let mut out = Vec::new();
    for host in hosts.split(',') {
        if host.is_empty() {
            return Err(bad("DATABASE_URL has an empty host in its host list".into()));
        }
        let one = format!("{scheme}://{userinfo}{host}{tail}");
        out.push(PgConnectOptions::from_str(&one)?);
    }
    Ok(out)
}

/// `tail` (path, query) without the query parameter `name`.
fn strip_param(tail: &str, name: &str) -> String {
    let Some((path, query)) = tail.split_once('?') else {
        return tail.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|kv| !kv.is_empty() && kv.split('=').next() != Some(name))
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

/// Whether the server behind `conn` is a primary (not in recovery, writes allowed).
pub async fn is_primary(conn: &mut PgConnection) -> Result<bool, sqlx::Error> {
    let standby: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(&mut *conn)
        .await?;
    Ok(!standby)
}

/// Connects to the first of `targets` that is a primary; with one target, to it whatever it is
/// (a single server is used as configured). Returns the connection and that target's options.
pub async fn connect_primary(
    targets: &[PgConnectOptions],
) -> Result<(PgConnection, PgConnectOptions), sqlx::Error> {
    if let [only] = targets {
        return Ok((only.connect().await?, only.clone()));
    }
    connect_first(targets, true).await
}

/// Connects to the first of `targets` that answers, primary or standby (a read node's).
pub async fn connect_any(
    targets: &[PgConnectOptions],
) -> Result<(PgConnection, PgConnectOptions), sqlx::Error> {
    connect_first(targets, false).await
}

/// The first of `targets` that answers within [`PROBE_TIMEOUT`] (and, with `primary`, is not in
/// recovery); the error names the last host's failure.
async fn connect_first(
    targets: &[PgConnectOptions],
    primary: bool,
) -> Result<(PgConnection, PgConnectOptions), sqlx::Error> {
    let mut last = None;
    for t in targets {
        let probe = async {
            let mut conn = t.connect().await?;
            let usable = !primary || is_primary(&mut conn).await?;
            Ok::<_, sqlx::Error>((conn, usable))
        };
        let host = format!("{}:{}", t.get_host(), t.get_port());
        match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
            Ok(Ok((conn, true))) => return Ok((conn, t.clone())),
            Ok(Ok((conn, false))) => {
                let _ = conn.close().await;
                last = Some(format!("{host} is a standby"));
            }
            Ok(Err(e)) => last = Some(format!("{host}: {e}")),
            Err(_) => last = Some(format!("{host}: no answer")),
        }
    }
    let want = if primary {
        "no primary among"
    } else {
        "none answers of"
    };
    Err(sqlx::Error::Configuration(
        format!(
            "{want} the {} database hosts (last: {})",
            targets.len(),
            last.unwrap_or_default()
        )
        .into(),
    ))
}

/// How far a standby's replay is behind what it received, ms (0 on a primary, or when it has
/// replayed everything it received).
pub async fn replay_lag_ms(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let lag: f64 = sqlx::query_scalar(
        "SELECT CASE WHEN NOT pg_is_in_recovery() \
              OR pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn() THEN 0 \
              ELSE COALESCE(EXTRACT(EPOCH FROM (now() - pg_last_xact_replay_timestamp())) * 1000, 0) \
         END::float8",
    )
    .fetch_one(pool)
    .await?;
    Ok(lag.max(0.0) as u64)
}

/// Connects to `url`'s primary (the election's dedicated connection).
pub async fn connect_url(url: &str) -> DbResult<PgConnection> {
    let targets = targets(url)?;
    Ok(connect_primary(&targets).await?.0)
}

/// Keeps a pool over several hosts pointed at the primary (or, for a read node, `primary` false,
/// at a host that answers): every [`WATCH_EVERY`] it asks the pool's server whether it is still
/// the primary (or answers); when not, it looks among the hosts again and gives the pool the new
/// target. Ends with the pool.
pub fn watch(pool: PgPool, targets: Vec<PgConnectOptions>, primary: bool) {
    if targets.len() < 2 {
        return;
    }
    tokio::spawn(async move {
        let mut current = String::new();
        loop {
            tokio::time::sleep(WATCH_EVERY).await;
            if pool.is_closed() {
                return;
            }
            let ok = tokio::time::timeout(PROBE_TIMEOUT, async {
                let mut conn = pool.acquire().await?;
                Ok::<_, sqlx::Error>(!primary || is_primary(&mut conn).await?)
            })
            .await;
            if matches!(ok, Ok(Ok(true))) {
                continue;
            }
            let found = if primary {
                connect_primary(&targets).await
            } else {
                connect_any(&targets).await
            };
            match found {
                Ok((conn, t)) => {
                    let _ = conn.close().await;
                    let name = format!("{}:{}", t.get_host(), t.get_port());
                    if name != current {
                        tracing::warn!(host = %name, primary, "database fail-over: new connections go to this host");
                        current = name;
                    }
                    pool.set_connect_options(t);
                }
                Err(e) => tracing::warn!(error = %e, "looking for the database primary"),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::targets;

    #[test]
    fn a_host_list_gives_one_target_per_host() {
        let t = targets(
            "postgres://u:p@127.0.0.1:15430,db2:15431,[::1]:15432/ledger?target_session_attrs=read-write&sslmode=disable",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let hosts: Vec<(String, u16)> = t
            .iter()
            .map(|o| (o.get_host().to_string(), o.get_port()))
            .collect();
        assert_eq!(hosts[0], ("127.0.0.1".to_string(), 15430));
        assert_eq!(hosts[1], ("db2".to_string(), 15431));
        assert_eq!(hosts[2].1, 15432);
        assert!(t.iter().all(|o| o.get_database() == Some("ledger")));
        assert!(t.iter().all(|o| o.get_username() == "u"));
        // One host is one target.
        assert_eq!(
            targets("postgres://postgres@127.0.0.1:5432/x")
                .map(|t| t.len())
                .ok(),
            Some(1)
        );
    }

    #[test]
    fn a_broken_host_list_is_refused() {
        for bad in [
            "postgres://u@h1:5432,,h3:5432/ledger",
            "postgres://u@h1:5432,/ledger",
            "no-scheme",
            "postgres://u@h1:notaport,h2:5432/ledger",
        ] {
            assert!(targets(bad).is_err(), "{bad}");
        }
    }
}
