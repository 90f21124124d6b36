//! `host:port` as written in settings and registries: the one parser and
//! the one formatter (IPv6 hosts in brackets) every module uses.

use std::{fmt, str::FromStr};

/// A host (DNS name, IPv4 or IPv6 address) and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// The host, without brackets.
    pub host: String,
    /// The port, never 0.
    pub port: u16,
}

impl HostPort {
    /// `host` and `port` as they are.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
        }
    }

    /// Parses `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6
    /// address, taking `default_port` where the text has none.
    pub fn with_default_port(raw: &str, default_port: u16) -> Result<Self, String> {
        let (host, port) = split(raw)?;
        Ok(Self::new(host, port.unwrap_or(default_port)))
    }
}

impl FromStr for HostPort {
    type Err = String;

    /// Parses `host:port` or `[v6]:port`; the port is required.
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        match split(raw)? {
            (host, Some(port)) => Ok(Self::new(host, port)),
            (_, None) => Err(format!("{raw:?} is not host:port")),
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') && !self.host.starts_with('[') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address
/// into its host and optional port, checking both.
pub fn split(raw: &str) -> Result<(&str, Option<u16>), String> {
    let bad_port = || format!("{raw:?} has no valid port");
    let (host, port) = if let Some(rest) = raw.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("{raw:?} has an unclosed '['"))?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad_port)?)),
        }
    } else if raw.matches(':').count() > 1 {
        // A bare IPv6 address carries no port.
        (raw, None)
    } else {
        match raw.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (raw, None),
        }
    };
    if host.is_empty()
        || host
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#'))
    {
        return Err(format!("{raw:?} is not host[:port]"));
    }
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(p) if p > 0 => Some(p),
            _ => return Err(bad_port()),
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_form_parses_and_prints_back() {
        for (raw, host, port, shown) in [
            ("a:1", "a", 1, "a:1"),
            ("10.0.0.2:8888", "10.0.0.2", 8888, "10.0.0.2:8888"),
            ("[::1]:80", "::1", 80, "[::1]:80"),
            (
                "notes.internal:9000",
                "notes.internal",
                9000,
                "notes.internal:9000",
            ),
        ] {
            let parsed: HostPort = raw.parse().expect(raw);
            assert_eq!(parsed, HostPort::new(host, port), "{raw}");
            assert_eq!(parsed.to_string(), shown, "{raw}");
        }
    }

    #[test]
    fn default_ports_fill_in_only_where_none_is_written() {
        for (raw, shown) in [
            ("nacos-1", "nacos-1:8848"),
            ("nacos-1:9000", "nacos-1:9000"),
            ("::1", "[::1]:8848"),
            ("[fd00::7]", "[fd00::7]:8848"),
        ] {
            let parsed = HostPort::with_default_port(raw, 8848).expect(raw);
            assert_eq!(parsed.to_string(), shown, "{raw}");
        }
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        for (raw, expected) in [
            ("host", "not host:port"),
            ("host:99999", "no valid port"),
            ("host:0", "no valid port"),
            ("host:port", "no valid port"),
            ("http://x:1", "not host[:port]"),
            (":8848", "not host[:port]"),
            ("a b:1", "not host[:port]"),
            ("[::1", "unclosed"),
            ("[::1]x", "no valid port"),
        ] {
            let err = raw.parse::<HostPort>().expect_err(raw);
            assert!(err.contains(expected), "{raw}: {err}");
        }
    }
}
