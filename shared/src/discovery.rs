//! Service discovery: how callers find the instances of a service, and how a
//! service announces itself.
//!
//! [`Discovery`] is the seam between the services and a registry. Callers
//! never ask it per request: [`Upstream`] subscribes once, keeps a live set
//! of instances (each with one lazily connected, self-reconnecting
//! [`Channel`]), and picks one per call, weighted. Handlers only ever see
//! `Upstream::channel()`; which registry feeds it is configuration.

use std::{
    collections::HashMap,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::sync::watch;
use tonic::{Status, transport::Channel};

use crate::config::DiscoveryConfig;

/// One reachable instance of a service.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// `host:port` of its gRPC server.
    pub addr: String,
    /// Relative share of traffic; instances with weight 0 get none.
    pub weight: f64,
}

impl Instance {
    /// An instance at `addr` with the default weight 1.
    pub fn new(addr: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            weight: 1.0,
        }
    }
}

/// What a service announces about itself when it is ready to serve.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Registry name, e.g. `easy-note-note`.
    pub service: String,
    /// The address other hosts reach it at.
    pub addr: std::net::SocketAddr,
    /// Share of traffic relative to other instances.
    pub weight: f64,
    /// Free-form metadata (version, protocol, start time).
    pub metadata: HashMap<String, String>,
}

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The service has no entry in the static configuration.
    #[error("no addresses configured for service {0:?}")]
    UnknownService(String),
}

/// A source of instances and a place to register: the registry a deployment uses.
#[derive(Debug, Clone)]
pub enum Discovery {
    /// Fixed address lists from configuration (the embedded default).
    Static(StaticDiscovery),
}

impl Discovery {
    /// The discovery a [`DiscoveryConfig`] describes.
    pub fn from_config(config: &DiscoveryConfig) -> Self {
        match config {
            DiscoveryConfig::Static {
                user_addrs,
                note_addrs,
            } => Self::Static(StaticDiscovery::new([
                (crate::service_name::USER, user_addrs.clone()),
                (crate::service_name::NOTE, note_addrs.clone()),
            ])),
        }
    }

    /// The live instance set of `service`; it changes as the registry does.
    pub async fn subscribe(
        &self,
        service: &str,
    ) -> Result<watch::Receiver<Arc<[Instance]>>, DiscoveryError> {
        match self {
            Self::Static(s) => s.subscribe(service),
        }
    }

    /// Announces an instance. Call it once the instance is ready to serve.
    pub async fn register(&self, registration: &Registration) -> Result<(), DiscoveryError> {
        match self {
            Self::Static(_) => {
                tracing::debug!(service = %registration.service, addr = %registration.addr, "static discovery: nothing to register");
                Ok(())
            }
        }
    }

    /// Withdraws an instance, so that callers stop picking it.
    pub async fn deregister(&self, registration: &Registration) -> Result<(), DiscoveryError> {
        match self {
            Self::Static(_) => {
                tracing::debug!(service = %registration.service, "static discovery: nothing to deregister");
                Ok(())
            }
        }
    }

    /// How long a stopping instance keeps serving after deregistering, so
    /// callers see it gone before it stops accepting.
    pub fn deregister_grace(&self) -> Duration {
        match self {
            Self::Static(_) => Duration::ZERO,
        }
    }
}

/// Fixed lists of addresses per service.
#[derive(Clone)]
pub struct StaticDiscovery {
    // The senders stay here so the sets stay current for as long as discovery lives.
    services: Arc<HashMap<String, watch::Sender<Arc<[Instance]>>>>,
}

impl fmt::Debug for StaticDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (service, tx) in self.services.iter() {
            let addrs: Vec<String> = tx.borrow().iter().map(|i| i.addr.clone()).collect();
            map.entry(service, &addrs);
        }
        map.finish()
    }
}

impl StaticDiscovery {
    /// Discovery from `(service, addresses)` pairs.
    pub fn new<S: Into<String>>(services: impl IntoIterator<Item = (S, Vec<String>)>) -> Self {
        let services = services
            .into_iter()
            .map(|(name, addrs)| {
                let set: Arc<[Instance]> = addrs.into_iter().map(Instance::new).collect();
                (name.into(), watch::Sender::new(set))
            })
            .collect();
        Self {
            services: Arc::new(services),
        }
    }

