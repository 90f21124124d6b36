//! Where configuration comes from: [`Env`], read once at start-up, and the
//! typed getters every settings struct is built with.
//!
//! Every service builds its own config struct from an [`Env`] and passes it
//! down explicitly; nothing reads the environment later. [`Env`] can also be
//! built from plain pairs, which is how tests configure servers. Each
//! setting lives beside what it configures (`DatabaseConfig` in `db`,
//! `NacosConfig` in `discovery::nacos`, …) and writes its default once;
//! every variable is documented in docs/configuration.md.

use std::{collections::HashMap, fmt, net::SocketAddr, str::FromStr, time::Duration};

use secrecy::SecretString;

use crate::addr::HostPort;

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

    /// A secret from `var`, else from the file `{var}_FILE` names (trailing
    /// whitespace trimmed), as container secrets are mounted; the value wins
    /// when both are set. Returns the variable it came from, for errors.
    /// A named file that is missing, unreadable or empty is an error, never
    /// a silent fallback.
    pub fn secret_or_file(&self, var: &str) -> Result<Option<(String, SecretString)>, ConfigError> {
        if let Some(secret) = self.secret(var) {
            return Ok(Some((var.to_owned(), secret)));
        }
        let file_var = format!("{var}_FILE");
        let Some(path) = self.get(&file_var) else {
            return Ok(None);
        };
        let contents = std::fs::read_to_string(path)
            .map_err(|err| ConfigError::invalid(&file_var, format!("{path}: {err}")))?;
        let secret = contents.trim_end();
        if secret.is_empty() {
            return Err(ConfigError::invalid(&file_var, format!("{path} is empty")));
        }
        Ok(Some((file_var, SecretString::from(secret.to_owned()))))
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
    pub(crate) fn addr_list(&self, var: &str, default: &str) -> Result<Vec<String>, ConfigError> {
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
        addrs
            .iter()
            .map(|addr| {
                addr.parse::<HostPort>()
                    .map(|parsed| parsed.to_string())
                    .map_err(|reason| ConfigError::invalid(var, reason))
            })
            .collect()
    }
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    if let Ok(secs) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(raw)
        .map_err(|err| format!("{raw:?} is not a duration such as 30s, 5m or 1h: {err}"))
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

    /// The name used in logs and as `deployment.environment.name`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Development => "development",
            Self::Production => "production",
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
    fn secrets_come_from_the_variable_else_from_its_file() {
        use secrecy::ExposeSecret as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from-file\n").unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, " \n").unwrap();
        let path = |p: &std::path::Path| p.display().to_string();

        let env = Env::from_pairs([("PW_FILE", path(&file))]);
        let (var, secret) = env.secret_or_file("PW").unwrap().unwrap();
        assert_eq!(
            (var.as_str(), secret.expose_secret()),
            ("PW_FILE", "from-file")
        );

        let env = env.with("PW", "from-var");
        let (var, secret) = env.secret_or_file("PW").unwrap().unwrap();
        assert_eq!((var.as_str(), secret.expose_secret()), ("PW", "from-var"));

        assert!(Env::default().secret_or_file("PW").unwrap().is_none());
        let missing = dir.path().join("missing");
        for (bad, expected) in [(&missing, "No such file"), (&empty, "is empty")] {
            let env = Env::from_pairs([("PW_FILE", path(bad))]);
            let err = env.secret_or_file("PW").unwrap_err().to_string();
            assert!(err.starts_with("PW_FILE: "), "{err}");
            assert!(err.contains(expected), "{err}");
        }
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

    #[test]
    fn debug_output_never_shows_values() {
        let env = Env::from_pairs([("EASYNOTE_JWT_SECRET", "hunter2-hunter2")]);
        let shown = format!("{env:?}");
        assert!(shown.contains("EASYNOTE_JWT_SECRET"));
        assert!(!shown.contains("hunter2"));
    }
}
