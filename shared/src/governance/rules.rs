//! The rules document (`easy-note-governance.json`): what a user writes,
//! its embedded defaults, validation with the path of the bad key, and the
//! resolution of per-call policies from it.
//!
//! Layering: a document is read over the embedded defaults. A section or
//! key it leaves out keeps its default; a map it gives (`timeouts_ms`,
//! `clients`, `servers`) is merged key by key over the defaults; a list it
//! gives (`rate_limits`, `lanes`, `faults`) replaces the default list.

use std::{
    collections::BTreeMap,
    fmt::{self, Write as _},
    time::Duration,
};

use serde::Deserialize;
use tonic::Code;

/// The whole document, resolved over the defaults.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    /// The HTTP edge.
    #[serde(default)]
    pub gateway: GatewayRules,
    /// Policies of callers, per called service and method (`*` = any).
    #[serde(default)]
    pub clients: BTreeMap<String, BTreeMap<String, ClientRule>>,
    /// In-flight limits of servers, per service.
    #[serde(default)]
    pub servers: BTreeMap<String, ServerRule>,
    /// Lanes, per called service.
    #[serde(default)]
    pub routing: BTreeMap<String, Routing>,
    /// Fault injection (empty by default).
    #[serde(default)]
    pub faults: Vec<Fault>,
}

/// `gateway`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayRules {
    /// Requests served at once; beyond it 503 at once.
    pub max_in_flight: u32,
    /// `X-Forwarded-For` hops to trust when finding the client IP.
    pub trusted_proxy_hops: u32,
    /// Whole-request deadline per route (`METHOD /path`, `*` = default), ms.
    pub timeouts_ms: BTreeMap<String, u64>,
    /// Token buckets; the first rule whose route matches applies.
    pub rate_limits: Vec<RateLimit>,
}

impl Default for GatewayRules {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            trusted_proxy_hops: 0,
            timeouts_ms: BTreeMap::from([
                ("*".to_owned(), 3000),
                ("POST /v1/user/login".to_owned(), 5000),
            ]),
            rate_limits: vec![
                // Each registration costs an argon2 hash: one address may
                // not keep user-service hashing (its logins have a queue of
                // their own as well, see user-service's password.rs).
                RateLimit {
                    route: "POST /v1/user/register".into(),
                    key: LimitKey::Ip,
                    per_second: 1.0,
                    burst: 20,
                },
                RateLimit {
                    route: "POST /v1/user/login".into(),
                    key: LimitKey::Ip,
                    per_second: 5.0,
                    burst: 10,
                },
                RateLimit {
                    route: "*".into(),
                    key: LimitKey::User,
                    per_second: 100.0,
                    burst: 200,
                },
            ],
        }
    }
}

/// One token bucket rule of the gateway.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// `METHOD /path` as in the API table, or `*`.
    pub route: String,
    /// What a bucket is kept per.
    pub key: LimitKey,
    /// Sustained rate.
    pub per_second: f64,
    /// Bucket size: requests allowed at once after a quiet spell.
    pub burst: u32,
}

/// What a rate limit is keyed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LimitKey {
    /// The client IP (see `trusted_proxy_hops`).
    Ip,
    /// The token's user id; the IP for unauthenticated requests.
    User,
    /// One bucket for everyone.
    Global,
}

impl LimitKey {
    /// The name used in the document and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::User => "user",
            Self::Global => "global",
        }
    }
}

/// `clients.SERVICE.METHOD`: every field optional, resolved method → `*`
/// → built-in.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientRule {
    /// Deadline of one attempt, ms.
    pub timeout_ms: Option<u64>,
    /// Retries and hedging.
    pub retry: Option<RetryRule>,
    /// Circuit breaker.
    pub breaker: Option<BreakerRule>,
    /// Outlier detection per instance (read from the method called; set it
    /// under `*`).
    pub outlier: Option<OutlierRule>,
}

/// `retry`, every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryRule {
    /// Attempts in all, the first included (1 = no retry).
    pub max_attempts: Option<u32>,
    /// Retries allowed as a share of calls, in percent.
    pub budget_percent: Option<f64>,
    /// Retries allowed per second whatever the share.
    pub min_per_second: Option<u32>,
    /// > 0: a hedged second request after this many ms (idempotent methods).
    pub backup_delay_ms: Option<u64>,
}

