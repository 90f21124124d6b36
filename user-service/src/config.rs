//! user-service settings: exactly those every gRPC service reads.

use easynote_shared::{
    config::{ConfigError, Env},
    grpc::ServiceConfig,
};

/// Everything user-service reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address, database (default `sqlite://data/user.db`),
    /// registry and shutdown bounds.
    pub service: ServiceConfig,
}

/// The embedded default database.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/user.db";

/// The default gRPC listen address.
pub(crate) const DEFAULT_GRPC_ADDR: &str = easynote_shared::default_addr::USER_GRPC;

impl Config {
    /// Reads the settings, failing on the first unusable one.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULT_GRPC_ADDR, DEFAULT_DATABASE_URL)?,
        })
    }
}
