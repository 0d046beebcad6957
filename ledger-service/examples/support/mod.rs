//! What the benchmarks share: a service started in this process on a fresh database, with an
//! admin and a gateway token, and helpers to call its API and name test devices.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // benchmarks fail loudly

use ed25519_dalek::SigningKey;
use ledger_service::config::Config;
use ledger_service::Db;
use ledger_service::{create_token, Role};
use provenance_core::cert::CertParams;
use provenance_core::note::NoteSigner;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::Arc;

/// A running service for a benchmark.
pub struct Bench {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Admin token.
    pub admin: String,
    /// Gateway token.
    pub gateway: String,
    /// The service core.
    pub running: ledger_service::Running,
    /// Its data folder (removed by `finish`).
    pub dir: PathBuf,
    /// "PostgreSQL" or "SQLite".
    pub engine: &'static str,
    /// The database URL.
    pub url: String,
    /// PostgreSQL: the server's admin URL and the database's name (dropped by `finish`).
    pg: Option<(String, String)>,
    /// HTTP client.
    pub client: reqwest::Client,
    /// Its configuration (for a restart).
    pub cfg: Config,
    /// The HTTP server task.
    server: tokio::task::JoinHandle<()>,
}

/// Starts the service on a fresh PostgreSQL database (created through `admin_url`, else
/// `DATABASE_URL`, else the local server) or a fresh SQLite file.
pub async fn start(name: &str, sqlite: bool, admin_url: Option<&str>) -> Bench {
    let dir = std::env::temp_dir().join(format!("ledger-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut pg = None;
    let (url, engine) = if sqlite {
        (
            format!("sqlite://{}", dir.join("bench.sqlite").display()),
            "SQLite",
        )
    } else {
        let admin_url = admin_url.map(String::from).unwrap_or_else(|| {
            std::env::var("DATABASE_URL")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
        });
        let db_name = format!("ledger_{name}_{}", std::process::id());
        let admin = sqlx::PgPool::connect(&admin_url).await.expect("PostgreSQL");
        sqlx::query(&format!("CREATE DATABASE {db_name}"))
            .execute(&admin)
            .await
            .unwrap();
        let base = admin_url
            .rsplit_once('/')
            .map(|(b, _)| b.to_string())
            .unwrap();
        pg = Some((admin_url.clone(), db_name.clone()));
        (format!("{base}/{db_name}"), "PostgreSQL")
    };
    let cfg = Config {
        database_url: Some(url.clone().into()),
        data_dir: dir.clone(),
        listen: "127.0.0.1:0".parse().unwrap(),
        public_url: None,
        log_key_file: None,
        origin: "bench.example/vitals".into(),
        db_connections: 16,
        max_batch: 8192,
        checkpoint_ms: 100,
        shard_period: None,
        shard_grace_ms: 0,
        max_skew_ms: 300_000,
        max_age_ms: 30 * 24 * 3600 * 1000,
        log_json: false,
        alerts: Default::default(),
        exports: Default::default(),
        limits: Default::default(),
        // Benchmark receivers listen on loopback over plain HTTP.
        outbound: ledger_service::config::OutboundSettings {
            webhook_allow_http: true,
            webhook_allow_nets: vec!["127.0.0.0/8".parse().unwrap()],
        },
        witnesses: Default::default(),
        read_node: Default::default(),
    };
    let db = Db::connect(&url, cfg.db_connections).await.unwrap();
    let admin = create_token(&db, Role::Admin, "bench").await.unwrap();
    let gateway = create_token(&db, Role::Gateway, "bench").await.unwrap();
    let (running, base, server) = serve(&cfg, db).await;
    Bench {
        cfg,
        server,
        base,
        admin,
        gateway,
        running,
        dir,
        engine,
        url,
        pg,
        client: reqwest::Client::new(),
    }
}

/// Starts the service core on `db` and serves it on a fresh loopback port.
async fn serve(
    cfg: &Config,
    db: Db,
) -> (ledger_service::Running, String, tokio::task::JoinHandle<()>) {
    let signer = NoteSigner::new("bench.example/vitals", SigningKey::from_bytes(&[7; 32])).unwrap();
    let running = ledger_service::start(cfg, db, signer).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let shared = Arc::clone(&running.shared);
    let server = tokio::spawn(async move {
        ledger_service::serve(listener, shared, std::future::pending())
            .await
            .unwrap()
    });
    (running, base, server)
}

impl Bench {
    /// Stops the service (its database stays), runs `between` on a connection of its own,
    /// and starts a fresh service process state on the same database.
    pub async fn restart_after<F, Fut>(&mut self, between: F)
    where
        F: FnOnce(Db) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        self.server.abort();
        self.running.sequencer.abort();
        self.running.webhooks.abort();
        self.running.exports.abort();
        self.running.shared.db().close().await;
        between(Db::connect(&self.url, 8).await.unwrap()).await;
        let db = Db::connect(&self.url, self.cfg.db_connections)
            .await
            .unwrap();
        let (running, base, server) = serve(&self.cfg, db).await;
        (self.running, self.base, self.server) = (running, base, server);
    }

    /// POSTs JSON with the admin token; panics unless 2xx; the answer.
    pub async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{path}: {}",
            r.text().await.unwrap()
        );
        r.json().await.unwrap_or(Value::Null)
    }

    /// Stops the service, removes the data folder and drops the PostgreSQL database.
    pub async fn finish(self) {
        self.running.sequencer.abort();
        self.running.webhooks.abort();
        self.running.exports.abort();
        self.running.shared.db().close().await;
        let _ = std::fs::remove_dir_all(&self.dir);
        if let Some((admin_url, name)) = self.pg {
            if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&admin)
                    .await;
            }
        }
    }
}

