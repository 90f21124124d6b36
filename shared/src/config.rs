//! Typed configuration read once from the environment.
//!
//! Every service builds its own config struct from an [`Env`] at start-up and
//! passes it down explicitly; nothing reads the environment later. [`Env`]
//! can also be built from plain pairs, which is how tests configure servers.
//! The pieces every service needs ([`Environment`], [`DatabaseConfig`],
//! [`DiscoveryConfig`]) live here; each variable is documented in the README.

use std::{collections::HashMap, fmt, net::SocketAddr, str::FromStr, time::Duration};

use secrecy::SecretString;

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The variable is set but cannot be parsed.
    #[error("{var}: {reason}")]
    Invalid {
        /// The environment variable.
        var: String,
        /// What is wrong with it (never the value of a secret).
        reason: String,
    },
    /// The variable is required and missing.
    #[error("{var} must be set{hint}")]
    Missing {
        /// The environment variable.
        var: String,
        /// Why it is required, starting with a separator.
        hint: String,
    },
}

impl ConfigError {
    /// A variable whose value is unusable for `reason`.
    pub fn invalid(var: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            var: var.to_owned(),
            reason: reason.into(),
        }
    }
}

/// Where configuration values come from: the process environment, or a map.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Values may be secrets; only the names are shown.
        let mut names: Vec<_> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

impl Env {
    /// A snapshot of this process's environment.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    /// An environment holding exactly `pairs` (for tests and embedding).
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// Sets one variable, returning the changed environment.
    #[must_use]
    pub fn with(mut self, var: &str, value: impl Into<String>) -> Self {
        self.vars.insert(var.to_owned(), value.into());
        self
    }

    /// The raw value, with an empty value treated as unset.
    pub fn get(&self, var: &str) -> Option<&str> {
        self.vars
            .get(var)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The value, or `default` when unset.
    pub fn string(&self, var: &str, default: &str) -> String {
        self.get(var).unwrap_or(default).to_owned()
    }

    /// A secret value; never echoed back in errors or logs.
    pub fn secret(&self, var: &str) -> Option<SecretString> {
        self.get(var).map(|v| SecretString::from(v.to_owned()))
    }

    /// Parses the value with [`FromStr`], or returns `default` when unset.
    pub fn parse<T>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|err| ConfigError::invalid(var, format!("cannot parse {raw:?}: {err}"))),
        }
    }

    /// A socket address such as `127.0.0.1:8080` or `0.0.0.0:0`.
    pub fn socket_addr(&self, var: &str, default: &str) -> Result<SocketAddr, ConfigError> {
        let raw = self.get(var).unwrap_or(default);
        raw.parse()
            .map_err(|_| ConfigError::invalid(var, format!("{raw:?} is not an IP:port address")))
    }

    /// A duration written as `1h`, `30s`, `500ms` or a bare number of seconds.
    pub fn duration(&self, var: &str, default: Duration) -> Result<Duration, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(raw) => parse_duration(raw).map_err(|reason| ConfigError::invalid(var, reason)),
        }
    }

    /// A comma-separated list of `host:port` addresses.
    pub fn addr_list(&self, var: &str, default: &str) -> Result<Vec<String>, ConfigError> {
        let raw = self.get(var).unwrap_or(default);
        let addrs: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect();
        if addrs.is_empty() {
            return Err(ConfigError::invalid(var, "needs at least one host:port"));
        }
        for addr in &addrs {
            validate_host_port(addr).map_err(|reason| ConfigError::invalid(var, reason))?;
        }
        Ok(addrs)
    }
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    if let Ok(secs) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(raw)
        .map_err(|err| format!("{raw:?} is not a duration such as 30s, 5m or 1h: {err}"))
}