/// `breaker`, every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerRule {
    /// Failure share that opens the breaker.
    pub error_rate: Option<f64>,
    /// Calls within the window before the share counts.
    pub min_requests: Option<u32>,
    /// The sliding window, ms.
    pub window_ms: Option<u64>,
    /// How long it stays open before probing, ms.
    pub open_ms: Option<u64>,
    /// Probes let through when half-open.
    pub half_open_requests: Option<u32>,
}

/// `outlier`, every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierRule {
    /// Failures of an instance's own in a row that eject it.
    pub consecutive_failures: Option<u32>,
    /// First ejection, ms; doubled at each one while the instance stays sick.
    pub base_ejection_ms: Option<u64>,
    /// Longest ejection, ms.
    pub max_ejection_ms: Option<u64>,
    /// Share of a service's instances that may be out at once, in percent.
    pub max_ejected_percent: Option<f64>,
}

/// `servers.SERVICE`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerRule {
    /// Calls the server runs at once (all methods).
    pub max_in_flight: Option<u32>,
    /// Per-method limits.
    #[serde(default)]
    pub methods: BTreeMap<String, MethodLimit>,
}

/// `servers.SERVICE.methods.METHOD`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodLimit {
    /// Calls of this method run at once.
    pub max_in_flight: Option<u32>,
}

/// `routing.SERVICE`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routing {
    /// The first lane whose `match` holds takes the request.
    #[serde(default)]
    pub lanes: Vec<Lane>,
}

/// One lane.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lane {
    /// Its name, carried across hops.
    pub name: String,
    /// Which requests it takes.
    #[serde(rename = "match")]
    pub matches: LaneMatch,
    /// Metadata an instance must carry (all of it) to serve the lane.
    pub instances: BTreeMap<String, String>,
}

/// `match` of a lane: a header value, or a stable share of users.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaneMatch {
    /// An HTTP request header (at the gateway).
    pub header: Option<String>,
    /// The value it must equal.
    pub equals: Option<String>,
    /// A stable share of users, by user id, in percent.
    pub user_percent: Option<f64>,
}

/// One fault injection rule.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// The service that applies it.
    pub service: String,
    /// Its method, or `*`.
    #[serde(default = "star")]
    pub method: String,
    /// Share of calls aborted with `status`, in percent.
    #[serde(default)]
    pub abort_percent: f64,
    /// The gRPC status of aborted calls (`UNAVAILABLE` by default).
    #[serde(default = "unavailable")]
    pub status: String,
    /// Delay before the call goes on (or is aborted), ms.
    #[serde(default)]
    pub delay_ms: u64,
    /// Only instances whose metadata carries all of these (empty: every
    /// instance), to fail one replica in a drill.
    #[serde(default)]
    pub instances: BTreeMap<String, String>,
}

fn star() -> String {
    "*".into()
}

fn unavailable() -> String {
    "UNAVAILABLE".into()
}

impl Default for Rules {
    fn default() -> Self {
        Self {
            gateway: GatewayRules::default(),
            clients: BTreeMap::new(),
            servers: BTreeMap::from([(
                crate::service_name::USER.to_owned(),
                ServerRule {
                    max_in_flight: Some(256),
                    methods: BTreeMap::from([(
                        "CheckUser".to_owned(),
                        MethodLimit {
                            max_in_flight: Some(16),
                        },
                    )]),
                },
            )]),
            routing: BTreeMap::new(),
            faults: Vec::new(),
        }
    }
}

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
            },
            outlier: OutlierPolicy {
                consecutive_failures: 3,
                base_ejection: Duration::from_millis(2000),
                max_ejection: Duration::from_millis(10_000),
                max_ejected_percent: 50.0,
            },
        }
    }
}

