//! A real browser for the web app's tests: Debian's `chromium`, headless, driven through
//! `chromedriver` (WebDriver, with fantoccini). Requests are watched twice:
//!
//! - the page's own requests (documents, scripts, fetches, WebAssembly — whatever its code
//!   asks for, including what a content security policy then blocks) from Chromium's network
//!   log of the page ([`Browser::page_requests`], the DevTools `Network.requestWillBeSent`
//!   events chromedriver records);
//! - everything the browser sends, through a recording proxy on 127.0.0.1
//!   ([`Browser::proxied`]) that forwards requests to loopback addresses and refuses every
//!   other, so nothing leaves the machine whatever the browser does. Chromium's implicit
//!   loopback bypass is switched off (`<-loopback>`), so the page's requests cross it too.
//!   Chromium's own background requests (its update and account services, which the flags
//!   below mostly but not always silence) are refused there.
//!
//! The gate: [`Browser::available`] is false when chromium or chromedriver is missing (the test
//! says so and passes), unless `WEB_TESTS_REQUIRED` is set (`scripts/test` sets it after
//! installing them), when a missing browser fails the test.

use fantoccini::wd::Capabilities;
use fantoccini::{Client, ClientBuilder};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A running headless Chromium session.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    requests: Arc<Mutex<Vec<String>>>,
    page: Mutex<Vec<String>>,
    _driver: crate::Child,
    proxy: tokio::task::JoinHandle<()>,
    profile: PathBuf,
}

fn which(name: &str, env: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")?
        .to_string_lossy()
        .split(':')
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file())
}

impl Browser {
    /// Whether chromium and chromedriver are here (`CHROMIUM`, `CHROMEDRIVER` or on `PATH`); see
    /// the module documentation for `WEB_TESTS_REQUIRED`.
    pub fn available(what: &str) -> bool {
        let found = which("chromium", "CHROMIUM").is_some()
            && which("chromedriver", "CHROMEDRIVER").is_some();
        if !found {
            if std::env::var_os("WEB_TESTS_REQUIRED").is_some() {
                panic!("WEB_TESTS_REQUIRED is set but chromium or chromedriver is missing: {what} cannot run");
            }
            eprintln!(
                "chromium or chromedriver missing: {what} skipped (scripts/test installs them)"
            );
        }
        found
    }

