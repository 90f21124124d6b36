//! Service discovery: how callers find the instances of a service, and how a
//! service announces itself.
//!
//! [`Discovery`] is the seam between the services and a [`Registry`]: fixed
//! address lists ([`StaticDiscovery`], in `static_list`) or Nacos
//! ([`NacosDiscovery`], in `nacos`, with its settings). Callers never ask
//! it per request: a caller's [`Upstream`](crate::governance::Upstream)
//! (the call policy, in governance) subscribes once and keeps a live set of
//! instances, each with one lazily connected channel (`channel`). What
//! address an instance announces is `advertise`'s job. Discovery depends on
//! no governance.
//!
//! Adding a registry (say Consul) is one new module implementing
//! [`Registry`], with its settings beside it, plus its case in
//! [`DiscoveryConfig::from_env`] and [`Discovery::from_config`].

pub(crate) mod advertise;
mod channel;
pub mod nacos;
mod static_list;

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::watch;

use crate::config::{ConfigError, Env};

pub use channel::ChannelSettings;
pub(crate) use channel::channel;
pub use nacos::{NacosConfig, NacosDiscovery, NacosError};
pub use static_list::StaticDiscovery;

/// A boxed future, as [`Registry`] methods return them (object safety).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One reachable instance of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// `host:port` of its gRPC server.
    pub addr: String,
    /// Relative share of traffic; instances with weight 0 get none.
    pub weight: f64,
    /// What the instance registered about itself (`lane`, `version`, …),
    /// for routing by lane.
    pub metadata: Arc<BTreeMap<String, String>>,
}

impl Instance {
    /// An instance at `addr` with the default weight 1 and no metadata.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            weight: 1.0,
            metadata: Arc::default(),
        }
    }

    /// Whether the instance carries every `key=value` of `selector`.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        selector
            .iter()
            .all(|(k, v)| self.metadata.get(k).is_some_and(|have| have == v))
    }

    /// The instance's lane, if it serves one.
    pub fn lane(&self) -> Option<&str> {
        self.metadata.get("lane").map(String::as_str)
    }
}

/// Metadata keys the suite sets itself; `EASYNOTE_INSTANCE_METADATA`
/// cannot override them.
const RESERVED_METADATA: [&str; 2] = ["protocol", "started_at"];

/// Parses `EASYNOTE_INSTANCE_METADATA` (`lane=canary,version=0.2.0`).
pub fn parse_instance_metadata(raw: &str) -> Result<BTreeMap<String, String>, String> {
    let mut map = BTreeMap::new();
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        let (key, value) = (key.trim(), value.trim());
        let valid = |s: &str| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        if !valid(key) || !valid(value) {
            return Err(format!(
                "{pair:?}: keys and values are 1 to 64 of A-Z a-z 0-9 - _ ."
            ));
        }
        if RESERVED_METADATA.contains(&key) {
            return Err(format!("{key:?} is set by the service itself"));
        }
        map.insert(key.to_owned(), value.to_owned());
    }
    Ok(map)
}

/// What a service announces about itself when it is ready to serve.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Registry name, e.g. `easy-note-note`.
    pub service: String,
    /// The address the server is bound to; the registry resolves what to
    /// advertise from it (see `EASYNOTE_ADVERTISE_ADDR`).
    pub addr: SocketAddr,
    /// Free-form metadata (version, protocol, start time).
    pub metadata: HashMap<String, String>,
}

impl Registration {
    /// `grpc` or `http`, as given to [`Registration::new`].
    pub fn protocol(&self) -> &str {
        self.metadata
            .get("protocol")
            .map_or("unknown", String::as_str)
    }

    /// Adds `extra` (from `EASYNOTE_INSTANCE_METADATA`) to the metadata.
    pub fn with_metadata(mut self, extra: &BTreeMap<String, String>) -> Self {
        self.metadata
            .extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    /// `service` bound at `addr`, speaking `protocol` (`grpc` or `http`),
    /// with this build's version and the current time as `started_at`.
    pub fn new(service: &str, addr: SocketAddr, protocol: &str) -> Self {
        let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        Self {
            service: service.to_owned(),
            addr,
            metadata: HashMap::from([
                ("version".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
                ("protocol".to_owned(), protocol.to_owned()),
                ("started_at".to_owned(), started_at),
            ]),
        }
    }
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The service has no entry in the static configuration.
    #[error("no addresses configured for service {0:?}")]
    UnknownService(String),
    /// The Nacos registry failed us.
    #[error(transparent)]
    Nacos(Box<NacosError>),
    /// No address to announce could be worked out.
    #[error(
        "cannot tell which address to register for {bound}: {reason}; set EASYNOTE_ADVERTISE_ADDR"
    )]
    NoAdvertiseAddr {
        /// The bound address.
        bound: SocketAddr,
        /// Why the outbound IP is unknown.
        reason: String,
    },
}

impl From<NacosError> for DiscoveryError {
    fn from(err: NacosError) -> Self {
        Self::Nacos(Box::new(err))
    }
}

