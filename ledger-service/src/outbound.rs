//! Where the service may send webhooks: the outbound policy.
//!
//! A webhook URL is chosen by an admin, and the delivery log shows what each attempt got back
//! (status, error text), so without a policy the service is a port scanner of its own network
//! and a way to reach cloud metadata endpoints. The policy:
//!
//! - only `https://` URLs, unless `--webhook-allow-http` (patient alert data then travels in
//!   clear);
//! - never an address that is loopback, unspecified, private (RFC 1918, unique-local),
//!   shared (CGNAT), link-local (cloud metadata lives there), multicast, broadcast, documentation
//!   or otherwise reserved — the IPv4 forms inside IPv6 (mapped, compatible, NAT64, 6to4)
//!   included — unless it lies in a network of `--webhook-allow-nets`;
//! - checked on the address actually connected to: a name is resolved by the delivery client's
//!   own resolver, which drops every refused address, so a name that resolved to a public
//!   address when it was registered and to `127.0.0.1` at delivery (DNS rebinding) is refused
//!   then; an IP literal is checked before the request; proxies from the environment are not
//!   used (they would connect on our behalf) and redirects are not followed.
//!
//! Invariant: no delivery opens a connection to an address this policy refuses.

use crate::config::OutboundSettings;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

/// The outbound policy, shared by URL registration and the delivery client.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    allow_http: bool,
    allow_nets: Vec<IpNet>,
}

impl Policy {
    /// The policy of the configuration.
    pub fn new(s: &OutboundSettings) -> Self {
        Self {
            allow_http: s.webhook_allow_http,
            allow_nets: s.webhook_allow_nets.clone(),
        }
    }

    /// Why `ip` may not be connected to, or `None` if it may.
    pub fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        if self.allow_nets.iter().any(|n| n.contains(&ip)) {
            return None;
        }
        refused_range(ip)
    }

    /// Why a webhook URL is refused, or `None`. A name is not resolved here (it is at each
    /// delivery, where it counts); an IP literal is checked now.
    pub fn refuses_url(&self, url: &reqwest::Url) -> Option<String> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            "http" => {
                return Some(
                    "plain http:// would carry patient alert data in clear: use https:// (or \
                     start the service with --webhook-allow-http)"
                        .into(),
                )
            }
            other => return Some(format!("the scheme {other}:// is not allowed")),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Some("credentials in the URL are not allowed (use the signature)".into());
        }
        let ip = match url.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(_)) => return None,
            None => return Some("the URL has no host".into()),
        };
        self.refuses(ip).map(|why| {
            format!(
                "the destination {ip} is {why}; the outbound policy refuses it (allow a network \
                 with --webhook-allow-nets)"
            )
        })
    }
}

/// The reserved range `ip` is in, if any.
fn refused_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        _ if ip.is_unspecified() || a == 0 => "unspecified (0.0.0.0/8)",
        _ if ip.is_loopback() => "loopback",
        _ if ip.is_private() => "private (RFC 1918)",
        _ if ip.is_link_local() => "link-local (where cloud metadata services answer)",
        (100, 64..=127, _) => "shared address space (100.64.0.0/10)",
        (192, 0, 0) => "IETF protocol assignments (192.0.0.0/24)",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking (198.18.0.0/15)",
        (192, 88, 99) => "6to4 relay anycast",
        _ if ip.is_multicast() => "multicast",
        _ if ip.is_broadcast() || a >= 240 => "reserved (240.0.0.0/4)",
        _ => return None,
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // IPv4 addresses carried inside IPv6 are judged as the IPv4 address they reach.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
    if s[..6] == [0; 6] && !(s[6] == 0 && s[7] <= 1) {
        // IPv4-compatible (deprecated): ::a.b.c.d
        return refused_v4(embedded(s[6], s[7])).or(Some("IPv4-compatible (deprecated)"));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 well-known prefix: 64:ff9b::a.b.c.d
        return refused_v4(embedded(s[6], s[7]));
    }
    if s[0] == 0x2002 {
        // 6to4: 2002:aabb:ccdd::/48
        return refused_v4(embedded(s[1], s[2]));
    }
    Some(match s[0] {
        _ if ip.is_unspecified() => "unspecified (::)",
        _ if ip.is_loopback() => "loopback",
        0xfc00..=0xfdff => "unique-local (fc00::/7)",
        0xfe80..=0xfebf => "link-local (fe80::/10)",
        0xfec0..=0xfeff => "site-local (deprecated)",
        0xff00..=0xffff => "multicast",
        0x0100 if s[1..4] == [0, 0, 0] => "discard-only (100::/64)",
        0x2001 if s[1] == 0x0db8 => "documentation (2001:db8::/32)",
        0x2001 if s[1] < 0x0200 => "IETF protocol assignments (2001::/23)",
        0x3fff if s[1] < 0x1000 => "documentation (3fff::/20)",
        _ if s[0] & 0xe000 != 0x2000 => "not global unicast (outside 2000::/3)",
        _ => return None,
    })
}

