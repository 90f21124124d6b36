//! Which address an instance announces: `EASYNOTE_ADVERTISE_ADDR`, or the
//! bound address with an unspecified IP replaced by this host's outbound IP.

use std::{
    net::{IpAddr, SocketAddr},
    str::FromStr,
};

use super::DiscoveryError;
use crate::addr;

/// `EASYNOTE_ADVERTISE_ADDR`: `host` (the bound port is kept) or `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvertiseAddr {
    /// IP or DNS name other hosts reach this instance at.
    pub host: String,
    /// The port to announce, when it differs from the bound one (NAT, proxies).
    pub port: Option<u16>,
}

impl FromStr for AdvertiseAddr {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        let (host, port) = addr::split(raw)?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// The `(host, port)` to register for a server bound at `bound`: the
/// configured advertise address (its port defaulting to the bound one), or
/// the bound address with an unspecified IP (`0.0.0.0`, `::`) replaced by
/// `outbound_ip()`.
pub(crate) fn advertised_addr(
    configured: Option<&AdvertiseAddr>,
    bound: SocketAddr,
    outbound_ip: impl FnOnce(&IpAddr) -> std::io::Result<IpAddr>,
) -> Result<(String, u16), DiscoveryError> {
    if let Some(advertise) = configured {
        return Ok((
            advertise.host.clone(),
            advertise.port.unwrap_or(bound.port()),
        ));
    }
    let ip = if bound.ip().is_unspecified() {
        outbound_ip(&bound.ip()).map_err(|err| DiscoveryError::NoAdvertiseAddr {
            bound,
            reason: format!("this host's outbound IP is unknown ({err})"),
        })?
    } else {
        bound.ip()
    };
    Ok((ip.to_string(), bound.port()))
}

/// The IP this host uses to reach other hosts: the source address of a UDP
/// socket "connected" to a public address (no packet is sent).
pub(crate) fn outbound_ip(family: &IpAddr) -> std::io::Result<IpAddr> {
    let (local, remote) = match family {
        IpAddr::V4(_) => ("0.0.0.0:0", "192.0.2.1:9"),
        IpAddr::V6(_) => ("[::]:0", "[2001:db8::1]:9"),
    };
    let socket = std::net::UdpSocket::bind(local)?;
    socket.connect(remote)?;
    let ip = socket.local_addr()?.ip();
    if ip.is_unspecified() {
        return Err(std::io::Error::other("no route to other hosts"));
    }
    Ok(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_advertised_address_is_configured_bound_or_outbound() {
        let bound: SocketAddr = "0.0.0.0:8888".parse().unwrap();
        let outbound = |_: &IpAddr| Ok("10.1.2.3".parse().unwrap());
        let configured = AdvertiseAddr {
            host: "notes.internal".into(),
            port: None,
        };
        let cases = [
            (Some(configured.clone()), bound, ("notes.internal", 8888)),
            (
                Some(AdvertiseAddr {
                    port: Some(9000),
                    ..configured
                }),
                bound,
                ("notes.internal", 9000),
            ),
            (None, bound, ("10.1.2.3", 8888)),
            (None, "127.0.0.1:7".parse().unwrap(), ("127.0.0.1", 7)),
            (None, "[::]:5".parse().unwrap(), ("10.1.2.3", 5)),
        ];
        for (configured, bound, (host, port)) in cases {
            let got = advertised_addr(configured.as_ref(), bound, outbound).expect("resolves");
            assert_eq!(got, (host.to_owned(), port), "{configured:?} {bound}");
        }
        let err = advertised_addr(None, bound, |_| Err(std::io::Error::other("no route")))
            .expect_err("unknown outbound IP");
        assert!(
            err.to_string().contains("set EASYNOTE_ADVERTISE_ADDR"),
            "{err}"
        );
    }
}