/// Checks that `addr` is `host:port` with a non-empty host and a valid port.
pub fn validate_host_port(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("{addr:?} is not host:port"));
    };
    if host.is_empty() || host.contains('/') {
        return Err(format!("{addr:?} has no valid host"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(format!("{addr:?} has no valid port")),
    }
}

/// `EASYNOTE_ENV`: how strict the services are about their settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Environment {
    /// Development defaults are allowed (with warnings).
    #[default]
    Development,
    /// Development defaults for secrets are refused.
    Production,
}

impl Environment {
    /// Reads `EASYNOTE_ENV` (`development` by default, or `production`).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env
            .string("EASYNOTE_ENV", "development")
            .to_ascii_lowercase()
            .as_str()
        {
            "development" | "dev" => Ok(Self::Development),
            "production" | "prod" => Ok(Self::Production),
            other => Err(ConfigError::invalid(
                "EASYNOTE_ENV",
                format!("{other:?} is neither development nor production"),
            )),
        }
    }

    /// The name used in logs and as `deployment.environment`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
        }
    }
}

/// Storage settings of one service.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `EASYNOTE_DATABASE_URL`: `sqlite://…` or `mysql://…`; may hold a password.
    pub url: SecretString,
    /// `EASYNOTE_DB_MAX_CONNECTIONS` (default 10).
    pub max_connections: u32,
    /// `EASYNOTE_DB_CONNECT_TIMEOUT` (default 30s): how long start-up keeps
    /// retrying a database that is not reachable yet.
    pub connect_timeout: Duration,
}

impl DatabaseConfig {
    /// Reads the database settings; `default_url` is the service's embedded SQLite file.
    pub fn from_env(env: &Env, default_url: &str) -> Result<Self, ConfigError> {
        let url = env
            .secret("EASYNOTE_DATABASE_URL")
            .unwrap_or_else(|| SecretString::from(default_url.to_owned()));
        let max_connections = env.parse("EASYNOTE_DB_MAX_CONNECTIONS", 10u32)?;
        if max_connections == 0 {
            return Err(ConfigError::invalid(
                "EASYNOTE_DB_MAX_CONNECTIONS",
                "must be at least 1",
            ));
        }
        Ok(Self {
            url,
            max_connections,
            connect_timeout: env
                .duration("EASYNOTE_DB_CONNECT_TIMEOUT", Duration::from_secs(30))?,
        })
    }

    /// A config for `url` with default pool settings.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: SecretString::from(url.into()),
            max_connections: 10,
            connect_timeout: Duration::from_secs(30),
        }
    }
}

/// How a service finds the instances of another (`EASYNOTE_REGISTRY`).
#[derive(Debug, Clone)]
pub enum DiscoveryConfig {
    /// Fixed address lists from `EASYNOTE_USER_ADDRS` / `EASYNOTE_NOTE_ADDRS`.
    Static {
        /// `host:port` of every user-service instance.
        user_addrs: Vec<String>,
        /// `host:port` of every note-service instance.
        note_addrs: Vec<String>,
    },
    /// A Nacos registry (`EASYNOTE_REGISTRY=nacos`): open-source Nacos,
    /// `rnacos` or Aliyun MSE.
    Nacos(NacosConfig),
}

impl DiscoveryConfig {
    /// Reads the registry choice and its settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        match env
            .string("EASYNOTE_REGISTRY", "static")
            .to_ascii_lowercase()
            .as_str()
        {
            "static" => Ok(Self::Static {
                user_addrs: env.addr_list("EASYNOTE_USER_ADDRS", "127.0.0.1:8889")?,
                note_addrs: env.addr_list("EASYNOTE_NOTE_ADDRS", "127.0.0.1:8888")?,
            }),
            "nacos" => Ok(Self::Nacos(NacosConfig::from_env(env)?)),
            other => Err(ConfigError::invalid(
                "EASYNOTE_REGISTRY",
                format!("{other:?} is not a known registry (static or nacos)"),
            )),
        }
    }
}

