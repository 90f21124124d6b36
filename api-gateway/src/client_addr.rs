//! Who the client is: the address the connection limits, the rate limits,
//! the login throttle and the access log all use, derived once per
//! request when it arrives (http/) and left in its extensions as
//! [`ClientAddr`].
//!
//! The peer of the TCP connection is the client, unless the peer is one
//! of the proxies the process trusts (`EASYNOTE_TRUSTED_PROXIES`, a list
//! of networks: the load balancer's, the ingress's). Then `X-Forwarded-For`
//! is read right to left, each trusted proxy skipped, and the first
//! address not in the list is the client: every proxy appends the address
//! it saw, so only the entries that trusted proxies wrote can be believed,
//! and whatever a client puts in the header itself sits to their left.
//! A peer outside the list is never believed, whatever it sends.
//!
//! The trust comes from the process's environment, not from the shared
//! governance document: whoever can publish rules must not be able to make
//! every address spoofable. The document's `gateway.trusted_proxy_hops`
//! can only narrow it (at most that many trusted proxies are walked; 0,
//! the default, leaves it to the list); without the list it is ignored.
//!
//! Limits key an IPv6 client by its /64: one subscriber commonly holds at
//! least a /64 and can pick any address in it, so keying per /128 would
//! hand each client 2^64 fresh budgets.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
    str::FromStr,
};

use axum::http::HeaderMap;
use easynote_shared::{
    config::{ConfigError, Env},
    governance::Governance,
};

/// One network, `10.0.0.0/8` or `fd00::/8`; a bare address is its own /32
/// or /128.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside the network (IPv4-mapped IPv6 addresses as
    /// their IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an address or network"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length must be 0 to {max}"))?,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The proxies whose `X-Forwarded-For` entries are believed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// The networks of `EASYNOTE_TRUSTED_PROXIES` (comma-separated; unset
    /// or empty: none, the peer is always the client).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        const VAR: &str = "EASYNOTE_TRUSTED_PROXIES";
        let Some(list) = env.get(VAR) else {
            return Ok(Self::default());
        };
        let mut nets = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let net: IpNet = item
                .parse()
                .map_err(|problem: String| ConfigError::invalid(VAR, problem))?;
            if net.prefix == 0 {
                // `0.0.0.0/0` would believe anyone's header: the very hole
                // the list exists to close.
                return Err(ConfigError::invalid(
                    VAR,
                    format!("{item} trusts every address; name the proxies' networks"),
                ));
            }
            nets.push(net);
        }
        Ok(Self(nets))
    }

    /// A list of the given networks.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        Self(nets.into_iter().collect())
    }

    /// Whether `ip` is one of the trusted proxies.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(ip))
    }

    /// Whether any proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client of a request from `peer` with `headers`; `max_hops` > 0
    /// trusts at most that many proxies, the peer included.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap, max_hops: u32) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let mut client = peer;
        // The header may come in several lines; together they are one list.
        let entries: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        // Each entry read was written by a proxy trusted so far, the first
        // by the peer; `max_hops` bounds how many are read.
        let readable = match usize::try_from(max_hops) {
            Ok(0) | Err(_) => usize::MAX,
            Ok(hops) => hops,
        };
        for entry in entries.iter().rev().take(readable) {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                // Garbage written by a trusted proxy's client: the last
                // address a trusted proxy vouched for stands.
                break;
            };
            client = ip.to_canonical();
            if !self.contains(client) {
                break;
            }
        }
        client
    }
}

/// The trusted proxies and the rules that may narrow them: how the HTTP
/// server finds each request's client.
#[derive(Debug, Clone)]
pub struct ClientAddrs {
    proxies: TrustedProxies,
    governance: Governance,
}

impl ClientAddrs {
    /// Clients found through `proxies`, narrowed by `governance`'s
    /// `gateway.trusted_proxy_hops`.
    pub fn new(proxies: TrustedProxies, governance: Governance) -> Self {
        if proxies.is_empty() && governance.active().rules.gateway.trusted_proxy_hops > 0 {
            tracing::warn!(
                "gateway.trusted_proxy_hops is set but EASYNOTE_TRUSTED_PROXIES is not: \
                 X-Forwarded-For is not believed from any peer; list the proxies' networks"
            );
        }
        Self {
            proxies,
            governance,
        }
    }

    /// Whether `peer` is a trusted proxy.
    pub fn is_trusted_proxy(&self, peer: IpAddr) -> bool {
        self.proxies.contains(peer)
    }

