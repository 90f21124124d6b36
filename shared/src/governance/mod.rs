//! Service governance: one rules document (`easy-note-governance.json`)
//! applied by every process and changed at run time without a restart.
//!
//! - [`rules`]: the document, its defaults, validation and per-call policies.
//! - Sources: the Nacos config center ([`source`]), a watched JSON file
//!   (`EASYNOTE_GOVERNANCE_FILE`), and the embedded defaults under both. A
//!   document is parsed and validated whole, then swapped in atomically;
//!   a bad one is refused with a warning naming the bad key, a deleted one
//!   keeps the last good rules.
//! - Where the rules act: the gateway's edge (in-flight shedding, rate
//!   limits, route deadlines, lanes; in the gateway crate), every caller
//!   ([`client`]'s [`Upstream`]: per-attempt timeouts, retry budgets,
//!   hedging, [`outlier`] detection per instance, [`breaker`]s per method,
//!   lanes, over the instances discovery finds), and every gRPC server
//!   ([`server`]: in-flight limits, fault injection, and the deadline and
//!   lane that travel with a call, in [`context`]).

pub mod adaptive;
pub(crate) mod breaker;
pub(crate) mod budget;
pub(crate) mod client;
pub mod context;
pub mod outlier;
pub mod per_key;
pub mod rules;
pub mod server;
mod source;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{Arc, Mutex},
};
use tonic::Status;

use arc_swap::ArcSwap;
use opentelemetry::{
    KeyValue,
    metrics::{Counter, Gauge},
};

use crate::{
    config::{ConfigError, Env, Environment},
    discovery::{DiscoveryConfig, NacosConfig},
    lifecycle::LifecycleConfig,
};

pub use client::Upstream;
pub use rules::{Rules, RulesError};

/// The default data id of the rules in the Nacos config center.
pub const DEFAULT_DATA_ID: &str = "easy-note-governance.json";

/// Where the rules come from (`EASYNOTE_GOVERNANCE*`).
#[derive(Debug, Clone)]
pub struct GovernanceConfig {
    /// `EASYNOTE_GOVERNANCE` (`on` by default): `off` switches every rule
    /// off, defaults included (for benchmarks and emergencies).
    pub enabled: bool,
    /// `EASYNOTE_GOVERNANCE_FILE`: a JSON document, re-read when it changes.
    pub file: Option<PathBuf>,
    /// The Nacos config center and data id (`EASYNOTE_GOVERNANCE_DATA_ID`),
    /// when `EASYNOTE_REGISTRY=nacos`.
    pub nacos: Option<(NacosConfig, String)>,
    /// `EASYNOTE_ALLOW_FAULTS`: allows fault injection in production.
    pub allow_faults: bool,
    /// `EASYNOTE_ENV`.
    pub environment: Environment,
    /// This instance's own metadata (`EASYNOTE_INSTANCE_METADATA`): its
    /// zone, for locality routing.
    pub own_metadata: BTreeMap<String, String>,
}

impl GovernanceConfig {
    /// Reads the governance settings; the environment, the registry (whose
    /// config center holds the rules) and this instance's metadata are the
    /// process's own, read once by [`ProcessConfig`](crate::process::ProcessConfig).
    pub fn from_env(
        env: &Env,
        environment: Environment,
        discovery: &DiscoveryConfig,
        lifecycle: &LifecycleConfig,
    ) -> Result<Self, ConfigError> {
        let enabled = match env.string("EASYNOTE_GOVERNANCE", "on").as_str() {
            "on" => true,
            "off" => false,
            other => {
                return Err(ConfigError::invalid(
                    "EASYNOTE_GOVERNANCE",
                    format!("{other:?} is neither on nor off"),
                ));
            }
        };
        let nacos = match discovery {
            DiscoveryConfig::Nacos(nacos) => Some((
                nacos.clone(),
                env.string("EASYNOTE_GOVERNANCE_DATA_ID", DEFAULT_DATA_ID),
            )),
            DiscoveryConfig::Static { .. } => None,
        };
        Ok(Self {
            enabled,
            file: env.get("EASYNOTE_GOVERNANCE_FILE").map(PathBuf::from),
            nacos,
            allow_faults: env.parse("EASYNOTE_ALLOW_FAULTS", false)?,
            environment,
            own_metadata: lifecycle.metadata.clone(),
        })
    }

