//! Nacos behind the discovery seam, through the `nacos-sdk` crate (gRPC
//! protocol, Nacos 2.x, rnacos, Aliyun MSE).
//!
//! What this module owns, and why it is shaped the way it is:
//!
//! - **One client for subscriptions**, made by [`NacosDiscovery::connect`]:
//!   each subscribed service gets one listener that turns the SDK's change
//!   events (server pushes, plus the SDK's own slow refresh) into a
//!   [`watch`] channel that [`crate::governance::Upstream`] follows. Nothing asks the
//!   registry per request.
//! - **One client per registered instance**: Nacos 2.x keeps at most one
//!   instance of a service per client connection, so two instances in one
//!   process (tests, the all-in-one binary) need two connections. The
//!   instances are ephemeral: they live as long as that connection, and the
//!   SDK registers them again by itself after reconnecting to a Nacos that
//!   went away and came back.
//! - **Our settings win**: the SDK reads `NACOS_CLIENT_*` variables and a
//!   `.env` file before its builder values unless told otherwise; we tell it
//!   otherwise (`env_first(false)`), so `NACOS_SERVER_ADDR`, `NACOS_NAMESPACE`,
//!   … are the only names that count.
//! - **Start-up is explicit**: an unreachable Nacos is retried with backoff
//!   for `NACOS_CONNECT_TIMEOUT`, each attempt logged; refused credentials
//!   fail at once.
//! - **Secrets stay out of logs**: username/password login is done here
//!   (`login::PasswordLogin`) rather than by the SDK's plugin, which logs the
//!   password at debug level and sends it in the URL.

use std::{
    collections::HashMap,
    fmt,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use nacos_sdk::api::naming::{
    NamingChangeEvent, NamingEventListener, NamingService, ServiceInstance,
};
use tokio::sync::watch;

mod config;
mod login;
mod open;

pub(crate) use config::NACOS_GRPC_PORT_OFFSET;
pub use config::{NacosAuth, NacosConfig};

use self::open::open_client;
pub(crate) use self::open::open_config_client;
use super::{
    BoxFuture, DiscoveryError, Instance, Registration, Registry,
    advertise::{advertised_addr, outbound_ip},
};
use crate::addr::HostPort;

/// Bound on one registry call (register, deregister, first instance list).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The cluster every instance is registered in.
const CLUSTER: &str = "DEFAULT";

/// What went wrong with Nacos.
#[derive(Debug, thiserror::Error)]
pub enum NacosError {
    /// Start-up gave up on an unreachable registry.
    #[error(
        "cannot reach Nacos at {servers} (gRPC on port + 1000): gave up after {attempts} attempt(s) in {elapsed:?} (NACOS_CONNECT_TIMEOUT); last error: {last}"
    )]
    Unreachable {
        /// `NACOS_SERVER_ADDR`.
        servers: String,
        /// How many attempts were made.
        attempts: u32,
        /// How long they took.
        elapsed: Duration,
        /// The last attempt's error.
        last: String,
    },
    /// The server said no to `NACOS_USERNAME`/`NACOS_PASSWORD`.
    #[error(
        "Nacos at {server} refused the login of user {username:?} (HTTP {status}): check NACOS_USERNAME and NACOS_PASSWORD"
    )]
    LoginRefused {
        /// The server that answered.
        server: String,
        /// `NACOS_USERNAME`.
        username: String,
        /// Its HTTP status.
        status: u16,
    },
    /// A registry call failed.
    #[error("{action} {service} ({addr}) in Nacos at {servers} failed")]
    Call {
        /// `registering` or `deregistering`.
        action: &'static str,
        /// The service name.
        service: String,
        /// The advertised address.
        addr: String,
        /// `NACOS_SERVER_ADDR`.
        servers: String,
        /// The SDK's error.
        #[source]
        source: CallError,
    },
}

