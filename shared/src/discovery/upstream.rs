//! A downstream service as its callers see it: the live instance set a
//! registry feeds, one lazily connected [`Channel`] per instance, and a
//! weighted pick per call that skips instances which just failed.

use std::{
    fmt,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tonic::{Code, Status, transport::Channel};

use super::{Discovery, DiscoveryError, Instance};
use crate::{
    config::{ConfigError, Env},
    telemetry::{grpc::TracedChannel, metrics::RpcMetrics},
};

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
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
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

/// How long an instance whose connection just failed stays out of rotation
/// (unless every instance is out), so that one dead instance costs at most
/// one failed attempt per caller until the registry drops it.
const EJECT_FOR: Duration = Duration::from_secs(5);

/// Milliseconds on a process-wide monotonic clock, for ejection deadlines.
fn now_millis() -> u64 {
    static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);
    u64::try_from(EPOCH.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone)]
struct Backend {
    instance: Instance,
    channel: Channel,
    /// Out of rotation until this point of [`now_millis`] (0: in rotation).
    ejected_until: Arc<AtomicU64>,
}

impl Backend {
    fn eject(&self) {
        let until = now_millis().saturating_add(EJECT_FOR.as_millis() as u64);
        self.ejected_until.store(until, Ordering::Relaxed);
    }

    fn in_rotation(&self, now: u64) -> bool {
        self.ejected_until.load(Ordering::Relaxed) <= now
    }
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
    metrics: RpcMetrics,
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
                let addrs: Vec<&str> = next.iter().map(|b| b.instance.addr.as_str()).collect();
                tracing::info!(service = %name, instances = ?addrs, "instance set changed");
                tx.send_replace(next);
            }
        });
        Ok(Self {
            inner: Arc::new(UpstreamInner {
                service: service.to_owned(),
                backends: rx,
                cursor: AtomicU64::new(0),
                metrics: RpcMetrics::new(),
            }),
        })
    }

    /// The registry name of the service.
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// Addresses of the instances currently known.
    pub fn addrs(&self) -> Vec<String> {
        self.inner
            .backends
            .borrow()
            .iter()
            .map(|b| b.instance.addr.clone())
            .collect()
    }

    /// A channel to one instance, picked by weight among those in rotation;
    /// `Unavailable` when the service has no instance. The channel traces
    /// and measures every call; [`Upstream::call_idempotent`] picks the same way.
    pub fn channel(&self) -> Result<TracedChannel, Status> {
        self.pick_backend(None).map(|backend| self.traced(backend))
    }

    /// The backend's channel, wrapped to trace and measure every call.
    fn traced(&self, backend: Backend) -> TracedChannel {
        TracedChannel::new(
            backend.channel,
            backend.instance.addr.as_str().into(),
            self.inner.metrics.clone(),
        )
    }

    /// Runs an idempotent call (a read, a health check) on one instance
    /// and, if it fails because that instance is unreachable or went away
    /// mid-call, once more on another instance. The failed instance is
    /// taken out of rotation for a few seconds. `call` gets a channel and
    /// must build its request afresh each time.
    pub async fn call_idempotent<T, F, Fut>(&self, mut call: F) -> Result<T, Status>
    where
        F: FnMut(TracedChannel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let first = self.pick_backend(None)?;
        let status = match call(self.traced(first.clone())).await {
            Err(status) if is_retryable(&status) => status,
            done => return done,
        };
        if is_connection_failure(&status) {
            first.eject();
        }
        let Ok(second) = self.pick_backend(Some(&first.instance.addr)) else {
            return Err(status);
        };
        tracing::debug!(
            service = %self.inner.service,
            failed = %first.instance.addr,
            retry_on = %second.instance.addr,
            code = ?status.code(),
            "retrying an idempotent call on another instance"
        );
        let result = call(self.traced(second.clone())).await;
        if let Err(status) = &result
            && is_connection_failure(status)
        {
            second.eject();
        }
        result
    }

    /// The pick behind [`Upstream::channel`], optionally avoiding one address.
    fn pick_backend(&self, avoid: Option<&str>) -> Result<Backend, Status> {
        let backends = self.inner.backends.borrow();
        let n = self.inner.cursor.fetch_add(1, Ordering::Relaxed);
        let picked = pick(&backends, n, avoid, now_millis()).cloned();
        let (host, port) = picked
            .as_ref()
            .and_then(|b| crate::addr::split(&b.instance.addr).ok())
            .map_or(("none", 0), |(host, port)| (host, port.unwrap_or(0)));
        // A span of its own, so a trace shows which instance served each call.
        let _pick = tracing::info_span!(
            "pick instance",
            otel.name = %format_args!("pick {}", self.inner.service),
            peer.service = %self.inner.service,
            server.address = host,
            server.port = port,
            instances = backends.len(),
        )
        .entered();
        picked.ok_or_else(|| {
            let other = if avoid.is_some() { "other " } else { "" };
            Status::unavailable(format!(
                "no {other}instance of {} is available",
                self.inner.service
            ))
        })
    }
}

