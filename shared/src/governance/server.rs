//! Governance on the server side of every gRPC hop: in-flight limits
//! (all methods and per method) answered with `RESOURCE_EXHAUSTED` at
//! once, fault injection, and the [`CallContext`] of each call (the
//! caller's deadline, lane and retry mark) for the handler's own calls.

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    pin::Pin,
    sync::{
        Arc, RwLock,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use opentelemetry::KeyValue;
use tonic::{
    Code, Status,
    body::Body,
    codegen::http::{Request, Response},
    server::NamedService,
};
use tower::Service;

use super::{Governance, context::CallContext};

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
    per_method: RwLock<HashMap<Box<str>, Arc<AtomicU32>>>,
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
                per_method: RwLock::default(),
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
    fn method_counter(&self, method: &str) -> Arc<AtomicU32> {
        if let Some(counter) = self
            .per_method
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(method)
        {
            return counter.clone();
        }
        self.per_method
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(method.into())
            .or_default()
            .clone()
    }

    /// Takes the slots a call needs, or the status that refuses it.
    fn admit(&self, method: &str) -> Result<(Slot, Slot), Status> {
        let active = self.governance.active();
        let (all, this) = active.rules.server_limits(self.service, method);
        if !take(&self.in_flight, all) {
            return Err(self.shed(method, "server.max_in_flight"));
        }
        let global_slot = Slot(self.in_flight.clone());
        let counter = self.method_counter(method);
        if !take(&counter, this) {
            drop(global_slot);
            return Err(self.shed(method, "server.methods.max_in_flight"));
        }
        Ok((global_slot, Slot(counter)))
    }

    fn shed(&self, method: &str, rule: &'static str) -> Status {
        self.governance.metrics().shed.add(
            1,
            &[
                KeyValue::new("service", self.service),
                KeyValue::new("method", method.to_owned()),
            ],
        );
        super::refused_event(rule, method);
        super::shed_status(format!(
            "{} is at its in-flight limit for {method}",
            self.service
        ))
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
            let fault = state
                .governance
                .active()
                .rules
                .fault(state.service, &method, &state.metadata)
                .cloned();
            if let Some(fault) = fault {
                if fault.delay_ms > 0 {
                    state.record_fault(&method, "delay");
                    tokio::time::sleep(Duration::from_millis(fault.delay_ms)).await;
                }
                if fault.abort_percent > 0.0 && fastrand::f64() * 100.0 < fault.abort_percent {
                    state.record_fault(&method, "abort");
                    tracing::debug!(method = &*method, status = %fault.status, "fault injected");
                    let code =
                        crate::code::code_from_name(&fault.status).unwrap_or(Code::Unavailable);
                    super::refused_event("faults", &method);
                    return Ok(Status::new(code, format!("fault injected on {method}")).into_http());
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
