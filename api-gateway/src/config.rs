//! api-gateway settings.

use std::{net::SocketAddr, time::Duration};

use easynote_shared::{
    config::{ConfigError, Env, Environment},
    discovery::{ChannelSettings, DiscoveryConfig},
    governance::GovernanceConfig,
    lifecycle::LifecycleConfig,
    tls::TlsSettings,
};
use secrecy::{ExposeSecret as _, SecretString};

use crate::{
    auth::ClaimsConfig, http::HttpConfig, login_throttle::LoginThrottleConfig,
    revocation::RevocationConfig,
};

/// The default HTTP listen address.
pub(crate) const DEFAULT_HTTP_ADDR: &str = easynote_shared::default_addr::GATEWAY_HTTP;

/// The JWT key used when none is configured, in development only.
pub const DEV_JWT_SECRET: &str = "easy-note-development-secret-change-me";
/// Shortest production JWT key, in bytes (HS256 wants at least 256 bits).
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Everything the gateway reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `EASYNOTE_ENV`.
    pub environment: Environment,
    /// `EASYNOTE_HTTP_ADDR` (default `127.0.0.1:8080`).
    pub http_addr: SocketAddr,
    /// Timeouts and the connection bound of the HTTP server.
    pub http: HttpConfig,
    /// Thresholds of the failed-login throttle.
    pub login_throttle: LoginThrottleConfig,
    /// Token signing.
    pub jwt: JwtConfig,
    /// The issuer and audience of tokens.
    pub claims: ClaimsConfig,
    /// How long an answer about a token's revocation is trusted.
    pub revocation: RevocationConfig,
    /// Where user-service and note-service are.
    pub discovery: DiscoveryConfig,
    /// How calls to the services connect (their deadlines are governance rules).
    pub rpc: ChannelSettings,
    /// Where the governance rules come from.
    pub governance: GovernanceConfig,
    /// `EASYNOTE_BODY_LIMIT` (default 256 KiB): largest request body accepted.
    pub body_limit: usize,
    /// Shutdown bounds and instance metadata.
    pub lifecycle: LifecycleConfig,
    /// Mutual TLS to the services (`EASYNOTE_TLS_*`).
    pub tls: TlsSettings,
}

/// JWT settings.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// `EASYNOTE_JWT_SECRET`: HS256 key; required in production.
    pub secret: SecretString,
    /// `EASYNOTE_JWT_TTL` (default 1h): token lifetime.
    pub ttl: Duration,
}

/// Bounds of `EASYNOTE_JWT_TTL`.
const JWT_TTL_MIN: Duration = Duration::from_secs(60);
const JWT_TTL_MAX: Duration = Duration::from_secs(7 * 24 * 3600);

/// Keys that are public because they are written in this repository (the
/// development default, and the demo values compose and the local
/// Kubernetes overlay once carried): production refuses each of them, and
/// any key that says it is a placeholder.
pub const COMMITTED_JWT_SECRETS: [&str; 3] = [
    DEV_JWT_SECRET,
    "compose-demo-jwt-secret-replace-me-0123456789",
    "local-demo-jwt-secret-replace-me-0123456789",
];

/// Words that mark a key as a placeholder.
const PLACEHOLDER_MARKS: [&str; 2] = ["replace-me", "change-me"];

