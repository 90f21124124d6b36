//! A downstream service as its callers see it: the live instance set a
//! registry feeds, one lazily connected [`Channel`] per instance, and every
//! call made through [`Upstream::call`] under the governance rules: a
//! deadline per attempt (no more than what is left of the request's),
//! retries on another instance within a budget, an optional hedged
//! request, outlier detection per instance (a sick instance is ejected,
//! not the service), a circuit breaker per method for failures the
//! instances share, and instances picked by lane.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    sync::{
        Arc, RwLock,
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
        breaker::{Breaker, BreakerState, Permit},
        budget::RetryBudget,
        context::CallContext,
        outlier::{self, Admission, Availability, Change, InstanceHealth, Outcome},
        rules::{BreakerPolicy, ClientPolicy, OutlierPolicy, Rules},
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

#[derive(Debug, Clone)]
struct Backend {
    instance: Instance,
    channel: Channel,
    /// Outlier detection's view of it, kept across instance-set updates.
    health: Arc<InstanceHealth>,
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

    /// Calls `R` on an instance of this service, under its rules (see
    /// [`Upstream::call`]).
    pub async fn invoke<R: crate::rpc::Rpc>(
        &self,
        request: R::Request,
    ) -> Result<tonic::Response<R::Response>, Status> {
        self.call(R::METHOD, request, R::send).await
    }

    /// Calls `method` (its gRPC name, e.g. `QueryNote`) with `request`
    /// under the governance rules; call sites use [`Upstream::invoke`],
    /// which names the method once. `call` gets a channel to the picked
    /// instance and the request, with its deadline and metadata set; it is
    /// called once per attempt.
    ///
    /// Idempotent methods (reads, health) are retried on another instance
    /// when an attempt fails with UNAVAILABLE, RESOURCE_EXHAUSTED,
    /// DEADLINE_EXCEEDED or a broken connection, within the retry budget,
    /// and never when the call being served is itself a retry. Each
    /// attempt's outcome feeds the picked instance's outlier detection; the
    /// method's breaker sees the call's final outcome only, and not a
    /// failure that outlier detection pinned on an instance it ejected:
    /// one sick instance is taken out of rotation, the service stays in.
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
            let (backend, _) = self.pick_backend(&Selector::Default, None)?;
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
        let (permit, change) = state.breaker.acquire(&policy.breaker, Instant::now());
        self.transition(method, change);
        let Some(permit) = permit else {
            crate::governance::refused_event("clients.breaker", method);
            return Err(Status::unavailable(format!(
                "circuit breaker open for {}/{method}",
                self.inner.service
            )));
        };
        let mut verdict = BreakerVerdict {
            upstream: self,
            method,
            state: &state,
            policy: policy.breaker,
            permit: Some(permit),
        };
        let attempts = if context.retried {
            1
        } else {
            policy.max_attempts.max(1)
        };
        let mut avoid: Option<String> = None;
        let mut last: Option<(Status, Backend)> = None;
        for attempt in 0..attempts {
            let timeout = match context.deadline {
                Some(deadline) => deadline
                    .saturating_duration_since(Instant::now())
                    .min(policy.timeout),
                None => policy.timeout,
            };
            if timeout.is_zero() {
                break;
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
            let (backend, admission) = match self.pick_backend(&selector, avoid.as_deref()) {
                Ok(picked) => picked,
                Err(status) if last.is_none() => {
                    verdict.record(true);
                    return Err(status);
                }
                Err(_) => break,
            };
            let first = self.attempt(
                &call,
                backend.clone(),
                admission,
                &request,
                timeout,
                &context,
                attempt > 0,
                &policy,
            );
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
            match result {
                Ok(response) => {
                    verdict.record(false);
                    return Ok(response);
                }
                Err(status) if !is_retryable(&status) => {
                    verdict.record(self.is_service_failure(&status, &backend));
                    return Err(self.final_status(status, method));
                }
                Err(status) => {
                    tracing::debug!(
                        service = %self.inner.service,
                        method,
                        failed = %backend.instance.addr,
                        code = ?status.code(),
                        "attempt failed"
                    );
                    avoid = Some(backend.instance.addr.clone());
                    last = Some((status, backend));
                }
            }
        }
        match last {
            Some((status, backend)) => {
                verdict.record(self.is_service_failure(&status, &backend));
                Err(self.final_status(status, method))
            }
            None => {
                verdict.record(true);
                Err(Status::deadline_exceeded(format!(
                    "no time left for {}/{method}",
                    self.inner.service
                )))
            }
        }
    }

