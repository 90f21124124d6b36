//! Settings of the Nacos registry (`NACOS_*`, and the instance settings
//! `EASYNOTE_WEIGHT`, `EASYNOTE_DEREGISTER_GRACE`, `EASYNOTE_ADVERTISE_ADDR`).

use std::{fmt, time::Duration};

use secrecy::SecretString;

use crate::{
    addr::HostPort,
    config::{ConfigError, Env},
    discovery::advertise::AdvertiseAddr,
};

/// The Nacos port used when `NACOS_SERVER_ADDR` names a host without one.
pub(crate) const NACOS_DEFAULT_PORT: u16 = 8848;
/// How far the Nacos gRPC port is above its HTTP port (fixed by Nacos 2.x).
pub(crate) const NACOS_GRPC_PORT_OFFSET: u16 = 1000;

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
    /// Open-source Nacos with auth on: `NACOS_USERNAME`/`NACOS_PASSWORD`
    /// (or `NACOS_PASSWORD_FILE`).
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
            deregister_grace: Self::deregister_grace(env)?,
            connect_timeout: Self::connect_timeout(env)?,
            retry_backoff,
            cache_dir: env.get("NACOS_CACHE_DIR").map(std::path::PathBuf::from),
        })
    }

    /// `NACOS_CONNECT_TIMEOUT` alone: what Nacos adds to a start-up's worst
    /// case, read without the credentials (for `easy-note deploy-facts`).
    pub fn connect_timeout(env: &Env) -> Result<Duration, ConfigError> {
        env.duration("NACOS_CONNECT_TIMEOUT", Duration::from_secs(60))
    }

    /// `EASYNOTE_DEREGISTER_GRACE` alone: what Nacos adds to a stop's
    /// worst case.
    pub fn deregister_grace(env: &Env) -> Result<Duration, ConfigError> {
        env.duration("EASYNOTE_DEREGISTER_GRACE", Duration::from_secs(3))
    }

    /// Settings for a Nacos at `server_addr` with every other value defaulted.
    pub fn new(server_addr: &str) -> Result<Self, ConfigError> {
        Self::from_env(&Env::from_pairs([("NACOS_SERVER_ADDR", server_addr)]))
    }

    /// The servers as one `host:port,host:port` string, as the SDK takes them.
    pub(crate) fn server_list(&self) -> String {
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
        let server = HostPort::with_default_port(entry, NACOS_DEFAULT_PORT)?;
        if server.port > u16::MAX - NACOS_GRPC_PORT_OFFSET {
            return Err(format!(
                "{entry:?}: port {} leaves no room for the gRPC port (port + {NACOS_GRPC_PORT_OFFSET})",
                server.port
            ));
        }
        servers.push(server.to_string());
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
        let password = env
            .secret_or_file("NACOS_PASSWORD")?
            .map(|(_, secret)| secret);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::DiscoveryConfig;
    use secrecy::ExposeSecret as _;

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
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nacos-password");
        std::fs::write(&file, "secret-from-file\n").unwrap();
        let file = file.display().to_string();
        let config = nacos(&[("NACOS_USERNAME", "nacos"), ("NACOS_PASSWORD_FILE", &file)]).unwrap();
        assert!(matches!(
            config.auth,
            NacosAuth::Password { ref password, .. } if password.expose_secret() == "secret-from-file"
        ));
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
}