impl JwtConfig {
    /// Reads the JWT settings: the key from `EASYNOTE_JWT_SECRET`, else
    /// from the file `EASYNOTE_JWT_SECRET_FILE` names (trailing whitespace
    /// trimmed); production refuses a missing, short or public key.
    pub fn from_env(env: &Env, environment: Environment) -> Result<Self, ConfigError> {
        let (var, secret) = match env.secret_or_file("EASYNOTE_JWT_SECRET")? {
            Some((var, secret)) => (var, Some(secret)),
            None => ("EASYNOTE_JWT_SECRET".to_owned(), None),
        };
        let secret = match (secret, environment) {
            (Some(secret), Environment::Production) => {
                let key = secret.expose_secret();
                if COMMITTED_JWT_SECRETS.contains(&key)
                    || PLACEHOLDER_MARKS.iter().any(|mark| key.contains(mark))
                {
                    return Err(ConfigError::invalid(
                        &var,
                        "is a public key from this repository (a default, demo or placeholder); \
                         set a random key in production",
                    ));
                }
                if key.len() < MIN_JWT_SECRET_BYTES {
                    return Err(ConfigError::invalid(
                        &var,
                        format!("must be at least {MIN_JWT_SECRET_BYTES} bytes in production"),
                    ));
                }
                secret
            }
            (Some(secret), Environment::Development) => secret,
            (None, Environment::Production) => {
                return Err(ConfigError::Missing {
                    var: "EASYNOTE_JWT_SECRET".into(),
                    hint: " in production (or EASYNOTE_JWT_SECRET_FILE; e.g. `openssl rand -base64 48`)"
                        .into(),
                });
            }
            (None, Environment::Development) => {
                tracing::warn!(
                    "EASYNOTE_JWT_SECRET is not set: using the public development key; tokens are forgeable"
                );
                SecretString::from(DEV_JWT_SECRET)
            }
        };
        let ttl = env.duration("EASYNOTE_JWT_TTL", Duration::from_secs(3600))?;
        if !(JWT_TTL_MIN..=JWT_TTL_MAX).contains(&ttl) {
            // A token cannot be revoked before it expires: its lifetime is
            // what a stolen one is worth.
            return Err(ConfigError::invalid(
                "EASYNOTE_JWT_TTL",
                "must be between 1m and 7d",
            ));
        }
        Ok(Self { secret, ttl })
    }
}