/// What a registry does for the suite: live instance sets to follow, and
/// a place to announce and withdraw this process's instances.
pub trait Registry: fmt::Debug + Send + Sync + 'static {
    /// The live instance set of `service`; it changes as the registry does.
    fn subscribe<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<watch::Receiver<Arc<[Instance]>>, DiscoveryError>>;

    /// Announces an instance that is ready to serve.
    fn register<'a>(
        &'a self,
        registration: &'a Registration,
    ) -> BoxFuture<'a, Result<(), DiscoveryError>>;

    /// Withdraws an instance, so that callers stop picking it.
    fn deregister<'a>(
        &'a self,
        registration: &'a Registration,
    ) -> BoxFuture<'a, Result<(), DiscoveryError>>;

    /// How long a stopping instance keeps serving after deregistering, so
    /// callers see it gone before it stops accepting.
    fn deregister_grace(&self) -> Duration;
}

/// The registry a deployment uses. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Discovery(Arc<dyn Registry>);

impl Discovery {
    /// Discovery through `registry`.
    pub fn new(registry: impl Registry) -> Self {
        Self(Arc::new(registry))
    }

    /// Connects to the registry a [`DiscoveryConfig`] describes. For Nacos
    /// this retries an unreachable server with backoff for
    /// `NACOS_CONNECT_TIMEOUT`, saying so in the log, and fails on refused
    /// credentials straight away.
    pub async fn from_config(config: &DiscoveryConfig) -> Result<Self, DiscoveryError> {
        Ok(match config {
            DiscoveryConfig::Static {
                user_addrs,
                note_addrs,
            } => Self::new(StaticDiscovery::new([
                (crate::service_name::USER, user_addrs.clone()),
                (crate::service_name::NOTE, note_addrs.clone()),
            ])),
            DiscoveryConfig::Nacos(nacos) => Self::new(NacosDiscovery::connect(nacos).await?),
        })
    }

    /// The live instance set of `service`; it changes as the registry does.
    pub async fn subscribe(
        &self,
        service: &str,
    ) -> Result<watch::Receiver<Arc<[Instance]>>, DiscoveryError> {
        self.0.subscribe(service).await
    }

    /// Announces an instance. Call it once the instance is ready to serve.
    pub async fn register(&self, registration: &Registration) -> Result<(), DiscoveryError> {
        self.0.register(registration).await
    }

    /// Withdraws an instance, so that callers stop picking it.
    pub async fn deregister(&self, registration: &Registration) -> Result<(), DiscoveryError> {
        self.0.deregister(registration).await
    }

    /// How long a stopping instance keeps serving after deregistering.
    pub fn deregister_grace(&self) -> Duration {
        self.0.deregister_grace()
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
        if Self::is_nacos(env)? {
            return Ok(Self::Nacos(NacosConfig::from_env(env)?));
        }
        Ok(Self::Static {
            user_addrs: env.addr_list("EASYNOTE_USER_ADDRS", crate::default_addr::USER_GRPC)?,
            note_addrs: env.addr_list("EASYNOTE_NOTE_ADDRS", crate::default_addr::NOTE_GRPC)?,
        })
    }

    /// Whether `EASYNOTE_REGISTRY` chooses Nacos (`static` by default).
    pub fn is_nacos(env: &Env) -> Result<bool, ConfigError> {
        match env
            .string("EASYNOTE_REGISTRY", "static")
            .to_ascii_lowercase()
            .as_str()
        {
            "static" => Ok(false),
            "nacos" => Ok(true),
            other => Err(ConfigError::invalid(
                "EASYNOTE_REGISTRY",
                format!("{other:?} is not a known registry (static or nacos)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_carry_version_protocol_and_start_time() {
        let r = Registration::new("easy-note-note", "127.0.0.1:1".parse().unwrap(), "grpc");
        assert_eq!(r.metadata["protocol"], "grpc");
        assert_eq!(r.metadata["version"], env!("CARGO_PKG_VERSION"));
        assert!(
            humantime::parse_rfc3339(&r.metadata["started_at"]).is_ok(),
            "{:?}",
            r.metadata
        );
        let extra = parse_instance_metadata("lane=canary, version=0.2.0").expect("valid");
        let r = r.with_metadata(&extra);
        assert_eq!(r.metadata["lane"], "canary");
        assert_eq!(r.metadata["version"], "0.2.0");
    }

    #[test]
    fn instance_metadata_is_checked() {
        assert_eq!(parse_instance_metadata("").expect("empty"), BTreeMap::new());
        for bad in ["lane", "lane=", "=x", "protocol=http", "lane=a b"] {
            assert!(parse_instance_metadata(bad).is_err(), "{bad:?}");
        }
        let mut instance = Instance::new("a:1");
        instance.metadata = Arc::new(parse_instance_metadata("lane=canary,zone=a").unwrap());
        assert!(instance.matches(&BTreeMap::from([("lane".into(), "canary".into())])));
        assert!(!instance.matches(&BTreeMap::from([("lane".into(), "beta".into())])));
        assert_eq!(instance.lane(), Some("canary"));
        assert_eq!(Instance::new("a:1").lane(), None);
    }
}
