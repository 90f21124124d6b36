//! A downstream service as its callers see it: the live instance set a
//! registry feeds, one lazily connected [`Channel`] per instance, and every
//! call made through [`Upstream::call`] under the governance rules: a
//! deadline per attempt (no more than what is left of the request's),
//! retries on another instance within a budget, an optional hedged
//! request, a circuit breaker per method, and instances picked by lane.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        Arc, LazyLock, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry::KeyValue;
use tokio::sync::watch;
use tonic::{Code, Status, transport::Channel};

use super::{Discovery, DiscoveryError, Instance};
use crate::{
    config::{ConfigError, Env},
    governance::{
        Governance,
        breaker::{Breaker, BreakerState},
        budget::RetryBudget,
        context::CallContext,
        rules::{ClientPolicy, Rules},
    },
    telemetry::{grpc::TracedChannel, metrics::RpcMetrics},
    tls::{self, Tls},
};

/// Client-side settings of the channels an [`Upstream`] opens. Deadlines
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
    governance: Governance,
    methods: RwLock<HashMap<&'static str, Arc<MethodState>>>,
}

/// What governance keeps per called method.
#[derive(Debug, Default)]
struct MethodState {
    breaker: Breaker,
    budget: RetryBudget,
}

impl fmt::Debug for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Upstream")
            .field("service", &self.inner.service)
            .field("instances", &self.addrs())
            .finish()
    }
}

/// Which instances a call may go to.
#[derive(Debug, Clone, PartialEq)]
enum Selector {
    /// Instances that serve no lane (fall back to any).
    Default,
    /// Instances carrying all of this metadata (fall back to the default ones).
    Lane(BTreeMap<String, String>),
}

