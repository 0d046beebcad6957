//! The service's URLs. A gateway may be given several (`GATEWAY_SERVICE_URL=https://a,https://b`,
//! one per `ledger-service` node): it talks to one at a time and moves to the next when that one
//! is unreachable or not ready (a standby node answers `503`, a node whose database is failing
//! over answers `503` or `500`, a read node `421`). Readings are resubmitted as they are: the service answers a
//! reading it already logged with its first receipt, so moving never duplicates one.

use std::sync::atomic::{AtomicUsize, Ordering};

/// The configured service URLs and the one in use.
#[derive(Debug)]
pub struct Services {
    urls: Vec<String>,
    active: AtomicUsize,
}

impl Services {
    /// Parses a comma-separated list of base URLs (each `http://` or `https://`, no trailing
    /// slash needed; empty entries refused).
    pub fn parse(list: &str) -> anyhow::Result<Self> {
        let mut urls = Vec::new();
        for raw in list.split(',') {
            let url = raw.trim().trim_end_matches('/');
            anyhow::ensure!(
                !url.is_empty(),
                "GATEWAY_SERVICE_URL {list:?}: an empty URL in the list"
            );
            let parsed = reqwest::Url::parse(url)
                .map_err(|e| anyhow::anyhow!("GATEWAY_SERVICE_URL {url:?}: {e}"))?;
            anyhow::ensure!(
                parsed.query().is_none() && parsed.fragment().is_none(),
                "GATEWAY_SERVICE_URL {url:?}: a base URL has no query or fragment"
            );
            if !urls.iter().any(|u| u == url) {
                urls.push(url.to_string());
            }
        }
        Ok(Self {
            urls,
            active: AtomicUsize::new(0),
        })
    }

    /// Every URL, in the configured order.
    pub fn all(&self) -> &[String] {
        &self.urls
    }

    /// How many there are.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Whether there is none (never, once parsed).
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The URL in use and its position (give the position back to [`Services::fail_over`]).
    pub fn active(&self) -> (usize, &str) {
        let i = self.active.load(Ordering::SeqCst) % self.urls.len().max(1);
        (i, self.urls.get(i).map_or("", String::as_str))
    }

    /// Moves to the URL after `from` (if another task has not moved already); returns whether
    /// there is another URL to move to.
    pub fn fail_over(&self, from: usize) -> bool {
        if self.urls.len() < 2 {
            return false;
        }
        let next = (from + 1) % self.urls.len();
        let _ = self
            .active
            .compare_exchange(from, next, Ordering::SeqCst, Ordering::SeqCst);
        true
    }
}

/// Whether an upload answered with `status` should move to the next service node: one that is
/// not ready (503: a standby or an overloaded node; 502/504: a proxy without a node behind it;
/// 500: a node whose database is failing over) or never takes ingest (421: a read node). Other
/// answers are the same at every node.
pub fn move_on(status: u16) -> bool {
    matches!(status, 421 | 500 | 502 | 503 | 504)
}

#[cfg(test)]
mod tests {
    use super::Services;

    #[test]
    fn a_list_of_urls_is_used_in_turn() {
        let s = Services::parse("http://127.0.0.1:1/, http://127.0.0.1:2,http://127.0.0.1:1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.all(), ["http://127.0.0.1:1", "http://127.0.0.1:2"]);
        assert_eq!(s.active(), (0, "http://127.0.0.1:1"));
        assert!(s.fail_over(0));
        assert_eq!(s.active(), (1, "http://127.0.0.1:2"));
        // A second task that failed on the first URL does not move the gateway back.
        assert!(s.fail_over(0));
        assert_eq!(s.active().0, 1);
        assert!(s.fail_over(1));
        assert_eq!(s.active().0, 0);
        let one = Services::parse("https://ledger.example").unwrap_or_else(|e| panic!("{e}"));
        assert!(!one.fail_over(0));
        assert_eq!(one.active(), (0, "https://ledger.example"));
    }

    #[test]
    fn only_answers_another_node_may_better_move_on() {
        use super::move_on;
        for s in [421, 500, 502, 503, 504] {
            assert!(move_on(s), "{s}");
        }
        // The same at every node: a bad batch, a refused token, a rate limit.
        for s in [200, 400, 401, 403, 413, 422, 429] {
            assert!(!move_on(s), "{s}");
        }
    }

    #[test]
    fn a_broken_list_is_refused() {
        for bad in [
            "",
            "http://a,,http://b",
            "not a url",
            "http://a?x=1",
            "http://a,",
        ] {
            assert!(Services::parse(bad).is_err(), "{bad:?}");
        }
    }
}
