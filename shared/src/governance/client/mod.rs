//! A downstream service as its callers see it: the live instance set a
//! registry feeds, one lazily connected [`Channel`] per instance, and every
//! call made through [`Upstream::call`] under the governance rules: a
//! deadline per attempt (no more than what is left of the request's),
//! retries on another instance within a budget, an optional hedged
//! request, outlier detection per instance (a sick instance is ejected,
//! not the service), a circuit breaker per method for failures the
//! instances share, and instances picked by lane (`pick`); what a
//! result says about the instance and the service is `outcome`'s, and the
//! hedged second attempt is `hedge`'s.

use std::{
    fmt,
    sync::{Arc, atomic::AtomicU64},
    time::{Duration, Instant},
};

use tokio::sync::watch;
use tonic::{Code, Status};

use self::{
    outcome::{
        BreakerVerdict, counts_against_breaker, instance_outcome, is_connection_failure,
        is_retryable, is_timeout, no_answer,
    },
    pick::{Backend, Selector, build_backends},
};
use super::{
    Governance, RuleRef,
    breaker::{Breaker, BreakerState},
    budget::RetryBudget,
    context::CallContext,
    outlier::{self, Admission, Outcome},
    per_key::PerKey,
    rules::{ClientPolicy, OutlierPolicy},
};
use crate::{
    discovery::{ChannelSettings, Discovery, DiscoveryError},
    telemetry::{grpc::TracedChannel, metrics::RpcMetrics},
};

mod events;
mod hedge;
mod latency;
mod outcome;
mod pick;
#[cfg(test)]
mod tests;

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
    methods: PerKey<&'static str, MethodState>,
}

/// What governance keeps per called method.
#[derive(Debug, Default)]
struct MethodState {
    breaker: Breaker,
    budget: RetryBudget,
    latency: latency::RecentLatency,
}

impl MethodState {
    /// Whether another attempt (a retry or a hedge) is worth starting: not
    /// when what is left of the caller's deadline is shorter than the
    /// method's median answer time, as measured here. Such an attempt
    /// would most likely be cut off, and costs the callee work for nothing.
    fn time_for_another(&self, context: &CallContext) -> bool {
        match (context.deadline, self.latency.median()) {
            (Some(deadline), Some(typical)) => {
                deadline.saturating_duration_since(Instant::now()) >= typical
            }
            _ => true,
        }
    }
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
                methods: PerKey::default(),
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
        self.inner
            .methods
            .get_or_insert_with(&method, MethodState::default)
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

    /// [`Upstream::invoke`] for a request that is safe to repeat although
    /// its method is not idempotent: a create carrying an idempotency key,
    /// whose repeat replays the first result. A replica that dies
    /// mid-call then costs a retry on another instance, not a 503.
    pub async fn invoke_repeatable<R: crate::rpc::Rpc>(
        &self,
        request: R::Request,
    ) -> Result<tonic::Response<R::Response>, Status> {
        self.call_as(R::METHOD, request, R::send, Repeat::Safe)
            .await
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
        self.call_as(method, request, call, Repeat::AsMethod).await
    }

    /// [`Upstream::call`], with `repeat` saying whether this request may
    /// be repeated even if its method may not.
    async fn call_as<Req, Res, F, Fut>(
        &self,
        method: &'static str,
        request: Req,
        call: F,
        repeat: Repeat,
    ) -> Result<tonic::Response<Res>, Status>
    where
        Req: Clone,
        F: Fn(TracedChannel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        let context = CallContext::current();
        let governance = &self.inner.governance;
        if !governance.enabled() {
            let (backend, _) = self.pick_backend(&Selector::default(), None)?;
            let mut request = tonic::Request::new(request);
            request.set_timeout(ClientPolicy::default().timeout);
            return call(self.traced(&backend), request).await;
        }
        let active = governance.active();
        let policy = match repeat {
            Repeat::AsMethod => active.rules.client_policy(&self.inner.service, method),
            Repeat::Safe => active.rules.repeatable_policy(&self.inner.service, method),
        };
        let selector = self.selector(&active.rules, &context);
        let state = self.method_state(method);
        state.budget.deposit(Instant::now());
        let (permit, change) = state.breaker.acquire(&policy.breaker, Instant::now());
        self.transition(method, change);
        let rule_id = || format!("clients.{}.{method}.breaker", self.inner.service);
        let permit = match permit {
            Some(permit) => Some(permit),
            // In shadow, the call goes on without a permit: the breaker
            // sees what it would see while open, which is nothing.
            None if policy.breaker.shadow => {
                governance.shadowed(&rule_id(), method);
                None
            }
            None => {
                // The revision whose policy refused, not one published since.
                let rule = RuleRef::new(rule_id(), &active);
                rule.record(method);
                return Err(rule.on(Status::unavailable(format!(
                    "circuit breaker open for {}/{method}",
                    self.inner.service
                ))));
            }
        };
        drop(active);
        let mut verdict = BreakerVerdict {
            upstream: self,
            method,
            state: &state,
            policy: policy.breaker,
            permit,
            started: Instant::now(),
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
                if !state.time_for_another(&context) {
                    self.count(
                        &governance.metrics().retries_skipped,
                        method,
                        Some("deadline"),
                    );
                    break;
                }
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
            let started = Instant::now();
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
                    state.latency.record(started.elapsed());
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
}

/// Whether a call may be repeated: as its method says (reads and health
/// checks), or because this request is safe to repeat.
#[derive(Debug, Clone, Copy)]
enum Repeat {
    AsMethod,
    Safe,
}