/// Whether an idempotent call that failed with `status` is worth repeating
/// elsewhere: the instance was unreachable, refused the stream, or the
/// connection broke mid-call. Deadlines and answers from a live server
/// (other than `Unavailable`) are final.
fn is_retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Internal => is_connection_failure(status),
        _ => false,
    }
}

/// A failure of the connection itself (not an answer of the server): the
/// client attaches the transport error as the status's source.
fn is_connection_failure(status: &Status) -> bool {
    use std::error::Error as _;
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal
    ) && status.source().is_some()
}

/// Weighted pick among backends with weight > 0 that are in rotation (or,
/// when none is, among all of them), leaving out `avoid`: plain round robin
/// when weights are equal, otherwise the `n`-th point of a low-discrepancy
/// sequence over the cumulative weights.
fn pick<'a>(backends: &'a [Backend], n: u64, avoid: Option<&str>, now: u64) -> Option<&'a Backend> {
    let candidates: Vec<&Backend> = backends
        .iter()
        .filter(|b| b.instance.weight > 0.0 && Some(b.instance.addr.as_str()) != avoid)
        .collect();
    let in_rotation: Vec<&Backend> = candidates
        .iter()
        .copied()
        .filter(|b| b.in_rotation(now))
        .collect();
    let eligible = if in_rotation.is_empty() {
        candidates
    } else {
        in_rotation
    };
    let count = eligible.len() as u64;
    let first = eligible.first()?.instance.weight;
    if eligible
        .iter()
        .all(|b| (b.instance.weight - first).abs() < f64::EPSILON)
    {
        return Some(eligible[(n % count) as usize]);
    }
    let total: f64 = eligible.iter().map(|b| b.instance.weight).sum();
    // Golden-ratio sequence: evenly spread points in [0, 1) without shared state.
    let point = ((n as f64) * 0.618_033_988_749_895).fract() * total;
    let mut acc = 0.0;
    for backend in &eligible {
        acc += backend.instance.weight;
        if point < acc {
            return Some(backend);
        }
    }
    eligible.last().copied()
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
                    ejected_until: existing.ejected_until.clone(),
                });
            }
            match endpoint(&instance.addr, settings) {
                Ok(endpoint) => Some(Backend {
                    instance: instance.clone(),
                    channel: endpoint.connect_lazy(),
                    ejected_until: Arc::default(),
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
    use crate::discovery::StaticDiscovery;

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
                ejected_until: Arc::default(),
            })
            .collect()
    }

    fn share_of(set: &[Backend], picks: u64, avoid: Option<&str>) -> Vec<u64> {
        let mut counts = vec![0; set.len()];
        for n in 0..picks {
            let picked = pick(set, n, avoid, now_millis()).expect("a backend");
            let idx = set
                .iter()
                .position(|b| b.instance.addr == picked.instance.addr)
                .expect("known");
            counts[idx] += 1;
        }
        counts
    }

    fn share(weights: &[f64], picks: u64) -> Vec<u64> {
        share_of(&backends(weights), picks, None)
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
    async fn ejected_instances_get_no_traffic_until_every_instance_is_ejected() {
        let set = backends(&[1.0, 1.0, 1.0]);
        set[1].eject();
        assert_eq!(share_of(&set, 100, None), vec![50, 0, 50]);
        set[0].eject();
        set[2].eject();
        let counts = share_of(&set, 90, None);
        assert_eq!(counts, vec![30, 30, 30], "all ejected: all in play again");
    }

    #[tokio::test]
    async fn a_retry_avoids_the_instance_that_failed() {
        let set = backends(&[1.0, 2.0]);
        let avoid = set[1].instance.addr.clone();
        assert_eq!(share_of(&set, 50, Some(&avoid)), vec![50, 0]);
        let single = backends(&[1.0]);
        let only = single[0].instance.addr.clone();
        assert!(pick(&single, 0, Some(&only), now_millis()).is_none());
    }

    #[tokio::test]
    async fn no_instances_is_unavailable_not_a_panic() {
        assert!(pick(&backends(&[]), 7, None, 0).is_none());
        assert!(pick(&backends(&[0.0]), 7, None, 0).is_none());
        let discovery = Discovery::new(StaticDiscovery::new([("svc", Vec::new())]));
        let upstream = Upstream::connect(&discovery, "svc", ChannelSettings::default())
            .await
            .expect("subscribe");
        let err = upstream.channel().expect_err("no instance");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(err.message(), "no instance of svc is available");
    }

    #[tokio::test]
    async fn unknown_services_are_an_error() {
        let discovery = Discovery::new(StaticDiscovery::new([("svc", vec!["a:1".to_owned()])]));
        let err = Upstream::connect(&discovery, "other", ChannelSettings::default())
            .await
            .expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "no addresses configured for service \"other\""
        );
    }

    #[tokio::test]
    async fn idempotent_calls_move_to_another_instance_when_one_is_down() {
        // Two addresses where connections are refused: bound, never
        // listening, and held so that no other process can take them. The
        // first attempt fails to connect, the retry goes to the other one,
        // and both get ejected.
        let refusing: Vec<tokio::net::TcpSocket> = (0..2)
            .map(|_| {
                let socket = tokio::net::TcpSocket::new_v4().expect("socket");
                socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
                socket
            })
            .collect();
        let dead: Vec<String> = refusing
            .iter()
            .map(|s| s.local_addr().expect("addr").to_string())
            .collect();
        let discovery = Discovery::new(StaticDiscovery::new([("svc", dead.clone())]));
        let upstream = Upstream::connect(&discovery, "svc", ChannelSettings::default())
            .await
            .expect("subscribe");
        let tried = std::sync::Mutex::new(Vec::new());
        let result: Result<(), Status> = upstream
            .call_idempotent(|channel| {
                tried.lock().expect("lock").push(());
                async move {
                    tonic_health::pb::health_client::HealthClient::new(channel)
                        .check(tonic_health::pb::HealthCheckRequest::default())
                        .await
                        .map(drop)
                }
            })
            .await;
        let status = result.expect_err("nothing listens");
        assert_eq!(status.code(), Code::Unavailable, "{status:?}");
        assert_eq!(tried.lock().expect("lock").len(), 2, "one retry");
        let backends = upstream.inner.backends.borrow();
        assert!(
            backends.iter().all(|b| !b.in_rotation(now_millis())),
            "both failed instances are out of rotation"
        );
    }

    #[test]
    fn answers_of_a_live_server_are_not_retried() {
        assert!(is_retryable(&Status::unavailable("shutting down")));
        assert!(!is_retryable(&Status::not_found("no such note")));
        assert!(!is_retryable(&Status::internal("internal error")));
        assert!(!is_retryable(&Status::cancelled("deadline")));
        assert!(!is_connection_failure(&Status::unavailable(
            "from the server"
        )));
    }
}