/// The delivery client's resolver: the system's, with every refused address dropped.
#[derive(Debug, Clone)]
pub struct Resolver(pub Arc<Policy>);

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = Arc::clone(&self.0);
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|a| policy.refuses(a.ip()).is_none())
                .collect();
            if allowed.is_empty() {
                let why = found
                    .first()
                    .and_then(|a| policy.refuses(a.ip()))
                    .unwrap_or("not found");
                return Err(format!(
                    "refused by the outbound policy: every address of {host} is refused \
                     (the first is {why})"
                )
                .into());
            }
            let addrs: reqwest::dns::Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> Policy {
        Policy::default()
    }

    #[test]
    fn every_internal_range_is_refused_and_public_addresses_pass() {
        let p = strict();
        for ip in [
            "0.0.0.0",
            "0.1.2.3",
            "127.0.0.1",
            "127.255.0.9",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.1.2.3",
            "::127.0.0.1",
            "::10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b::7f00:1",
            "2002:7f00:0001::1",
            "2002:a9fe:a9fe::",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "100::1",
            "2001:db8::1",
            "2001::1",
            "3fff::1",
            "4000::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(p.refuses(ip).is_some(), "{ip} must be refused");
        }
        for ip in [
            "93.184.215.14",
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(p.refuses(ip), None, "{ip} is public");
        }
    }

    #[test]
    fn allowed_networks_open_only_themselves() {
        let p = Policy::new(&OutboundSettings {
            webhook_allow_http: false,
            webhook_allow_nets: vec!["10.20.0.0/16".parse().unwrap()],
        });
        assert_eq!(p.refuses("10.20.3.4".parse().unwrap()), None);
        assert!(p.refuses("10.21.0.1".parse().unwrap()).is_some());
        assert!(p.refuses("127.0.0.1".parse().unwrap()).is_some());
    }

    #[test]
    fn urls_are_judged_on_scheme_credentials_and_literal_hosts() {
        let p = strict();
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert_eq!(p.refuses_url(&url("https://receiver.example/hook")), None);
        assert_eq!(p.refuses_url(&url("https://93.184.215.14:8443/h")), None);
        for bad in [
            "http://receiver.example/hook",
            "ftp://receiver.example/",
            "https://user:pw@receiver.example/",
            "https://127.0.0.1/",
            "https://0x7f.1/",
            "https://2130706433/",
            "https://[::ffff:7f00:1]/",
            "https://169.254.169.254/latest/meta-data/",
            "https://[fe80::1]/",
            "https://0/",
        ] {
            assert!(p.refuses_url(&url(bad)).is_some(), "{bad} must be refused");
        }
        let lax = Policy::new(&OutboundSettings {
            webhook_allow_http: true,
            webhook_allow_nets: vec!["127.0.0.0/8".parse().unwrap()],
        });
        assert_eq!(lax.refuses_url(&url("http://127.0.0.1:9/h")), None);
        assert!(lax.refuses_url(&url("http://10.0.0.1/")).is_some());
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        use reqwest::dns::Resolve;
        let r = Resolver(Arc::new(strict()));
        let name: reqwest::dns::Name = "localhost".parse().unwrap();
        let err = match r.resolve(name).await {
            Ok(a) => panic!("localhost resolved to {:?}", a.collect::<Vec<_>>()),
            Err(e) => e.to_string(),
        };
        assert!(err.contains("outbound policy"), "{err}");
        let lax = Resolver(Arc::new(Policy::new(&OutboundSettings {
            webhook_allow_http: true,
            webhook_allow_nets: vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
        })));
        let addrs: Vec<_> = lax
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().all(|a| a.ip().is_loopback()) && !addrs.is_empty());
    }
}
