//! user-service settings.

use std::net::SocketAddr;

use easynote_shared::{
    config::{ConfigError, Env, Environment},
    db::DatabaseConfig,
    discovery::DiscoveryConfig,
    lifecycle::LifecycleConfig,
};

/// Everything user-service reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// `EASYNOTE_ENV`.
    pub environment: Environment,
    /// `EASYNOTE_GRPC_ADDR` (default `127.0.0.1:8889`).
    pub grpc_addr: SocketAddr,
    /// `EASYNOTE_DATABASE_URL` and pool settings (default `sqlite://data/user.db`).
    pub database: DatabaseConfig,
    /// Where to register.
    pub discovery: DiscoveryConfig,
    /// Shutdown bounds.
    pub lifecycle: LifecycleConfig,
}

/// The embedded default database.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/user.db";

/// The default gRPC listen address.
pub(crate) const DEFAULT_GRPC_ADDR: &str = easynote_shared::default_addr::USER_GRPC;

impl Config {
    /// Reads the settings, failing on the first unusable one.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            environment: Environment::from_env(env)?,
            grpc_addr: env.socket_addr("EASYNOTE_GRPC_ADDR", DEFAULT_GRPC_ADDR)?,
            database: DatabaseConfig::from_env(env, DEFAULT_DATABASE_URL)?,
            discovery: DiscoveryConfig::from_env(env)?,
            lifecycle: LifecycleConfig::from_env(env)?,
        })
    }
}