    /// A call's final error as its caller sees it: a connection that broke
    /// mid-call (an instance killed, a reset stream) is UNAVAILABLE, as a
    /// refused one is, never the UNKNOWN or INTERNAL the transport reports,
    /// which callers would answer as an unexpected failure (a 500).
    fn final_status(&self, status: Status, method: &str) -> Status {
        if is_connection_failure(&status) && status.code() != Code::Unavailable {
            tracing::debug!(service = %self.inner.service, method, error = %status, "the connection failed mid-call");
            return Status::unavailable(format!(
                "the connection to {} failed during {method}",
                self.inner.service
            ));
        }
        status
    }

    /// Whether a call's final failure on `backend` says the service, not
    /// one instance, is failing: it counts against the breaker unless
    /// outlier detection has ejected the instance it came from.
    fn is_service_failure(&self, status: &Status, backend: &Backend) -> bool {
        counts_against_breaker(status) && !backend.health.is_ejected(Instant::now())
    }

    /// One attempt on `backend`, bounded by `timeout` (also sent as
    /// `grpc-timeout`), with the lane and retry mark in its metadata; its
    /// outcome is recorded for the instance's outlier detection.
    #[allow(clippy::too_many_arguments)]
    fn attempt<'a, Req, Res, F, Fut>(
        &'a self,
        call: &'a F,
        backend: Backend,
        admission: Admission,
        request: &Req,
        timeout: Duration,
        context: &CallContext,
        retry: bool,
        policy: &ClientPolicy,
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
        let channel = self.traced(&backend);
        // A timeout shorter than the method's (the caller's deadline was
        // nearly spent) says nothing about the instance.
        let full_timeout = timeout >= policy.timeout;
        let outlier = policy.outlier;
        async move {
            let (result, timed_out) =
                match tokio::time::timeout(timeout, call(channel, request)).await {
                    Ok(Err(status)) if status.code() == Code::Cancelled && is_timeout(&status) => {
                        (Err(no_answer(timeout)), true)
                    }
                    Ok(result) => (result, false),
                    Err(_) => (Err(no_answer(timeout)), true),
                };
            let outcome = instance_outcome(&result, timed_out, full_timeout);
            // Counting the ejected instances locks each of them: only a
            // failure, which may eject, needs it.
            let may_eject = matches!(outcome, Outcome::Failed { .. }) && self.may_eject(&outlier);
            let change = admission.record(outcome, &outlier, may_eject, Instant::now());
            self.rotation_changed(&backend, change);
            result
        }
    }

    /// Whether the cap on ejected instances allows one more ejection now.
    fn may_eject(&self, policy: &OutlierPolicy) -> bool {
        let backends = self.inner.backends.borrow();
        let now = Instant::now();
        let ejected = backends.iter().filter(|b| b.health.is_ejected(now)).count();
        outlier::may_eject(policy, ejected, backends.len())
    }

    /// Logs and counts an instance leaving or rejoining the rotation.
    fn rotation_changed(&self, backend: &Backend, change: Option<Change>) {
        let service = &self.inner.service;
        let instance = backend.instance.addr.as_str();
        match change {
            None => {}
            Some(Change::Ejected {
                duration,
                consecutive,
            }) => {
                self.inner.governance.metrics().ejections.add(
                    1,
                    &[
                        KeyValue::new("service", service.clone()),
                        KeyValue::new("instance", instance.to_owned()),
                    ],
                );
                tracing::warn!(
                    %service,
                    instance,
                    consecutive,
                    ejected_ms = duration.as_millis() as u64,
                    "instance ejected: out of rotation after failing"
                );
            }
            Some(Change::Restored) => {
                tracing::info!(%service, instance, "instance answered: back in rotation");
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
        let (second_backend, admission) =
            match self.pick_backend(&selector, Some(&backend.instance.addr)) {
                Ok(picked) => picked,
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
        let second = self.attempt(
            call,
            second_backend,
            admission,
            request,
            left,
            context,
            true,
            policy,
        );
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

    /// A backend for `selector`, optionally avoiding one address, and the
    /// admission of the call to it (an instance on probation takes one
    /// call at a time).
    fn pick_backend(
        &self,
        selector: &Selector,
        avoid: Option<&str>,
    ) -> Result<(Backend, Admission), Status> {
        let backends = self.inner.backends.borrow();
        let now = Instant::now();
        let mut skip: Vec<&str> = avoid.into_iter().collect();
        // Each round either admits a call or skips one more instance whose
        // trial another call took in the meantime.
        for _ in 0..=backends.len() {
            let n = self.inner.cursor.fetch_add(1, Ordering::Relaxed);
            let pick =
                |eligible: &dyn Fn(&Backend) -> bool| pick(&backends, n, &skip, now, eligible);
            let picked = match selector {
                Selector::Default => {
                    pick(&|b| b.instance.lane().is_none()).or_else(|| pick(&|_| true))
                }
                Selector::Lane(wanted) => pick(&|b| b.instance.matches(wanted))
                    .or_else(|| pick(&|b| b.instance.lane().is_none())),
            };
            let Some((backend, forced)) = picked else {
                break;
            };
            if let Some(admission) = backend.health.admit(now, forced) {
                return Ok((backend.clone(), admission));
            }
            skip.push(backend.instance.addr.as_str());
        }
        let other = if avoid.is_some() { "other " } else { "" };
        Err(Status::unavailable(format!(
            "no {other}instance of {} is available",
            self.inner.service
        )))
    }
}

/// Settles a call's breaker permit: with the call's final outcome, or as a
/// failure when the call is dropped before it ends (its deadline passed), so
/// that a half-open breaker never waits for a probe that will not come back.
struct BreakerVerdict<'a> {
    upstream: &'a Upstream,
    method: &'static str,
    state: &'a MethodState,
    policy: BreakerPolicy,
    permit: Option<Permit>,
}

impl BreakerVerdict<'_> {
    fn record(&mut self, failed: bool) {
        if let Some(permit) = self.permit.take() {
            let change = self
                .state
                .breaker
                .record(permit, failed, &self.policy, Instant::now());
            self.upstream.transition(self.method, change);
        }
    }
}

impl Drop for BreakerVerdict<'_> {
    fn drop(&mut self) {
        self.record(true);
    }
}