/// Certificate parameters for a benchmark device valid from a day ago for a year.
pub fn params(cn: &str, serial: u64, now: u64) -> CertParams<'_> {
    let day = 24 * 3600 * 1000;
    CertParams {
        common_name: cn,
        organization: "Bench",
        serial,
        not_before_ms: now - day,
        not_after_ms: now + 365 * day,
    }
}

/// Resident memory of this process, MiB (NaN where `/proc` has no answer).
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))?
                .split_whitespace()
                .nth(1)?
                .parse::<f64>()
                .ok()
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Enrolls a ward: a sensor manufacturer CA and a gateway fleet CA, gateway `GW-1`, and `n`
/// sensors `SN-00000`… bound to it and assigned to `patient-<i>` from a day ago. Returns the
/// gateway's key and each sensor's id and key.
pub async fn enroll_ward(
    bench: &Bench,
    n: usize,
) -> (
    ed25519_dalek::SigningKey,
    Vec<(String, ed25519_dalek::SigningKey)>,
) {
    use provenance_core::cert::{self, Role as CertRole};
    use serde_json::json;
    let now = ledger_service::now_ms();
    let day = 24 * 3600 * 1000;
    let ca_key = SigningKey::from_bytes(&[1; 32]);
    let ca = cert::issue_ca(&ca_key, &params("Bench CA", 1, now)).unwrap();
    // A sensor manufacturer CA for the sensors, a gateway fleet CA for the gateways.
    let fleet_key = SigningKey::from_bytes(&[4; 32]);
    let fleet = cert::issue_ca(&fleet_key, &params("Bench Fleet CA", 3, now)).unwrap();
    bench
        .post(
            "/v1/registry/issuers",
            json!({"certificate_pem": ca.to_pem(), "role": "sensor-manufacturer"}),
        )
        .await;
    bench
        .post(
            "/v1/registry/issuers",
            json!({"certificate_pem": fleet.to_pem(), "role": "gateway-fleet"}),
        )
        .await;
    let gw_key = SigningKey::from_bytes(&[2; 32]);
    let gw = cert::issue_device(
        &fleet_key,
        &fleet,
        CertRole::Gateway,
        &gw_key.verifying_key(),
        &params("GW-1", 2, now),
    )
    .unwrap();
    bench
        .post(
            "/v1/registry/gateways",
            json!({"certificate_pem": gw.to_pem()}),
        )
        .await;
    let mut sensors = Vec::new();
    for i in 0..n {
        let mut seed = [3u8; 32];
        seed[..8].copy_from_slice(&(i as u64).to_le_bytes());
        let k = SigningKey::from_bytes(&seed);
        let id = format!("SN-{i:05}");
        let c = cert::issue_device(
            &ca_key,
            &ca,
            CertRole::Sensor,
            &k.verifying_key(),
            &params(&id, 10 + i as u64, now),
        )
        .unwrap();
        bench
            .post(
                "/v1/registry/sensors",
                json!({"certificate_pem": c.to_pem()}),
            )
            .await;
        bench
            .post(
                "/v1/registry/bindings",
                json!({"sensor_id": id, "gateway_id": "GW-1", "from_ms": now - day}),
            )
            .await;
        bench
            .post(
                "/v1/registry/assignments",
                json!({"sensor_id": id, "pseudonym": format!("patient-{i}"), "from_ms": now - day}),
            )
            .await;
        sensors.push((id, k));
    }

    (gw_key, sensors)
}
