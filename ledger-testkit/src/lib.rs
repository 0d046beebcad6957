//! # ledger-testkit
//!
//! The test kit every test crate shares: a real `ledger-service` on port 0 ([`TestApp`]) over a
//! fresh PostgreSQL database (at `DATABASE_URL`, default
//! `postgres://postgres@127.0.0.1:5432/postgres`) or a fresh SQLite file ([`Storage`]), with
//! tokens for every role; a typed HTTP client on it; a device factory ([`Devices`]: an issuer,
//! sensors and gateways with test-only keys, and their signed envelopes); the engine selection
//! (`LEDGER_TEST_ENGINES`, [`Engine`]); the interop gate ([`interop_python`]); the workspace's
//! binaries built on demand ([`binary`]); child processes killed on drop ([`Child`]).
//!
//! Only test crates depend on it (as a dev-dependency); it is the one crate that depends on the
//! service for tests, so no product crate depends on another.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)] // test code may panic on broken fixtures

pub mod browser;
pub mod ha;
mod process;
pub use browser::Browser;
pub use fantoccini;
pub use process::{binary, free_udp, http_get, metric, Child};

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use ed25519_dalek::SigningKey;
use ledger_service::config::Config;
use ledger_service::{create_token, Db, Role, Shared};
use provenance_core::cert::{self, CertParams, DeviceCert, Role as CertRole};
use provenance_core::cose::{GatewayEnvelope, SignedReading};
use provenance_core::note::NoteSigner;
use provenance_core::reading::{Decimal, Measurement, Reading};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::oneshot;

/// Which storage engine a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Postgres,
    Sqlite,
}

impl Engine {
    /// Whether `LEDGER_TEST_ENGINES` (a comma-separated list: `postgres`, `sqlite`; both when
    /// unset) lets tests run on this engine. `LEDGER_TEST_ENGINES=sqlite` runs the suite without
    /// PostgreSQL: tests of both engines run their SQLite half, tests that need no particular
    /// engine run on SQLite, PostgreSQL-only tests (the election) are skipped with a note.
    pub fn enabled(self) -> bool {
        let name = match self {
            Engine::Postgres => "postgres",
            Engine::Sqlite => "sqlite",
        };
        std::env::var("LEDGER_TEST_ENGINES")
            .map(|v| v.split(',').any(|e| e.trim().eq_ignore_ascii_case(name)))
            .unwrap_or(true)
    }

    /// The engine for a test that needs no particular one: PostgreSQL (production) when
    /// enabled, else SQLite.
    pub fn preferred() -> Self {
        if Engine::Postgres.enabled() {
            Engine::Postgres
        } else {
            Engine::Sqlite
        }
    }

    /// For a test that needs this engine: false (after a note) when it is not enabled.
    pub fn required(self, test: &str) -> bool {
        let ok = self.enabled();
        if !ok {
            eprintln!("{test}: skipped, LEDGER_TEST_ENGINES leaves out {self:?}");
        }
        ok
    }
}

/// Where the test database lives, kept across restarts.
#[derive(Clone)]
pub struct Storage {
    pub url: String,
    pg_name: Option<String>,
    dir: PathBuf,
}

pub fn admin_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn unique(prefix: &str) -> String {
    let mut raw = [0u8; 6];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut raw);
    format!("{prefix}_{}", hex::encode(raw))
}

impl Storage {
    pub async fn fresh(engine: Engine) -> Self {
        let dir = std::env::temp_dir().join(unique("ledger_test"));
        std::fs::create_dir_all(&dir).unwrap();
        match engine {
            Engine::Sqlite => Self {
                url: format!("sqlite://{}", dir.join("ledger.sqlite").display()),
                pg_name: None,
                dir,
            },
            Engine::Postgres => {
                let name = unique("ledger_test");
                let admin = sqlx::PgPool::connect(&admin_url())
                    .await
                    .expect("PostgreSQL at DATABASE_URL");
                sqlx::query(&format!("CREATE DATABASE {name}"))
                    .execute(&admin)
                    .await
                    .unwrap();
                admin.close().await;
                let base = admin_url();
                let url = match base.rfind('/') {
                    Some(i)
                        if base[..i].contains("://")
                            && base[i..].len() > 1
                            && !base[i..].contains('@') =>
                    {
                        format!("{}/{name}", &base[..i])
                    }
                    _ => format!("{base}/{name}"),
                };
                Self {
                    url,
                    pg_name: Some(name),
                    dir,
                }
            }
        }
    }