/// Why one registry call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The SDK reported an error (the server's answer or a transport error).
    #[error(transparent)]
    Sdk(#[from] nacos_sdk::api::error::Error),
    /// No answer in time.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

/// Discovery through a Nacos registry. Cheap to clone.
#[derive(Clone)]
pub struct NacosDiscovery {
    inner: Arc<Inner>,
}

struct Inner {
    config: NacosConfig,
    /// The client that holds the subscriptions.
    client: NamingService,
    subscriptions: tokio::sync::Mutex<HashMap<String, Arc<InstanceSender>>>,
    registered: tokio::sync::Mutex<HashMap<(String, SocketAddr), Registered>>,
}

/// Publishes the instance set of one service.
type InstanceSender = watch::Sender<Arc<[Instance]>>;

/// An instance this process registered, with the connection that holds it.
struct Registered {
    client: NamingService,
    instance: ServiceInstance,
}

impl fmt::Debug for NacosDiscovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NacosDiscovery")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl NacosDiscovery {
    /// Opens the subscription client, retrying an unreachable server with
    /// backoff for `NACOS_CONNECT_TIMEOUT`.
    pub async fn connect(config: &NacosConfig) -> Result<Self, NacosError> {
        let client = open_client(config, "discovery").await?;
        tracing::info!(
            servers = %config.server_list(),
            namespace = %display_namespace(&config.namespace),
            group = %config.group,
            "connected to Nacos"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                config: config.clone(),
                client,
                subscriptions: tokio::sync::Mutex::default(),
                registered: tokio::sync::Mutex::default(),
            }),
        })
    }

    /// The live set of `service`'s healthy, enabled instances with a
    /// weight above zero. One subscription per service and process.
    pub async fn subscribe(&self, service: &str) -> watch::Receiver<Arc<[Instance]>> {
        let mut subscriptions = self.inner.subscriptions.lock().await;
        if let Some(tx) = subscriptions.get(service) {
            return tx.subscribe();
        }
        let group = &self.inner.config.group;
        let tx = Arc::new(watch::Sender::new(Arc::from([])));
        let listener = Arc::new(Listener {
            service: service.to_owned(),
            tx: tx.clone(),
            event_seen: AtomicBool::new(false),
        });
        // The SDK keeps the subscription (and re-subscribes after a
        // reconnect); it never reports an error here.
        let _ = self
            .inner
            .client
            .subscribe(
                service.to_owned(),
                Some(group.clone()),
                Vec::new(),
                listener.clone(),
            )
            .await;
        // The SDK only tells listeners about changes; the current set comes
        // from one query. An event that arrived meanwhile is newer: keep it.
        let initial = tokio::time::timeout(
            CALL_TIMEOUT,
            self.inner.client.select_instances(
                service.to_owned(),
                Some(group.clone()),
                Vec::new(),
                true,
                true,
            ),
        )
        .await;
        match initial {
            Ok(Ok(hosts)) => {
                let set = instances_of(&hosts);
                tx.send_if_modified(|current| {
                    if listener.event_seen.load(Ordering::Acquire) {
                        return false;
                    }
                    *current = set;
                    true
                });
            }
            Ok(Err(err)) => {
                tracing::warn!(service, error = %err, "no instance list from Nacos yet; waiting for it to push one")
            }
            Err(_) => tracing::warn!(
                service,
                "Nacos did not list the instances in time; waiting for it to push them"
            ),
        }
        tracing::info!(service, group = %group, instances = ?addrs(&tx.borrow()), "subscribed in Nacos");
        subscriptions.insert(service.to_owned(), tx.clone());
        tx.subscribe()
    }

    /// Registers an ephemeral instance over a connection of its own.
    pub async fn register(&self, registration: &Registration) -> Result<(), DiscoveryError> {
        let config = &self.inner.config;
        let (host, port) =
            advertised_addr(config.advertise.as_ref(), registration.addr, outbound_ip)?;
        let addr = HostPort::new(host.clone(), port).to_string();
        let instance = ServiceInstance {
            ip: host,
            port: i32::from(port),
            weight: config.weight,
            healthy: true,
            enabled: true,
            ephemeral: true,
            cluster_name: Some(CLUSTER.to_owned()),
            service_name: Some(registration.service.clone()),
            metadata: registration.metadata.clone(),
            ..ServiceInstance::default()
        };
        let client = open_client(config, &registration.service).await?;
        // Remembered before the request goes out: if the caller gives up
        // half-way (a shutdown during registration), the request may still
        // have reached Nacos, and `deregister` must be able to take it back.
        let key = (registration.service.clone(), registration.addr);
        self.inner.registered.lock().await.insert(
            key.clone(),
            Registered {
                client: client.clone(),
                instance: instance.clone(),
            },
        );
        let call = client.register_instance(
            registration.service.clone(),
            Some(config.group.clone()),
            instance,
        );
        if let Err(source) = bounded(call).await {
            self.inner.registered.lock().await.remove(&key);
            return Err(self.call_error("registering", registration, &addr, source));
        }
        tracing::info!(
            service = %registration.service,
            %addr,
            weight = config.weight,
            namespace = %display_namespace(&config.namespace),
            group = %config.group,
            "registered in Nacos"
        );
        Ok(())
    }

    /// Deregisters an instance registered by [`NacosDiscovery::register`]
    /// (also one whose registration was abandoned half-way) and closes its
    /// connection; nothing to do for an instance never registered.
    pub async fn deregister(&self, registration: &Registration) -> Result<(), DiscoveryError> {
        let key = (registration.service.clone(), registration.addr);
        let Some(Registered { client, instance }) = self.inner.registered.lock().await.remove(&key)
        else {
            return Ok(());
        };
        let addr = HostPort::new(
            instance.ip.clone(),
            u16::try_from(instance.port).unwrap_or_default(),
        )
        .to_string();
        let call = client.deregister_instance(
            registration.service.clone(),
            Some(self.inner.config.group.clone()),
            instance,
        );
        bounded(call)
            .await
            .map_err(|source| self.call_error("deregistering", registration, &addr, source))?;
        tracing::info!(service = %registration.service, %addr, "deregistered from Nacos");
        Ok(())
    }

    /// `EASYNOTE_DEREGISTER_GRACE`.
    pub fn deregister_grace(&self) -> Duration {
        self.inner.config.deregister_grace
    }

    fn call_error(
        &self,
        action: &'static str,
        registration: &Registration,
        addr: &str,
        source: CallError,
    ) -> DiscoveryError {
        NacosError::Call {
            action,
            service: registration.service.clone(),
            addr: addr.to_owned(),
            servers: self.inner.config.server_list(),
            source,
        }
        .into()
    }
}

