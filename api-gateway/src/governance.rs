//! Governance at the HTTP edge, from the `gateway` and `routing` rules, as
//! layers of the request path (their order is in `lib.rs`, `layered`):
//!
//! 1. [`shed`]: beyond `max_in_flight` requests at once, 503 (code 10001)
//!    with `Retry-After`, at once;
//! 2. [`limit`]: keyed token buckets (GCRA, `governor`) per client IP (an
//!    IPv6 client's /64; client_addr.rs), user (the caller the
//!    authentication layer found) or globally; over the limit, 429 (code
//!    10006) with an integer `Retry-After`; then the request's lane (a
//!    header value, or a stable share of users), carried across hops;
//! 3. the route's deadline ([`route_deadline`]), which the one deadline
//!    layer (http/) applies: what is left of it travels downstream as
//!    each call's `grpc-timeout`.
//!
//! Health routes are exempt from all of it.

use std::{
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use arc_swap::ArcSwap;
use axum::{
    extract::{MatchedPath, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::{IntoResponse, Response},
};
use easynote_shared::governance::{
    Governance,
    context::CallContext,
    rules::{LimitKey, RateLimit, Rules},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use opentelemetry::KeyValue;

use crate::{
    auth::{AuthUser, Caller},
    client_addr::{ClientAddr, limit_key},
    error::ApiError,
};

type Limiter = DefaultKeyedRateLimiter<String>;

/// The gateway's governance state: the in-flight count and the rate
/// limiters of the rules in force.
#[derive(Debug)]
pub struct EdgeGovernance {
    governance: Governance,
    in_flight: AtomicU32,
    limiters: ArcSwap<Limiters>,
}

/// The limiters built for one rules version.
struct Limiters {
    version: String,
    rules: Vec<(RateLimit, Arc<Limiter>)>,
}

impl std::fmt::Debug for Limiters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiters")
            .field("version", &self.version)
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Limiters {
    /// The limiters of `rules`, or the rule that cannot be built. Rules
    /// that validated always build (validation bounds `per_second` and
    /// `burst` with the same check); this is the backstop.
    fn build(version: &str, rules: &Rules) -> Result<Self, String> {
        let built = rules
            .gateway
            .rate_limits
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                quota(rule)
                    .map(|quota| (rule.clone(), Arc::new(RateLimiter::keyed(quota))))
                    .ok_or_else(|| format!("gateway.rate_limits[{i}]"))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            version: version.to_owned(),
            rules: built,
        })
    }
}

/// The GCRA quota of `rule`: `None` when its period or depth is not a
/// duration the limiter can hold (it panics on those).
fn quota(rule: &RateLimit) -> Option<Quota> {
    let period = rule.period()?;
    let burst = NonZeroU32::new(rule.burst)?;
    Some(Quota::with_period(period)?.allow_burst(burst))
}

impl EdgeGovernance {
    /// Edge governance under `governance`'s rules.
    pub fn new(governance: Governance) -> Self {
        let limiters = {
            let active = governance.active();
            Limiters::build(&active.version, &active.rules).unwrap_or_else(|key| {
                refuse(&governance, &active.version, &key);
                Limiters {
                    version: active.version.clone(),
                    rules: Vec::new(),
                }
            })
        };
        Self {
            governance,
            in_flight: AtomicU32::new(0),
            limiters: ArcSwap::from_pointee(limiters),
        }
    }

    /// The rules this gateway follows.
    pub fn governance(&self) -> &Governance {
        &self.governance
    }

    /// Forgets buckets that are full again (idle keys), so that the key
    /// space stays bounded by recent clients.
    pub fn prune(&self) {
        for (_, limiter) in &self.limiters.load().rules {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// The limiters of the rules `version`, built on first use. Rules
    /// whose limiters cannot be built keep the last good limiters, with the
    /// same warning and refusal count as a document that does not validate.
    fn limiters(&self, version: &str, rules: &Rules) -> Arc<Limiters> {
        let current = self.limiters.load_full();
        if current.version == version {
            return current;
        }
        let fresh = match Limiters::build(version, rules) {
            Ok(built) => Arc::new(built),
            Err(key) => {
                refuse(&self.governance, version, &key);
                // The last good limiters, buckets and all, remembered under
                // the new version so that the refusal is made once.
                Arc::new(Limiters {
                    version: version.to_owned(),
                    rules: current.rules.clone(),
                })
            }
        };
        self.limiters.store(fresh.clone());
        fresh
    }
}

/// Counts and logs rate limits of `version` that cannot be built.
fn refuse(governance: &Governance, version: &str, key: &str) {
    governance.metrics().refused.add(1, &[]);
    tracing::warn!(%version, %key, "governance rate limit cannot be built; keeping the last good limits");
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
    let limit = edge.governance.active().rules.gateway.max_in_flight;
    if edge
        .in_flight
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_err()
    {
        let route = route_of(&request);
        edge.governance.metrics().shed.add(
            1,
            &[
                KeyValue::new("service", crate::SERVICE),
                KeyValue::new("method", route.clone()),
            ],
        );
        easynote_shared::governance::refused_event("gateway.max_in_flight", &route);
        return ApiError::Overloaded.into_response();
    }
    let _slot = Slot(&edge.in_flight);
    next.run(request).await
}

/// The rate-limit layer: the first rule whose route matches, keyed by the
/// caller the authentication layer left in the request; then the
/// request's lane, carried downstream with the deadline.
pub async fn limit(
    State(edge): State<Arc<EdgeGovernance>>,
    request: Request,
    next: Next,
) -> Response {
    if !governed(&edge, &request) {
        return next.run(request).await;
    }
    let active = edge.governance.active();
    let route = route_of(&request);
    let user = request.extensions().get::<Caller>().and_then(Caller::user);
    let limiters = edge.limiters(&active.version, &active.rules);
    if let Some((rule, limiter)) = limiters
        .rules
        .iter()
        .find(|(rule, _)| route_matches(&rule.route, &route))
    {
        let key = match (rule.key, user) {
            (LimitKey::Global, _) => String::new(),
            (LimitKey::User, Some(user)) => format!("u{}", user.id),
            (LimitKey::User | LimitKey::Ip, _) => {
                request.extensions().get::<ClientAddr>().map_or_else(
                    || "ip?".to_owned(),
                    |client| limit_key(client.0).to_string(),
                )
            }
        };
        if let Err(not_until) = limiter.check_key(&key) {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            edge.governance.metrics().limited.add(
                1,
                &[
                    KeyValue::new("route", rule.route.clone()),
                    KeyValue::new("key", rule.key.as_str()),
                ],
            );
            easynote_shared::governance::refused_event("gateway.rate_limits", &route);
            let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return ApiError::RateLimited {
                retry_after: retry_after.max(1),
            }
            .into_response();
        }
    }
    let lane = lane_of(&active.rules, request.headers(), user);
    drop(active);
    let context = CallContext {
        lane,
        ..CallContext::current()
    };
    context.scope(next.run(request)).await
}

/// `*` or an exact `METHOD /path` (the API table's `{param}` or `:param`
/// spelling).
fn route_matches(rule: &str, route: &str) -> bool {
    if rule == "*" || rule == route {
        return true;
    }
    let rule = rule.replace("/:", "/{");
    let wanted: Vec<&str> = rule.split('/').collect();
    let actual: Vec<&str> = route.split('/').collect();
    wanted.len() == actual.len()
        && wanted
            .iter()
            .zip(&actual)
            .all(|(w, a)| w == a || (w.starts_with('{') && a.starts_with('{')))
}

/// The first lane, across the `routing` rules, whose match holds.
fn lane_of(rules: &Rules, headers: &HeaderMap, user: Option<AuthUser>) -> Option<Arc<str>> {
    rules
        .routing
        .values()
        .flat_map(|routing| routing.lanes.iter())
        .find(|lane| {
            let m = &lane.matches;
            if let (Some(header), Some(equals)) = (&m.header, &m.equals) {
                return headers
                    .get(header.as_str())
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v == equals);
            }
            match (m.user_percent, user) {
                (Some(percent), Some(user)) => user_bucket(user.id) < percent * 100.0,
                _ => false,
            }
        })
        .map(|lane| Arc::from(lane.name.as_str()))
}

/// A user's stable place in 0..10000, the same on every gateway.
fn user_bucket(user_id: i64) -> f64 {
    let mixed = (user_id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    ((mixed >> 32) % 10_000) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_exactly_or_by_star() {
        assert!(route_matches("*", "GET /v1/note/query"));
        assert!(route_matches("POST /v1/user/login", "POST /v1/user/login"));
        assert!(!route_matches(
            "POST /v1/user/login",
            "POST /v1/user/register"
        ));
        assert!(route_matches(
            "GET /v1/note/{note_id}",
            "GET /v1/note/{note_id}"
        ));
        assert!(route_matches("GET /v1/note/:id", "GET /v1/note/{note_id}"));
        assert!(!route_matches("GET /v1/note/{id}", "GET /v1/note/query"));
        assert!(!route_matches("GET /v1/note", "GET /v1/note/{note_id}"));
    }

    #[test]
    fn user_percent_lanes_are_stable_and_proportional() {
        let inside = (1..=10_000).filter(|id| user_bucket(*id) < 1000.0).count();
        assert!((800..1200).contains(&inside), "10% of users: {inside}");
        assert_eq!(user_bucket(42), user_bucket(42));
        let rules = Rules::parse(
            r#"{"routing": {"easy-note-note": {"lanes": [
                {"name": "canary", "match": {"header": "x-lane", "equals": "canary"}, "instances": {"lane": "canary"}},
                {"name": "all-users", "match": {"user_percent": 100}, "instances": {"lane": "beta"}}]}}}"#,
        )
        .expect("valid");
        let mut headers = HeaderMap::new();
        assert_eq!(lane_of(&rules, &headers, None), None);
        assert_eq!(
            lane_of(
                &rules,
                &headers,
                Some(AuthUser {
                    id: 7,
                    token: crate::auth::TokenId {
                        jti: 1,
                        epoch: 0,
                        expires_at: 0,
                    },
                })
            )
            .as_deref(),
            Some("all-users")
        );
        headers.insert("x-lane", "canary".parse().unwrap());
        assert_eq!(lane_of(&rules, &headers, None).as_deref(), Some("canary"));
    }

    #[test]
    fn quotas_follow_the_rule() {
        let limiter: Limiter = RateLimiter::keyed(
            quota(&RateLimit {
                route: "*".into(),
                key: LimitKey::Ip,
                per_second: 1.0,
                burst: 3,
            })
            .expect("a quota"),
        );
        let key = "1.2.3.4".to_owned();
        for _ in 0..3 {
            assert!(limiter.check_key(&key).is_ok());
        }
        assert!(limiter.check_key(&key).is_err(), "the burst is spent");
        assert!(
            limiter.check_key(&"5.6.7.8".to_owned()).is_ok(),
            "other keys are not"
        );
    }

    #[test]
    fn limits_at_the_edges_of_validation_build_and_answer_without_a_panic() {
        use easynote_shared::governance::rules::{MAX_COUNT, MAX_PER_SECOND, MIN_PER_SECOND};
        for (per_second, burst) in [
            (MIN_PER_SECOND, MAX_COUNT),
            (MIN_PER_SECOND, 1),
            (MAX_PER_SECOND, MAX_COUNT),
            (MAX_PER_SECOND, 1),
        ] {
            let rule = RateLimit {
                route: "*".into(),
                key: LimitKey::Global,
                per_second,
                burst,
            };
            let limiter: Limiter = RateLimiter::keyed(quota(&rule).expect("builds"));
            let key = String::new();
            for _ in 0..3 {
                let _ = limiter.check_key(&key);
            }
        }
        let too_slow = RateLimit {
            route: "*".into(),
            key: LimitKey::Ip,
            per_second: 1e-11,
            burst: 1,
        };
        assert!(quota(&too_slow).is_none(), "584 years and more: refused");
    }

    #[test]
    fn rules_whose_limits_cannot_be_built_keep_the_last_good_limits() {
        let governance =
            Governance::new(&easynote_shared::governance::GovernanceConfig::defaults());
        let edge = EdgeGovernance::new(governance);
        let good = edge.limiters.load_full();
        assert_eq!(
            good.rules.len(),
            Rules::default().gateway.rate_limits.len(),
            "the default limits"
        );
        // Rules that skipped validation (they cannot come from a document).
        let mut rules = Rules::default();
        rules.gateway.rate_limits[0].per_second = 1e-11;
        let kept = edge.limiters("bad", &rules);
        assert_eq!(kept.version, "bad");
        assert!(
            kept.rules
                .iter()
                .zip(&good.rules)
                .all(|((_, a), (_, b))| Arc::ptr_eq(a, b)),
            "the same limiters, buckets and all"
        );
    }
}
