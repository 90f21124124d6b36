//! Channels to instances: one lazily connected gRPC channel per instance,
//! with this process's TLS identity when mutual TLS is on.

use std::time::Duration;

use tonic::transport::Channel;

use crate::{
    config::{ConfigError, Env},
    tls::{self, Tls},
};

/// Client-side settings of the channels to instances (an
/// [`Upstream`](crate::governance::Upstream) opens one per instance). Deadlines
/// of calls are governance rules (`clients.SERVICE.METHOD.timeout_ms`).
#[derive(Debug, Clone)]
pub struct ChannelSettings {
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Mutual TLS, as this process's identity (plaintext when `None`).
    pub tls: Option<Tls>,
}

impl ChannelSettings {
    /// Reads `EASYNOTE_RPC_CONNECT_TIMEOUT` (default 1s).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            connect_timeout: env
                .duration("EASYNOTE_RPC_CONNECT_TIMEOUT", defaults.connect_timeout)?,
            tls: None,
        })
    }

    /// The same settings, connecting with `tls`.
    #[must_use]
    pub fn with_tls(self, tls: Option<Tls>) -> Self {
        Self { tls, ..self }
    }
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            tls: None,
        }
    }
}

/// A lazily connected channel to the instance at `addr` of `service`:
/// with TLS, its certificate must be valid for `service`.
pub(crate) fn channel(
    addr: &str,
    settings: &ChannelSettings,
    service: &str,
) -> anyhow::Result<Channel> {
    let endpoint = Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(settings.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    Ok(match &settings.tls {
        None => endpoint.connect_lazy(),
        Some(tls) => endpoint.connect_with_connector_lazy(tls::connector(tls, service)?),
    })
}
