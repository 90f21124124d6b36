//! api-gateway settings.

use std::{net::SocketAddr, time::Duration};

use easynote_shared::{
    config::{ConfigError, Env, Environment},
    discovery::ChannelSettings,
    process::ProcessConfig,
};
use secrecy::{ExposeSecret as _, SecretString};

use crate::{
    client_addr::TrustedProxies,
    http::HttpConfig,
    login_throttle::{LoginThrottleConfig, SharedStoreConfig},
    revocation::RevocationConfig,
    web::WebConfig,
};

/// The default HTTP listen address.
pub(crate) const DEFAULT_HTTP_ADDR: &str = easynote_shared::default_addr::GATEWAY_HTTP;

/// The JWT key used when none is configured, in development only.
pub const DEV_JWT_SECRET: &str = "easy-note-development-secret-change-me";
/// Shortest production JWT key, in bytes (HS256 wants at least 256 bits).
pub const MIN_JWT_SECRET_BYTES: usize = 32;
/// Least estimated entropy of a production JWT key, in bits
/// ([`estimated_entropy_bits`]).
pub const MIN_JWT_SECRET_BITS: f64 = 128.0;

/// Everything the gateway reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// What every server process reads: the environment, the registry,
    /// the governance rules' source, shutdown bounds, mutual TLS.
    pub process: ProcessConfig,
    /// `EASYNOTE_HTTP_ADDR` (default `127.0.0.1:8080`).
    pub http_addr: SocketAddr,
    /// Timeouts and the connection bound of the HTTP server.
    pub http: HttpConfig,
    /// `EASYNOTE_TRUSTED_PROXIES`: the proxies whose `X-Forwarded-For` is
    /// believed (default none).
    pub trusted_proxies: TrustedProxies,
    /// Thresholds of the failed-login throttle.
    pub login_throttle: LoginThrottleConfig,
    /// `EASYNOTE_REDIS_URL`: where the throttle's counts, and the buckets
    /// of rate limits with `scope: cluster`, are shared between replicas
    /// (default: in this process).
    pub login_store: Option<SharedStoreConfig>,
    /// Token signing.
    pub jwt: JwtConfig,
    /// The issuer and audience of tokens.
    pub claims: ClaimsConfig,
    /// How long an answer about a token's revocation is trusted.
    pub revocation: RevocationConfig,
    /// How calls to the services connect (their deadlines are governance rules).
    pub channels: ChannelSettings,
    /// `EASYNOTE_BODY_LIMIT` (default 256 KiB): largest request body accepted.
    pub body_limit: usize,
    /// The web app (`EASYNOTE_TRACE_UI_URL`).
    pub web: WebConfig,
}

/// JWT settings.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// `EASYNOTE_JWT_SECRET`: HS256 key; required in production.
    pub secret: SecretString,
    /// `EASYNOTE_JWT_TTL` (default 1h): token lifetime.
    pub ttl: Duration,
    /// `EASYNOTE_JWT_QUERY_TOKEN` (default false): also accept the token
    /// from the `token` query parameter, as the reference did, for old
    /// clients. Off by default: URLs end up in logs and `Referer` headers.
    pub query_token: bool,
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
    /// trimmed); production refuses a missing, short, guessable or public
    /// key. Without a key, development signs with the public development
    /// key only while the process listens on loopback (`listen`): reachable
    /// from elsewhere, it gets a random key of its own instead.
    pub fn from_env(
        env: &Env,
        environment: Environment,
        listen: SocketAddr,
    ) -> Result<Self, ConfigError> {
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
                let bits = estimated_entropy_bits(key.as_bytes());
                if bits < MIN_JWT_SECRET_BITS {
                    return Err(ConfigError::invalid(
                        &var,
                        format!(
                            "is too guessable for a production key (about {bits:.0} bits of \
                             entropy estimated, {MIN_JWT_SECRET_BITS:.0} needed: repeated or \
                             sequential characters count little); set a random key, e.g. \
                             `openssl rand -base64 48`"
                        ),
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
            (None, Environment::Development) if listen.ip().to_canonical().is_loopback() => {
                tracing::warn!(
                    "EASYNOTE_JWT_SECRET is not set: using the public development key; tokens are forgeable"
                );
                SecretString::from(DEV_JWT_SECRET)
            }
            (None, Environment::Development) => {
                // Anyone who can reach the gateway can read the public key
                // in this repository and sign their own tokens with it.
                tracing::warn!(
                    %listen,
                    "EASYNOTE_JWT_SECRET is not set and the gateway listens beyond loopback: \
                     signing with a random key of this process instead of the public development \
                     key; tokens will not survive a restart nor work on another replica \
                     (set EASYNOTE_JWT_SECRET)"
                );
                random_key()?
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
        let query_token = env.parse("EASYNOTE_JWT_QUERY_TOKEN", false)?;
        Ok(Self {
            secret,
            ttl,
            query_token,
        })
    }
}

/// Issuer and audience of the tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimsConfig {
    /// `EASYNOTE_JWT_ISSUER` (default `easy-note`): the `iss` issued and required.
    pub issuer: String,
    /// `EASYNOTE_JWT_AUDIENCE` (default `easy-note-api`): the `aud` issued and required.
    pub audience: String,
}

impl Default for ClaimsConfig {
    fn default() -> Self {
        Self {
            issuer: "easy-note".to_owned(),
            audience: "easy-note-api".to_owned(),
        }
    }
}

impl ClaimsConfig {
    /// Reads `EASYNOTE_JWT_ISSUER` and `EASYNOTE_JWT_AUDIENCE`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let read = |var: &str, default: String| -> Result<String, ConfigError> {
            let value = env.string(var, &default);
            if value.trim().is_empty() {
                return Err(ConfigError::invalid(var, "must not be empty"));
            }
            Ok(value)
        };
        Ok(Self {
            issuer: read("EASYNOTE_JWT_ISSUER", defaults.issuer)?,
            audience: read("EASYNOTE_JWT_AUDIENCE", defaults.audience)?,
        })
    }
}