    /// Embedded defaults only, switched on (tests and tools).
    pub fn defaults() -> Self {
        Self {
            enabled: true,
            file: None,
            nacos: None,
            allow_faults: false,
            environment: Environment::Development,
            own_metadata: BTreeMap::new(),
        }
    }
}

/// The rules in force and their version.
#[derive(Debug)]
pub struct Active {
    /// The rules.
    pub rules: Rules,
    /// The document's content hash, or `default`.
    pub version: String,
}

/// The rules this process applies, and the metrics of what they did.
/// Cheap to clone.
#[derive(Debug, Clone)]
pub struct Governance {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    enabled: bool,
    allow_faults: bool,
    environment: Environment,
    own_metadata: BTreeMap<String, String>,
    active: ArcSwap<Active>,
    /// The last document applied or refused, to skip unchanged re-reads.
    last_seen: Mutex<Option<String>>,
    metrics: Metrics,
}

impl Governance {
    /// Starts with the embedded defaults and follows the configured
    /// sources in the background. Never blocks on a source.
    pub fn start(config: &GovernanceConfig) -> Self {
        let governance = Self::new(config);
        if !config.enabled {
            tracing::warn!(
                "governance is off (EASYNOTE_GOVERNANCE=off): no limits, breakers or deadlines"
            );
            return governance;
        }
        governance.record_version();
        if let Some(path) = &config.file {
            source::watch_file(&governance, path.clone());
        }
        if let Some((nacos, data_id)) = &config.nacos {
            source::follow_nacos(&governance, nacos.clone(), data_id.clone());
        }
        governance
    }

    /// Governance with the defaults and no source.
    pub fn new(config: &GovernanceConfig) -> Self {
        Self {
            inner: Arc::new(Inner {
                enabled: config.enabled,
                allow_faults: config.allow_faults || config.environment == Environment::Development,
                environment: config.environment,
                own_metadata: config.own_metadata.clone(),
                active: ArcSwap::from_pointee(Active {
                    rules: Rules::default(),
                    version: "default".into(),
                }),
                last_seen: Mutex::new(None),
                metrics: Metrics::new(),
            }),
        }
    }

    /// Whether any rule applies (`EASYNOTE_GOVERNANCE`).
    pub fn enabled(&self) -> bool {
        self.inner.enabled
    }

    /// The rules in force now.
    pub fn active(&self) -> arc_swap::Guard<Arc<Active>> {
        self.inner.active.load()
    }

    /// The metrics governance records into.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Parses, validates and swaps in `document` from `source`. Unchanged
    /// documents are skipped; a refused one leaves the rules as they were.
    pub fn apply(&self, source: &str, document: &str) -> Result<(), RulesError> {
        {
            let mut last = self
                .inner
                .last_seen
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.as_deref() == Some(document) {
                return Ok(());
            }
            *last = Some(document.to_owned());
        }
        let version = rules::version_of(document);
        let parsed = Rules::parse(document).and_then(|rules| {
            if !rules.faults.is_empty() && !self.inner.allow_faults {
                return Err(RulesError::at(
                    "faults".into(),
                    "fault injection is refused in production unless EASYNOTE_ALLOW_FAULTS=true",
                ));
            }
            Ok(rules)
        });
        match parsed {
            Ok(rules) => {
                let previous = self.inner.active.swap(Arc::new(Active {
                    rules,
                    version: version.clone(),
                }));
                self.inner
                    .metrics
                    .version
                    .record(0, &[KeyValue::new("version", previous.version.clone())]);
                self.record_version();
                tracing::info!(%version, previous = %previous.version, source, "governance rules changed");
                Ok(())
            }
            Err(err) => {
                self.inner.metrics.refused.add(1, &[]);
                tracing::warn!(%version, source, key = %err.path, reason = %err.reason, "governance rules refused; keeping the last good rules");
                Err(err)
            }
        }
    }