    /// The client of a request from `peer` with `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if self.proxies.is_empty() {
            return peer.to_canonical();
        }
        let hops = self.governance.active().rules.gateway.trusted_proxy_hops;
        self.proxies.client(peer, headers, hops)
    }
}

/// The client address of a request, as derived when it arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// The key that limits count `ip` under: the address, or for IPv6 its /64.
pub fn limit_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(list: &str) -> TrustedProxies {
        TrustedProxies::from_env(&Env::from_pairs([("EASYNOTE_TRUSTED_PROXIES", list)]))
            .expect("a valid list")
    }

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().expect("a header value"));
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn a_header_from_an_untrusted_peer_is_ignored() {
        let list = proxies("10.0.0.0/8");
        let spoofed = xff("203.0.113.7");
        assert_eq!(
            list.client(ip("198.51.100.2"), &spoofed, 0),
            ip("198.51.100.2")
        );
        assert_eq!(
            TrustedProxies::default().client(ip("10.0.0.5"), &spoofed, 0),
            ip("10.0.0.5"),
            "no list: nobody's header is believed"
        );
    }

    #[test]
    fn through_trusted_proxies_the_first_untrusted_entry_from_the_right_is_the_client() {
        let list = proxies("10.0.0.0/8, 192.168.1.1");
        let peer = ip("10.0.0.5");
        let cases = [
            ("203.0.113.7", "203.0.113.7", "one proxy"),
            (
                "6.6.6.6, 203.0.113.7",
                "203.0.113.7",
                "a forged entry to the left is passed over",
            ),
            (
                "6.6.6.6, 203.0.113.7, 192.168.1.1",
                "203.0.113.7",
                "a trusted hop is skipped",
            ),
            (
                "10.1.1.1, 10.2.2.2",
                "10.1.1.1",
                "all trusted: the leftmost",
            ),
            (
                "6.6.6.6, not-an-ip, 203.0.113.7",
                "203.0.113.7",
                "garbage beyond the client",
            ),
            (
                "203.0.113.7, not-an-ip",
                "10.0.0.5",
                "garbage from a trusted proxy's client",
            ),
            ("2001:db8::1", "2001:db8::1", "IPv6"),
            ("::ffff:203.0.113.7", "203.0.113.7", "IPv4-mapped"),
        ];
        for (header, client, case) in cases {
            assert_eq!(list.client(peer, &xff(header), 0), ip(client), "{case}");
        }
        assert_eq!(list.client(peer, &HeaderMap::new(), 0), peer, "no header");
        assert_eq!(
            list.client(ip("::ffff:10.0.0.5"), &xff("203.0.113.7"), 0),
            ip("203.0.113.7"),
            "a mapped peer is its IPv4 address"
        );
    }

    #[test]
    fn the_documents_hop_count_only_narrows_the_walk() {
        let list = proxies("10.0.0.0/8");
        let peer = ip("10.0.0.5");
        let header = xff("203.0.113.7, 10.9.9.9");
        assert_eq!(list.client(peer, &header, 0), ip("203.0.113.7"));
        assert_eq!(list.client(peer, &header, 2), ip("203.0.113.7"));
        assert_eq!(list.client(peer, &header, 1), ip("10.9.9.9"));
    }

    #[test]
    fn the_list_refuses_bad_networks_and_trust_in_everyone() {
        let read = |list: &str| {
            TrustedProxies::from_env(&Env::from_pairs([("EASYNOTE_TRUSTED_PROXIES", list)]))
                .map_err(|e| e.to_string())
        };
        for (list, expected) in [
            ("10.0.0.0/33", "prefix length must be 0 to 32"),
            ("fd00::/129", "prefix length must be 0 to 128"),
            ("ten.0.0.0/8", "not an address"),
            ("0.0.0.0/0", "trusts every address"),
            ("::/0", "trusts every address"),
        ] {
            let err = read(list).expect_err(list);
            assert!(err.starts_with("EASYNOTE_TRUSTED_PROXIES"), "{err}");
            assert!(err.contains(expected), "{list}: {err}");
        }
        assert!(read("").expect("empty").is_empty());
        assert_eq!(
            read("10.0.0.0/8,fd00::/8, 172.16.0.1")
                .expect("valid")
                .0
                .len(),
            3
        );
        assert!(proxies("172.16.0.0/12").contains(ip("172.31.255.255")));
        assert!(!proxies("172.16.0.0/12").contains(ip("172.32.0.0")));
    }

    #[test]
    fn ipv6_clients_are_limited_per_slash_64() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_eq!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            limit_key(ip("2001:db8:1:2::1")),
            limit_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}
