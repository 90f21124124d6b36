//! api-gateway settings.

use std::{net::SocketAddr, time::Duration};

use easynote_shared::{
    config::{ConfigError, Env, Environment},
    discovery::{ChannelSettings, DiscoveryConfig},
    governance::GovernanceConfig,
    lifecycle::LifecycleConfig,
};
use secrecy::{ExposeSecret as _, SecretString};

use crate::{http::HttpConfig, login_throttle::LoginThrottleConfig};

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

impl JwtConfig {
    /// Reads the JWT settings, refusing the development key in production.
    pub fn from_env(env: &Env, environment: Environment) -> Result<Self, ConfigError> {
        let secret = match (env.secret("EASYNOTE_JWT_SECRET"), environment) {
            (Some(secret), Environment::Production) => {
                let key = secret.expose_secret();
                if key == DEV_JWT_SECRET {
                    return Err(ConfigError::invalid(
                        "EASYNOTE_JWT_SECRET",
                        "is the development default; set a random key in production",
                    ));
                }
                if key.len() < MIN_JWT_SECRET_BYTES {
                    return Err(ConfigError::invalid(
                        "EASYNOTE_JWT_SECRET",
                        format!("must be at least {MIN_JWT_SECRET_BYTES} bytes in production"),
                    ));
                }
                secret
            }
            (Some(secret), Environment::Development) => secret,
            (None, Environment::Production) => {
                return Err(ConfigError::Missing {
                    var: "EASYNOTE_JWT_SECRET".into(),
                    hint: " in production (e.g. `openssl rand -base64 48`)".into(),
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
            discovery: DiscoveryConfig::from_env(env)?,
            rpc: ChannelSettings::from_env(env)?,
            governance: GovernanceConfig::from_env(env)?,
            body_limit,
            lifecycle: LifecycleConfig::from_env(env)?,
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
                "is the development default",
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
