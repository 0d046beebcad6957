//! Processes: the workspace's binaries built on demand, children killed on drop, a free UDP
//! port, a metric read from a Prometheus text page.

use std::net::UdpSocket;

pub fn free_udp() -> String {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string()
}

/// A child process that is killed (SIGKILL) when dropped, even when the test fails.
pub struct Child(pub std::process::Child);

impl Child {
    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A tiny blocking HTTP GET for metrics pages and the HA drill's probes (reqwest's blocking
/// client is not enabled).
pub mod http_get {
    /// The whole answer (status line, headers, body) to `GET path` at `addr`; empty if nothing
    /// answers (within 3 s).
    pub fn blocking_get(addr: &str, path: &str) -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(3)));
        let _ = write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    /// The metrics page's text (empty if the gateway is not up).
    pub fn blocking_get_metrics(addr: &str) -> String {
        blocking_get(addr, "/metrics")
    }
}

/// One metric's value from the gateway's metrics page (`None` while it is not up).
pub fn metric(addr: &str, name: &str) -> Option<u64> {
    let text = http_get::blocking_get_metrics(addr);
    let prefix = format!("{name} ");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.split(' ').nth(1)?.parse::<u64>().ok())
}

/// The path of a binary of this workspace (`package`'s `bin`), built once per test process with
/// the same profile and target folder as the running test (cargo sets `CARGO` for test runs).
pub fn binary(package: &str, bin: &str) -> std::path::PathBuf {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    static BUILT: OnceLock<Mutex<HashSet<String>>> = OnceLock::new();
    // A test executable lives in <target>/<profile>/deps/.
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|d| d.parent()).unwrap().to_path_buf();
    let path = profile_dir.join(format!("{bin}{}", std::env::consts::EXE_SUFFIX));
    let mut built = BUILT.get_or_init(Default::default).lock().unwrap();
    if built.insert(bin.to_string()) {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "-q", "-p", package, "--bin", bin]);
        if profile_dir.ends_with("release") {
            build.arg("--release");
        }
        if let Some(target) = profile_dir.parent() {
            build.env("CARGO_TARGET_DIR", target);
        }
        assert!(build.status().unwrap().success(), "building {bin}");
    }
    path
}