/// 32 random bytes as 64 hex digits.
fn random_key() -> Result<SecretString, ConfigError> {
    use ring::rand::{SecureRandom as _, SystemRandom};
    let mut key = [0u8; 32];
    SystemRandom::new().fill(&mut key).map_err(|_| {
        ConfigError::invalid(
            "EASYNOTE_JWT_SECRET",
            "is not set and no system randomness is available for a key of this process",
        )
    })?;
    Ok(SecretString::from(
        key.iter().map(|b| format!("{b:02x}")).collect::<String>(),
    ))
}

/// A conservative estimate of the entropy of `key`, in bits: the key cut
/// to its shortest repeating unit (`abcabcabc` is `abc`), then that unit's
/// length times the Shannon entropy per byte of its bytes or of the steps
/// between neighbours, whichever is smaller (so `aaaa…` and `abcd…` both
/// count next to nothing). It under-counts random keys (64 hex digits of
/// 256 bits come out at about 240) and over-counts human phrases, so it
/// catches placeholders and patterns, not weak passphrases.
pub fn estimated_entropy_bits(key: &[u8]) -> f64 {
    let period = (1..key.len())
        .find(|&p| key.iter().enumerate().all(|(i, b)| *b == key[i % p]))
        .unwrap_or(key.len());
    let unit = &key[..period];
    let steps: Vec<u8> = unit.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
    let bits = |bytes: &[u8]| {
        let mut counts = [0usize; 256];
        for b in bytes {
            counts[usize::from(*b)] += 1;
        }
        let n = bytes.len() as f64;
        let per_byte: f64 = counts
            .iter()
            .filter(|c| **c > 0)
            .map(|c| {
                let p = *c as f64 / n;
                -p * p.log2()
            })
            .sum();
        per_byte * n
    };
    bits(unit).min(bits(&steps))
}