    fn subscribe(&self, service: &str) -> Result<watch::Receiver<Arc<[Instance]>>, DiscoveryError> {
        self.services
            .get(service)
            .map(watch::Sender::subscribe)
            .ok_or_else(|| DiscoveryError::UnknownService(service.to_owned()))
    }
}

/// Client-side settings of the channels an [`Upstream`] opens.
#[derive(Debug, Clone, Copy)]
pub struct ChannelSettings {
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Deadline of every call (also sent to the server as `grpc-timeout`).
    pub request_timeout: Duration,
}

impl ChannelSettings {
    /// Reads `EASYNOTE_RPC_TIMEOUT` (default 3s) and
    /// `EASYNOTE_RPC_CONNECT_TIMEOUT` (default 1s).
    pub fn from_env(env: &crate::config::Env) -> Result<Self, crate::config::ConfigError> {
        let defaults = Self::default();
        Ok(Self {
            connect_timeout: env
                .duration("EASYNOTE_RPC_CONNECT_TIMEOUT", defaults.connect_timeout)?,
            request_timeout: env.duration("EASYNOTE_RPC_TIMEOUT", defaults.request_timeout)?,
        })
    }
}

impl Default for ChannelSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone)]
struct Backend {
    instance: Instance,
    channel: Channel,
}

/// A downstream service as its callers see it: the live set of its
/// instances and a weighted pick among them. Cheap to clone.
#[derive(Clone)]
pub struct Upstream {
    inner: Arc<UpstreamInner>,
}

struct UpstreamInner {
    service: String,
    backends: watch::Receiver<Arc<[Backend]>>,
    cursor: AtomicU64,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("service", &self.inner.service)
            .field("instances", &self.addrs())
            .finish()
    }
}

impl Upstream {
    /// Subscribes to `service` and keeps a channel per instance in step
    /// with the registry. Connections are made lazily, on first use.
    pub async fn connect(
        discovery: &Discovery,
        service: &str,
        settings: ChannelSettings,
    ) -> Result<Self, DiscoveryError> {
        let mut instances = discovery.subscribe(service).await?;
        let initial = build_backends(&[], &instances.borrow_and_update(), settings, service);
        let (tx, rx) = watch::channel(initial);
        let name = service.to_owned();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    changed = instances.changed() => {
                        if changed.is_err() {
                            break; // the registry side is gone; keep the last set
                        }
                    }
                    () = tx.closed() => break, // every Upstream clone is gone
                }
                let next = {
                    let current = tx.borrow().clone();
                    build_backends(&current, &instances.borrow_and_update(), settings, &name)
                };
                tracing::info!(service = %name, instances = next.len(), "instance set changed");
                tx.send_replace(next);
            }
        });
        Ok(Self {
            inner: Arc::new(UpstreamInner {
                service: service.to_owned(),
                backends: rx,
                cursor: AtomicU64::new(0),
            }),
        })
    }

    /// The registry name of the service.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Addresses of the instances currently in rotation.
    pub fn addrs(&self) -> Vec<String> {
        self.inner
            .backends
            .borrow()
            .iter()
            .map(|b| b.instance.addr.clone())
            .collect()
    }

    /// A channel to one instance, picked by weight; `Unavailable` when the
    /// service has no instance.
    pub fn channel(&self) -> Result<Channel, Status> {
        let backends = self.inner.backends.borrow();
        let n = self.inner.cursor.fetch_add(1, Ordering::Relaxed);
        pick(&backends, n)
            .map(|b| b.channel.clone())
            .ok_or_else(|| {
                Status::unavailable(format!(
                    "no instance of {} is available",
                    self.inner.service
                ))
            })
    }
}

