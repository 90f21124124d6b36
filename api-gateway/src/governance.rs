//! Governance at the HTTP edge, from the `gateway` and `routing` rules:
//!
//! 1. load shedding: beyond `max_in_flight` requests at once, 503 (code
//!    10001) with `Retry-After`, at once;
//! 2. rate limits: keyed token buckets (GCRA, `governor`) per client IP,
//!    user or globally; over the limit, 429 (code 10006) with an integer
//!    `Retry-After`;
//! 3. the route's deadline, for the whole request: what is left of it
//!    travels downstream as each call's `grpc-timeout`; past it, 503 (408
//!    when the request's body has not arrived yet);
//! 4. the request's lane (a header value, or a stable share of users),
//!    carried across hops.
//!
//! Health routes are exempt from all of it.

use std::{
    net::{IpAddr, SocketAddr},
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
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

use crate::{auth::AuthUser, error::ApiError, state::AppState};

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
    rules: Vec<(RateLimit, Limiter)>,
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
    fn build(version: &str, rules: &Rules) -> Self {
        Self {
            version: version.to_owned(),
            rules: rules
                .gateway
                .rate_limits
                .iter()
                .map(|rule| (rule.clone(), RateLimiter::keyed(quota(rule))))
                .collect(),
        }
    }
}

fn quota(rule: &RateLimit) -> Quota {
    let period = Duration::from_secs_f64(1.0 / rule.per_second).max(Duration::from_nanos(1));
    let burst = NonZeroU32::new(rule.burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl EdgeGovernance {
    /// Edge governance under `governance`'s rules.
    pub fn new(governance: Governance) -> Self {
        let limiters = {
            let active = governance.active();
            Limiters::build(&active.version, &active.rules)
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

    fn limiters(&self, version: &str, rules: &Rules) -> Arc<Limiters> {
        let current = self.limiters.load_full();
        if current.version == version {
            return current;
        }
        let fresh = Arc::new(Limiters::build(version, rules));
        self.limiters.store(fresh.clone());
        fresh
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
fn exempt(path: &str) -> bool {
    matches!(path, "/ping" | "/healthz" | "/readyz")
}

/// The middleware; see the module documentation.
pub async fn govern(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let edge = state.edge.clone();
    if !edge.governance.enabled() || exempt(request.uri().path()) {
        return next.run(request).await;
    }
    let active = edge.governance.active();
    let route = match request.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", request.method(), path.as_str()),
        None => format!("{} ?", request.method()),
    };

    // 1. Shedding.
    let limit = active.rules.gateway.max_in_flight;
    if edge
        .in_flight
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_err()
    {
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

    // Who is asking: the client IP, and the user when the token is valid.
    let (mut parts, body) = request.into_parts();
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let client_ip = client_ip(
        peer,
        &parts.headers,
        active.rules.gateway.trusted_proxy_hops,
    );
    let user = crate::auth::find_token(&parts)
        .and_then(|token| state.jwt.verify(&token).ok())
        .map(|claims| AuthUser::of(&claims));
    if let Some(user) = user {
        parts.extensions.insert(user);
        tracing::Span::current().record("user.id", user.id);
    }
    let request = Request::from_parts(parts, body);

    // 2. Rate limits: the first rule whose route matches.
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
                client_ip.map_or_else(|| "ip?".to_owned(), |ip| ip.to_string())
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

    // 3. and 4. The deadline and the lane travel with the request.
    let timeout = active.rules.route_timeout(&route);
    let lane = lane_of(&active.rules, request.headers(), user);
    let received = request
        .extensions()
        .get::<crate::http::BodyReceived>()
        .cloned();
    drop(active);
    let context = CallContext {
        deadline: Instant::now().checked_add(timeout),
        lane,
        retried: false,
    };
    match context
        .scope(tokio::time::timeout(timeout, next.run(request)))
        .await
    {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(%route, ?timeout, "request deadline passed");
            crate::http::out_of_time(received.as_ref(), timeout).into_response()
        }
    }
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

/// The client's IP: the peer's, or with `hops` trusted proxies in front,
/// the address the outermost trusted proxy saw in `X-Forwarded-For`.
pub(crate) fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, hops: u32) -> Option<IpAddr> {
    if hops == 0 {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|ip| ip.trim().parse().ok())
        .collect();
    let hops = hops as usize;
    if forwarded.is_empty() {
        return peer;
    }
    let index = forwarded.len().saturating_sub(hops);
    forwarded.get(index).copied().or(peer)
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
    fn the_client_ip_comes_through_trusted_hops_only() {
        let peer: IpAddr = "10.0.0.9".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "1.1.1.1, 2.2.2.2, 3.3.3.3".parse().unwrap(),
        );
        assert_eq!(
            client_ip(Some(peer), &headers, 0),
            Some(peer),
            "spoofable: ignored"
        );
        assert_eq!(client_ip(Some(peer), &headers, 1), "3.3.3.3".parse().ok());
        assert_eq!(client_ip(Some(peer), &headers, 2), "2.2.2.2".parse().ok());
        assert_eq!(client_ip(Some(peer), &headers, 9), "1.1.1.1".parse().ok());
        assert_eq!(client_ip(Some(peer), &HeaderMap::new(), 1), Some(peer));
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
        let limiter: Limiter = RateLimiter::keyed(quota(&RateLimit {
            route: "*".into(),
            key: LimitKey::Ip,
            per_second: 1.0,
            burst: 3,
        }));
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
}