/// The Nacos port used when `NACOS_SERVER_ADDR` names a host without one.
pub const NACOS_DEFAULT_PORT: u16 = 8848;
/// How far the Nacos gRPC port is above its HTTP port (fixed by Nacos 2.x).
pub const NACOS_GRPC_PORT_OFFSET: u16 = 1000;

/// Settings of the Nacos registry. `Debug` never shows the secrets.
#[derive(Debug, Clone)]
pub struct NacosConfig {
    /// `NACOS_SERVER_ADDR` (default `127.0.0.1:8848`): comma-separated
    /// `host[:port]` of the Nacos servers' HTTP port; the SDK talks gRPC to
    /// port + 1000 of each.
    pub server_addrs: Vec<String>,
    /// `NACOS_NAMESPACE`: namespace id; empty (the default) is `public`.
    pub namespace: String,
    /// `NACOS_GROUP` (default `DEFAULT_GROUP`).
    pub group: String,
    /// `NACOS_USERNAME`/`NACOS_PASSWORD` or `NACOS_ACCESS_KEY`/`NACOS_SECRET_KEY`.
    pub auth: NacosAuth,
    /// `EASYNOTE_ADVERTISE_ADDR`: the address registered for this instance;
    /// by default the bound address, an unspecified IP replaced by this
    /// host's outbound IP.
    pub advertise: Option<AdvertiseAddr>,
    /// `EASYNOTE_WEIGHT` (default 1): this instance's share of traffic.
    pub weight: f64,
    /// `EASYNOTE_DEREGISTER_GRACE` (default 3s): how long a stopping
    /// instance keeps serving after deregistering, while callers learn it
    /// is gone.
    pub deregister_grace: Duration,
    /// `NACOS_CONNECT_TIMEOUT` (default 60s): how long start-up keeps
    /// retrying a registry it cannot reach before giving up.
    pub connect_timeout: Duration,
    /// `NACOS_RETRY_BACKOFF` (default 1s): the first pause between start-up
    /// attempts; it doubles after each failure, up to 30s.
    pub retry_backoff: Duration,
    /// `NACOS_CACHE_DIR`: where the SDK keeps its on-disk copy of instance
    /// lists (default: the SDK's `~/nacos`).
    pub cache_dir: Option<std::path::PathBuf>,
}

/// How this client authenticates to Nacos.
#[derive(Clone)]
pub enum NacosAuth {
    /// No credentials (a Nacos without auth, such as a default rnacos).
    None,
    /// Open-source Nacos with auth on: `NACOS_USERNAME`/`NACOS_PASSWORD`.
    Password {
        /// `NACOS_USERNAME`.
        username: String,
        /// `NACOS_PASSWORD`.
        password: SecretString,
    },
    /// Aliyun MSE: `NACOS_ACCESS_KEY`/`NACOS_SECRET_KEY` (RAM AccessKey),
    /// signed with `NACOS_SIGN_REGION_ID` when given.
    AccessKey {
        /// `NACOS_ACCESS_KEY`: the AccessKey id.
        access_key: String,
        /// `NACOS_SECRET_KEY`: the AccessKey secret.
        secret_key: SecretString,
        /// `NACOS_SIGN_REGION_ID`: region for signature v4, e.g. `cn-hangzhou`.
        region: Option<String>,
    },
}

impl fmt::Debug for NacosAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Password { username, .. } => f
                .debug_struct("Password")
                .field("username", username)
                .finish_non_exhaustive(),
            Self::AccessKey {
                access_key, region, ..
            } => f
                .debug_struct("AccessKey")
                .field("access_key", access_key)
                .field("region", region)
                .finish_non_exhaustive(),
        }
    }
}

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
        let (host, port) = split_host_port(raw)?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }
}