/// Weighted pick: plain round robin when weights are equal, otherwise the
/// `n`-th point of a low-discrepancy sequence over the cumulative weights.
fn pick(backends: &[Backend], n: u64) -> Option<&Backend> {
    let eligible = || backends.iter().filter(|b| b.instance.weight > 0.0);
    let count = eligible().count() as u64;
    if count == 0 {
        return None;
    }
    let first = eligible().next()?.instance.weight;
    if eligible().all(|b| (b.instance.weight - first).abs() < f64::EPSILON) {
        return eligible().nth((n % count) as usize);
    }
    let total: f64 = eligible().map(|b| b.instance.weight).sum();
    // Golden-ratio sequence: evenly spread points in [0, 1) without shared state.
    let point = ((n as f64) * 0.618_033_988_749_895).fract() * total;
    let mut acc = 0.0;
    for backend in eligible() {
        acc += backend.instance.weight;
        if point < acc {
            return Some(backend);
        }
    }
    eligible().next_back()
}

fn build_backends(
    current: &[Backend],
    instances: &[Instance],
    settings: ChannelSettings,
    service: &str,
) -> Arc<[Backend]> {
    instances
        .iter()
        .filter_map(|instance| {
            if let Some(existing) = current.iter().find(|b| b.instance.addr == instance.addr) {
                return Some(Backend {
                    instance: instance.clone(),
                    channel: existing.channel.clone(),
                });
            }
            match endpoint(&instance.addr, settings) {
                Ok(endpoint) => Some(Backend {
                    instance: instance.clone(),
                    channel: endpoint.connect_lazy(),
                }),
                Err(err) => {
                    tracing::warn!(service, addr = %instance.addr, error = %err, "ignoring instance with an unusable address");
                    None
                }
            }
        })
        .collect()
}

fn endpoint(
    addr: &str,
    settings: ChannelSettings,
) -> Result<tonic::transport::Endpoint, tonic::codegen::http::uri::InvalidUri> {
    Ok(Channel::from_shared(format!("http://{addr}"))?
        .connect_timeout(settings.connect_timeout)
        .timeout(settings.request_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends(weights: &[f64]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Backend {
                instance: Instance {
                    addr: format!("127.0.0.1:{}", 1000 + i),
                    weight,
                },
                channel: endpoint(
                    &format!("127.0.0.1:{}", 1000 + i),
                    ChannelSettings::default(),
                )
                .expect("endpoint")
                .connect_lazy(),
            })
            .collect()
    }

    fn share(weights: &[f64], picks: u64) -> Vec<u64> {
        let set = backends(weights);
        let mut counts = vec![0; set.len()];
        for n in 0..picks {
            let picked = pick(&set, n).expect("a backend");
            let idx = set
                .iter()
                .position(|b| b.instance.addr == picked.instance.addr)
                .expect("known");
            counts[idx] += 1;
        }
        counts
    }

    #[tokio::test]
    async fn equal_weights_are_round_robin() {
        assert_eq!(share(&[1.0, 1.0, 1.0], 300), vec![100, 100, 100]);
    }

    #[tokio::test]
    async fn weights_shape_the_share_and_zero_gets_nothing() {
        let counts = share(&[3.0, 1.0, 0.0], 4000);
        assert_eq!(counts[2], 0, "weight 0 must get no traffic: {counts:?}");
        let ratio = counts[0] as f64 / counts[1] as f64;
        assert!((2.8..3.2).contains(&ratio), "3:1 weights gave {counts:?}");
    }

    #[tokio::test]
    async fn no_instances_is_unavailable_not_a_panic() {
        assert!(pick(&backends(&[]), 7).is_none());
        assert!(pick(&backends(&[0.0]), 7).is_none());
        let discovery = Discovery::Static(StaticDiscovery::new([("svc", Vec::new())]));
        let upstream = Upstream::connect(&discovery, "svc", ChannelSettings::default())
            .await
            .expect("subscribe");
        let err = upstream.channel().expect_err("no instance");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(err.message(), "no instance of svc is available");
    }

    #[tokio::test]
    async fn unknown_services_are_an_error() {
        let discovery = Discovery::Static(StaticDiscovery::new([("svc", vec!["a:1".to_owned()])]));
        let err = Upstream::connect(&discovery, "other", ChannelSettings::default())
            .await
            .expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "no addresses configured for service \"other\""
        );
    }
}