async fn bounded<T>(
    call: impl Future<Output = nacos_sdk::api::error::Result<T>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(CallError::Timeout(CALL_TIMEOUT)),
    }
}

fn display_namespace(namespace: &str) -> &str {
    if namespace.is_empty() {
        "public"
    } else {
        namespace
    }
}

fn addrs(set: &[Instance]) -> Vec<&str> {
    set.iter().map(|i| i.addr.as_str()).collect()
}

/// The instances callers may use: healthy, enabled, weight above zero,
/// in a stable order.
fn instances_of(hosts: &[ServiceInstance]) -> Arc<[Instance]> {
    let mut set: Vec<Instance> = hosts
        .iter()
        .filter(|h| h.healthy && h.enabled && h.weight > 0.0)
        .filter_map(|h| {
            let port = u16::try_from(h.port).ok().filter(|p| *p > 0)?;
            Some(Instance {
                addr: HostPort::new(h.ip.clone(), port).to_string(),
                weight: h.weight,
                metadata: Arc::new(
                    h.metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
            })
        })
        .collect();
    set.sort_by(|a, b| a.addr.cmp(&b.addr));
    set.into()
}

/// Turns the SDK's change events for one service into the watch channel.
struct Listener {
    service: String,
    tx: Arc<InstanceSender>,
    event_seen: AtomicBool,
}

impl NamingEventListener for Listener {
    fn event(&self, event: Arc<NamingChangeEvent>) {
        // `None` is the SDK's "no data"; with push-empty protection on, it
        // never reports an empty set, so a registry hiccup cannot empty ours.
        let Some(hosts) = &event.instances else {
            return;
        };
        self.event_seen.store(true, Ordering::Release);
        let set = instances_of(hosts);
        let changed = self.tx.send_if_modified(|current| {
            if **current == *set {
                return false;
            }
            *current = set.clone();
            true
        });
        if changed {
            tracing::debug!(service = %self.service, instances = ?addrs(&set), "Nacos pushed a new instance set");
        }
    }
}

impl Registry for NacosDiscovery {
    fn subscribe<'a>(
        &'a self,
        service: &'a str,
    ) -> BoxFuture<'a, Result<watch::Receiver<Arc<[Instance]>>, DiscoveryError>> {
        Box::pin(async move { Ok(NacosDiscovery::subscribe(self, service).await) })
    }

    fn register<'a>(
        &'a self,
        registration: &'a Registration,
    ) -> BoxFuture<'a, Result<(), DiscoveryError>> {
        Box::pin(NacosDiscovery::register(self, registration))
    }

    fn deregister<'a>(
        &'a self,
        registration: &'a Registration,
    ) -> BoxFuture<'a, Result<(), DiscoveryError>> {
        Box::pin(NacosDiscovery::deregister(self, registration))
    }

    fn deregister_grace(&self) -> Duration {
        NacosDiscovery::deregister_grace(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(ip: &str, port: i32, weight: f64, healthy: bool, enabled: bool) -> ServiceInstance {
        ServiceInstance {
            ip: ip.to_owned(),
            port,
            weight,
            healthy,
            enabled,
            ..ServiceInstance::default()
        }
    }

    #[test]
    fn only_healthy_enabled_weighted_instances_are_used() {
        let hosts = [
            host("10.0.0.2", 8888, 2.0, true, true),
            host("10.0.0.1", 8888, 1.0, true, true),
            host("10.0.0.3", 8888, 1.0, false, true),
            host("10.0.0.4", 8888, 1.0, true, false),
            host("10.0.0.5", 8888, 0.0, true, true),
            host("10.0.0.6", 0, 1.0, true, true),
            host("fd00::1", 9, 1.0, true, true),
        ];
        let set = instances_of(&hosts);
        assert_eq!(
            addrs(&set),
            vec!["10.0.0.1:8888", "10.0.0.2:8888", "[fd00::1]:9"]
        );
        assert_eq!(set[1].weight, 2.0);
    }

    #[test]
    fn listener_events_replace_the_set() {
        let tx = Arc::new(watch::Sender::new(Arc::from([])));
        let mut rx = tx.subscribe();
        let listener = Listener {
            service: "svc".into(),
            tx: tx.clone(),
            event_seen: AtomicBool::new(false),
        };
        let event = |hosts: Option<Vec<ServiceInstance>>| {
            Arc::new(NamingChangeEvent {
                service_name: "svc".into(),
                group_name: "DEFAULT_GROUP".into(),
                clusters: String::new(),
                instances: hosts,
            })
        };
        listener.event(event(Some(vec![host("10.0.0.1", 1, 1.0, true, true)])));
        assert!(rx.has_changed().unwrap());
        assert_eq!(addrs(&rx.borrow_and_update()), vec!["10.0.0.1:1"]);
        listener.event(event(None));
        listener.event(event(Some(vec![host("10.0.0.1", 1, 1.0, true, true)])));
        assert!(
            !rx.has_changed().unwrap(),
            "no data and no change: no update"
        );
        assert!(listener.event_seen.load(Ordering::Acquire));
    }

    #[test]
    fn debug_output_hides_credentials() {
        let env = crate::config::Env::from_pairs([
            ("NACOS_USERNAME", "nacos"),
            ("NACOS_PASSWORD", "hunter2-secret"),
        ]);
        let config = NacosConfig::from_env(&env).expect("config");
        let shown = format!("{config:?}");
        assert!(shown.contains("nacos"), "{shown}");
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