    /// Starts chromedriver and a headless Chromium at 1280×800 (or `width`×`height`).
    pub async fn launch(width: u32, height: u32) -> Self {
        let chromium = which("chromium", "CHROMIUM").expect("chromium");
        let chromedriver = which("chromedriver", "CHROMEDRIVER").expect("chromedriver");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_addr = listener.local_addr().unwrap();
        let proxy = tokio::spawn(record(listener, Arc::clone(&requests)));
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = crate::Child(
            Command::new(chromedriver)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting chromedriver"),
        );
        let profile = std::env::temp_dir().join(format!(
            "ledger-chromium-{}-{}",
            std::process::id(),
            rand_core::RngCore::next_u64(&mut rand_core::OsRng)
        ));
        std::fs::create_dir_all(&profile).unwrap();
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--disable-default-apps".into(),
            "--disable-domain-reliability".into(),
            "--disable-client-side-phishing-detection".into(),
            "--disable-breakpad".into(),
            "--dns-prefetch-disable".into(),
            "--no-pings".into(),
            "--disable-features=Translate,OptimizationHints,MediaRouter,NetworkTimeServiceQuerying,CertificateTransparencyComponentUpdater,AutofillServerCommunication".into(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={width},{height}"),
            format!("--proxy-server=http://{proxy_addr}"),
            "--proxy-bypass-list=<-loopback>".into(),
        ];
        let mut caps = Capabilities::new();
        caps.insert(
            "goog:chromeOptions".into(),
            // Network prediction off: Chromium would otherwise pre-connect to its default search
            // engine at start (the proxy saw `CONNECT start.duckduckgo.com:443`).
            serde_json::json!({ "binary": chromium, "args": args,
                "perfLoggingPrefs": { "enableNetwork": true, "enablePage": false },
                "prefs": { "net": { "network_prediction_options": 2 }, "search": { "suggest_enabled": false } } }),
        );
        caps.insert(
            "goog:loggingPrefs".into(),
            serde_json::json!({ "performance": "ALL" }),
        );
        let mut client = None;
        for _ in 0..100 {
            let mut b =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
            b.capabilities(caps.clone());
            match b.connect(&format!("http://127.0.0.1:{port}")).await {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        let client = client.expect("a WebDriver session with chromium");
        client.set_window_size(width, height).await.unwrap();
        // The start page is the browser's (chrome://new-tab-page…), not the app's: its
        // requests are drained from the log before the test's first navigation.
        client.goto("about:blank").await.unwrap();
        let _ = client.issue_cmd(PerformanceLog).await;
        Self {
            client,
            requests,
            page: Mutex::new(Vec::new()),
            _driver: driver,
            proxy,
            profile,
        }
    }

    /// Every request the browser sent so far, as the proxy saw it: `forwarded METHOD URL` (to
    /// a loopback address) or `refused METHOD URL` (anything else, and every `CONNECT` tunnel).
    pub fn proxied(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    /// Every URL the page asked for so far (documents, scripts, styles, fetches, WebAssembly),
    /// in order, from Chromium's network log.
    pub async fn page_requests(&self) -> Vec<String> {
        let log = self.client.issue_cmd(PerformanceLog).await.unwrap();
        let mut seen = self.page.lock().unwrap();
        for e in log.as_array().into_iter().flatten() {
            let Some(msg) = e["message"].as_str() else {
                continue;
            };
            let Ok(m) = serde_json::from_str::<serde_json::Value>(msg) else {
                continue;
            };
            if m["message"]["method"] == "Network.requestWillBeSent" {
                if let Some(u) = m["message"]["params"]["request"]["url"].as_str() {
                    seen.push(u.to_string());
                }
            }
        }
        seen.clone()
    }

    /// Waits (up to `secs`) until `script` (a JavaScript expression) is truthy; its value.
    pub async fn wait_js(&self, script: &str, secs: u64) -> serde_json::Value {
        let body = format!("return ({script});");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let v = self.client.execute(&body, vec![]).await.unwrap();
            let truthy = !matches!(&v, serde_json::Value::Null | serde_json::Value::Bool(false))
                && v != serde_json::json!(0)
                && v != serde_json::json!("");
            if truthy {
                return v;
            }
            if tokio::time::Instant::now() > deadline {
                let url = self
                    .client
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                let text = self
                    .client
                    .execute("return document.body.innerText", vec![])
                    .await
                    .unwrap_or_default();
                panic!("timed out waiting for {script} on {url}; the page says:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Opens the app at `base` and signs in with `token`.
    pub async fn sign_in(&self, base: &str, token: &str) {
        let c = &self.client;
        c.goto(&format!("{base}/app/")).await.unwrap();
        let input = c
            .wait()
            .for_element(fantoccini::Locator::Css("#token"))
            .await
            .unwrap();
        input.send_keys(token).await.unwrap();
        c.find(fantoccini::Locator::Css("#signin button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Opens a patient's charts (`range`: `1h`, `24h`, `7d` or `<from>-<to>` in ms) and waits
    /// until every chart is drawn.
    pub async fn open_patient(&self, base: &str, patient: &str, range: &str) {
        self.client
            .goto(&format!("{base}/app/#/patients/{patient}/{range}"))
            .await
            .unwrap();
        self.wait_js(
            "performance.getEntriesByName('patient-charts-drawn').length > 0",
            20,
        )
        .await;
    }

    /// Pins a log key and issuer certificates (PEM, concatenated) through the Verify page's
    /// form, as a user would; the page's confirmation.
    pub async fn pin_trust(&self, base: &str, vkey: &str, issuers_pem: &str) -> String {
        let c = &self.client;
        c.goto(&format!("{base}/app/#/verify")).await.unwrap();
        self.wait_js("document.getElementById('pin-log-key')", 20)
            .await;
        let key = c
            .find(fantoccini::Locator::Css("#pin-log-key"))
            .await
            .unwrap();
        key.clear().await.unwrap();
        key.send_keys(vkey).await.unwrap();
        c.execute(
            "document.getElementById('pin-issuers').value = arguments[0]; return true;",
            vec![serde_json::json!(issuers_pem)],
        )
        .await
        .unwrap();
        c.find(fantoccini::Locator::Css("#pin-save"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let msg = self
            .wait_js("document.getElementById('pin-message').textContent", 10)
            .await;
        msg.as_str().unwrap_or_default().to_string()
    }

    /// Runs a JavaScript body (with `return`) and gives its value.
    pub async fn js(&self, body: &str) -> serde_json::Value {
        self.client.execute(body, vec![]).await.unwrap()
    }

    /// The page's requests that went over the network to anywhere but `origin` (a `data:` URL
    /// is not a request over the network; `blob:` URLs of `origin` are the page's own memory).
    pub async fn requests_elsewhere(&self, origin: &str) -> Vec<String> {
        let own = format!("{}/", origin.trim_end_matches('/'));
        self.page_requests()
            .await
            .into_iter()
            .filter(|u| {
                !(u.starts_with(&own)
                    || u.starts_with("data:")
                    || u.starts_with(&format!("blob:{own}"))
                    || u == "about:blank")
            })
            .collect()
    }

    /// Ends the session and the browser.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
        self.proxy.abort();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// chromedriver's log endpoint, for the performance (DevTools) log.
#[derive(Debug)]
struct PerformanceLog;

impl fantoccini::wd::WebDriverCompatibleCommand for PerformanceLog {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or("")))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"performance"}"#.into()))
    }
}

/// The recording proxy: one request per connection (it asks both sides to close after it).
async fn record(listener: TcpListener, seen: Arc<Mutex<Vec<String>>>) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            return;
        };
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            let _ = forward(conn, seen).await;
        });
    }
}

async fn forward(mut client: TcpStream, seen: Arc<Mutex<Vec<String>>>) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 || head.len() > 64 * 1024 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or_default().to_string();
    let mut parts = first.split(' ');
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let loopback = |host: &str| {
        let h = host.rsplit_once(':').map_or(host, |(h, _)| h);
        matches!(h, "127.0.0.1" | "localhost" | "[::1]")
    };
    let authority = target
        .strip_prefix("http://")
        .map(|rest| rest.split('/').next().unwrap_or(""));
    let Some(authority) = authority.filter(|a| method != "CONNECT" && loopback(a)) else {
        seen.lock()
            .unwrap()
            .push(format!("refused {method} {target}"));
        client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    };
    let addr: SocketAddr =
        match tokio::net::lookup_host(authority.replace("localhost", "127.0.0.1"))
            .await?
            .next()
        {
            Some(a) => a,
            None => return Ok(()),
        };
    seen.lock()
        .unwrap()
        .push(format!("forwarded {method} {target}"));
    let mut upstream = TcpStream::connect(addr).await?;
    let mut out = format!("{first}\r\n");
    for h in lines.filter(|l| !l.is_empty()) {
        let name = h
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if name != "connection" && name != "proxy-connection" && name != "keep-alive" {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    upstream.write_all(out.as_bytes()).await?;
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let body = tokio::spawn(async move {
        let _ = tokio::io::copy(&mut cr, &mut uw).await;
    });
    let _ = tokio::io::copy(&mut ur, &mut cw).await;
    let _ = cw.shutdown().await;
    body.abort();
    Ok(())
}
