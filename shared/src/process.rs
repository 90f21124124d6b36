//! What every server process of the suite starts with, whatever it serves:
//! its environment, its mutual TLS identity, the registry, the governance
//! rules and its lifecycle settings. Read ([`ProcessConfig`]) and started
//! ([`Process::start`]) here, once, for the gRPC services
//! ([`GrpcService`](crate::grpc::GrpcService)) and the gateway alike; each
//! then adds what only it has (a database, an HTTP listener, upstreams).

use std::net::SocketAddr;

use anyhow::Context as _;

use crate::{
    config::{ConfigError, Env, Environment},
    discovery::{Discovery, DiscoveryConfig, Registration},
    governance::{Governance, GovernanceConfig},
    lifecycle::{Lifecycle, LifecycleConfig},
    tls::{Tls, TlsSettings},
};

/// The settings every server process reads.
#[derive(Debug, Clone)]
pub struct ProcessConfig {
    /// `EASYNOTE_ENV`.
    pub environment: Environment,
    /// Where to register, and how to find other services.
    pub discovery: DiscoveryConfig,
    /// Shutdown bounds and instance metadata.
    pub lifecycle: LifecycleConfig,
    /// Where the governance rules come from.
    pub governance: GovernanceConfig,
    /// Mutual TLS on the gRPC hops (`EASYNOTE_TLS_*`).
    pub tls: TlsSettings,
}

impl ProcessConfig {
    /// Reads the settings, failing on the first unusable one.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let environment = Environment::from_env(env)?;
        let tls = TlsSettings::from_env(env, environment)?;
        let discovery = DiscoveryConfig::from_env(env)?;
        let lifecycle = LifecycleConfig::from_env(env)?;
        let governance = GovernanceConfig::from_env(env, environment, &discovery, &lifecycle)?;
        Ok(Self {
            environment,
            tls,
            discovery,
            lifecycle,
            governance,
        })
    }
}

/// A process started as one of the suite's services: its TLS files
/// loaded, connected to the registry, following the governance rules.
#[derive(Debug)]
pub struct Process {
    /// The registry name it serves as (and its certificate's name).
    pub name: &'static str,
    /// Mutual TLS, when on: the identity it serves and calls with.
    pub tls: Option<Tls>,
    /// The registry, to subscribe to other services and to register in.
    pub discovery: Discovery,
    /// The governance rules it follows.
    pub governance: Governance,
    /// Shutdown bounds and instance metadata.
    pub lifecycle: LifecycleConfig,
}

impl Process {
    /// Loads the TLS files, connects to the registry (retrying within its
    /// bound) and starts following the governance rules, as `name`.
    pub async fn start(name: &'static str, config: &ProcessConfig) -> anyhow::Result<Self> {
        let tls = Tls::start(&config.tls, name).context("loading the TLS files")?;
        let discovery = Discovery::from_config(&config.discovery)
            .await
            .context("connecting to the service registry")?;
        Ok(Self {
            name,
            tls,
            discovery,
            governance: Governance::start(&config.governance),
            lifecycle: config.lifecycle.clone(),
        })
    }

    /// How this process, serving `protocol` on `addr`, announces itself
    /// and drains: what [`lifecycle::serve`](crate::lifecycle::serve)
    /// follows.
    pub fn into_lifecycle(self, addr: SocketAddr, protocol: &str) -> Lifecycle {
        Lifecycle {
            registration: Registration::new(self.name, addr, protocol)
                .with_metadata(&self.lifecycle.metadata),
            discovery: self.discovery,
            drain_timeout: self.lifecycle.shutdown_timeout,
        }
    }
}