impl Upstream {
    /// Subscribes to `service` and keeps a channel per instance in step
    /// with the registry. Connections are made lazily, on first use.
    pub async fn connect(
        discovery: &Discovery,
        service: &str,
        settings: ChannelSettings,
        governance: Governance,
    ) -> Result<Self, DiscoveryError> {
        let mut instances = discovery.subscribe(service).await?;
        let initial = build_backends(&[], &instances.borrow_and_update(), &settings, service);
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
                    build_backends(&current, &instances.borrow_and_update(), &settings, &name)
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
                governance,
                methods: RwLock::default(),
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

    /// The backend's channel, wrapped to trace and measure every call.
    fn traced(&self, backend: &Backend) -> TracedChannel {
        TracedChannel::new(
            backend.channel.clone(),
            backend.instance.addr.as_str().into(),
            self.inner.metrics.clone(),
        )
    }

    fn method_state(&self, method: &'static str) -> Arc<MethodState> {
        if let Some(state) = self
            .inner
            .methods
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(method)
        {
            return state.clone();
        }
        self.inner
            .methods
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(method)
            .or_default()
            .clone()
    }

    /// The state of the breaker of `method` now.
    pub fn breaker_state(&self, method: &'static str) -> BreakerState {
        self.method_state(method).breaker.state(Instant::now())
    }

    /// Calls `method` (its gRPC name, e.g. `QueryNote`) with `request`
    /// under the governance rules. `call` gets a channel to the picked
    /// instance and the request, with its deadline and metadata set; it is
    /// called once per attempt.
    ///
    /// Idempotent methods (reads, health) are retried on another instance
    /// when an attempt fails with UNAVAILABLE, RESOURCE_EXHAUSTED,
    /// DEADLINE_EXCEEDED or a broken connection, within the retry budget,
    /// and never when the call being served is itself a retry. An instance
    /// whose connection failed is taken out of rotation for a few seconds.
    pub async fn call<Req, Res, F, Fut>(
        &self,
        method: &'static str,
        request: Req,
        call: F,
    ) -> Result<tonic::Response<Res>, Status>
    where
        Req: Clone,
        F: Fn(TracedChannel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        let context = CallContext::current();
        let governance = &self.inner.governance;
        if !governance.enabled() {
            let backend = self.pick_backend(&Selector::Default, None)?;
            let mut request = tonic::Request::new(request);
            request.set_timeout(ClientPolicy::default().timeout);
            return call(self.traced(&backend), request).await;
        }
        let active = governance.active();
        let policy = active.rules.client_policy(&self.inner.service, method);
        let selector = self.selector(&active.rules, &context);
        drop(active);
        let state = self.method_state(method);
        state.budget.deposit(Instant::now());
        let attempts = if context.retried {
            1
        } else {
            policy.max_attempts.max(1)
        };
        let mut avoid: Option<String> = None;
        let mut last: Option<Status> = None;
        for attempt in 0..attempts {
            let timeout = match context.deadline {
                Some(deadline) => deadline
                    .saturating_duration_since(Instant::now())
                    .min(policy.timeout),
                None => policy.timeout,
            };
            if timeout.is_zero() {
                return Err(last.unwrap_or_else(|| {
                    Status::deadline_exceeded(format!(
                        "no time left for {}/{method}",
                        self.inner.service
                    ))
                }));
            }
            if attempt > 0 {
                if !state.budget.try_withdraw(
                    policy.budget_ratio,
                    policy.min_per_second,
                    Instant::now(),
                ) {
                    self.count(&governance.metrics().budget_exhausted, method, None);
                    break;
                }
                self.count(&governance.metrics().retries, method, Some("retry"));
            }
            let backend = match self.pick_backend(&selector, avoid.as_deref()) {
                Ok(backend) => backend,
                Err(status) => return Err(last.unwrap_or(status)),
            };
            let (permit, change) = state.breaker.acquire(&policy.breaker, Instant::now());
            self.transition(method, change);
            let Some(permit) = permit else {
                crate::governance::refused_event("clients.breaker", method);
                return Err(Status::unavailable(format!(
                    "circuit breaker open for {}/{method}",
                    self.inner.service
                )));
            };
            let first = self.attempt(&call, &backend, &request, timeout, &context, attempt > 0);
            let result = match policy.backup_delay {
                Some(delay) if attempt == 0 && attempts > 1 => {
                    self.hedge(
                        first, delay, &call, &backend, &request, timeout, &context, &policy,
                        &state, method,
                    )
                    .await
                }
                _ => first.await,
            };
            let failed = result.as_ref().err().is_some_and(counts_against_breaker);
            let change = state
                .breaker
                .record(permit, failed, &policy.breaker, Instant::now());
            self.transition(method, change);
            match result {
                Ok(response) => return Ok(response),
                Err(status) => {
                    if is_connection_failure(&status) {
                        backend.eject();
                    }
                    if !is_retryable(&status) {
                        return Err(status);
                    }
                    tracing::debug!(
                        service = %self.inner.service,
                        method,
                        failed = %backend.instance.addr,
                        code = ?status.code(),
                        "attempt failed"
                    );
                    avoid = Some(backend.instance.addr.clone());
                    last = Some(status);
                }
            }
        }
        Err(last.unwrap_or_else(|| Status::unavailable("no attempt was made")))
    }

    /// One attempt on `backend`, bounded by `timeout` (also sent as
    /// `grpc-timeout`), with the lane and retry mark in its metadata.
    fn attempt<'a, Req, Res, F, Fut>(
        &self,
        call: &'a F,
        backend: &Backend,
        request: &Req,
        timeout: Duration,
        context: &CallContext,
        retry: bool,
    ) -> impl Future<Output = Result<tonic::Response<Res>, Status>> + 'a
    where
        Req: Clone + 'a,
        Res: 'a,
        F: Fn(TracedChannel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Res>, Status>> + 'a,
    {
        let mut request = tonic::Request::new(request.clone());
        request.set_timeout(timeout);
        context.write_metadata(request.metadata_mut(), retry);
        let channel = self.traced(backend);
        async move {
            match tokio::time::timeout(timeout, call(channel, request)).await {
                Ok(Err(status)) if status.code() == Code::Cancelled && is_timeout(&status) => Err(
                    Status::deadline_exceeded(format!("no answer within {timeout:?}")),
                ),
                Ok(result) => result,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "no answer within {timeout:?}"
                ))),
            }
        }
    }

    /// Waits `delay` for `first`; then, if the budget allows, races it with
    /// a second request on another instance and takes the first success.
    #[allow(clippy::too_many_arguments)]
    async fn hedge<Req, Res, F, Fut>(
        &self,
        first: impl Future<Output = Result<tonic::Response<Res>, Status>>,
        delay: Duration,
        call: &F,
        backend: &Backend,
        request: &Req,
        timeout: Duration,
        context: &CallContext,
        policy: &ClientPolicy,
        state: &MethodState,
        method: &'static str,
    ) -> Result<tonic::Response<Res>, Status>
    where
        Req: Clone,
        F: Fn(TracedChannel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        tokio::pin!(first);
        tokio::select! {
            result = &mut first => return result,
            () = tokio::time::sleep(delay) => {}
        }
        let selector = self.selector(&self.inner.governance.active().rules, context);
        let second_backend = match self.pick_backend(&selector, Some(&backend.instance.addr)) {
            Ok(b) => b,
            Err(_) => return first.await,
        };
        if !state
            .budget
            .try_withdraw(policy.budget_ratio, policy.min_per_second, Instant::now())
        {
            self.count(
                &self.inner.governance.metrics().budget_exhausted,
                method,
                None,
            );
            return first.await;
        }
        self.count(
            &self.inner.governance.metrics().retries,
            method,
            Some("hedge"),
        );
        let left = timeout.saturating_sub(delay);
        let second = self.attempt(call, &second_backend, request, left, context, true);
        tokio::pin!(second);
        tokio::select! {
            result = &mut first => match result {
                Ok(response) => Ok(response),
                Err(_) => second.await,
            },
            result = &mut second => match result {
                Ok(response) => Ok(response),
                Err(_) => first.await,
            },
        }
    }

    fn selector(&self, rules: &Rules, context: &CallContext) -> Selector {
        let Some(lane) = &context.lane else {
            return Selector::Default;
        };
        let defined = rules
            .routing
            .get(&self.inner.service)
            .and_then(|routing| routing.lanes.iter().find(|l| *l.name == **lane));
        Selector::Lane(match defined {
            Some(lane) => lane.instances.clone(),
            None => BTreeMap::from([("lane".to_owned(), lane.to_string())]),
        })
    }

    fn count(
        &self,
        counter: &opentelemetry::metrics::Counter<u64>,
        method: &'static str,
        kind: Option<&'static str>,
    ) {
        let mut attributes = vec![
            KeyValue::new("service", self.inner.service.clone()),
            KeyValue::new("method", method),
        ];
        if let Some(kind) = kind {
            attributes.push(KeyValue::new("kind", kind));
        }
        counter.add(1, &attributes);
    }

    fn transition(&self, method: &'static str, change: Option<BreakerState>) {
        let Some(state) = change else { return };
        let metrics = self.inner.governance.metrics();
        let attributes = [
            KeyValue::new("service", self.inner.service.clone()),
            KeyValue::new("method", method),
        ];
        metrics.breaker_state.record(state as i64, &attributes);
        metrics.breaker_transitions.add(
            1,
            &[
                attributes[0].clone(),
                attributes[1].clone(),
                KeyValue::new("state", state.as_str()),
            ],
        );
        tracing::warn!(service = %self.inner.service, method, state = state.as_str(), "circuit breaker changed state");
    }

    /// A backend for `selector`, optionally avoiding one address.
    fn pick_backend(&self, selector: &Selector, avoid: Option<&str>) -> Result<Backend, Status> {
        let backends = self.inner.backends.borrow();
        let n = self.inner.cursor.fetch_add(1, Ordering::Relaxed);
        let now = now_millis();
        let picked = match selector {
            Selector::Default => pick(&backends, n, avoid, now, |b| b.instance.lane().is_none())
                .or_else(|| pick(&backends, n, avoid, now, |_| true)),
            Selector::Lane(wanted) => {
                pick(&backends, n, avoid, now, |b| b.instance.matches(wanted))
                    .or_else(|| pick(&backends, n, avoid, now, |b| b.instance.lane().is_none()))
            }
        };
        picked.cloned().ok_or_else(|| {
            let other = if avoid.is_some() { "other " } else { "" };
            Status::unavailable(format!(
                "no {other}instance of {} is available",
                self.inner.service
            ))
        })
    }
}

