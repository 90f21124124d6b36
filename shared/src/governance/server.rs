//! Governance on the server side of every gRPC hop: in-flight limits
//! (all methods and per method) answered with `RESOURCE_EXHAUSTED` at
//! once, fault injection, and the [`CallContext`] of each call (the
//! caller's deadline, lane and retry mark) for the handler's own calls.

use std::{
    collections::BTreeMap,
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use opentelemetry::KeyValue;
use tonic::{
    Code, Status,
    body::Body,
    codegen::http::{Request, Response},
    server::NamedService,
};
use tower::Service;

use super::{
    Governance, RuleRef,
    adaptive::{AdaptiveLimit, Place},
    context::CallContext,
    per_key::PerKey,
    rules::AdaptivePolicy,
};

/// Wraps a tonic service with the rules `governance` holds for `service`
/// (the registry name, e.g. `easy-note-user`).
#[derive(Debug, Clone)]
pub struct Governed<S> {
    inner: S,
    state: Arc<ServerState>,
}

#[derive(Debug)]
struct ServerState {
    service: &'static str,
    metadata: BTreeMap<String, String>,
    governance: Governance,
    in_flight: Arc<AtomicU32>,
    per_method: PerKey<Box<str>, MethodGate>,
}

/// What a server keeps per method: its calls in flight, and its adaptive
/// limit once a rule asks for one.
#[derive(Debug, Default)]
struct MethodGate {
    in_flight: Arc<AtomicU32>,
    adaptive: std::sync::OnceLock<Arc<AdaptiveLimit>>,
    /// The adaptive limit last put in the metric.
    reported: AtomicU32,
}

/// The places a call holds while it runs; given back when dropped, the
/// adaptive limit's with the call's time.
struct Held {
    _all: Slot,
    _method: Slot,
    _adaptive: Option<Place>,
}

impl<S> Governed<S> {
    /// `inner` under `governance`, as `service`.
    pub fn new(
        inner: S,
        service: &'static str,
        metadata: BTreeMap<String, String>,
        governance: Governance,
    ) -> Self {
        Self {
            inner,
            state: Arc::new(ServerState {
                service,
                metadata,
                governance,
                in_flight: Arc::default(),
                per_method: PerKey::default(),
            }),
        }
    }
}

impl<S: NamedService> NamedService for Governed<S> {
    const NAME: &'static str = S::NAME;
}

/// Holds one in-flight slot until dropped.
struct Slot(Arc<AtomicU32>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Takes a slot under `limit`, or none when it is full.
fn take(counter: &AtomicU32, limit: Option<u32>) -> bool {
    let Some(limit) = limit else {
        counter.fetch_add(1, Ordering::AcqRel);
        return true;
    };
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

impl ServerState {
    fn method_gate(&self, method: &str) -> Arc<MethodGate> {
        self.per_method
            .get_or_insert_with(method, MethodGate::default)
    }

    /// Takes the places a call needs, or the status that refuses it.
    fn admit(&self, method: &str) -> Result<Held, Status> {
        let active = self.governance.active();
        let (all, this) = active.rules.server_limits(self.service, method);
        let rule = active.rules.servers.get(self.service);
        let shadow = rule.is_some_and(|rule| rule.mode.is_shadow());
        if !take(&self.in_flight, all) {
            let rule = RuleRef::new(format!("servers.{}.max_in_flight", self.service), &active);
            if !shadow {
                return Err(self.shed(method, &rule));
            }
            self.governance.shadowed(&rule.id, method);
            take(&self.in_flight, None);
        }
        let global_slot = Slot(self.in_flight.clone());
        let gate = self.method_gate(method);
        let counter = &gate.in_flight;
        if !take(counter, this) {
            let rule = RuleRef::new(
                format!("servers.{}.methods.{method}.max_in_flight", self.service),
                &active,
            );
            if !shadow {
                drop(global_slot);
                return Err(self.shed(method, &rule));
            }
            self.governance.shadowed(&rule.id, method);
            take(counter, None);
        }
        let method_slot = Slot(counter.clone());
        let adaptive = match rule.and_then(|r| r.adaptive.as_ref()) {
            None => None,
            Some(rule) => {
                let policy = AdaptivePolicy::of(rule);
                let now = Instant::now();
                let limiter = gate
                    .adaptive
                    .get_or_init(|| Arc::new(AdaptiveLimit::new(&policy, now)))
                    .clone();
                let limit = limiter.limit();
                if gate.reported.swap(limit, Ordering::Relaxed) != limit {
                    tracing::debug!(method, limit, "adaptive limit changed");
                    self.governance.metrics().adaptive_limit.record(
                        i64::from(limit),
                        &[
                            KeyValue::new("service", self.service),
                            KeyValue::new("method", method.to_owned()),
                        ],
                    );
                }
                match limiter.enter(&policy, policy.shadow || shadow) {
                    Ok(place) => Some(place),
                    Err(forced) => {
                        let rule =
                            RuleRef::new(format!("servers.{}.adaptive", self.service), &active);
                        match forced {
                            Some(place) => {
                                self.governance.shadowed(&rule.id, method);
                                Some(place)
                            }
                            None => return Err(self.shed(method, &rule)),
                        }
                    }
                }
            }
        };
        Ok(Held {
            _all: global_slot,
            _method: method_slot,
            _adaptive: adaptive,
        })
    }

    fn shed(&self, method: &str, rule: &RuleRef) -> Status {
        self.governance.metrics().shed.add(
            1,
            &[
                KeyValue::new("service", self.service),
                KeyValue::new("method", method.to_owned()),
            ],
        );
        rule.record(method);
        rule.on(super::shed_status(format!(
            "{} is at its in-flight limit for {method}",
            self.service
        )))
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> Service<Request<Body>> for Governed<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let state = self.state.clone();
        if !state.governance.enabled() {
            return Box::pin(self.inner.call(request));
        }
        let method: Box<str> = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .into();
        let context = CallContext::from_metadata(request.headers());
        tracing::debug!(
            method = &*method,
            deadline_ms = context.deadline.map(|d| d
                .saturating_duration_since(std::time::Instant::now())
                .as_millis() as u64),
            lane = context.lane.as_deref(),
            retried = context.retried,
            "call received"
        );
        // Swap in a ready clone: the one polled ready serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let slots = match state.admit(&method) {
                Ok(slots) => slots,
                Err(status) => return Ok(status.into_http()),
            };
            let fault = {
                let active = state.governance.active();
                active
                    .rules
                    .fault(state.service, &method, &state.metadata)
                    .map(|(i, fault)| {
                        (fault.clone(), RuleRef::new(format!("faults[{i}]"), &active))
                    })
            };
            if let Some((fault, rule)) = fault {
                let abort =
                    fault.abort_percent > 0.0 && fastrand::f64() * 100.0 < fault.abort_percent;
                if fault.mode.is_shadow() {
                    if abort || fault.delay_ms > 0 {
                        state.governance.shadowed(&rule.id, &method);
                    }
                } else {
                    if fault.delay_ms > 0 {
                        state.record_fault(&method, "delay");
                        tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
                    }
                    if abort {
                        state.record_fault(&method, "abort");
                        tracing::debug!(method = &*method, status = %fault.status, "fault injected");
                        let code =
                            crate::code::code_from_name(&fault.status).unwrap_or(Code::Unavailable);
                        rule.record(&method);
                        let status = Status::new(code, format!("fault injected on {method}"));
                        return Ok(rule.on(status).into_http());
                    }
                }
            }
            let response = context.scope(inner.call(request)).await;
            drop(slots);
            response
        })
    }
}

impl ServerState {
    fn record_fault(&self, method: &str, kind: &'static str) {
        self.governance.metrics().faults.add(
            1,
            &[
                KeyValue::new("service", self.service),
                KeyValue::new("method", method.to_owned()),
                KeyValue::new("kind", kind),
            ],
        );
    }
}

/// Wraps a tonic service (the health service) so that every answer names
/// the revision of the rules this process applies, in the response
/// metadata `x-easynote-rules-revision`: "did the rule take effect here?"
/// is one health check away (`grpcurl -v … grpc.health.v1.Health/Check`).
#[derive(Debug, Clone)]
pub struct Revisioned<S> {
    inner: S,
    governance: Governance,
}

impl<S> Revisioned<S> {
    /// `inner`, answering with `governance`'s revision.
    pub fn new(inner: S, governance: Governance) -> Self {
        Self { inner, governance }
    }
}

impl<S: NamedService> NamedService for Revisioned<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<Request<Body>> for Revisioned<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let governance = self.governance.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let mut response = answer.await?;
            if let Ok(value) = governance.active().version.parse() {
                response.headers_mut().insert(super::REVISION_HEADER, value);
            }
            Ok(response)
        })
    }
}