/// Splits `host`, `host:port`, `[v6]` or `[v6]:port`, checking both parts.
fn split_host_port(raw: &str) -> Result<(&str, Option<u16>), String> {
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

impl NacosConfig {
    /// Reads the Nacos settings; credentials must come in complete pairs.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let raw = env.string("NACOS_SERVER_ADDR", "127.0.0.1:8848");
        let server_addrs = parse_nacos_servers(&raw)
            .map_err(|reason| ConfigError::invalid("NACOS_SERVER_ADDR", reason))?;
        let weight = env.parse("EASYNOTE_WEIGHT", 1.0f64)?;
        if !weight.is_finite() || weight < 0.0 {
            return Err(ConfigError::invalid(
                "EASYNOTE_WEIGHT",
                "must be a number of at least 0",
            ));
        }
        let retry_backoff = env.duration("NACOS_RETRY_BACKOFF", Duration::from_secs(1))?;
        if retry_backoff.is_zero() {
            return Err(ConfigError::invalid(
                "NACOS_RETRY_BACKOFF",
                "must be longer than zero",
            ));
        }
        Ok(Self {
            server_addrs,
            namespace: env.string("NACOS_NAMESPACE", ""),
            group: env.string("NACOS_GROUP", "DEFAULT_GROUP"),
            auth: NacosAuth::from_env(env)?,
            advertise: match env.get("EASYNOTE_ADVERTISE_ADDR") {
                None => None,
                Some(raw) => {
                    Some(raw.parse().map_err(|reason| {
                        ConfigError::invalid("EASYNOTE_ADVERTISE_ADDR", reason)
                    })?)
                }
            },
            weight,
            deregister_grace: env.duration("EASYNOTE_DEREGISTER_GRACE", Duration::from_secs(3))?,
            connect_timeout: env.duration("NACOS_CONNECT_TIMEOUT", Duration::from_secs(60))?,
            retry_backoff,
            cache_dir: env.get("NACOS_CACHE_DIR").map(std::path::PathBuf::from),
        })
    }

    /// Settings for a Nacos at `server_addr` with every other value defaulted.
    pub fn new(server_addr: &str) -> Result<Self, ConfigError> {
        Self::from_env(&Env::from_pairs([("NACOS_SERVER_ADDR", server_addr)]))
    }

    /// The servers as one `host:port,host:port` string, as the SDK takes them.
    pub fn server_list(&self) -> String {
        self.server_addrs.join(",")
    }
}

/// Parses `NACOS_SERVER_ADDR`: `host[:port]` entries separated by commas,
/// with the default port filled in and room for the gRPC port above it.
fn parse_nacos_servers(raw: &str) -> Result<Vec<String>, String> {
    let mut servers = Vec::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if entry.contains("://") {
            return Err(format!(
                "{entry:?} must be host:port without a scheme (e.g. 127.0.0.1:8848)"
            ));
        }
        let (host, port) = split_host_port(entry)?;
        let port = port.unwrap_or(NACOS_DEFAULT_PORT);
        if port > u16::MAX - NACOS_GRPC_PORT_OFFSET {
            return Err(format!(
                "{entry:?}: port {port} leaves no room for the gRPC port (port + {NACOS_GRPC_PORT_OFFSET})"
            ));
        }
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        servers.push(format!("{host}:{port}"));
    }
    if servers.is_empty() {
        return Err("needs at least one host:port".to_owned());
    }
    Ok(servers)
}