    fn record_version(&self) {
        let version = self.active().version.clone();
        self.inner
            .metrics
            .version
            .record(1, &[KeyValue::new("version", version)]);
    }

    /// This instance's own metadata (its zone, for locality routing).
    pub fn own_metadata(&self) -> &BTreeMap<String, String> {
        &self.inner.own_metadata
    }

    /// The environment faults are checked against.
    pub fn environment(&self) -> Environment {
        self.inner.environment
    }

    /// Counts what the shadow rule `rule` (its path in the document) would
    /// have done to `detail` (a route, a method), which it did not do.
    pub fn shadowed(&self, rule: &str, detail: &str) {
        self.inner
            .metrics
            .shadow
            .add(1, &[KeyValue::new("rule", rule.to_owned())]);
        tracing::debug!(
            governance.rule = rule,
            governance.detail = detail,
            "a shadow rule would have acted"
        );
    }
}

/// Governance metrics (OpenTelemetry names; the Prometheus names add
/// `_total` to counters).
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `easynote.governance.limited`: requests refused by a rate limit
    /// (`route`, `key`).
    pub limited: Counter<u64>,
    /// `easynote.governance.shed`: requests or calls refused by an
    /// in-flight limit (`service`, `method`).
    pub shed: Counter<u64>,
    /// `easynote.governance.breaker.state`: 0 closed, 1 open, 2 half-open
    /// (`service`, `method`).
    pub breaker_state: Gauge<i64>,
    /// `easynote.governance.breaker.transitions`: state changes (`service`,
    /// `method`, `state`).
    pub breaker_transitions: Counter<u64>,
    /// `easynote.governance.outlier.ejections`: instances taken out of
    /// rotation by outlier detection (`service`, `instance`).
    pub ejections: Counter<u64>,
    /// `easynote.governance.retries`: retried and hedged attempts
    /// (`service`, `method`, `kind`).
    pub retries: Counter<u64>,
    /// `easynote.governance.retry_budget.exhausted`: retries the budget
    /// refused (`service`, `method`).
    pub budget_exhausted: Counter<u64>,
    /// `easynote.governance.retries.skipped`: retries and hedges not
    /// started because too little of the deadline was left for the
    /// method's median answer time (`service`, `method`, `kind`).
    pub retries_skipped: Counter<u64>,
    /// `easynote.governance.faults`: injected faults (`service`, `method`,
    /// `kind`).
    pub faults: Counter<u64>,
    /// `easynote.governance.rules.version`: 1 for the version in force
    /// (`version`), 0 for those before.
    pub version: Gauge<i64>,
    /// `easynote.governance.rules.refused`: documents refused.
    pub refused: Counter<u64>,
    /// `easynote.governance.shadow`: what rules in `shadow` mode would have
    /// done and did not (`rule`: its path in the document).
    pub shadow: Counter<u64>,
    /// `easynote.governance.fallbacks`: calls answered by a fallback rule
    /// instead of the service (`service`, `method`).
    pub fallbacks: Counter<u64>,
    /// `easynote.governance.adaptive.limit`: the adaptive concurrency limit
    /// of a server's method (`service`, `method`), when it changes.
    pub adaptive_limit: Gauge<i64>,
    /// `easynote.governance.quota.fallback`: requests a cluster-wide rate
    /// limit decided in the gateway because Redis did not answer (`route`).
    pub quota_fallback: Counter<u64>,
}

