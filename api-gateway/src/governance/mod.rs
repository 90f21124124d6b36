//! Governance at the HTTP edge, from the `gateway` and `routing` rules, as
//! layers of the request path (their order is in `lib.rs`, `layered`):
//!
//! 1. [`shed`]: beyond `max_in_flight` requests at once, 503 (code 10001)
//!    with `Retry-After`, at once;
//! 2. [`limit`] (`rate_limit`): keyed token buckets (GCRA, `governor`) per client IP (an
//!    IPv6 client's /64; client_addr.rs), user (the caller the
//!    authentication layer found) or globally, in this process or, for a
//!    rule with `scope: cluster`, shared by every replica in Redis
//!    (`quota`); over the limit, 429 (code 10006) with an integer
//!    `Retry-After`; then the request's lane (`lanes`: a header value, or a
//!    stable share of users), carried across hops;
//! 3. the route's deadline ([`route_deadline`]), which the one deadline
//!    layer (http/) applies: what is left of it travels downstream as
//!    each call's `grpc-timeout`.
//!
//! Health routes are exempt from all of it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Instant,
};

use arc_swap::ArcSwap;
use axum::{
    extract::{MatchedPath, Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use easynote_shared::governance::{
    Governance, RuleRef,
    adaptive::{AdaptiveLimit, Outcome},
    per_key::PerKey,
    rules::AdaptivePolicy,
};
use opentelemetry::KeyValue;

use self::rate_limit::Limiters;
use crate::{
    error::{ApiError, Refusal},
    quota::ClusterQuota,
};

pub use self::rate_limit::limit;

mod lanes;
mod rate_limit;

/// The gateway's governance state: the in-flight count, the rate limiters
/// of the rules in force, and the shared buckets of cluster-wide rules
/// (`quota`), when Redis is configured.
#[derive(Debug)]
pub struct EdgeGovernance {
    governance: Governance,
    in_flight: AtomicU32,
    limiters: ArcSwap<Limiters>,
    cluster: Option<ClusterQuota>,
    /// Adaptive limits per route, once `gateway.adaptive` asks for them.
    adaptive: PerKey<String, AdaptiveLimit>,
}

impl EdgeGovernance {
    /// Edge governance under `governance`'s rules; rules with `scope:
    /// cluster` share their buckets through `cluster`, when given.
    pub fn new(governance: Governance, cluster: Option<ClusterQuota>) -> Self {
        let limiters = Limiters::initial(&governance);
        Self {
            governance,
            in_flight: AtomicU32::new(0),
            limiters: ArcSwap::from_pointee(limiters),
            cluster,
            adaptive: PerKey::default(),
        }
    }

    /// The rules this gateway follows.
    pub fn governance(&self) -> &Governance {
        &self.governance
    }
}

/// Releases an in-flight slot when the request is done.
struct Slot<'a>(&'a AtomicU32);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Routes no rule applies to: probes must never be shed or limited.
pub(crate) fn exempt(path: &str) -> bool {
    matches!(path, "/ping" | "/healthz" | "/readyz")
}

/// `METHOD /route` of `request` as the rules name it (the route's pattern,
/// `?` when no route matched).
pub(crate) fn route_of(request: &Request) -> String {
    match request.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", request.method(), path.as_str()),
        None => format!("{} ?", request.method()),
    }
}

/// Whether the rules apply to `request` (governance on, not a probe).
fn governed(edge: &EdgeGovernance, request: &Request) -> bool {
    edge.governance.enabled() && !exempt(request.uri().path())
}

/// The route's deadline under the rules in force, which the deadline layer
/// (http/) applies; `None` when governance is off or the route is a
/// probe.
pub(crate) fn route_deadline(
    edge: &EdgeGovernance,
    request: &Request,
) -> Option<std::time::Duration> {
    governed(edge, request).then(|| {
        edge.governance
            .active()
            .rules
            .route_timeout(&route_of(request))
    })
}

/// The shedding layer: beyond `gateway.max_in_flight` requests at once,
/// 503 at once.
pub async fn shed(
    State(edge): State<Arc<EdgeGovernance>>,
    request: Request,
    next: Next,
) -> Response {
    if !governed(&edge, &request) {
        return next.run(request).await;
    }
    let active = edge.governance.active();
    let limit = active.rules.gateway.max_in_flight;
    if edge
        .in_flight
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_err()
    {
        let route = route_of(&request);
        if active.rules.gateway.max_in_flight_mode.is_shadow() {
            edge.governance.shadowed("gateway.max_in_flight", &route);
            edge.in_flight.fetch_add(1, Ordering::AcqRel);
        } else {
            let rule = RuleRef::new("gateway.max_in_flight", &active);
            return refuse_overloaded(&edge, rule, &route);
        }
    }
    let _slot = Slot(&edge.in_flight);
    let Some(rule) = active.rules.gateway.adaptive.as_ref() else {
        drop(active);
        return next.run(request).await;
    };
    // Adaptive concurrency per route, under max_in_flight.
    let policy = AdaptivePolicy::of(rule);
    let route = route_of(&request);
    let limiter = edge.adaptive_limit(&route, &policy);
    let mut place = match limiter.enter(&policy, policy.shadow) {
        Ok(place) => place,
        Err(Some(place)) => {
            edge.governance.shadowed("gateway.adaptive", &route);
            place
        }
        Err(None) => {
            let rule = RuleRef::new("gateway.adaptive", &active);
            return refuse_overloaded(&edge, rule, &route);
        }
    };
    drop(active);
    let response = next.run(request).await;
    // A refusal tells the limit something only when it was for overload.
    place.set_outcome(match response.extensions().get::<Refusal>() {
        Some(Refusal::Overloaded) => Outcome::Dropped,
        Some(Refusal::RateLimited) => Outcome::Ignored,
        None => Outcome::Answered,
    });
    response
}

/// The 503 of a request over an in-flight limit of the gateway's, counted
/// and naming `rule`.
fn refuse_overloaded(edge: &EdgeGovernance, rule: RuleRef, route: &str) -> Response {
    edge.governance.metrics().shed.add(
        1,
        &[
            KeyValue::new("service", crate::SERVICE),
            KeyValue::new("method", route.to_owned()),
        ],
    );
    rule.record(route);
    ApiError::Overloaded.by_rule(rule).into_response()
}

impl EdgeGovernance {
    /// The adaptive limit of `route`, made on first use.
    fn adaptive_limit(&self, route: &str, policy: &AdaptivePolicy) -> Arc<AdaptiveLimit> {
        self.adaptive
            .get_or_insert_with(route, || AdaptiveLimit::new(policy, Instant::now()))
    }
}