/// The error of an attempt that got no answer in time.
fn no_answer(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!("no answer within {timeout:?}"))
}

/// What an attempt's result says about the instance that took it.
fn instance_outcome<Res>(
    result: &Result<Res, Status>,
    timed_out: bool,
    full_timeout: bool,
) -> Outcome {
    let Err(status) = result else {
        return Outcome::Answered;
    };
    if timed_out {
        return if full_timeout {
            Outcome::Failed { connection: false }
        } else {
            Outcome::Neutral
        };
    }
    if is_connection_failure(status) {
        return Outcome::Failed { connection: true };
    }
    match status.code() {
        Code::Unavailable => Outcome::Failed { connection: false },
        Code::ResourceExhausted | Code::DeadlineExceeded | Code::Cancelled => Outcome::Neutral,
        _ => Outcome::Answered,
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

/// Weighted pick among `eligible` backends with weight > 0 that outlier
/// detection lets take a call, leaving out `skip`; when none may, among all
/// of them (`true`: forced, there is nowhere better to go). Plain round
/// robin when weights are equal, otherwise the `n`-th point of a
/// low-discrepancy sequence over the cumulative weights.
fn pick<'a>(
    backends: &'a [Backend],
    n: u64,
    skip: &[&str],
    now: Instant,
    eligible: &dyn Fn(&Backend) -> bool,
) -> Option<(&'a Backend, bool)> {
    let candidates: Vec<&Backend> = backends
        .iter()
        .filter(|b| {
            b.instance.weight > 0.0 && !skip.contains(&b.instance.addr.as_str()) && eligible(b)
        })
        .collect();
    let usable: Vec<&Backend> = candidates
        .iter()
        .copied()
        .filter(|b| b.health.availability(now) != Availability::Out)
        .collect();
    let forced = usable.is_empty();
    let eligible = if forced { candidates } else { usable };
    weighted(&eligible, n).map(|backend| (backend, forced))
}

fn weighted<'a>(eligible: &[&'a Backend], n: u64) -> Option<&'a Backend> {
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
    for backend in eligible {
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
                    health: existing.health.clone(),
                });
            }
            match channel(&instance.addr, settings, service) {
                Ok(channel) => Some(Backend {
                    instance: instance.clone(),
                    channel,
                    health: Arc::default(),
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
                health: Arc::default(),
            })
            .collect()
    }

    /// Ejects `backend` as a refused connection would.
    fn eject(backend: &Backend) {
        let admission = backend
            .health
            .admit(Instant::now(), false)
            .expect("admitted");
        let change = admission.record(
            Outcome::Failed { connection: true },
            &ClientPolicy::default().outlier,
            true,
            Instant::now(),
        );
        assert!(matches!(change, Some(Change::Ejected { .. })), "{change:?}");
    }

    fn share_of(set: &[Backend], picks: u64, avoid: Option<&str>) -> Vec<u64> {
        let mut counts = vec![0; set.len()];
        for n in 0..picks {
            let skip: Vec<&str> = avoid.into_iter().collect();
            let (picked, _) = pick(set, n, &skip, Instant::now(), &|_| true).expect("a backend");
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
        eject(&set[1]);
        assert_eq!(share_of(&set, 100, None), vec![50, 0, 50]);
        eject(&set[0]);
        eject(&set[2]);
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
        assert!(pick(&single, 0, &[&only], Instant::now(), &|_| true).is_none());
    }

    #[tokio::test]
    async fn no_instances_is_unavailable_not_a_panic() {
        assert!(pick(&backends(&[]), 7, &[], Instant::now(), &|_| true).is_none());
        assert!(pick(&backends(&[0.0]), 7, &[], Instant::now(), &|_| true).is_none());
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
        let ejected = backends
            .iter()
            .filter(|b| b.health.is_ejected(Instant::now()))
            .count();
        assert_eq!(
            ejected, 1,
            "the first refused instance is out of rotation; the second stays, as at most half may be out"
        );
    }

    /// A gRPC health server on port 0 answering SERVING.
    async fn serving() -> String {
        let (_, service) = tonic_health::server::health_reporter();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    /// An address that takes connections and never answers on them, as a
    /// process frozen by SIGSTOP does (its kernel still accepts).
    async fn hung() -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        addr
    }

    async fn check(upstream: &Upstream) -> Result<(), Status> {
        upstream
            .call(
                "Check",
                tonic_health::pb::HealthCheckRequest::default(),
                |channel, request| async move {
                    tonic_health::pb::health_client::HealthClient::new(channel)
                        .check(request)
                        .await
                },
            )
            .await
            .map(drop)
    }

    #[tokio::test]
    async fn a_hung_instance_is_ejected_and_the_service_stays_in() {
        let (hung, healthy) = (hung().await, serving().await);
        let governance = governance();
        governance
            .apply(
                "test",
                r#"{"clients": {"svc": {"*": {"timeout_ms": 200,
                    "breaker": {"min_requests": 2, "error_rate": 0.1},
                    "outlier": {"base_ejection_ms": 60000, "max_ejection_ms": 60000}}}}}"#,
            )
            .expect("valid rules");
        let discovery = Discovery::new(StaticDiscovery::new([(
            "svc",
            vec![hung.clone(), healthy.clone()],
        )]));
        let upstream = Upstream::connect(&discovery, "svc", ChannelSettings::default(), governance)
            .await
            .expect("subscribe");
        for i in 0..30 {
            check(&upstream)
                .await
                .unwrap_or_else(|status| panic!("call {i}: {status:?}"));
        }
        let backends = upstream.inner.backends.borrow().clone();
        let state = |addr: &str| {
            backends
                .iter()
                .find(|b| b.instance.addr == addr)
                .expect("known")
                .health
                .availability(Instant::now())
        };
        assert_eq!(state(&hung), Availability::Out, "the hung one is ejected");
        assert_eq!(state(&healthy), Availability::InRotation);
        assert_eq!(
            upstream.breaker_state("Check"),
            BreakerState::Closed,
            "timeouts absorbed by a retry elsewhere are not the service failing"
        );
    }

    #[tokio::test]
    async fn an_ejected_instance_that_answers_again_comes_back_after_its_trial() {
        let healthy = serving().await;
        let (refusing, addr) = {
            let socket = tokio::net::TcpSocket::new_v4().expect("socket");
            socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
            let addr = socket.local_addr().expect("addr");
            (socket, addr)
        };
        let governance = governance();
        governance
            .apply(
                "test",
                r#"{"clients": {"svc": {"*": {"outlier": {"base_ejection_ms": 100}}}}}"#,
            )
            .expect("valid rules");
        let discovery = Discovery::new(StaticDiscovery::new([(
            "svc",
            vec![addr.to_string(), healthy],
        )]));
        let upstream = Upstream::connect(&discovery, "svc", ChannelSettings::default(), governance)
            .await
            .expect("subscribe");
        for _ in 0..4 {
            check(&upstream).await.expect("served by the other one");
        }
        let backend = upstream
            .inner
            .backends
            .borrow()
            .iter()
            .find(|b| b.instance.addr == addr.to_string())
            .cloned()
            .expect("known");
        assert!(backend.health.is_ejected(Instant::now()));
        // The instance starts answering where it refused.
        let listener = refusing.listen(16).expect("listen");
        let (_, service) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        for _ in 0..10 {
            check(&upstream).await.expect("served");
        }
        assert_eq!(
            backend.health.availability(Instant::now()),
            Availability::InRotation,
            "its trial answered"
        );
    }

    #[tokio::test]
    async fn a_connection_broken_mid_call_is_unavailable_not_an_unexpected_failure() {
        let discovery = Discovery::new(StaticDiscovery::new([("svc", vec!["a:1".to_owned()])]));
        let upstream =
            Upstream::connect(&discovery, "svc", ChannelSettings::default(), governance())
                .await
                .expect("subscribe");
        let broken = Status::from_error(Box::new(std::io::Error::other("connection reset")));
        assert_eq!(broken.code(), Code::Unknown);
        assert!(is_connection_failure(&broken));
        let seen = upstream.final_status(broken, "CreateNote");
        assert_eq!(seen.code(), Code::Unavailable, "{seen:?}");
        let answered = upstream.final_status(Status::internal("internal error"), "CreateNote");
        assert_eq!(
            answered.code(),
            Code::Internal,
            "a server's own answer stays"
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