impl Metrics {
    fn new() -> Self {
        let meter = opentelemetry::global::meter("easy-note");
        Self {
            limited: meter
                .u64_counter("easynote.governance.limited")
                .with_description("Requests refused by a rate limit.")
                .build(),
            shed: meter
                .u64_counter("easynote.governance.shed")
                .with_description("Requests or calls refused by an in-flight limit.")
                .build(),
            breaker_state: meter
                .i64_gauge("easynote.governance.breaker.state")
                .with_description("Circuit breaker state: 0 closed, 1 open, 2 half-open.")
                .build(),
            breaker_transitions: meter
                .u64_counter("easynote.governance.breaker.transitions")
                .with_description("Circuit breaker state changes.")
                .build(),
            ejections: meter
                .u64_counter("easynote.governance.outlier.ejections")
                .with_description("Instances taken out of rotation by outlier detection.")
                .build(),
            retries: meter
                .u64_counter("easynote.governance.retries")
                .with_description("Retried and hedged attempts.")
                .build(),
            budget_exhausted: meter
                .u64_counter("easynote.governance.retry_budget.exhausted")
                .with_description("Retries refused by the retry budget.")
                .build(),
            retries_skipped: meter
                .u64_counter("easynote.governance.retries.skipped")
                .with_description(
                    "Retries and hedges not started: too little of the deadline left.",
                )
                .build(),
            faults: meter
                .u64_counter("easynote.governance.faults")
                .with_description("Injected faults.")
                .build(),
            version: meter
                .i64_gauge("easynote.governance.rules.version")
                .with_description("1 for the rules version in force.")
                .build(),
            refused: meter
                .u64_counter("easynote.governance.rules.refused")
                .with_description("Rules documents refused as invalid.")
                .build(),
            fallbacks: meter
                .u64_counter("easynote.governance.fallbacks")
                .with_description("Calls answered by a fallback rule instead of the service.")
                .build(),
            adaptive_limit: meter
                .i64_gauge("easynote.governance.adaptive.limit")
                .with_description("Adaptive concurrency limit of a server's method.")
                .build(),
            quota_fallback: meter
                .u64_counter("easynote.governance.quota.fallback")
                .with_description(
                    "Requests a cluster-wide rate limit decided locally: Redis did not answer.",
                )
                .build(),
            shadow: meter
                .u64_counter("easynote.governance.shadow")
                .with_description("Times a rule in shadow mode would have acted, and did not.")
                .build(),
        }
    }
}

/// Metadata key (gRPC) and header (HTTP) naming the rule that refused a
/// call, by its path in the document (`gateway.rate_limits[1]`).
pub const RULE_HEADER: &str = "x-easynote-rule";
/// Metadata key (gRPC) and header (HTTP) carrying the revision of the rules
/// a process applies: on a refusal, on `/readyz` and on health answers.
pub const REVISION_HEADER: &str = "x-easynote-rules-revision";

/// Metadata key (gRPC) and header (HTTP) saying an answer was made
/// without a service's reply, by the fallback rule it names
/// (`clients.easy-note-user.MGetUser`).
pub const FALLBACK_HEADER: &str = "x-easynote-fallback";

/// The rule that refused a call: its path in the document (the same paths
/// `easy-note rules check` prints) and the revision of the document it
/// came from. It travels back to the caller on the refusal (gRPC metadata,
/// then HTTP headers), so a 429 or 503 says which rule, of which
/// revision, produced it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// e.g. `gateway.rate_limits[1]`, `clients.easy-note-user.MGetUser.breaker`.
    pub id: String,
    /// The document's content hash, or `default`.
    pub revision: String,
}

impl RuleRef {
    /// `id` of the rules `active`.
    pub fn new(id: impl Into<String>, active: &Active) -> Self {
        Self {
            id: id.into(),
            revision: active.version.clone(),
        }
    }

    /// Writes the rule into a refusal's metadata.
    pub fn attach(&self, metadata: &mut tonic::metadata::MetadataMap) {
        for (key, value) in [(RULE_HEADER, &self.id), (REVISION_HEADER, &self.revision)] {
            if let Ok(value) = value.parse() {
                metadata.insert(key, value);
            }
        }
    }