impl NacosAuth {
    /// Reads the credentials: none, a username and password, or an
    /// AccessKey pair; a half-given pair or both kinds are an error.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let username = env.get("NACOS_USERNAME").map(str::to_owned);
        let password = env.secret("NACOS_PASSWORD");
        let access_key = env.get("NACOS_ACCESS_KEY").map(str::to_owned);
        let secret_key = env.secret("NACOS_SECRET_KEY");
        let region = env.get("NACOS_SIGN_REGION_ID").map(str::to_owned);
        let missing = |var: &str, because: &str| ConfigError::Missing {
            var: var.to_owned(),
            hint: format!(" when {because} is set"),
        };
        let password_auth = match (username, password) {
            (None, None) => None,
            (Some(username), Some(password)) => Some(Self::Password { username, password }),
            (Some(_), None) => return Err(missing("NACOS_PASSWORD", "NACOS_USERNAME")),
            (None, Some(_)) => return Err(missing("NACOS_USERNAME", "NACOS_PASSWORD")),
        };
        let key_auth = match (access_key, secret_key) {
            (None, None) => None,
            (Some(access_key), Some(secret_key)) => Some(Self::AccessKey {
                access_key,
                secret_key,
                region: region.clone(),
            }),
            (Some(_), None) => return Err(missing("NACOS_SECRET_KEY", "NACOS_ACCESS_KEY")),
            (None, Some(_)) => return Err(missing("NACOS_ACCESS_KEY", "NACOS_SECRET_KEY")),
        };
        match (password_auth, key_auth) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(
                "NACOS_ACCESS_KEY",
                "give either NACOS_USERNAME/NACOS_PASSWORD (open-source Nacos) or NACOS_ACCESS_KEY/NACOS_SECRET_KEY (Aliyun MSE), not both",
            )),
            (Some(auth), None) | (None, Some(auth)) => Ok(auth),
            (None, None) if region.is_some() => {
                Err(missing("NACOS_ACCESS_KEY", "NACOS_SIGN_REGION_ID"))
            }
            (None, None) => Ok(Self::None),
        }
    }
}

/// Lifecycle settings every server shares.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// `EASYNOTE_SHUTDOWN_TIMEOUT` (default 10s): the bound on draining
    /// in-flight requests after a shutdown signal.
    pub shutdown_timeout: Duration,
}

