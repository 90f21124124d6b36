//! note-service settings: those every gRPC service reads, and the
//! deadlines of its calls to user-service.

use easynote_shared::{
    config::{ConfigError, Env},
    discovery::ChannelSettings,
    grpc::ServiceConfig,
};

/// The embedded default database.
const DEFAULT_DATABASE_URL: &str = "sqlite://data/note.db";

/// Everything note-service reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listen address, database (default `sqlite://data/note.db`),
    /// registry (also where user-service is) and shutdown bounds.
    pub service: ServiceConfig,
    /// How calls to user-service connect (their deadlines are governance rules).
    pub channels: ChannelSettings,
}

/// The default gRPC listen address.
pub(crate) const DEFAULT_GRPC_ADDR: &str = easynote_shared::default_addr::NOTE_GRPC;

impl Config {
    /// Reads the settings, failing on the first unusable one.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            service: ServiceConfig::from_env(env, DEFAULT_GRPC_ADDR, DEFAULT_DATABASE_URL)?,
            channels: ChannelSettings::from_env(env)?,
        })
    }
}
