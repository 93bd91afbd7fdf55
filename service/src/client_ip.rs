//! The client's address: the TCP peer, or, when the peer is a trusted proxy, the address the
//! proxies in front recorded in `X-Forwarded-For` (or `Forwarded`, RFC 7239).
//!
//! Proxies append the address they received a request from, so the list reads from the client
//! on the left to the last proxy on the right, and only the entries appended by trusted proxies
//! can be believed: a client writes whatever it likes on the left. The client is therefore the
//! rightmost address that is not a trusted proxy (walking right to left from the peer while each
//! hop is trusted). A request whose peer is not trusted is never read for these headers. The
//! walk reads header bytes in place: nothing is allocated.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use axum::http::{HeaderMap, HeaderName};
use serde::{Serialize, Serializer};

/// A network, `10.0.0.0/8` or `fd00::/8`; a bare address is a /32 or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                mask(u128::from(u32::from(ip)), self.prefix, 32) == u128::from(u32::from(net))
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                mask(u128::from(ip), self.prefix, 128) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// `bits` (an address of `width` bits) with everything past `prefix` cleared.
fn mask(bits: u128, prefix: u8, width: u8) -> u128 {
    let host = u32::from(width - prefix);
    if host >= 128 { 0 } else { bits >> host << host }
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not an address or network such as 10.0.0.0/8 or fd00::/8");
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s.trim(), None),
        };
        let ip: IpAddr = addr.parse().map_err(|_| bad())?;
        let ip = ip.to_canonical();
        let width = if ip.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= width)
                .ok_or_else(bad)?,
        };
        let bits = match ip {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        let net_bits = mask(bits, prefix, width);
        if net_bits != bits {
            return Err(format!(
                "{s:?} has host bits set (the network is {}/{prefix})",
                from_bits(net_bits, ip.is_ipv4())
            ));
        }
        Ok(Self { net: ip, prefix })
    }
}