impl Config {
    /// Reads the settings, failing on the first unusable one.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let environment = Environment::from_env(env)?;
        let body_limit = env.parse("EASYNOTE_BODY_LIMIT", 256 * 1024usize)?;
        if body_limit < 1024 {
            return Err(ConfigError::invalid(
                "EASYNOTE_BODY_LIMIT",
                "must be at least 1024 bytes",
            ));
        }
        Ok(Self {
            environment,
            http_addr: env.socket_addr("EASYNOTE_HTTP_ADDR", DEFAULT_HTTP_ADDR)?,
            http: HttpConfig::from_env(env)?,
            login_throttle: LoginThrottleConfig::from_env(env)?,
            jwt: JwtConfig::from_env(env, environment)?,
            claims: ClaimsConfig::from_env(env)?,
            revocation: RevocationConfig::from_env(env)?,
            discovery: DiscoveryConfig::from_env(env)?,
            rpc: ChannelSettings::from_env(env)?,
            governance: GovernanceConfig::from_env(env)?,
            body_limit,
            lifecycle: LifecycleConfig::from_env(env)?,
            tls: TlsSettings::from_env(env, environment)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(pairs: &[(&str, &str)]) -> Result<JwtConfig, ConfigError> {
        let env = Env::from_pairs(pairs.iter().copied());
        JwtConfig::from_env(&env, Environment::from_env(&env)?)
    }

    #[test]
    fn production_refuses_missing_short_and_default_keys() {
        let prod = ("EASYNOTE_ENV", "production");
        let cases = [
            (vec![prod], "EASYNOTE_JWT_SECRET must be set in production"),
            (
                vec![prod, ("EASYNOTE_JWT_SECRET", DEV_JWT_SECRET)],
                "is a public key from this repository",
            ),
            (
                vec![prod, ("EASYNOTE_JWT_SECRET", "short")],
                "at least 32 bytes",
            ),
        ];
        for (pairs, expected) in cases {
            let err = jwt(&pairs).expect_err("must refuse").to_string();
            assert!(err.contains(expected), "{pairs:?}: {err}");
            assert!(!err.contains("short"), "the secret leaked into {err:?}");
        }
        let good = "k".repeat(40);
        assert!(jwt(&[prod, ("EASYNOTE_JWT_SECRET", &good)]).is_ok());
    }

    /// Every `EASYNOTE_JWT_SECRET` value written in compose or a
    /// Kubernetes overlay (`KEY: value`, `KEY=value`, `${KEY:-value}`).
    fn committed_jwt_secrets() -> Vec<String> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = vec![root.join("docker-compose.yml")];
        let mut dirs = vec![root.join("deploy")];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("deploy/") {
                let path = entry.expect("entry").path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                    files.push(path);
                }
            }
        }
        let mut found = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("a deploy file");
            for line in text.lines() {
                let Some(at) = line.find("EASYNOTE_JWT_SECRET") else {
                    continue;
                };
                let rest = &line[at + "EASYNOTE_JWT_SECRET".len()..];
                let value = if let Some(default) = rest.strip_prefix(":-") {
                    default.split('}').next().unwrap_or_default()
                } else if let Some(value) =
                    rest.strip_prefix('=').or_else(|| rest.strip_prefix(':'))
                {
                    value
                } else {
                    continue;
                };
                let value = value.trim().trim_matches('"');
                if !value.is_empty() && !value.starts_with("${") && !value.starts_with('$') {
                    found.push(value.to_owned());
                }
            }
        }
        found
    }

    #[test]
    fn production_refuses_every_key_committed_to_the_repository() {
        let prod = ("EASYNOTE_ENV", "production");
        let mut keys: Vec<String> = COMMITTED_JWT_SECRETS
            .iter()
            .map(|k| (*k).to_owned())
            .collect();
        keys.extend(committed_jwt_secrets());
        keys.push("my-own-key-but-replace-me-before-going-live-000".into());
        for key in &keys {
            let err = jwt(&[prod, ("EASYNOTE_JWT_SECRET", key)])
                .expect_err("a committed key must be refused")
                .to_string();
            assert!(err.contains("public key"), "{key}: {err}");
            assert!(!err.contains(key.as_str()), "the key leaked into {err:?}");
        }
        // The same through a file.
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("jwt");
        std::fs::write(&file, format!("{}\n", COMMITTED_JWT_SECRETS[1])).expect("write");
        let path = file.display().to_string();
        let err = jwt(&[prod, ("EASYNOTE_JWT_SECRET_FILE", &path)]).expect_err("refused");
        assert!(
            err.to_string().contains("EASYNOTE_JWT_SECRET_FILE"),
            "{err}"
        );
    }

    #[test]
    fn the_key_can_come_from_a_file() {
        let prod = ("EASYNOTE_ENV", "production");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("jwt");
        let key = "f".repeat(48);
        std::fs::write(&file, format!("{key}\n")).expect("write");
        let path = file.display().to_string();
        let config = jwt(&[prod, ("EASYNOTE_JWT_SECRET_FILE", &path)]).expect("a good file");
        assert_eq!(
            config.secret.expose_secret(),
            key,
            "trailing newline trimmed"
        );
        // The variable wins over the file.
        let other = "g".repeat(48);
        let config = jwt(&[
            prod,
            ("EASYNOTE_JWT_SECRET", &other),
            ("EASYNOTE_JWT_SECRET_FILE", &path),
        ])
        .expect("both");
        assert_eq!(config.secret.expose_secret(), other);
        let missing = dir.path().join("missing").display().to_string();
        let err = jwt(&[prod, ("EASYNOTE_JWT_SECRET_FILE", &missing)]).expect_err("no file");
        assert!(
            err.to_string().contains("EASYNOTE_JWT_SECRET_FILE"),
            "{err}"
        );
        std::fs::write(&file, "\n").expect("write");
        let err = jwt(&[prod, ("EASYNOTE_JWT_SECRET_FILE", &path)]).expect_err("empty");
        assert!(err.to_string().contains("is empty"), "{err}");
    }

    #[test]
    fn development_falls_back_to_the_public_key() {
        let config = jwt(&[]).expect("development default");
        assert_eq!(config.secret.expose_secret(), DEV_JWT_SECRET);
        assert_eq!(config.ttl, Duration::from_secs(3600));
        for bad in ["0s", "59s", "8d", "3650d"] {
            let err = jwt(&[("EASYNOTE_JWT_TTL", bad)])
                .expect_err("an unbounded ttl")
                .to_string();
            assert!(err.contains("EASYNOTE_JWT_TTL"), "{bad}: {err}");
        }
        for good in ["1m", "1h", "7d"] {
            assert!(jwt(&[("EASYNOTE_JWT_TTL", good)]).is_ok(), "{good}");
        }
    }
}
