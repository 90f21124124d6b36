//! The rules document (`easy-note-governance.json`): what a user writes,
//! its embedded defaults, validation with the path of the bad key, and the
//! resolution of per-call policies from it: the document's shape in
//! `schema`, its checks in `validation`, what a call resolves to in
//! `policy`.
//!
//! Layering: a document is read over the embedded defaults. A section or
//! key it leaves out keeps its default; a map it gives (`timeouts_ms`,
//! `clients`, `servers`) is merged key by key over the defaults; a list it
//! gives (`rate_limits`, `lanes`, `faults`) replaces the default list.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use serde::Deserialize;

pub use self::{check::*, policy::*, schema::*, validation::*};

mod check;
mod policy;
mod schema;
#[cfg(test)]
mod tests;
mod validation;

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
                    mode: Mode::Enforce,
                    adaptive: None,
                },
            )]),
            routing: BTreeMap::new(),
            faults: Vec::new(),
        }
    }
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

    /// Merges the defaults under what the document gave, key by key for
    /// the maps: a document that gives `timeouts_ms` for one route keeps
    /// the default deadline of the others (login's 5 s included).
    fn fill_defaults(&mut self) {
        let defaults = Self::default();
        for (route, ms) in defaults.gateway.timeouts_ms {
            self.gateway.timeouts_ms.entry(route).or_insert(ms);
        }
        for (service, rule) in defaults.servers {
            self.servers.entry(service).or_insert(rule);
        }
    }

    /// The policy of calls to `service`'s `method`: the method's entry over
    /// the service's `*` over the built-in defaults. Non-idempotent methods
    /// are never retried or hedged, whatever the rules say.
    pub fn client_policy(&self, service: &str, method: &str) -> ClientPolicy {
        let mut policy = self.written_policy(service, method);
        if !is_idempotent(method) {
            policy.max_attempts = 1;
            policy.backup_delay = None;
        }
        policy
    }

    /// The policy of a call whose method is not idempotent but whose
    /// request is safe to repeat, because a repeat replays the first
    /// one's result (a create carrying an idempotency key): retried as
    /// the rules say, never hedged (two attempts at once would only race
    /// for the key).
    pub fn repeatable_policy(&self, service: &str, method: &str) -> ClientPolicy {
        let mut policy = self.written_policy(service, method);
        policy.backup_delay = None;
        policy
    }

    /// The method's entry over the service's `*` over the defaults.
    fn written_policy(&self, service: &str, method: &str) -> ClientPolicy {
        let mut policy = ClientPolicy::default();
        if let Some(rules) = self.clients.get(service) {
            if let Some(rule) = rules.get("*") {
                policy.overlay(rule);
            }
            if let Some(rule) = rules.get(method) {
                policy.overlay(rule);
            }
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
    /// `metadata`, if any, with its index in `faults`.
    pub fn fault(
        &self,
        service: &str,
        method: &str,
        metadata: &BTreeMap<String, String>,
    ) -> Option<(usize, &Fault)> {
        self.faults.iter().enumerate().find(|(_, f)| {
            f.service == service
                && (f.method == "*" || f.method == method)
                && f.instances
                    .iter()
                    .all(|(k, v)| metadata.get(k).is_some_and(|have| have == v))
        })
    }

    /// The whole-request deadline of a gateway route (`METHOD /pattern`):
    /// its entry in any spelling of its parameters, else `*`.
    pub fn route_timeout(&self, route: &str) -> Duration {
        let timeouts = &self.gateway.timeouts_ms;
        let ms = timeouts
            .get(route)
            .or_else(|| {
                timeouts
                    .iter()
                    .find(|(rule, _)| *rule != "*" && route_matches(rule, route))
                    .map(|(_, ms)| ms)
            })
            .or_else(|| timeouts.get("*"))
            .copied()
            .unwrap_or(3000);
        Duration::from_millis(ms)
    }
}

/// Whether a rule's route (`*`, or `METHOD /path` in the API table's
/// `{param}` or `:param` spelling) names `route` (`METHOD /pattern` as the
/// gateway matched it).
pub fn route_matches(rule: &str, route: &str) -> bool {
    if rule == "*" || rule == route {
        return true;
    }
    // Only a rule with a parameter can match another spelling.
    if !rule.contains(['{', ':']) {
        return false;
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
