//! The rate-limit layer: keyed token buckets per rule, in this process or,
//! for a rule with `scope: cluster`, shared by every gateway replica in
//! Redis (`quota`, with each replica's share of the budget while Redis
//! does not answer); then the request's lane, carried downstream.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
};
use easynote_shared::governance::{
    Governance, RuleRef,
    context::CallContext,
    rules::{self, LimitKey, MIN_PER_SECOND, RateLimit, Rules, Scope, route_matches},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use opentelemetry::KeyValue;

use super::{EdgeGovernance, governed, lanes::lane_of, route_of};
use crate::{
    auth::Caller,
    client_addr::{ClientAddr, limit_key},
    error::ApiError,
    quota,
};

type Limiter = DefaultKeyedRateLimiter<String>;

/// The limiters built for one rules version.
pub(super) struct Limiters {
    version: String,
    rules: Vec<Bucket>,
}

/// One rate limit rule's buckets in this process.
#[derive(Clone)]
struct Bucket {
    rule: RateLimit,
    /// Its buckets (per key), the rule's whole budget.
    limiter: Arc<Limiter>,
    /// Names its shared buckets in Redis (`scope: cluster`): the rule's
    /// content, so that a document that keeps the rule keeps its buckets.
    fingerprint: Arc<str>,
    /// Its share of the budget for when Redis does not answer: for this
    /// many replicas, these buckets.
    share: Arc<std::sync::Mutex<Option<Share>>>,
}

/// A rule's share of its budget: for this many replicas, these buckets.
type Share = (u32, Arc<Limiter>);

impl Bucket {
    fn new(rule: &RateLimit, quota: Quota) -> Self {
        let fingerprint = rules::version_of(&format!(
            "{}|{}|{}|{}",
            rule.route, rule.key, rule.per_second, rule.burst
        ));
        Self {
            rule: rule.clone(),
            limiter: Arc::new(RateLimiter::keyed(quota)),
            fingerprint: fingerprint.into(),
            share: Arc::default(),
        }
    }

    /// The buckets holding 1/`replicas` of the budget (rate and burst, at
    /// least one request), built when the replica count changes.
    fn share(&self, replicas: u32) -> Arc<Limiter> {
        let mut share = self
            .share
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((n, limiter)) = &*share
            && *n == replicas
        {
            return limiter.clone();
        }
        let mut part = self.rule.clone();
        part.per_second = (part.per_second / f64::from(replicas)).max(MIN_PER_SECOND);
        part.burst = part.burst.div_ceil(replicas).max(1);
        let limiter = match quota(&part) {
            Some(quota) => Arc::new(RateLimiter::keyed(quota)),
            None => self.limiter.clone(),
        };
        *share = Some((replicas, limiter.clone()));
        limiter
    }
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
    /// The limiters of the rules `governance` starts with (none if those
    /// cannot be built, with the refusal counted).
    pub(super) fn initial(governance: &Governance) -> Self {
        let active = governance.active();
        Self::build(&active.version, &active.rules).unwrap_or_else(|key| {
            refuse(governance, &active.version, &key);
            Self {
                version: active.version.clone(),
                rules: Vec::new(),
            }
        })
    }

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
                    .map(|quota| Bucket::new(rule, quota))
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
    /// Forgets buckets that are full again (idle keys), so that the key
    /// space stays bounded by recent clients.
    pub fn prune(&self) {
        for bucket in &self.limiters.load().rules {
            bucket.limiter.retain_recent();
            bucket.limiter.shrink_to_fit();
            if let Some((_, share)) = &*bucket
                .share
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
            {
                share.retain_recent();
            }
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

/// The rate-limit layer: the first rule whose route matches, keyed by the
/// caller the authentication layer left in the request (a rule in shadow
/// mode counts what it would refuse, and the next matching rule applies);
/// then the request's lane, carried downstream with the deadline.
pub async fn limit(
    State(edge): State<Arc<EdgeGovernance>>,
    request: Request,
    next: Next,
) -> Response {
    if !governed(&edge, &request) {
        return next.run(request).await;
    }
    let active = arc_swap::Guard::into_inner(edge.governance.active());
    let route = route_of(&request);
    let user = request.extensions().get::<Caller>().and_then(Caller::user);
    let limiters = edge.limiters(&active.version, &active.rules);
    for (index, bucket) in limiters
        .rules
        .iter()
        .enumerate()
        .filter(|(_, bucket)| route_matches(&bucket.rule.route, &route))
    {
        let rule = &bucket.rule;
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
        let checked = edge.check(bucket, key, &route).await;
        if rule.mode.is_shadow() {
            if checked.is_err() {
                edge.governance
                    .shadowed(&format!("gateway.rate_limits[{index}]"), &route);
            }
            continue;
        }
        if let Err(wait) = checked {
            edge.governance.metrics().limited.add(
                1,
                &[
                    KeyValue::new("route", rule.route.clone()),
                    KeyValue::new("key", rule.key.as_str()),
                ],
            );
            let by = RuleRef::new(format!("gateway.rate_limits[{index}]"), &active);
            by.record(&route);
            let retry_after = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            return ApiError::RateLimited {
                retry_after: retry_after.max(1),
            }
            .by_rule(by)
            .into_response();
        }
        break; // the first rule that enforces decides
    }
    let lane = lane_of(&active.rules, request.headers(), user, |rule| {
        edge.governance.shadowed(rule, &route);
    });
    drop(active);
    let context = CallContext {
        lane,
        ..CallContext::current()
    };
    context.scope(next.run(request)).await
}

impl EdgeGovernance {
    /// Takes a token for `key` from `bucket`'s rule: from the shared bucket
    /// in Redis for a rule with `scope: cluster` (when Redis is configured;
    /// its share of the budget in this process when Redis does not
    /// answer), else from this process's bucket. `Err` holds the wait.
    async fn check(&self, bucket: &Bucket, key: String, route: &str) -> Result<(), Duration> {
        // The limiter's own clock: `DefaultClock::default()` would build a
        // new one per refusal, which asks the CPU for its features (a trap
        // to the hypervisor in a VM: 13% of the CPU under a flood of 429s).
        let local = |limiter: &Limiter| {
            limiter
                .check_key(&key)
                .map_err(|not_until| not_until.wait_time_from(limiter.clock().now()))
        };
        let rule = &bucket.rule;
        let (Scope::Cluster, Some(cluster)) = (rule.scope, &self.cluster) else {
            return local(&bucket.limiter);
        };
        let period = rule.period().unwrap_or(Duration::from_secs(1));
        let shared = format!("{}:{key}", bucket.fingerprint);
        match cluster.check(&shared, period, rule.burst).await {
            quota::Verdict::Allowed => Ok(()),
            quota::Verdict::Limited(wait) => Err(wait),
            quota::Verdict::Unknown => {
                self.governance
                    .metrics()
                    .quota_fallback
                    .add(1, &[KeyValue::new("route", rule.route.clone())]);
                tracing::debug!(route, "cluster quota decided in this process");
                local(&bucket.share(cluster.replicas()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use easynote_shared::governance::rules::Mode;

    use super::*;

    #[test]
    fn quotas_follow_the_rule() {
        let limiter: Limiter = RateLimiter::keyed(
            quota(&RateLimit {
                route: "*".into(),
                key: LimitKey::Ip,
                per_second: 1.0,
                burst: 3,
                mode: Mode::Enforce,
                scope: Scope::Process,
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
                mode: Mode::Enforce,
                scope: Scope::Process,
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
            mode: Mode::Enforce,
            scope: Scope::Process,
        };
        assert!(quota(&too_slow).is_none(), "584 years and more: refused");
    }

    #[test]
    fn rules_whose_limits_cannot_be_built_keep_the_last_good_limits() {
        let governance =
            Governance::new(&easynote_shared::governance::GovernanceConfig::defaults());
        let edge = EdgeGovernance::new(governance, None);
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
                .all(|(a, b)| Arc::ptr_eq(&a.limiter, &b.limiter)),
            "the same limiters, buckets and all"
        );
    }
}