fn from_bits(bits: u128, v4: bool) -> IpAddr {
    if v4 {
        IpAddr::V4(Ipv4Addr::from(bits as u32))
    } else {
        IpAddr::V6(Ipv6Addr::from(bits))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.net, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Which header the trusted proxies write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most ingress controllers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for="[2001:db8::1]:4711"` (RFC 7239).
    Forwarded,
}

impl ForwardedHeader {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(Self::XForwardedFor),
            "forwarded" => Ok(Self::Forwarded),
            _ => Err(format!("expected x-forwarded-for or forwarded, got {s:?}")),
        }
    }

    fn name(self) -> HeaderName {
        match self {
            Self::XForwardedFor => HeaderName::from_static("x-forwarded-for"),
            Self::Forwarded => axum::http::header::FORWARDED,
        }
    }
}

/// The proxies whose forwarding header is believed; none by default (the peer is the client).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TrustedProxies {
    pub networks: Vec<Cidr>,
    pub header: ForwardedHeader,
}

impl TrustedProxies {
    /// A comma-separated list of addresses and networks (empty: none).
    pub fn parse_networks(list: &str) -> Result<Vec<Cidr>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    pub fn trusts(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The client of a request that came from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = peer.to_canonical();
        if self.networks.is_empty() || !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for value in headers.get_all(self.header.name()).iter().rev() {
            let Ok(list) = value.to_str() else {
                return client;
            };
            for item in list.rsplit(',') {
                let hop = match self.header {
                    ForwardedHeader::XForwardedFor => parse_node(item.trim()),
                    ForwardedHeader::Forwarded => forwarded_for(item),
                };
                // An entry a trusted proxy wrote but that names no address ("unknown", an
                // obfuscated node): the last address known is the best one left.
                let Some(hop) = hop else {
                    return client;
                };
                client = hop.to_canonical();
                if !self.trusts(client) {
                    return client;
                }
            }
        }
        client
    }
}

/// The `for=` node of one `Forwarded` element (`for=192.0.2.60;proto=http;by=...`).
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        parse_node(value)
    })
}

/// `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, `192.0.2.1:4711`, `[2001:db8::1]:4711`.
fn parse_node(node: &str) -> Option<IpAddr> {
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(inner) = node.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6);
    }
    node.parse::<SocketAddr>().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn proxies(list: &str, header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies {
            networks: TrustedProxies::parse_networks(list).unwrap(),
            header,
        }
    }

    fn headers(name: &str, values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn networks_parse_and_match() {
        let n: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(n.contains(ip("10.200.3.4")));
        assert!(n.contains(ip("::ffff:10.1.1.1")), "IPv4-mapped IPv6");
        assert!(!n.contains(ip("11.0.0.1")));
        assert!(!n.contains(ip("fd00::1")));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains(ip("fdab::1")));
        assert!(!v6.contains(ip("fe80::1")));
        let host: Cidr = "192.0.2.7".parse().unwrap();
        assert!(host.contains(ip("192.0.2.7")) && !host.contains(ip("192.0.2.8")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        for bad in ["10.0.0.1/8", "10.0.0.0/33", "nope", "10.0.0.0/", "::/129"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert_eq!(TrustedProxies::parse_networks("").unwrap(), vec![]);
        assert_eq!(
            TrustedProxies::parse_networks(" 10.0.0.0/8 , ::1 ")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_claims() {
        let p = proxies("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["198.51.100.1"]);
        assert_eq!(p.client_ip(ip("203.0.113.5"), &h), ip("203.0.113.5"));
        let none = TrustedProxies::default();
        assert_eq!(none.client_ip(ip("10.0.0.1"), &h), ip("10.0.0.1"));
    }

    #[test]
    fn the_rightmost_untrusted_address_is_the_client() {
        let p = proxies("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        // A client forging an address on the left gains nothing.
        let h = headers("x-forwarded-for", &["1.1.1.1, 203.0.113.5, 10.0.0.9"]);
        assert_eq!(p.client_ip(ip("10.0.0.2"), &h), ip("203.0.113.5"));
        // Header lines are one list, in order.
        let h = headers("x-forwarded-for", &["1.1.1.1", "203.0.113.5", "10.0.0.9"]);
        assert_eq!(p.client_ip(ip("10.0.0.2"), &h), ip("203.0.113.5"));
        // Every hop trusted: the leftmost.
        let h = headers("x-forwarded-for", &["10.1.1.1, 10.0.0.9"]);
        assert_eq!(p.client_ip(ip("10.0.0.2"), &h), ip("10.1.1.1"));
        // No header: the proxy itself.
        assert_eq!(
            p.client_ip(ip("10.0.0.2"), &HeaderMap::new()),
            ip("10.0.0.2")
        );
        // Garbage written by a trusted hop: the last address known.
        let h = headers("x-forwarded-for", &["203.0.113.5, unknown, 10.0.0.9"]);
        assert_eq!(p.client_ip(ip("10.0.0.2"), &h), ip("10.0.0.9"));
        // Ports and brackets.
        let h = headers("x-forwarded-for", &["[2001:db8::7]:443, 198.51.100.3:5000"]);
        assert_eq!(p.client_ip(ip("10.0.0.2"), &h), ip("198.51.100.3"));
        let h = headers("x-forwarded-for", &["[2001:db8::7]:443"]);
        assert_eq!(p.client_ip(ip("10.0.0.2"), &h), ip("2001:db8::7"));
        // The other header is not read.
        let h = headers("forwarded", &["for=203.0.113.5"]);
        assert_eq!(p.client_ip(ip("10.0.0.2"), &h), ip("10.0.0.2"));
    }

    #[test]
    fn forwarded_elements_name_the_client_in_for() {
        let p = proxies("10.0.0.0/8, fd00::/8", ForwardedHeader::Forwarded);
        let h = headers(
            "forwarded",
            &[
                r#"for=1.1.1.1, for="[2001:db8:cafe::17]:4711";proto=https, For=10.0.0.3;by=10.0.0.1"#,
            ],
        );
        assert_eq!(p.client_ip(ip("fd00::2"), &h), ip("2001:db8:cafe::17"));
        let h = headers("forwarded", &["for=_hidden, for=10.0.0.3"]);
        assert_eq!(p.client_ip(ip("10.0.0.2"), &h), ip("10.0.0.3"));
        let h = headers("forwarded", &[r#"proto=http;for="192.0.2.60:80""#]);
        assert_eq!(p.client_ip(ip("10.0.0.2"), &h), ip("192.0.2.60"));
    }

    #[test]
    fn the_walk_allocates_nothing() {
        let p = proxies("10.0.0.0/8", ForwardedHeader::XForwardedFor);
        let h = headers("x-forwarded-for", &["1.1.1.1, 203.0.113.5, 10.0.0.9"]);
        let (client, n) = crate::alloc::count(|| p.client_ip(ip("10.0.0.2"), &h));
        assert_eq!(client, ip("203.0.113.5"));
        assert_eq!(n.allocs, 0);
    }
}