    /// The rule a refusal names, if a rule produced it.
    pub fn of(status: &Status) -> Option<Self> {
        let get = |key| {
            status
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Some(Self {
            id: get(RULE_HEADER)?,
            revision: get(REVISION_HEADER)?,
        })
    }

    /// `status` carrying this rule.
    pub fn on(&self, mut status: Status) -> Status {
        self.attach(status.metadata_mut());
        status
    }

    /// Records the refusal on the current span: a span event and the
    /// attributes `governance.rule` and `governance.rules_revision`, for
    /// the trace; `detail` says what was refused (a method, a route).
    pub fn record(&self, detail: &str) {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let span = tracing::Span::current();
        span.set_attribute("governance.rule", self.id.clone());
        span.set_attribute("governance.rules_revision", self.revision.clone());
        tracing::info!(
            governance.rule = %self.id,
            governance.rules_revision = %self.revision,
            governance.detail = detail,
            "refused by governance"
        );
    }
}

/// A refusal passed on by a caller as its own (e.g. note-service answering
/// for user-service): it keeps the rule the first refusal named.
pub fn carry_rule(from: &Status, to: Status) -> Status {
    match RuleRef::of(from) {
        Some(rule) => rule.on(to),
        None => to,
    }
}

/// Metadata key a server sets on a `RESOURCE_EXHAUSTED` it answers to shed
/// load (an in-flight limit, a full work queue).
const SHED_KEY: &str = "x-easynote-shed";

/// A `RESOURCE_EXHAUSTED` that says the server shed this call to protect
/// itself: callers retry it within their budget, but their breakers do not
/// count it as a failure. A server that refuses what it cannot take at once
/// is healthy; opening the breaker on its refusals would cut the traffic it
/// can serve as well (measured: 9% of its capacity served at three times
/// its capacity, instead of all of it).
pub fn shed_status(message: String) -> Status {
    let mut status = Status::resource_exhausted(message);
    status
        .metadata_mut()
        .insert(SHED_KEY, tonic::metadata::MetadataValue::from_static("1"));
    status
}

/// Whether `status` is a server's load shedding (see [`shed_status`]).
pub fn is_shed(status: &Status) -> bool {
    status.code() == tonic::Code::ResourceExhausted && status.metadata().contains_key(SHED_KEY)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessConfig;

    #[test]
    fn a_bad_document_changes_nothing_and_a_good_one_swaps_in() {
        let governance = Governance::new(&GovernanceConfig::defaults());
        assert_eq!(governance.active().version, "default");
        let err = governance
            .apply("test", r#"{"gateway": {"max_in_flight": -1}}"#)
            .expect_err("refused");
        assert!(err.path.starts_with("gateway.max_in_flight"), "{err}");
        assert_eq!(governance.active().version, "default");
        let doc = r#"{"gateway": {"max_in_flight": 7}}"#;
        governance.apply("test", doc).expect("applied");
        assert_eq!(governance.active().rules.gateway.max_in_flight, 7);
        assert_eq!(governance.active().version, rules::version_of(doc));
    }

    #[test]
    fn faults_are_refused_in_production_unless_allowed() {
        let doc = r#"{"faults": [{"service": "easy-note-note", "abort_percent": 100}]}"#;
        let mut config = GovernanceConfig::defaults();
        config.environment = Environment::Production;
        let governance = Governance::new(&config);
        let err = governance.apply("test", doc).expect_err("refused");
        assert_eq!(err.path, "faults");
        assert!(governance.active().rules.faults.is_empty());
        config.allow_faults = true;
        let governance = Governance::new(&config);
        governance.apply("test", doc).expect("allowed");
        assert_eq!(governance.active().rules.faults.len(), 1);
    }

    #[test]
    fn settings_are_read_and_checked() {
        let env = Env::from_pairs([
            ("EASYNOTE_REGISTRY", "nacos"),
            ("EASYNOTE_GOVERNANCE_FILE", "/etc/rules.json"),
        ]);
        let config = ProcessConfig::from_env(&env).expect("valid").governance;
        assert!(config.enabled);
        assert_eq!(config.nacos.expect("nacos").1, DEFAULT_DATA_ID);
        assert_eq!(config.file, Some(PathBuf::from("/etc/rules.json")));
        let env = Env::from_pairs([("EASYNOTE_GOVERNANCE", "maybe")]);
        let err = ProcessConfig::from_env(&env).expect_err("invalid");
        assert!(err.to_string().contains("EASYNOTE_GOVERNANCE"), "{err}");
    }
}
