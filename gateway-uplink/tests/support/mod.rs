//! Helpers the gateway's system tests add to the service's (`common`): a free UDP port, child
//! processes killed on drop, reading the gateway's metrics.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

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

/// A tiny blocking HTTP GET for the gateway's metrics (reqwest's blocking client is not enabled).
pub mod http_get {
    /// The metrics page's text (empty if the gateway is not up).
    pub fn blocking_get_metrics(addr: &str) -> String {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(addr) else {
            return String::new();
        };
        let _ = write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        );
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
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