/// Failures that count against a breaker: the downstream is unavailable,
/// too slow or overloaded, or the connection failed. Answers such as
/// NOT_FOUND or INVALID_ARGUMENT are business as usual, and so is a
/// healthy server shedding what it cannot take at once
/// ([`governance::is_shed`](crate::governance::is_shed)).
fn counts_against_breaker(status: &Status) -> bool {
    (matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
    ) && !crate::governance::is_shed(status))
        || is_connection_failure(status)
}

/// Whether a CANCELLED status is tonic's own client-side timeout.
fn is_timeout(status: &Status) -> bool {
    use std::error::Error as _;
    let mut source = status.source();
    while let Some(err) = source {
        if err.to_string().contains("Timeout expired") {
            return true;
        }
        source = err.source();
    }
    status.message().contains("Timeout expired")
}

/// Whether an idempotent call that failed with `status` is worth repeating
/// elsewhere: the instance was unreachable, overloaded, too slow for its
/// attempt's deadline, refused the stream, or the connection broke
/// mid-call. Other answers from a live server are final.
fn is_retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => true,
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

/// Weighted pick among `eligible` backends with weight > 0 that are in
/// rotation (or, when none is, among all of them), leaving out `avoid`: plain round robin
/// when weights are equal, otherwise the `n`-th point of a low-discrepancy
/// sequence over the cumulative weights.
fn pick<'a>(
    backends: &'a [Backend],
    n: u64,
    avoid: Option<&str>,
    now: u64,
    eligible: impl Fn(&Backend) -> bool,
) -> Option<&'a Backend> {
    let candidates: Vec<&Backend> = backends
        .iter()
        .filter(|b| {
            b.instance.weight > 0.0 && Some(b.instance.addr.as_str()) != avoid && eligible(b)
        })
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
    settings: &ChannelSettings,
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
            match channel(&instance.addr, settings, service) {
                Ok(channel) => Some(Backend {
                    instance: instance.clone(),
                    channel,
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

/// A lazily connected channel to the instance at `addr` of `service`:
/// with TLS, its certificate must be valid for `service`.
fn channel(addr: &str, settings: &ChannelSettings, service: &str) -> anyhow::Result<Channel> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{discovery::StaticDiscovery, governance::GovernanceConfig};

    fn governance() -> Governance {
        Governance::new(&GovernanceConfig::defaults())
    }

    fn backends(weights: &[f64]) -> Vec<Backend> {
        weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Backend {
                instance: Instance {
                    weight,
                    ..Instance::new(format!("127.0.0.1:{}", 1000 + i))
                },
                channel: channel(
                    &format!("127.0.0.1:{}", 1000 + i),
                    &ChannelSettings::default(),
                    "svc",
                )
                .expect("a channel"),
                ejected_until: Arc::default(),
            })
            .collect()
    }

    fn share_of(set: &[Backend], picks: u64, avoid: Option<&str>) -> Vec<u64> {
        let mut counts = vec![0; set.len()];
        for n in 0..picks {
            let picked = pick(set, n, avoid, now_millis(), |_| true).expect("a backend");
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
        assert!(pick(&single, 0, Some(&only), now_millis(), |_| true).is_none());
    }

    #[tokio::test]
    async fn no_instances_is_unavailable_not_a_panic() {
        assert!(pick(&backends(&[]), 7, None, 0, |_| true).is_none());
        assert!(pick(&backends(&[0.0]), 7, None, 0, |_| true).is_none());
        let discovery = Discovery::new(StaticDiscovery::new([("svc", Vec::new())]));
        let upstream =
            Upstream::connect(&discovery, "svc", ChannelSettings::default(), governance())
                .await
                .expect("subscribe");
        let err = upstream
            .call("Check", (), |_, _| async { Ok(tonic::Response::new(())) })
            .await
            .expect_err("no instance");
        assert_eq!(err.code(), tonic::Code::Unavailable);
        assert_eq!(err.message(), "no instance of svc is available");
    }

    #[tokio::test]
    async fn unknown_services_are_an_error() {
        let discovery = Discovery::new(StaticDiscovery::new([("svc", vec!["a:1".to_owned()])]));
        let err = Upstream::connect(
            &discovery,
            "other",
            ChannelSettings::default(),
            governance(),
        )
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
        let upstream =
            Upstream::connect(&discovery, "svc", ChannelSettings::default(), governance())
                .await
                .expect("subscribe");
        let tried = std::sync::Mutex::new(Vec::new());
        let result = upstream
            .call(
                "Check",
                tonic_health::pb::HealthCheckRequest::default(),
                |channel, request| {
                    tried.lock().expect("lock").push(());
                    async move {
                        tonic_health::pb::health_client::HealthClient::new(channel)
                            .check(request)
                            .await
                    }
                },
            )
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
        assert!(is_retryable(&Status::resource_exhausted("busy")));
        assert!(is_retryable(&Status::deadline_exceeded("slow")));
        assert!(!is_retryable(&Status::internal("internal error")));
        assert!(!is_retryable(&Status::cancelled("deadline")));
        assert!(counts_against_breaker(&Status::unavailable("down")));
        assert!(!counts_against_breaker(&Status::not_found("no such note")));
        assert!(counts_against_breaker(&Status::resource_exhausted("quota")));
        assert!(
            !counts_against_breaker(&crate::governance::shed_status("at its limit".into())),
            "a server shedding load is healthy"
        );
        assert!(!is_connection_failure(&Status::unavailable(
            "from the server"
        )));
    }
}
