//! The document's shape: every section and key a user may write.

use std::{collections::BTreeMap, fmt};

use serde::Deserialize;

/// `gateway`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayRules {
    /// Requests served at once; beyond it 503 at once.
    pub max_in_flight: u32,
    /// `shadow`: `max_in_flight` only counts what it would have shed.
    pub max_in_flight_mode: Mode,
    /// `X-Forwarded-For` hops to trust when finding the client IP.
    pub trusted_proxy_hops: u32,
    /// Whole-request deadline per route (`METHOD /path`, `*` = default), ms.
    pub timeouts_ms: BTreeMap<String, u64>,
    /// Token buckets; the first rule whose route matches applies.
    pub rate_limits: Vec<RateLimit>,
    /// Adaptive concurrency per route, under `max_in_flight`.
    pub adaptive: Option<AdaptiveRule>,
}

impl Default for GatewayRules {
    fn default() -> Self {
        Self {
            max_in_flight: 1024,
            max_in_flight_mode: Mode::Enforce,
            adaptive: None,
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
                    mode: Mode::Enforce,
                    scope: Scope::Process,
                },
                RateLimit {
                    route: "POST /v1/user/login".into(),
                    key: LimitKey::Ip,
                    per_second: 5.0,
                    burst: 10,
                    mode: Mode::Enforce,
                    scope: Scope::Process,
                },
                RateLimit {
                    route: "*".into(),
                    key: LimitKey::User,
                    per_second: 100.0,
                    burst: 200,
                    mode: Mode::Enforce,
                    scope: Scope::Process,
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
    /// `shadow`: counts what it would have refused, refuses nothing, and
    /// the next matching rule applies as if it were not there.
    #[serde(default)]
    pub mode: Mode,
    /// `cluster`: one bucket per key for every gateway replica together
    /// (in Redis, `EASYNOTE_REDIS_URL`); `process` (the default): each
    /// replica its own.
    #[serde(default)]
    pub scope: Scope,
}

/// Where a rate limit's buckets are kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// In each gateway process.
    #[default]
    Process,
    /// Shared by every gateway replica (Redis); when Redis does not
    /// answer, each process keeps its share of the budget.
    Cluster,
}

/// Whether a rule acts (`enforce`, the default) or only counts, in
/// `easynote.governance.shadow`, what it would have done (`shadow`): a
/// rule is tried on live traffic before it is trusted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The rule acts.
    #[default]
    Enforce,
    /// The rule counts what it would have done, and does nothing.
    Shadow,
}

impl Mode {
    /// Whether the rule only counts.
    pub fn is_shadow(self) -> bool {
        self == Self::Shadow
    }
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
    /// What the caller does when the call fails for want of the service
    /// (unavailable, too slow, overloaded, breaker open): `none` (the
    /// default: the failure goes on) or `empty` (go on without its answer,
    /// where the contract allows: `MGetUser`, whose notes are then served
    /// with empty author names).
    pub fallback: Option<Fallback>,
}

/// A method's fallback reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// The failure goes on to the caller.
    #[default]
    None,
    /// The caller goes on without the answer.
    Empty,
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
    /// A call that takes this long or longer is slow (0 or absent: no
    /// call is), whatever its outcome.
    pub slow_ms: Option<u64>,
    /// Share of slow calls that opens the breaker (with `slow_ms`; 0.5 by
    /// default), counted like `error_rate` over the same window.
    pub slow_rate: Option<f64>,
    /// `shadow`: the breaker opens and closes as it would, and counts the
    /// calls it would have failed, failing none.
    pub mode: Option<Mode>,
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
    /// `shadow`: the limits count what they would have shed, shedding
    /// nothing.
    #[serde(default)]
    pub mode: Mode,
    /// Adaptive concurrency per method: a limit that follows measured
    /// latency, under the fixed ones.
    pub adaptive: Option<AdaptiveRule>,
}

/// `servers.SERVICE.adaptive`: every field optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptiveRule {
    /// The limit never goes under this (2 by default).
    pub min_limit: Option<u32>,
    /// Nor over this (1000 by default).
    pub max_limit: Option<u32>,
    /// Where it starts (20 by default).
    pub initial_limit: Option<u32>,
    /// How many times the no-load latency calls may take before the limit
    /// shrinks (1.5 by default).
    pub tolerance: Option<f64>,
    /// `shadow`: the limit is computed and what it would have shed is
    /// counted; nothing is shed.
    pub mode: Option<Mode>,
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
    /// Prefer instances in the caller's own zone.
    pub locality: Option<Locality>,
}

/// `routing.SERVICE.locality`: callers prefer the instances whose metadata
/// `key` (`zone` by default) has the caller's own value, and spill over to
/// every zone when fewer than `min_healthy_percent` of those are in
/// rotation (or none is registered).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    /// The metadata key naming an instance's zone (`zone` by default).
    pub key: Option<String>,
    /// Share of the caller's zone's instances that must be in rotation for
    /// the zone to keep its calls, in percent (50 by default).
    pub min_healthy_percent: Option<f64>,
}

impl Locality {
    /// The metadata key (`zone` by default).
    pub fn key(&self) -> &str {
        self.key.as_deref().unwrap_or("zone")
    }

    /// The spill-over threshold, in percent (50 by default).
    pub fn min_healthy_percent(&self) -> f64 {
        self.min_healthy_percent.unwrap_or(50.0)
    }
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
    /// `shadow`: counts the requests it would have taken, which go on to
    /// the next lane as if it were not there.
    #[serde(default)]
    pub mode: Mode,
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
    /// `shadow`: counts the calls it would have delayed or aborted, and
    /// does neither.
    #[serde(default)]
    pub mode: Mode,
}

fn star() -> String {
    "*".into()
}

fn unavailable() -> String {
    "UNAVAILABLE".into()
}

impl fmt::Display for LimitKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