impl ClientPolicy {
    fn overlay(&mut self, rule: &ClientRule) {
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

impl Rules {
    /// Parses and validates a document over the defaults. The error names
    /// the path of the bad key.
    pub fn parse(document: &str) -> Result<Self, RulesError> {
        let deserializer = &mut serde_json::Deserializer::from_str(document);
        let mut rules: Self =
            serde_path_to_error::deserialize(deserializer).map_err(|err| RulesError {
                path: err.path().to_string(),
                reason: err.inner().to_string(),
            })?;
        rules.fill_defaults();
        rules.validate()?;
        Ok(rules)
    }

    /// Merges the defaults under what the document gave.
    fn fill_defaults(&mut self) {
        let defaults = Self::default();
        self.gateway
            .timeouts_ms
            .entry("*".into())
            .or_insert(defaults.gateway.timeouts_ms["*"]);
        for (service, rule) in defaults.servers {
            self.servers.entry(service).or_insert(rule);
        }
    }

    /// The policy of calls to `service`'s `method`: the method's entry over
    /// the service's `*` over the built-in defaults. Non-idempotent methods
    /// are never retried or hedged, whatever the rules say.
    pub fn client_policy(&self, service: &str, method: &str) -> ClientPolicy {
        let mut policy = ClientPolicy::default();
        if let Some(rules) = self.clients.get(service) {
            if let Some(rule) = rules.get("*") {
                policy.overlay(rule);
            }
            if let Some(rule) = rules.get(method) {
                policy.overlay(rule);
            }
        }
        if !is_idempotent(method) {
            policy.max_attempts = 1;
            policy.backup_delay = None;
        }
        policy
    }

    /// The in-flight limits of `service`: (all methods, this method).
    pub fn server_limits(&self, service: &str, method: &str) -> (Option<u32>, Option<u32>) {
        self.servers.get(service).map_or((None, None), |rule| {
            (
                rule.max_in_flight,
                rule.methods.get(method).and_then(|m| m.max_in_flight),
            )
        })
    }

    /// The first fault for `service`'s `method` on an instance with
    /// `metadata`, if any.
    pub fn fault(
        &self,
        service: &str,
        method: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Option<&Fault> {
        self.faults.iter().find(|f| {
            f.service == service
                && (f.method == "*" || f.method == method)
                && f.instances
                    .iter()
                    .all(|(k, v)| metadata.get(k).is_some_and(|have| have == v))
        })
    }

    /// The whole-request deadline of a gateway route (`METHOD /path`).
    pub fn route_timeout(&self, route: &str) -> Duration {
        let ms = self
            .gateway
            .timeouts_ms
            .get(route)
            .or_else(|| self.gateway.timeouts_ms.get("*"))
            .copied()
            .unwrap_or(3000);
        Duration::from_millis(ms)
    }

    fn validate(&self) -> Result<(), RulesError> {
        let gw = &self.gateway;
        within(gw.max_in_flight, 1..=MAX_COUNT, "gateway.max_in_flight")?;
        within(gw.trusted_proxy_hops, 0..=16, "gateway.trusted_proxy_hops")?;
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
                validate_client(rule, &format!("clients.{service}.{method}"))?;
            }
        }
        for (service, rule) in &self.servers {
            let path = format!("servers.{service}");
            if let Some(n) = rule.max_in_flight {
                within(n, 1..=MAX_COUNT, &format!("{path}.max_in_flight"))?;
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
            match crate::rpc::code_from_name(&fault.status) {
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

/// The version of a document: a stable 64-bit content hash (FNV-1a), in hex.
pub fn version_of(document: &str) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in document.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut out = String::with_capacity(16);
    let _ = write!(out, "{hash:016x}");
    out
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("example.json");

    #[test]
    fn the_documented_example_parses() {
        let rules = Rules::parse(EXAMPLE).expect("the example is valid");
        assert_eq!(rules.gateway.max_in_flight, 1024);
        assert_eq!(rules.faults.len(), 1);
        assert_eq!(rules.routing["easy-note-note"].lanes.len(), 2);
        let check_user = rules.client_policy("easy-note-user", "CheckUser");
        assert_eq!(check_user.max_attempts, 1);
        assert_eq!(check_user.timeout, Duration::from_millis(1000));
        let mget = rules.client_policy("easy-note-user", "MGetUser");
        assert_eq!(mget.max_attempts, 2);
        assert_eq!(mget.breaker.min_requests, 20);
    }

    #[test]
    fn an_empty_document_is_the_defaults() {
        assert_eq!(Rules::parse("{}").expect("valid"), Rules::default());
    }

    #[test]
    fn given_keys_override_and_the_rest_keeps_its_default() {
        let rules = Rules::parse(
            r#"{"gateway": {"timeouts_ms": {"GET /v1/note/query": 200}},
                "clients": {"easy-note-note": {"*": {"timeout_ms": 300},
                                               "QueryNote": {"retry": {"backup_delay_ms": 50}}}}}"#,
        )
        .expect("valid");
        assert_eq!(rules.gateway.max_in_flight, 1024);
        assert_eq!(
            rules.route_timeout("GET /v1/note/query"),
            Duration::from_millis(200)
        );
        assert_eq!(
            rules.route_timeout("POST /v1/note"),
            Duration::from_millis(3000)
        );
        let query = rules.client_policy("easy-note-note", "QueryNote");
        assert_eq!(query.timeout, Duration::from_millis(300));
        assert_eq!(query.backup_delay, Some(Duration::from_millis(50)));
        let create = rules.client_policy("easy-note-note", "CreateNote");
        assert_eq!(create.max_attempts, 1, "writes are never retried");
        assert_eq!(create.backup_delay, None);
        assert_eq!(
            rules.server_limits("easy-note-user", "CheckUser"),
            (Some(256), Some(16))
        );
    }

    #[test]
    fn bad_documents_are_refused_naming_the_key() {
        let cases = [
            ("not json", "."),
            (
                r#"{"gateway": {"max_in_flight": 0}}"#,
                "gateway.max_in_flight",
            ),
            (r#"{"gateway": {"max_inflight": 5}}"#, "gateway"),
            (
                r#"{"gateway": {"rate_limits": [{"route": "*", "key": "ip", "per_second": -1, "burst": 1}]}}"#,
                "gateway.rate_limits[0].per_second",
            ),
            (
                r#"{"gateway": {"rate_limits": [{"route": "*", "key": "tenant", "per_second": 1, "burst": 1}]}}"#,
                "gateway.rate_limits[0].key",
            ),
            (
                r#"{"gateway": {"timeouts_ms": {"login": 5}}}"#,
                "gateway.timeouts_ms.login",
            ),
            (
                r#"{"clients": {"easy-note-user": {"*": {"breaker": {"error_rate": 2}}}}}"#,
                "clients.easy-note-user.*.breaker.error_rate",
            ),
            (
                r#"{"faults": [{"service": "easy-note-note", "status": "BROKEN"}]}"#,
                "faults[0].status",
            ),
            (
                r#"{"routing": {"easy-note-note": {"lanes": [{"name": "x", "match": {"user_percent": 5, "header": "h"}, "instances": {"lane": "x"}}]}}}"#,
                "routing.easy-note-note.lanes[0].match",
            ),
        ];
        for (doc, path) in cases {
            let err = Rules::parse(doc).expect_err(doc);
            assert!(err.path.starts_with(path), "{doc}: {err}");
        }
    }

    #[test]
    fn faults_apply_to_their_method_and_instances() {
        let rules = Rules::parse(
            r#"{"faults": [{"service": "easy-note-note", "method": "QueryNote", "abort_percent": 100, "instances": {"lane": "canary"}},
                           {"service": "easy-note-user", "delay_ms": 5}]}"#,
        )
        .expect("valid");
        let canary = BTreeMap::from([("lane".to_owned(), "canary".to_owned())]);
        let plain = BTreeMap::new();
        assert!(
            rules
                .fault("easy-note-note", "QueryNote", &canary)
                .is_some()
        );
        assert!(rules.fault("easy-note-note", "QueryNote", &plain).is_none());
        assert!(rules.fault("easy-note-note", "MGetNote", &canary).is_none());
        let any = rules
            .fault("easy-note-user", "CheckUser", &plain)
            .expect("`*`");
        assert_eq!((any.delay_ms, any.status.as_str()), (5, "UNAVAILABLE"));
    }

    #[test]
    fn versions_are_stable_content_hashes() {
        assert_eq!(version_of("{}"), version_of("{}"));
        assert_ne!(version_of("{}"), version_of("{ }"));
        assert_eq!(version_of("").len(), 16);
    }

    /// Every bounded number: where it sits in a document, its two edges,
    /// and the values one step past them (`None` where the type itself
    /// stops there).
    #[test]
    fn every_bound_takes_its_edges_and_refuses_one_past_them_naming_the_key() {
        use serde_json::{Value, json};
        type Place = fn(Value) -> Value;
        /// The key, where it sits, its two edges, one past each.
        type Case = (
            &'static str,
            Place,
            Value,
            Value,
            Option<Value>,
            Option<Value>,
        );
        let cases: Vec<Case> = vec![
            (
                "gateway.max_in_flight",
                |v| json!({"gateway": {"max_in_flight": v}}),
                json!(1),
                json!(MAX_COUNT),
                Some(json!(0)),
                Some(json!(MAX_COUNT + 1)),
            ),
            (
                "gateway.timeouts_ms.*",
                |v| json!({"gateway": {"timeouts_ms": {"*": v}}}),
                json!(1),
                json!(MAX_TIMEOUT_MS),
                Some(json!(0)),
                Some(json!(MAX_TIMEOUT_MS + 1)),
            ),
            (
                "gateway.rate_limits[0].per_second",
                |v| json!({"gateway": {"rate_limits": [{"route": "*", "key": "ip", "per_second": v, "burst": MAX_COUNT}]}}),
                json!(MIN_PER_SECOND),
                json!(MAX_PER_SECOND),
                Some(json!(1e-11)),
                Some(json!(MAX_PER_SECOND * 1.01)),
            ),
            (
                "gateway.rate_limits[0].burst",
                |v| json!({"gateway": {"rate_limits": [{"route": "*", "key": "ip", "per_second": MIN_PER_SECOND, "burst": v}]}}),
                json!(1),
                json!(MAX_COUNT),
                Some(json!(0)),
                Some(json!(MAX_COUNT + 1)),
            ),
            (
                "clients.easy-note-note.*.timeout_ms",
                |v| json!({"clients": {"easy-note-note": {"*": {"timeout_ms": v}}}}),
                json!(1),
                json!(MAX_TIMEOUT_MS),
                Some(json!(0)),
                Some(json!(MAX_TIMEOUT_MS + 1)),
            ),
            (
                "clients.easy-note-note.*.retry.max_attempts",
                |v| json!({"clients": {"easy-note-note": {"*": {"retry": {"max_attempts": v}}}}}),
                json!(1),
                json!(5),
                Some(json!(0)),
                Some(json!(6)),
            ),
            (
                "clients.easy-note-note.*.retry.budget_percent",
                |v| json!({"clients": {"easy-note-note": {"*": {"retry": {"budget_percent": v}}}}}),
                json!(0),
                json!(100),
                Some(json!(-0.1)),
                Some(json!(100.1)),
            ),
            (
                "clients.easy-note-note.*.retry.min_per_second",
                |v| json!({"clients": {"easy-note-note": {"*": {"retry": {"min_per_second": v}}}}}),
                json!(0),
                json!(MAX_COUNT),
                Some(json!(-1)),
                Some(json!(MAX_COUNT + 1)),
            ),
            (
                "clients.easy-note-note.*.retry.backup_delay_ms",
                |v| json!({"clients": {"easy-note-note": {"*": {"retry": {"backup_delay_ms": v}}}}}),
                json!(0),
                json!(MAX_DELAY_MS),
                Some(json!(-1)),
                Some(json!(MAX_DELAY_MS + 1)),
            ),
            (
                "clients.easy-note-note.*.breaker.error_rate",
                |v| json!({"clients": {"easy-note-note": {"*": {"breaker": {"error_rate": v}}}}}),
                json!(1e-9),
                json!(1),
                Some(json!(0)),
                Some(json!(1.01)),
            ),
            (
                "clients.easy-note-note.*.breaker.min_requests",
                |v| json!({"clients": {"easy-note-note": {"*": {"breaker": {"min_requests": v}}}}}),
                json!(1),
                json!(MAX_COUNT),
                Some(json!(0)),
                Some(json!(MAX_COUNT + 1)),
            ),
            (
                "clients.easy-note-note.*.breaker.window_ms",
                |v| json!({"clients": {"easy-note-note": {"*": {"breaker": {"window_ms": v}}}}}),
                json!(100),
                json!(MAX_WINDOW_MS),
                Some(json!(99)),
                Some(json!(MAX_WINDOW_MS + 1)),
            ),
            (
                "clients.easy-note-note.*.breaker.open_ms",
                |v| json!({"clients": {"easy-note-note": {"*": {"breaker": {"open_ms": v}}}}}),
                json!(1),
                json!(MAX_WINDOW_MS),
                Some(json!(0)),
                Some(json!(MAX_WINDOW_MS + 1)),
            ),
            (
                "clients.easy-note-note.*.breaker.half_open_requests",
                |v| json!({"clients": {"easy-note-note": {"*": {"breaker": {"half_open_requests": v}}}}}),
                json!(1),
                json!(100),
                Some(json!(0)),
                Some(json!(101)),
            ),
            (
                "clients.easy-note-note.*.outlier.consecutive_failures",
                |v| json!({"clients": {"easy-note-note": {"*": {"outlier": {"consecutive_failures": v}}}}}),
                json!(1),
                json!(1000),
                Some(json!(0)),
                Some(json!(1001)),
            ),
            (
                "clients.easy-note-note.*.outlier.base_ejection_ms",
                |v| json!({"clients": {"easy-note-note": {"*": {"outlier": {"base_ejection_ms": v}}}}}),
                json!(1),
                json!(MAX_WINDOW_MS),
                Some(json!(0)),
                Some(json!(MAX_WINDOW_MS + 1)),
            ),
            (
                "clients.easy-note-note.*.outlier.max_ejection_ms",
                |v| json!({"clients": {"easy-note-note": {"*": {"outlier": {"max_ejection_ms": v}}}}}),
                json!(1),
                json!(MAX_WINDOW_MS),
                Some(json!(0)),
                Some(json!(MAX_WINDOW_MS + 1)),
            ),
            (
                "clients.easy-note-note.*.outlier.max_ejected_percent",
                |v| json!({"clients": {"easy-note-note": {"*": {"outlier": {"max_ejected_percent": v}}}}}),
                json!(0),
                json!(100),
                Some(json!(-0.1)),
                Some(json!(100.1)),
            ),
            (
                "servers.easy-note-user.max_in_flight",
                |v| json!({"servers": {"easy-note-user": {"max_in_flight": v}}}),
                json!(1),
                json!(MAX_COUNT),
                Some(json!(0)),
                Some(json!(MAX_COUNT + 1)),
            ),
            (
                "servers.easy-note-user.methods.CheckUser.max_in_flight",
                |v| json!({"servers": {"easy-note-user": {"methods": {"CheckUser": {"max_in_flight": v}}}}}),
                json!(1),
                json!(MAX_COUNT),
                Some(json!(0)),
                Some(json!(MAX_COUNT + 1)),
            ),
            (
                "routing.easy-note-note.lanes[0].match.user_percent",
                |v| json!({"routing": {"easy-note-note": {"lanes": [{"name": "x", "match": {"user_percent": v}, "instances": {"lane": "x"}}]}}}),
                json!(0),
                json!(100),
                Some(json!(-0.1)),
                Some(json!(100.1)),
            ),
            (
                "faults[0].abort_percent",
                |v| json!({"faults": [{"service": "easy-note-note", "abort_percent": v}]}),
                json!(0),
                json!(100),
                Some(json!(-0.1)),
                Some(json!(100.1)),
            ),
            (
                "faults[0].delay_ms",
                |v| json!({"faults": [{"service": "easy-note-note", "delay_ms": v}]}),
                json!(0),
                json!(MAX_DELAY_MS),
                Some(json!(-1)),
                Some(json!(MAX_DELAY_MS + 1)),
            ),
        ];
        for (key, place, low, high, below, above) in cases {
            for edge in [low, high] {
                let doc = place(edge).to_string();
                Rules::parse(&doc).unwrap_or_else(|err| panic!("{doc} is at an edge: {err}"));
            }
            for past in [below, above].into_iter().flatten() {
                let doc = place(past).to_string();
                let err = Rules::parse(&doc).expect_err(&doc);
                assert_eq!(err.path, key, "{doc}: {err}");
            }
        }
    }

    #[test]
    fn the_slowest_limit_with_the_largest_burst_still_has_a_period() {
        let limit = RateLimit {
            route: "*".into(),
            key: LimitKey::Ip,
            per_second: MIN_PER_SECOND,
            burst: MAX_COUNT,
        };
        assert_eq!(limit.period(), Some(Duration::from_secs(1000)));
        let too_slow = RateLimit {
            per_second: 1e-11,
            ..limit.clone()
        };
        assert_eq!(too_slow.period(), None, "its bucket outlasts 584 years");
        let nan = RateLimit {
            per_second: f64::NAN,
            ..limit
        };
        assert_eq!(nan.period(), None);
    }
}
