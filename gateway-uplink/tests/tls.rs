//! The gateway talks to the service over TLS and trusts only what it checked: a registry sync
//! over https works with the configured CA and fails without it (the system's roots do not
//! know a private CA, so an on-path attacker with another certificate is refused); plain http
//! to another machine is refused at start; issuer CA files are checked at start. The test
//! server is rustls with a CA and certificate made by `openssl`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests may panic

use gateway_uplink::{Config, Gateway};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn make_certs(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=Test Ledger CA",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.pem",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ],
    );
}

/// A TLS server answering every request with an empty registry view of GW-0001; returns its
/// port.
async fn tls_server(dir: &Path) -> u16 {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return; // the client refused our certificate
                };
                let mut buf = vec![0u8; 16384];
                let _ = tls.read(&mut buf).await;
                let body = r#"{"gateway_id":"GW-0001","events":[]}"#;
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(resp.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

fn config(dir: &Path, url: &str) -> Config {
    let key_file = dir.join("gw.key");
    std::fs::write(&key_file, hex::encode([7u8; 32])).unwrap();
    let spool = dir.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    Config::with_defaults("GW-0001", &key_file, url, "vlt_test", &spool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_is_synced_over_verified_tls_only() {
    let dir = std::env::temp_dir().join(format!("gw-tls-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let port = tls_server(&dir).await;
    let url = format!("https://127.0.0.1:{port}");

    // With the service's CA configured: the sync works.
    let mut cfg = config(&dir, &url);
    cfg.service_ca = Some(dir.join("ca.pem"));
    let gw = Gateway::open(cfg).unwrap();
    assert_eq!(gw.sync_registry().await.unwrap(), 0);

    // With the system's roots only: the private CA is unknown, the sync is refused.
    let gw = Gateway::open(config(&dir, &url)).unwrap();
    let err = format!("{:#}", gw.sync_registry().await.unwrap_err());
    assert!(
        err.to_lowercase().contains("certificate") || err.contains("error sending request"),
        "{err}"
    );

    // Another CA configured (an attacker's certificate would be signed by yet another): refused.
    std::fs::create_dir_all(dir.join("other")).unwrap();
    make_certs(&dir.join("other"));
    let mut cfg = config(&dir, &url);
    cfg.service_ca = Some(dir.join("other/ca.pem"));
    let gw = Gateway::open(cfg).unwrap();
    assert!(gw.sync_registry().await.is_err());

    // Plain http to another machine is refused at start; to this machine it is allowed.
    let err = Gateway::open(config(&dir, "http://10.20.30.40:8080"))
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("https://"), "{err}");
    let mut cfg = config(&dir, "http://10.20.30.40:8080");
    cfg.insecure_http = true;
    assert!(Gateway::open(cfg).is_ok());
    assert!(Gateway::open(config(&dir, "http://127.0.0.1:9")).is_ok());

    // Issuer CA files are read at start: a missing or empty one is an error.
    let mut cfg = config(&dir, &url);
    cfg.issuer_ca = vec![dir.join("nope.pem")];
    assert!(Gateway::open(cfg).is_err());
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    let mut cfg = config(&dir, &url);
    cfg.issuer_ca = vec![dir.join("empty.pem")];
    assert!(Gateway::open(cfg)
        .err()
        .unwrap()
        .to_string()
        .contains("no certificate"));
    let _ = std::fs::remove_dir_all(&dir);
}