impl Config {
    /// Reads the settings, failing on the first unusable one.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let process = ProcessConfig::from_env(env)?;
        let body_limit = env.parse("EASYNOTE_BODY_LIMIT", 256 * 1024usize)?;
        if body_limit < 1024 {
            return Err(ConfigError::invalid(
                "EASYNOTE_BODY_LIMIT",
                "must be at least 1024 bytes",
            ));
        }
        let http_addr = env.socket_addr("EASYNOTE_HTTP_ADDR", DEFAULT_HTTP_ADDR)?;
        Ok(Self {
            http_addr,
            http: HttpConfig::from_env(env)?,
            trusted_proxies: TrustedProxies::from_env(env)?,
            login_throttle: LoginThrottleConfig::from_env(env)?,
            login_store: SharedStoreConfig::from_env(env)?,
            jwt: JwtConfig::from_env(env, process.environment, http_addr)?,
            claims: ClaimsConfig::from_env(env)?,
            revocation: RevocationConfig::from_env(env)?,
            channels: ChannelSettings::from_env(env)?,
            body_limit,
            web: WebConfig::from_env(env)?,
            // Last: the JWT settings above read its environment.
            process,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A random-looking key (from `openssl rand -base64 48`, never used).
    const GOOD_KEY: &str = "q3Vd8Yc1bq0mJ7pXhT2kLwN9sRzE4uAa6fGiOyBtCxZvKjM5nHdPeWrSlQg0UoI8";
    const OTHER_GOOD_KEY: &str = "Xf2Lr9TbQe4Wm7Ky1Hs6Jd0Pv3Nc8Za5Gu2Mi7Ro4Ew9Bt1Ys6Dq3Vk0Ch5Fn8Ax";

    fn jwt(pairs: &[(&str, &str)]) -> Result<JwtConfig, ConfigError> {
        jwt_listening(pairs, "127.0.0.1:8080")
    }

    fn jwt_listening(pairs: &[(&str, &str)], listen: &str) -> Result<JwtConfig, ConfigError> {
        let env = Env::from_pairs(pairs.iter().copied());
        let listen = listen.parse().expect("an address");
        JwtConfig::from_env(&env, Environment::from_env(&env)?, listen)
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
        assert!(jwt(&[prod, ("EASYNOTE_JWT_SECRET", GOOD_KEY)]).is_ok());
    }

    #[test]
    fn production_refuses_long_but_guessable_keys_without_echoing_them() {
        let prod = ("EASYNOTE_ENV", "production");
        let guessable = [
            "a".repeat(32),
            "k".repeat(40),
            "0123456789abcdef".repeat(2),
            "abcdefghijklmnopqrstuvwxyz012345".to_owned(),
            "passwordpasswordpasswordpassword1".to_owned(),
            "Tr0ub4dor&3".repeat(3),
        ];
        for key in &guessable {
            let err = jwt(&[prod, ("EASYNOTE_JWT_SECRET", key)])
                .expect_err("a guessable key must be refused")
                .to_string();
            assert!(err.starts_with("EASYNOTE_JWT_SECRET:"), "{err}");
            assert!(err.contains("too guessable"), "{key}: {err}");
            assert!(!err.contains(key.as_str()), "the key leaked into {err:?}");
        }
    }

    #[test]
    fn random_keys_pass_the_entropy_estimate() {
        for _ in 0..200 {
            let key = random_key().expect("randomness");
            let bits = estimated_entropy_bits(key.expose_secret().as_bytes());
            assert!(bits >= MIN_JWT_SECRET_BITS, "{bits} bits for a random key");
        }
        assert!(estimated_entropy_bits(GOOD_KEY.as_bytes()) >= MIN_JWT_SECRET_BITS);
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
        let key = GOOD_KEY;
        std::fs::write(&file, format!("{key}\n")).expect("write");
        let path = file.display().to_string();
        let config = jwt(&[prod, ("EASYNOTE_JWT_SECRET_FILE", &path)]).expect("a good file");
        assert_eq!(
            config.secret.expose_secret(),
            key,
            "trailing newline trimmed"
        );
        // The variable wins over the file.
        let other = OTHER_GOOD_KEY;
        let config = jwt(&[
            prod,
            ("EASYNOTE_JWT_SECRET", other),
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
    fn development_beyond_loopback_signs_with_a_random_key_of_its_own() {
        for listen in ["0.0.0.0:8080", "[::]:8080", "192.0.2.10:8080"] {
            let first = jwt_listening(&[], listen).expect("development");
            let second = jwt_listening(&[], listen).expect("development");
            let key = first.secret.expose_secret();
            assert_ne!(key, DEV_JWT_SECRET, "{listen}: never the public key");
            assert_eq!(key.len(), 64, "{listen}: 32 random bytes in hex");
            assert_ne!(
                key,
                second.secret.expose_secret(),
                "{listen}: one per process"
            );
        }
        for listen in ["127.0.0.1:8080", "[::1]:8080", "127.0.0.2:0"] {
            let config = jwt_listening(&[], listen).expect("development");
            assert_eq!(config.secret.expose_secret(), DEV_JWT_SECRET, "{listen}");
        }
        let set =
            jwt_listening(&[("EASYNOTE_JWT_SECRET", GOOD_KEY)], "0.0.0.0:8080").expect("a set key");
        assert_eq!(set.secret.expose_secret(), GOOD_KEY, "a set key is kept");
    }

    #[test]
    fn query_tokens_are_off_unless_turned_on() {
        assert!(!jwt(&[]).expect("default").query_token);
        let on = jwt(&[("EASYNOTE_JWT_QUERY_TOKEN", "true")]).expect("on");
        assert!(on.query_token);
        let err = jwt(&[("EASYNOTE_JWT_QUERY_TOKEN", "yes")]).expect_err("not a bool");
        assert!(
            err.to_string().starts_with("EASYNOTE_JWT_QUERY_TOKEN"),
            "{err}"
        );
    }

    #[test]
    fn development_on_loopback_falls_back_to_the_public_key() {
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