    /// A new database holding a copy of this one (which must not be in use).
    pub async fn copy(&self) -> Self {
        let dir = std::env::temp_dir().join(unique("ledger_test"));
        std::fs::create_dir_all(&dir).unwrap();
        match &self.pg_name {
            None => {
                let from = self.dir.join("ledger.sqlite");
                let to = dir.join("ledger.sqlite");
                for suffix in ["", "-wal", "-shm"] {
                    let f = format!("{}{suffix}", from.display());
                    if std::path::Path::new(&f).exists() {
                        std::fs::copy(&f, format!("{}{suffix}", to.display())).unwrap();
                    }
                }
                Self {
                    url: format!("sqlite://{}", to.display()),
                    pg_name: None,
                    dir,
                }
            }
            Some(name) => {
                let copy = unique("ledger_test");
                let admin = sqlx::PgPool::connect(&admin_url()).await.unwrap();
                // A stopped service's last sessions (its lock connection) may still be closing:
                // end them, and retry while PostgreSQL still counts one.
                for attempt in 0.. {
                    sqlx::query(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE datname = $1 AND pid <> pg_backend_pid()",
                    )
                    .bind(name)
                    .execute(&admin)
                    .await
                    .unwrap();
                    match sqlx::query(&format!("CREATE DATABASE {copy} TEMPLATE {name}"))
                        .execute(&admin)
                        .await
                    {
                        Ok(_) => break,
                        Err(e) if attempt < 50 => {
                            eprintln!("copying {name}: {e}; retrying");
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("copying {name}: {e}"),
                    }
                }
                admin.close().await;
                Self {
                    url: self.url.replace(name.as_str(), &copy),
                    pg_name: Some(copy),
                    dir,
                }
            }
        }
    }

    pub async fn drop_all(&self) {
        if let Some(name) = &self.pg_name {
            if let Ok(admin) = sqlx::PgPool::connect(&admin_url()).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&admin)
                    .await;
                admin.close().await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// How a test adjusts the service's configuration before it starts (kept across restarts).
pub type Tune = Arc<dyn Fn(&mut Config) + Send + Sync>;

/// A running service.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub admin: String,
    pub gateway: String,
    pub reader: String,
    pub shared: Arc<Shared>,
    pub storage: Storage,
    pub log_skey: String,
    tune: Tune,
    stop: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
    sequencer: tokio::task::JoinHandle<()>,
    webhooks: tokio::task::JoinHandle<()>,
    exports: tokio::task::JoinHandle<()>,
}

pub fn config(storage: &Storage) -> Config {
    Config {
        database_url: Some(storage.url.clone().into()),
        data_dir: storage.dir.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
        log_key_file: None,
        origin: "test.example/vitals".into(),
        db_connections: 8,
        max_batch: 4096,
        checkpoint_ms: 20,
        shard_period: None,
        shard_grace_ms: 24 * 3600 * 1000,
        max_skew_ms: 300_000,
        max_age_ms: 30 * 24 * 3600 * 1000,
        log_json: false,
        alerts: ledger_service::config::AlertSettings {
            webhook_backoff_ms: 50,
            webhook_backoff_max_ms: 2000,
            webhook_timeout_ms: 2000,
            ..Default::default()
        },
        exports: ledger_service::config::ExportSettings {
            export_dir: None,
            retention_days: 0,
            export_lease_ms: 500,
        },
        limits: ledger_service::config::LimitSettings::default(),
        // Test receivers listen on loopback over plain HTTP.
        outbound: ledger_service::config::OutboundSettings {
            webhook_allow_http: true,
            webhook_allow_nets: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        },
        witnesses: Default::default(),
        read_node: Default::default(),
    }
}

impl TestApp {
    pub async fn spawn(engine: Engine) -> Self {
        Self::spawn_at(engine, "127.0.0.1:0").await
    }

    /// A service listening on a given address (`127.0.0.1:0` for any free port).
    pub async fn spawn_at(engine: Engine, addr: &str) -> Self {
        Self::spawn_tuned_at(engine, addr, Arc::new(|_: &mut Config| {})).await
    }

    /// A service whose configuration `tune` adjusts (limits, timeouts) before it starts.
    pub async fn spawn_tuned(engine: Engine, tune: fn(&mut Config)) -> Self {
        Self::spawn_tuned_at(engine, "127.0.0.1:0", Arc::new(tune)).await
    }

    /// A service whose configuration a closure adjusts (e.g. with the addresses of test peers).
    pub async fn spawn_with(
        engine: Engine,
        tune: impl Fn(&mut Config) + Send + Sync + 'static,
    ) -> Self {
        Self::spawn_tuned_at(engine, "127.0.0.1:0", Arc::new(tune)).await
    }

    async fn spawn_tuned_at(engine: Engine, addr: &str, tune: Tune) -> Self {
        let storage = Storage::fresh(engine).await;
        let signer = NoteSigner::new(
            "test.example/vitals",
            SigningKey::generate(&mut rand_core::OsRng),
        )
        .unwrap();
        Self::start(storage, signer.to_skey(), None, addr, tune).await
    }

    async fn start(
        storage: Storage,
        log_skey: String,
        tokens: Option<(String, String, String)>,
        addr: &str,
        tune: Tune,
    ) -> Self {
        let mut cfg = config(&storage);
        tune(&mut cfg);
        let db = Db::connect(&storage.url, 8).await.unwrap();
        let (admin, gateway, reader) = match tokens {
            Some(t) => t,
            None => (
                create_token(&db, Role::Admin, "test admin").await.unwrap(),
                create_token(&db, Role::Gateway, "test gateway")
                    .await
                    .unwrap(),
                create_token(&db, Role::Auditor, "test auditor")
                    .await
                    .unwrap(),
            ),
        };
        let running = ledger_service::start(&cfg, db, NoteSigner::from_skey(&log_skey).unwrap())
            .await
            .unwrap();
        // Coming back on a fixed address: the port may be briefly taken (another test's outgoing
        // connection can get it as its ephemeral port); retry for a while.
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("binding {addr}: {e}"),
            }
        };
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let shared = Arc::clone(&running.shared);
        let server = tokio::spawn(async move {
            ledger_service::serve(listener, shared, async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        let app = Self {
            base,
            client: reqwest::Client::new(),
            admin,
            gateway,
            reader,
            shared: running.shared,
            storage,
            log_skey,
            tune,
            stop: Some(stop),
            server,
            sequencer: running.sequencer,
            webhooks: running.webhooks,
            exports: running.exports,
        };
        // With a witness quorum, the first checkpoint waits for the witnesses (the test starts
        // them once it knows the log's key).
        if cfg.witnesses.witness_quorum == 0 {
            app.wait_for_checkpoint(0).await;
        }
        app
    }

    /// The admin, gateway and reader tokens.
    fn tokens(&self) -> (String, String, String) {
        (
            self.admin.clone(),
            self.gateway.clone(),
            self.reader.clone(),
        )
    }

    /// Stops the service (graceful) and starts a new one on the same storage and key.
    pub async fn restart(mut self) -> Self {
        let tokens = self.tokens();
        self.shutdown().await;
        Self::start(
            self.storage.clone(),
            self.log_skey.clone(),
            Some(tokens),
            "127.0.0.1:0",
            Arc::clone(&self.tune),
        )
        .await
    }

    /// Another service node on the same storage, log key and tokens (on PostgreSQL a standby
    /// while this one leads).
    pub async fn second_node(&self) -> TestApp {
        let tokens = self.tokens();
        Self::start(
            self.storage.clone(),
            self.log_skey.clone(),
            Some(tokens),
            "127.0.0.1:0",
            Arc::clone(&self.tune),
        )
        .await
    }

    /// Stops the service; it can come back with [`TestApp::start_again`].
    pub async fn stop(mut self) -> Stopped {
        let tokens = self.tokens();
        let addr = self.base.trim_start_matches("http://").to_string();
        self.shutdown().await;
        Stopped {
            storage: self.storage.clone(),
            log_skey: self.log_skey.clone(),
            tokens,
            addr,
            tune: Arc::clone(&self.tune),
        }
    }

    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.server).await;
        self.sequencer.abort();
        let _ = (&mut self.sequencer).await;
        self.webhooks.abort();
        let _ = (&mut self.webhooks).await;
        self.exports.abort();
        let _ = (&mut self.exports).await;
        self.shared.db().close().await;
    }

    pub async fn finish(mut self) {
        self.shutdown().await;
        self.storage.drop_all().await;
    }

    /// The URL of `path` on this service (an absolute URL, as the service hands out, as is).
    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            return path.to_string();
        }
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> reqwest::Response {
        let mut req = self.client.get(self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    pub async fn post_json(
        &self,
        path: &str,
        token: Option<&str>,
        body: &Value,
    ) -> reqwest::Response {
        let mut req = self.client.post(self.url(path)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }

    /// Submits envelopes as CBOR; returns the status and the JSON body.
    pub async fn ingest(&self, envelopes: &[Vec<u8>]) -> (u16, Value) {
        let body = provenance_core::batch::encode(envelopes);
        self.ingest_raw(body, "application/cbor", Some(&self.gateway.clone()))
            .await
    }

    pub async fn ingest_raw(
        &self,
        body: Vec<u8>,
        content_type: &str,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self
            .client
            .post(self.url("/v1/ingest"))
            .header("content-type", content_type)
            .body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let ct = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        if status >= 400 {
            assert_eq!(
                ct, "application/problem+json",
                "errors are problem+json: {v}"
            );
        }
        (status, v)
    }

    pub async fn wait_for_checkpoint(&self, size: u64) -> String {
        for _ in 0..500 {
            // `size` is a ledger position: in a time-sharded log, the open shard's base plus
            // its checkpoint's size.
            if let Some(cp) = self.shared.latest_checkpoint() {
                let base = self.shared.shard(cp.shard).map_or(0, |s| s.base);
                if base + cp.size >= size {
                    return cp.note.clone();
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("no checkpoint of size {size}");
    }

    pub async fn readings(&self) -> u64 {
        self.shared.db().count_readings().await.unwrap()
    }
}

/// A stopped service, to start again on the same storage, key, tokens and address.
pub struct Stopped {
    storage: Storage,
    log_skey: String,
    tokens: (String, String, String),
    addr: String,
    tune: Tune,
}

impl Stopped {
    /// A copy of its storage (another database with the same contents), e.g. for a second
    /// instance of the same log that then diverges.
    pub async fn copy_storage(&self) -> Storage {
        self.storage.copy().await
    }

    /// Starts another instance of the same log (key and tokens) on `storage`, configured by
    /// `tune`, on a free port.
    pub async fn start_on(
        &self,
        storage: Storage,
        tune: impl Fn(&mut Config) + Send + Sync + 'static,
    ) -> TestApp {
        TestApp::start(
            storage,
            self.log_skey.clone(),
            Some(self.tokens.clone()),
            "127.0.0.1:0",
            Arc::new(tune),
        )
        .await
    }

    /// Starts the service again.
    pub async fn start_again(self) -> TestApp {
        TestApp::start(
            self.storage,
            self.log_skey,
            Some(self.tokens),
            &self.addr,
            self.tune,
        )
        .await
    }
}

/// A service at a base URL, for [`Devices::enroll_at`].
struct At<'a> {
    client: &'a reqwest::Client,
    base: &'a str,
}

impl At<'_> {
    async fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send().await.unwrap()
    }
}

/// Test-only devices: a sensor manufacturer CA and its sensors, a gateway fleet CA and its
/// gateways.
pub struct Devices {
    pub ca_key: SigningKey,
    pub ca: DeviceCert,
    pub fleet_key: SigningKey,
    pub fleet: DeviceCert,
    pub sensors: Vec<(SigningKey, DeviceCert)>,
    pub gateways: Vec<(SigningKey, DeviceCert)>,
}

pub const DAY: u64 = 24 * 3600 * 1000;

fn key(label: &str) -> SigningKey {
    SigningKey::from_bytes(&Sha256::digest(format!("ledger-service test seed: {label}")).into())
}

impl Devices {
    pub fn new(org: &str, sensors: usize, gateways: usize) -> Self {
        let now = now_ms();
        fn params<'a>(cn: &'a str, org: &'a str, serial: u64, now: u64) -> CertParams<'a> {
            CertParams {
                common_name: cn,
                organization: org,
                serial,
                not_before_ms: now - 10 * DAY,
                not_after_ms: now + 365 * DAY,
            }
        }
        let ca_key = key(&format!("{org} ca"));
        let ca = cert::issue_ca(&ca_key, &params(&format!("{org} CA"), org, 1, now)).unwrap();
        let fleet_key = key(&format!("{org} fleet ca"));
        let fleet =
            cert::issue_ca(&fleet_key, &params(&format!("{org} Fleet CA"), org, 2, now)).unwrap();
        let mk = |role: CertRole, prefix: &str, i: usize, serial: u64| {
            let id = format!("{prefix}-{i:04}");
            let k = key(&format!("{org} {id}"));
            let (ik, ic) = match role {
                CertRole::Gateway => (&fleet_key, &fleet),
                _ => (&ca_key, &ca),
            };
            let c = cert::issue_device(
                ik,
                ic,
                role,
                &k.verifying_key(),
                &params(&id, org, serial, now),
            )
            .unwrap();
            (k, c)
        };
        let sensors = (0..sensors)
            .map(|i| mk(CertRole::Sensor, "SN", i, 100 + i as u64))
            .collect();
        let gateways = (0..gateways)
            .map(|i| mk(CertRole::Gateway, "GW", i, 10_000 + i as u64))
            .collect();
        Self {
            ca_key,
            ca,
            fleet_key,
            fleet,
            sensors,
            gateways,
        }
    }

    /// The enrollment bodies of both issuers.
    pub fn issuer_bodies(&self) -> [Value; 2] {
        [
            json!({"certificate_pem": self.ca.to_pem(), "role": "sensor-manufacturer"}),
            json!({"certificate_pem": self.fleet.to_pem(), "role": "gateway-fleet"}),
        ]
    }

    /// Enrolls both issuers, every device, binds every sensor to gateway `i % gateways` from ten
    /// days ago, and assigns sensor i to patient `patient-i`.
    pub async fn enroll(&self, app: &TestApp) {
        self.enroll_at(&app.url(""), &app.admin).await;
    }

    /// [`Devices::enroll`] at the service at `base` with the admin token `admin`.
    pub async fn enroll_at(&self, base: &str, admin: &str) {
        let client = reqwest::Client::new();
        let base = base.trim_end_matches('/').to_string();
        let app = At {
            client: &client,
            base: &base,
        };
        let admin = Some(admin);
        let ok = |r: reqwest::Response| async move {
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap();
            assert_eq!(status, 201, "{body}");
            body
        };
        for body in self.issuer_bodies() {
            ok(app.post_json("/v1/registry/issuers", admin, &body).await).await;
        }
        for (_, c) in &self.sensors {
            ok(app
                .post_json(
                    "/v1/registry/sensors",
                    admin,
                    &json!({"certificate_pem": c.to_pem()}),
                )
                .await)
            .await;
        }
        for (_, c) in &self.gateways {
            ok(app
                .post_json(
                    "/v1/registry/gateways",
                    admin,
                    &json!({"certificate_pem": c.to_pem()}),
                )
                .await)
            .await;
        }
        let from = now_ms() - 10 * DAY;
        for (i, (_, s)) in self.sensors.iter().enumerate() {
            let g = &self.gateways[i % self.gateways.len()].1;
            ok(app.post_json("/v1/registry/bindings", admin, &json!({"sensor_id": s.subject_cn, "gateway_id": g.subject_cn, "from_ms": from})).await).await;
            ok(app.post_json("/v1/registry/assignments", admin, &json!({"sensor_id": s.subject_cn, "pseudonym": format!("patient-{i}"), "from_ms": from})).await).await;
        }
    }

    /// A doubly signed reading from sensor `s` through gateway `g`.
    /// A new certificate for sensor `id` (issued by the manufacturer CA, valid a day either side
    /// of now) for `key`: a key rotation's.
    pub fn sensor_cert(&self, id: &str, key: &SigningKey, serial: u64) -> DeviceCert {
        let now = now_ms();
        cert::issue_device(
            &self.ca_key,
            &self.ca,
            CertRole::Sensor,
            &key.verifying_key(),
            &CertParams {
                common_name: id,
                organization: &self.ca.subject_cn.replace(" CA", ""),
                serial,
                not_before_ms: now - DAY,
                not_after_ms: now + DAY,
            },
        )
        .unwrap()
    }

    pub fn envelope(&self, s: usize, g: usize, seq: u64, measured_at: u64, hr: i64) -> Vec<u8> {
        let measurements = vec![
            Measurement::new("8867-4", Decimal::new(hr, 0)).unwrap(),
            Measurement::new("2708-6", Decimal::new(97, 0)).unwrap(),
        ];
        self.envelope_with(s, g, seq, measured_at, measurements)
    }

    /// A doubly signed reading of these measurements from sensor `s` through gateway `g`.
    pub fn envelope_with(
        &self,
        s: usize,
        g: usize,
        seq: u64,
        measured_at: u64,
        measurements: Vec<Measurement>,
    ) -> Vec<u8> {
        let (sk, sc) = &self.sensors[s];
        let r = Reading {
            sensor_id: sc.subject_cn.clone(),
            seq,
            measured_at_ms: measured_at,
            measurements,
        };
        let inner = SignedReading::sign(&r, sk).unwrap();
        GatewayEnvelope::wrap(&inner, measured_at.saturating_add(200), &self.gateways[g].0)
    }
}

pub fn b64(v: &Value) -> Vec<u8> {
    B64.decode(v.as_str().unwrap()).unwrap()
}

/// Runs an async test body once per storage engine.
#[macro_export]
macro_rules! both_engines {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if $crate::Engine::Postgres.required(stringify!($name)) {
                    $body($crate::Engine::Postgres).await
                }
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if $crate::Engine::Sqlite.required(stringify!($name)) {
                    $body($crate::Engine::Sqlite).await
                }
            }
        }
    };
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A free TCP address on the loopback (for a server started later).
pub fn free_tcp() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// Waits until `ok()` holds, polling every 20 ms; fails the test after `secs` seconds.
pub async fn wait_for(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let t = std::time::Instant::now();
    while !ok() {
        assert!(
            t.elapsed() < std::time::Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The Python for interop checks (`INTEROP_PYTHON`, as `scripts/test` sets it). Without it the
/// check is skipped with a note — unless `INTEROP_REQUIRED` is set (as `scripts/test` does too):
/// then a missing tool fails the test instead of letting it pass unchecked.
pub fn interop_python(what: &str) -> Option<String> {
    match std::env::var("INTEROP_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ if std::env::var_os("INTEROP_REQUIRED").is_some() => {
            panic!("INTEROP_REQUIRED is set but INTEROP_PYTHON is not: {what} cannot run")
        }
        _ => {
            eprintln!("INTEROP_PYTHON unset: {what} skipped (scripts/test sets it)");
            None
        }
    }
}
