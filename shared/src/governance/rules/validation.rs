//! The checks a document passes before it is applied, each naming the
//! path of the bad key, and the bounds they enforce.

use std::{fmt, time::Duration};

use tonic::Code;

use super::{AdaptivePolicy, AdaptiveRule, ClientRule, Lane, RateLimit, Rules};

impl Rules {
    pub(super) fn validate(&self) -> Result<(), RulesError> {
        let gw = &self.gateway;
        within(gw.max_in_flight, 1..=MAX_COUNT, "gateway.max_in_flight")?;
        within(gw.trusted_proxy_hops, 0..=16, "gateway.trusted_proxy_hops")?;
        if let Some(adaptive) = &gw.adaptive {
            validate_adaptive(adaptive, "gateway.adaptive")?;
        }
        for (route, ms) in &gw.timeouts_ms {
            let path = format!("gateway.timeouts_ms.{route}");
            check_route(route, &path)?;
            within(*ms, 1..=MAX_TIMEOUT_MS, &path)?;
        }
        for (i, limit) in gw.rate_limits.iter().enumerate() {
            let path = format!("gateway.rate_limits[{i}]");
            check_route(&limit.route, &format!("{path}.route"))?;
            within_f64(
                limit.per_second,
                MIN_PER_SECOND..=MAX_PER_SECOND,
                &format!("{path}.per_second"),
            )?;
            within(limit.burst, 1..=MAX_COUNT, &format!("{path}.burst"))?;
            check(
                limit.period().is_some(),
                &format!("{path}.per_second"),
                "gives no usable period",
            )?;
        }
        for (service, methods) in &self.clients {
            for (method, rule) in methods {
                let path = format!("clients.{service}.{method}");
                validate_client(rule, &path)?;
                check(
                    rule.fallback != Some(super::Fallback::Empty)
                        || (service == crate::service_name::USER && method == "MGetUser"),
                    &format!("{path}.fallback"),
                    "only clients.easy-note-user.MGetUser has a fallback reply (notes with empty author names)",
                )?;
            }
        }
        for (service, rule) in &self.servers {
            let path = format!("servers.{service}");
            if let Some(n) = rule.max_in_flight {
                within(n, 1..=MAX_COUNT, &format!("{path}.max_in_flight"))?;
            }
            if let Some(adaptive) = &rule.adaptive {
                validate_adaptive(adaptive, &format!("{path}.adaptive"))?;
            }
            for (method, limit) in &rule.methods {
                if let Some(n) = limit.max_in_flight {
                    within(
                        n,
                        1..=MAX_COUNT,
                        &format!("{path}.methods.{method}.max_in_flight"),
                    )?;
                }
            }
        }
        for (service, routing) in &self.routing {
            for (i, lane) in routing.lanes.iter().enumerate() {
                validate_lane(lane, &format!("routing.{service}.lanes[{i}]"))?;
            }
            if let Some(locality) = &routing.locality {
                let path = format!("routing.{service}.locality");
                check(
                    !locality.key().is_empty() && locality.key().len() <= 64,
                    &format!("{path}.key"),
                    "must be 1 to 64 characters",
                )?;
                within_f64(
                    locality.min_healthy_percent(),
                    0.0..=100.0,
                    &format!("{path}.min_healthy_percent"),
                )?;
            }
        }
        for (i, fault) in self.faults.iter().enumerate() {
            let path = format!("faults[{i}]");
            check(
                !fault.service.is_empty(),
                &format!("{path}.service"),
                "must name a service",
            )?;
            within_f64(
                fault.abort_percent,
                0.0..=100.0,
                &format!("{path}.abort_percent"),
            )?;
            within(
                fault.delay_ms,
                0..=MAX_DELAY_MS,
                &format!("{path}.delay_ms"),
            )?;
            match crate::code::code_from_name(&fault.status) {
                Some(Code::Ok) | None => {
                    return Err(RulesError::at(
                        format!("{path}.status"),
                        format!(
                            "{:?} is not a gRPC error status name (e.g. UNAVAILABLE)",
                            fault.status
                        ),
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }
}

/// Upper bound of counts: in-flight limits, bursts, `min_requests`.
pub const MAX_COUNT: u32 = 1_000_000;
/// Upper bound of deadlines and timeouts, ms (10 minutes).
pub const MAX_TIMEOUT_MS: u64 = 600_000;
/// Upper bound of injected delays and hedge delays, ms.
pub const MAX_DELAY_MS: u64 = 60_000;
/// Upper bound of breaker windows, open times and ejections, ms (1 hour).
pub const MAX_WINDOW_MS: u64 = 3_600_000;
/// Lowest rate limit: one request per 1000 s. With [`MAX_COUNT`] as the
/// burst, the bucket's depth (period × burst, 31.7 years) still fits the
/// limiter's 64-bit nanosecond clock (584 years); 1e-11 per second did not
/// and made every request panic.
pub const MIN_PER_SECOND: f64 = 0.001;
/// Highest rate limit.
pub const MAX_PER_SECOND: f64 = 1_000_000.0;

impl RateLimit {
    /// The time one request's token takes to come back, and the bucket's
    /// depth (period × burst); `None` when either is not a usable duration
    /// of at least a nanosecond that fits 64-bit nanoseconds.
    pub fn period(&self) -> Option<Duration> {
        if !(self.per_second.is_finite() && self.per_second > 0.0) {
            return None;
        }
        let period = Duration::try_from_secs_f64(1.0 / self.per_second)
            .ok()?
            .max(Duration::from_nanos(1));
        let depth = period.checked_mul(self.burst.max(1))?;
        u64::try_from(depth.as_nanos()).ok()?;
        Some(period)
    }
}

fn validate_adaptive(adaptive: &AdaptiveRule, path: &str) -> Result<(), RulesError> {
    for (value, key) in [
        (adaptive.min_limit, "min_limit"),
        (adaptive.max_limit, "max_limit"),
        (adaptive.initial_limit, "initial_limit"),
    ] {
        if let Some(n) = value {
            within(n, 1..=MAX_COUNT, &format!("{path}.{key}"))?;
        }
    }
    let resolved = AdaptivePolicy::of(adaptive);
    check(
        resolved.min_limit <= resolved.max_limit,
        &format!("{path}.max_limit"),
        "must be at least min_limit",
    )?;
    if let Some(t) = adaptive.tolerance {
        within_f64(t, 1.0..=10.0, &format!("{path}.tolerance"))?;
    }
    Ok(())
}

fn validate_client(rule: &ClientRule, path: &str) -> Result<(), RulesError> {
    if let Some(ms) = rule.timeout_ms {
        within(ms, 1..=MAX_TIMEOUT_MS, &format!("{path}.timeout_ms"))?;
    }
    if let Some(retry) = &rule.retry {
        let path = format!("{path}.retry");
        if let Some(n) = retry.max_attempts {
            within(n, 1..=5, &format!("{path}.max_attempts"))?;
        }
        if let Some(p) = retry.budget_percent {
            within_f64(p, 0.0..=100.0, &format!("{path}.budget_percent"))?;
        }
        if let Some(n) = retry.min_per_second {
            within(n, 0..=MAX_COUNT, &format!("{path}.min_per_second"))?;
        }
        if let Some(ms) = retry.backup_delay_ms {
            within(ms, 0..=MAX_DELAY_MS, &format!("{path}.backup_delay_ms"))?;
        }
    }
    if let Some(b) = &rule.breaker {
        let path = format!("{path}.breaker");
        if let Some(r) = b.error_rate {
            check(
                r > 0.0 && r <= 1.0,
                &format!("{path}.error_rate"),
                "must be above 0 and at most 1",
            )?;
        }
        if let Some(n) = b.min_requests {
            within(n, 1..=MAX_COUNT, &format!("{path}.min_requests"))?;
        }
        if let Some(ms) = b.window_ms {
            within(ms, 100..=MAX_WINDOW_MS, &format!("{path}.window_ms"))?;
        }
        if let Some(ms) = b.open_ms {
            within(ms, 1..=MAX_WINDOW_MS, &format!("{path}.open_ms"))?;
        }
        if let Some(n) = b.half_open_requests {
            within(n, 1..=100, &format!("{path}.half_open_requests"))?;
        }
        if let Some(ms) = b.slow_ms {
            within(ms, 0..=MAX_TIMEOUT_MS, &format!("{path}.slow_ms"))?;
        }
        if let Some(r) = b.slow_rate {
            check(
                r > 0.0 && r <= 1.0,
                &format!("{path}.slow_rate"),
                "must be above 0 and at most 1",
            )?;
        }
    }
    if let Some(o) = &rule.outlier {
        let path = format!("{path}.outlier");
        if let Some(n) = o.consecutive_failures {
            within(n, 1..=1000, &format!("{path}.consecutive_failures"))?;
        }
        if let Some(ms) = o.base_ejection_ms {
            within(ms, 1..=MAX_WINDOW_MS, &format!("{path}.base_ejection_ms"))?;
        }
        if let Some(ms) = o.max_ejection_ms {
            within(ms, 1..=MAX_WINDOW_MS, &format!("{path}.max_ejection_ms"))?;
        }
        if let (Some(base), Some(max)) = (o.base_ejection_ms, o.max_ejection_ms) {
            check(
                base <= max,
                &format!("{path}.max_ejection_ms"),
                "must be at least base_ejection_ms",
            )?;
        }
        if let Some(p) = o.max_ejected_percent {
            within_f64(p, 0.0..=100.0, &format!("{path}.max_ejected_percent"))?;
        }
    }
    Ok(())
}

/// `value` within `range`, else refused as "must be A..=B".
fn within<T>(value: T, range: std::ops::RangeInclusive<T>, path: &str) -> Result<(), RulesError>
where
    T: PartialOrd + fmt::Display,
{
    check(
        range.contains(&value),
        path,
        &format!("must be {}..={}", range.start(), range.end()),
    )
}

/// A finite `value` within `range`.
fn within_f64(
    value: f64,
    range: std::ops::RangeInclusive<f64>,
    path: &str,
) -> Result<(), RulesError> {
    check(
        value.is_finite() && range.contains(&value),
        path,
        &format!("must be {}..={}", range.start(), range.end()),
    )
}

fn validate_lane(lane: &Lane, path: &str) -> Result<(), RulesError> {
    check(
        !lane.name.is_empty() && lane.name.len() <= 64 && lane.name.is_ascii(),
        &format!("{path}.name"),
        "must be 1 to 64 ASCII characters",
    )?;
    check(
        !lane.instances.is_empty(),
        &format!("{path}.instances"),
        "must name at least one metadata key",
    )?;
    let m = &lane.matches;
    match (&m.header, &m.equals, m.user_percent) {
        (Some(header), Some(_), None) => check(
            axum_header_name_ok(header),
            &format!("{path}.match.header"),
            "must be a valid HTTP header name",
        ),
        (None, None, Some(p)) => check(
            (0.0..=100.0).contains(&p),
            &format!("{path}.match.user_percent"),
            "must be 0..=100",
        ),
        _ => Err(RulesError::at(
            format!("{path}.match"),
            "must be either header and equals, or user_percent",
        )),
    }
}

fn axum_header_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// `*` or `METHOD /path`.
fn check_route(route: &str, path: &str) -> Result<(), RulesError> {
    if route == "*" {
        return Ok(());
    }
    let ok = route.split_once(' ').is_some_and(|(method, p)| {
        !method.is_empty() && method.bytes().all(|b| b.is_ascii_uppercase()) && p.starts_with('/')
    });
    check(
        ok,
        path,
        "must be `*` or `METHOD /path` as in the API table",
    )
}

fn check(ok: bool, path: &str, reason: &str) -> Result<(), RulesError> {
    if ok {
        Ok(())
    } else {
        Err(RulesError::at(path.to_owned(), reason))
    }
}

/// Why a document was refused: the path of the bad key and the reason.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct RulesError {
    /// e.g. `gateway.rate_limits[0].per_second`; `.` for the whole document.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

impl RulesError {
    pub(crate) fn at(path: String, reason: impl Into<String>) -> Self {
        Self {
            path,
            reason: reason.into(),
        }
    }
}
