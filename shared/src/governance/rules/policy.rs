//! What one call resolves to: the policy of calls to a (service, method).

use std::time::Duration;

use super::ClientRule;

/// The resolved policy of calls to one (service, method).
#[derive(Debug, Clone, PartialEq)]
pub struct ClientPolicy {
    /// Deadline of one attempt.
    pub timeout: Duration,
    /// Attempts in all (1 = no retry).
    pub max_attempts: u32,
    /// Retries allowed as a fraction of calls.
    pub budget_ratio: f64,
    /// Retries allowed per second whatever the share.
    pub min_per_second: u32,
    /// A hedged second request after this delay, if any.
    pub backup_delay: Option<Duration>,
    /// The breaker's thresholds.
    pub breaker: BreakerPolicy,
    /// Outlier detection per instance.
    pub outlier: OutlierPolicy,
    /// Go on without the answer when the service is wanting.
    pub fallback: bool,
}

/// Adaptive concurrency, resolved (see [`adaptive`](super::adaptive)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaptivePolicy {
    /// Floor of the limit.
    pub min_limit: u32,
    /// Ceiling of the limit.
    pub max_limit: u32,
    /// Where the limit starts.
    pub initial_limit: u32,
    /// Latency, as a multiple of the no-load latency, tolerated before the
    /// limit shrinks.
    pub tolerance: f64,
    /// Computes and counts, sheds nothing.
    pub shadow: bool,
}

impl AdaptivePolicy {
    /// `rule` over the defaults.
    pub fn of(rule: &super::AdaptiveRule) -> Self {
        Self {
            min_limit: rule.min_limit.unwrap_or(2),
            max_limit: rule.max_limit.unwrap_or(1000),
            initial_limit: rule.initial_limit.unwrap_or(20),
            tolerance: rule.tolerance.unwrap_or(1.5),
            shadow: rule.mode.is_some_and(super::Mode::is_shadow),
        }
    }
}

/// Outlier detection per instance, resolved (see
/// [`outlier`](super::outlier)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierPolicy {
    /// Failures of an instance's own in a row that eject it.
    pub consecutive_failures: u32,
    /// First ejection; doubled at each one while the instance stays sick.
    pub base_ejection: Duration,
    /// Longest ejection.
    pub max_ejection: Duration,
    /// Share of a service's instances that may be out at once, in percent.
    pub max_ejected_percent: f64,
}

/// A breaker's thresholds, resolved.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Failure share that opens it.
    pub error_rate: f64,
    /// Calls within the window before the share counts.
    pub min_requests: u32,
    /// The sliding window.
    pub window: Duration,
    /// Open time before probing.
    pub open: Duration,
    /// Probes let through when half-open.
    pub half_open_requests: u32,
    /// Calls this slow or slower count as slow; `None`: none do.
    pub slow_call: Option<Duration>,
    /// Slow share that opens it.
    pub slow_rate: f64,
    /// Counts the calls it would fail, failing none.
    pub shadow: bool,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(1000),
            max_attempts: 2,
            budget_ratio: 0.2,
            min_per_second: 10,
            backup_delay: None,
            breaker: BreakerPolicy {
                error_rate: 0.5,
                min_requests: 20,
                window: Duration::from_millis(10_000),
                open: Duration::from_millis(5000),
                half_open_requests: 2,
                slow_call: None,
                slow_rate: 0.5,
                shadow: false,
            },
            outlier: OutlierPolicy {
                consecutive_failures: 3,
                base_ejection: Duration::from_millis(2000),
                max_ejection: Duration::from_millis(10_000),
                max_ejected_percent: 50.0,
            },
            fallback: false,
        }
    }
}

impl ClientPolicy {
    pub(super) fn overlay(&mut self, rule: &ClientRule) {
        if let Some(ms) = rule.timeout_ms {
            self.timeout = Duration::from_millis(ms);
        }
        if let Some(retry) = &rule.retry {
            if let Some(v) = retry.max_attempts {
                self.max_attempts = v;
            }
            if let Some(v) = retry.budget_percent {
                self.budget_ratio = v / 100.0;
            }
            if let Some(v) = retry.min_per_second {
                self.min_per_second = v;
            }
            if let Some(v) = retry.backup_delay_ms {
                self.backup_delay = (v > 0).then(|| Duration::from_millis(v));
            }
        }
        if let Some(b) = &rule.breaker {
            let p = &mut self.breaker;
            if let Some(v) = b.error_rate {
                p.error_rate = v;
            }
            if let Some(v) = b.min_requests {
                p.min_requests = v;
            }
            if let Some(v) = b.window_ms {
                p.window = Duration::from_millis(v);
            }
            if let Some(v) = b.open_ms {
                p.open = Duration::from_millis(v);
            }
            if let Some(v) = b.half_open_requests {
                p.half_open_requests = v;
            }
            if let Some(v) = b.slow_ms {
                p.slow_call = (v > 0).then(|| Duration::from_millis(v));
            }
            if let Some(v) = b.slow_rate {
                p.slow_rate = v;
            }
            if let Some(mode) = b.mode {
                p.shadow = mode.is_shadow();
            }
        }
        if let Some(fallback) = rule.fallback {
            self.fallback = fallback == super::Fallback::Empty;
        }
        if let Some(o) = &rule.outlier {
            let p = &mut self.outlier;
            if let Some(v) = o.consecutive_failures {
                p.consecutive_failures = v;
            }
            if let Some(v) = o.base_ejection_ms {
                p.base_ejection = Duration::from_millis(v);
            }
            if let Some(v) = o.max_ejection_ms {
                p.max_ejection = Duration::from_millis(v);
            }
            if let Some(v) = o.max_ejected_percent {
                p.max_ejected_percent = v;
            }
        }
    }
}

/// The methods that may be retried or hedged: reads and health checks.
pub fn is_idempotent(method: &str) -> bool {
    matches!(
        method,
        "MGetUser" | "MGetNote" | "QueryNote" | "CheckToken" | "Check" | "Watch"
    )
}