impl LifecycleConfig {
    /// Reads the lifecycle settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            shutdown_timeout: env.duration("EASYNOTE_SHUTDOWN_TIMEOUT", Duration::from_secs(10))?,
        })
    }
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_units_and_bare_seconds() {
        let env = Env::from_pairs([("A", "1h"), ("B", "90"), ("C", "250ms"), ("D", "soon")]);
        let zero = Duration::ZERO;
        assert_eq!(env.duration("A", zero).unwrap(), Duration::from_secs(3600));
        assert_eq!(env.duration("B", zero).unwrap(), Duration::from_secs(90));
        assert_eq!(env.duration("C", zero).unwrap(), Duration::from_millis(250));
        assert_eq!(env.duration("UNSET", zero).unwrap(), zero);
        let err = env.duration("D", zero).unwrap_err().to_string();
        assert!(err.starts_with("D: \"soon\" is not a duration"), "{err}");
    }

    #[test]
    fn address_lists_are_trimmed_and_checked() {
        let env = Env::from_pairs([
            ("OK", " a:1, 10.0.0.2:8888 ,"),
            ("NOPORT", "host"),
            ("BADPORT", "host:99999"),
            ("SCHEME", "http://x:1"),
        ]);
        assert_eq!(
            env.addr_list("OK", "").unwrap(),
            vec!["a:1", "10.0.0.2:8888"]
        );
        assert_eq!(env.addr_list("UNSET", "d:2").unwrap(), vec!["d:2"]);
        for var in ["NOPORT", "BADPORT", "SCHEME"] {
            let err = env.addr_list(var, "").unwrap_err().to_string();
            assert!(err.starts_with(var), "{var}: {err}");
        }
    }

    #[test]
    fn environment_names_are_strict() {
        let prod = Env::from_pairs([("EASYNOTE_ENV", "Production")]);
        assert_eq!(
            Environment::from_env(&prod).unwrap(),
            Environment::Production
        );
        assert_eq!(
            Environment::from_env(&Env::default()).unwrap(),
            Environment::Development
        );
        let typo = Env::from_pairs([("EASYNOTE_ENV", "prd")]);
        assert!(Environment::from_env(&typo).is_err());
    }

    #[test]
    fn empty_values_count_as_unset() {
        let env = Env::from_pairs([("EASYNOTE_GRPC_ADDR", "  ")]);
        assert_eq!(
            env.socket_addr("EASYNOTE_GRPC_ADDR", "127.0.0.1:1")
                .unwrap(),
            "127.0.0.1:1".parse().unwrap()
        );
    }

    fn nacos(pairs: &[(&str, &str)]) -> Result<NacosConfig, ConfigError> {
        let env = Env::from_pairs(
            [("EASYNOTE_REGISTRY", "nacos")]
                .iter()
                .chain(pairs)
                .copied(),
        );
        match DiscoveryConfig::from_env(&env)? {
            DiscoveryConfig::Nacos(config) => Ok(config),
            other => panic!("expected Nacos, got {other:?}"),
        }
    }

    #[test]
    fn nacos_defaults_are_a_local_server_public_namespace_default_group() {
        let config = nacos(&[]).expect("defaults");
        assert_eq!(config.server_addrs, vec!["127.0.0.1:8848"]);
        assert_eq!(config.namespace, "");
        assert_eq!(config.group, "DEFAULT_GROUP");
        assert!(matches!(config.auth, NacosAuth::None));
        assert_eq!(config.advertise, None);
        assert_eq!(config.weight, 1.0);
        assert_eq!(config.deregister_grace, Duration::from_secs(3));
        assert_eq!(config.connect_timeout, Duration::from_secs(60));
        assert_eq!(config.retry_backoff, Duration::from_secs(1));
    }

    #[test]
    fn nacos_server_lists_get_default_ports_and_bad_ones_are_named() {
        let config =
            nacos(&[("NACOS_SERVER_ADDR", " nacos-0:8848, nacos-1 ,[::1]:9000")]).expect("a list");
        assert_eq!(
            config.server_addrs,
            vec!["nacos-0:8848", "nacos-1:8848", "[::1]:9000"]
        );
        assert_eq!(config.server_list(), "nacos-0:8848,nacos-1:8848,[::1]:9000");
        for (raw, expected) in [
            ("http://127.0.0.1:8848", "without a scheme"),
            ("127.0.0.1:port", "no valid port"),
            ("127.0.0.1:0", "no valid port"),
            ("127.0.0.1:65000", "no room for the gRPC port"),
            (":8848", "not host[:port]"),
            (",", "at least one"),
            ("a b:1", "not host[:port]"),
        ] {
            let err = nacos(&[("NACOS_SERVER_ADDR", raw)])
                .expect_err(raw)
                .to_string();
            assert!(err.starts_with("NACOS_SERVER_ADDR: "), "{raw}: {err}");
            assert!(err.contains(expected), "{raw}: {err}");
        }
    }

    #[test]
    fn nacos_credentials_come_in_pairs() {
        let config = nacos(&[("NACOS_USERNAME", "nacos"), ("NACOS_PASSWORD", "pw")]).unwrap();
        assert!(
            matches!(config.auth, NacosAuth::Password { ref username, .. } if username == "nacos")
        );
        let config = nacos(&[
            ("NACOS_ACCESS_KEY", "LTAI-id"),
            ("NACOS_SECRET_KEY", "sk"),
            ("NACOS_SIGN_REGION_ID", "cn-hangzhou"),
        ])
        .unwrap();
        assert!(matches!(
            config.auth,
            NacosAuth::AccessKey { ref access_key, ref region, .. }
                if access_key == "LTAI-id" && region.as_deref() == Some("cn-hangzhou")
        ));
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("NACOS_USERNAME", "nacos")],
                "NACOS_PASSWORD must be set when NACOS_USERNAME is set",
            ),
            (
                &[("NACOS_PASSWORD", "secret-pw")],
                "NACOS_USERNAME must be set when NACOS_PASSWORD is set",
            ),
            (
                &[("NACOS_ACCESS_KEY", "id")],
                "NACOS_SECRET_KEY must be set when NACOS_ACCESS_KEY is set",
            ),
            (
                &[("NACOS_SECRET_KEY", "secret-sk")],
                "NACOS_ACCESS_KEY must be set when NACOS_SECRET_KEY is set",
            ),
            (
                &[("NACOS_SIGN_REGION_ID", "cn-hangzhou")],
                "NACOS_ACCESS_KEY must be set",
            ),
            (
                &[
                    ("NACOS_USERNAME", "u"),
                    ("NACOS_PASSWORD", "secret-pw"),
                    ("NACOS_ACCESS_KEY", "id"),
                    ("NACOS_SECRET_KEY", "secret-sk"),
                ],
                "not both",
            ),
        ];
        for (pairs, expected) in cases {
            let err = nacos(pairs).expect_err(expected).to_string();
            assert!(err.contains(expected), "{pairs:?}: {err}");
            assert!(!err.contains("secret-"), "a secret leaked into {err:?}");
        }
    }

    #[test]
    fn nacos_instance_settings_are_checked() {
        let config = nacos(&[
            ("EASYNOTE_ADVERTISE_ADDR", "10.0.0.7:9000"),
            ("EASYNOTE_WEIGHT", "2.5"),
            ("EASYNOTE_DEREGISTER_GRACE", "500ms"),
            ("NACOS_CONNECT_TIMEOUT", "5s"),
            ("NACOS_RETRY_BACKOFF", "200ms"),
            ("NACOS_NAMESPACE", "dev"),
            ("NACOS_GROUP", "EASY_NOTE"),
        ])
        .unwrap();
        assert_eq!(
            config.advertise,
            Some(AdvertiseAddr {
                host: "10.0.0.7".into(),
                port: Some(9000)
            })
        );
        assert_eq!(config.weight, 2.5);
        assert_eq!(config.deregister_grace, Duration::from_millis(500));
        assert_eq!(config.connect_timeout, Duration::from_secs(5));
        assert_eq!(config.retry_backoff, Duration::from_millis(200));
        assert_eq!(
            (config.namespace.as_str(), config.group.as_str()),
            ("dev", "EASY_NOTE")
        );
        let host_only = nacos(&[("EASYNOTE_ADVERTISE_ADDR", "notes.internal")]).unwrap();
        assert_eq!(host_only.advertise.unwrap().port, None);
        let v6 = nacos(&[("EASYNOTE_ADVERTISE_ADDR", "[fd00::7]:80")]).unwrap();
        assert_eq!(v6.advertise.unwrap().host, "fd00::7");
        for (var, raw) in [
            ("EASYNOTE_ADVERTISE_ADDR", "http://x"),
            ("EASYNOTE_ADVERTISE_ADDR", "x:99999"),
            ("EASYNOTE_WEIGHT", "-1"),
            ("EASYNOTE_WEIGHT", "heavy"),
            ("NACOS_RETRY_BACKOFF", "0s"),
            ("NACOS_CONNECT_TIMEOUT", "soon"),
        ] {
            let err = nacos(&[(var, raw)]).expect_err(raw).to_string();
            assert!(err.starts_with(var), "{var}={raw}: {err}");
        }
        let err = DiscoveryConfig::from_env(&Env::from_pairs([("EASYNOTE_REGISTRY", "consul")]))
            .expect_err("unknown registry")
            .to_string();
        assert!(err.contains("static or nacos"), "{err}");
    }

    #[test]
    fn debug_output_never_shows_values() {
        let env = Env::from_pairs([("EASYNOTE_JWT_SECRET", "hunter2-hunter2")]);
        let shown = format!("{env:?}");
        assert!(shown.contains("EASYNOTE_JWT_SECRET"));
        assert!(!shown.contains("hunter2"));
    }
}
