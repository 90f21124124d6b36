//! Checking a document before it is published (`easy-note rules check` and
//! `easy-note rules diff`): what every route, service and method ends up
//! with ([`Rules::effective`]), the conflicts between rules that each pass
//! validation alone ([`Rules::conflicts`], [`Rules::lane_conflicts`]), and
//! what changes from one document to the next ([`diff`]).

use std::{collections::BTreeMap, fmt, time::Duration};

use self::effective::pairs;
use super::{Rules, is_idempotent, route_matches};
use crate::{
    discovery::Instance,
    rpc::{self, Rpc},
    service_name::{NOTE, USER},
};

pub use self::diff::{Change, diff};

mod diff;
mod effective;

/// The methods of each service the suite calls, by registry name.
pub const SERVICE_METHODS: &[(&str, &[&str])] = &[
    (
        USER,
        &[
            rpc::CreateUser::METHOD,
            rpc::MGetUser::METHOD,
            rpc::CheckUser::METHOD,
            rpc::RevokeTokens::METHOD,
            rpc::CheckToken::METHOD,
            rpc::Check::METHOD,
        ],
    ),
    (
        NOTE,
        &[
            rpc::CreateNote::METHOD,
            rpc::MGetNote::METHOD,
            rpc::DeleteNote::METHOD,
            rpc::UpdateNote::METHOD,
            rpc::QueryNote::METHOD,
            rpc::Check::METHOD,
        ],
    ),
];

/// Every governed route of the gateway (`METHOD /pattern`, as the rules
/// name it) and the calls made under its deadline: its own, then those its
/// callee makes within them. The gateway's tests hold this to its router.
pub const GATEWAY_ROUTES: &[(&str, &[(&str, &str)])] = &[
    ("POST /v1/user/register", &[(USER, "CreateUser")]),
    ("POST /v1/user/login", &[(USER, "CheckUser")]),
    (
        "POST /v1/user/logout",
        &[(USER, "CheckToken"), (USER, "RevokeTokens")],
    ),
    (
        "POST /v1/note",
        &[(USER, "CheckToken"), (NOTE, "CreateNote")],
    ),
    (
        "GET /v1/note/query",
        &[
            (USER, "CheckToken"),
            (NOTE, "QueryNote"),
            (USER, "MGetUser"),
        ],
    ),
    (
        "GET /v1/note/{note_id}",
        &[(USER, "CheckToken"), (NOTE, "MGetNote"), (USER, "MGetUser")],
    ),
    (
        "PUT /v1/note/{note_id}",
        &[(USER, "CheckToken"), (NOTE, "UpdateNote")],
    ),
    (
        "DELETE /v1/note/{note_id}",
        &[(USER, "CheckToken"), (NOTE, "DeleteNote")],
    ),
    ("GET /openapi.json", &[]),
    ("GET /", &[]),
    ("GET /assets/{file}", &[]),
];

/// A conflict between rules: where, and what goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The key to change, e.g. `clients.easy-note-note.QueryNote`.
    pub path: String,
    /// What would go wrong, in a sentence.
    pub problem: String,
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

fn conflict(path: impl Into<String>, problem: impl Into<String>) -> Conflict {
    Conflict {
        path: path.into(),
        problem: problem.into(),
    }
}

fn methods_of(service: &str) -> Option<&'static [&'static str]> {
    SERVICE_METHODS
        .iter()
        .find(|(name, _)| *name == service)
        .map(|(_, methods)| *methods)
}

fn is_route(route: &str) -> bool {
    GATEWAY_ROUTES
        .iter()
        .any(|(known, _)| route_matches(route, known))
}

fn ms(duration: Duration) -> u128 {
    duration.as_millis()
}

impl Rules {
    /// The conflicts between rules that each validate alone: retries that
    /// cannot fit in a deadline, hedges that never start, retry budgets at
    /// or over the breaker's threshold, rules that never apply (shadowed by
    /// an earlier one, or naming a route, service or method the suite does
    /// not have), limits that never bind. Empty for the defaults.
    pub fn conflicts(&self) -> Vec<Conflict> {
        let mut found = Vec::new();
        self.unknown_names(&mut found);
        self.deadline_conflicts(&mut found);
        for (service, methods) in SERVICE_METHODS {
            for method in *methods {
                let policy = self.client_policy(service, method);
                let path = format!("clients.{service}.{method}");
                if let Some(delay) = policy.backup_delay
                    && delay >= policy.timeout
                {
                    found.push(conflict(
                        format!("{path}.retry.backup_delay_ms"),
                        format!(
                            "the hedge after {} ms never starts: each attempt times out after {} ms",
                            ms(delay),
                            ms(policy.timeout)
                        ),
                    ));
                }
                let written = self.written_policy(service, method);
                if written.backup_delay.is_some() && !is_idempotent(method) {
                    found.push(conflict(
                        format!("{path}.retry.backup_delay_ms"),
                        format!("{method} is not idempotent: it is never hedged"),
                    ));
                }
                if policy.max_attempts > 1 && policy.budget_ratio >= policy.breaker.error_rate {
                    found.push(conflict(
                        format!("{path}.retry.budget_percent"),
                        format!(
                            "retries may add {}% of the calls, at or over the breaker's error_rate ({}%): while {service} fails at a rate the breaker tolerates, retries alone may double its load",
                            policy.budget_ratio * 100.0,
                            policy.breaker.error_rate * 100.0
                        ),
                    ));
                }
                if let Some(slow) = policy.breaker.slow_call {
                    let longest = policy.timeout * policy.max_attempts.max(1);
                    if slow >= longest {
                        found.push(conflict(
                            format!("{path}.breaker.slow_ms"),
                            format!(
                                "no call can take {} ms: its attempts end within {} ms",
                                ms(slow),
                                ms(longest)
                            ),
                        ));
                    }
                }
            }
        }
        for (i, rule) in self.gateway.rate_limits.iter().enumerate() {
            if let Some((j, _)) =
                self.gateway.rate_limits[..i]
                    .iter()
                    .enumerate()
                    .find(|(_, earlier)| {
                        !earlier.mode.is_shadow()
                            && (earlier.route == "*" || earlier.route == rule.route)
                    })
            {
                found.push(conflict(
                    format!("gateway.rate_limits[{i}]"),
                    format!(
                        "never applies: gateway.rate_limits[{j}] matches its routes first (the first match wins)"
                    ),
                ));
            }
        }
        for (service, rule) in &self.servers {
            for (method, limit) in &rule.methods {
                if let (Some(all), Some(this)) = (rule.max_in_flight, limit.max_in_flight)
                    && this >= all
                {
                    found.push(conflict(
                        format!("servers.{service}.methods.{method}.max_in_flight"),
                        format!("{this} never binds: the service as a whole allows {all}"),
                    ));
                }
            }
        }
        for (service, routing) in &self.routing {
            for (i, lane) in routing.lanes.iter().enumerate() {
                if let Some(j) = routing.lanes[..i].iter().position(|earlier| {
                    !earlier.mode.is_shadow() && earlier.matches == lane.matches
                }) {
                    found.push(conflict(
                        format!("routing.{service}.lanes[{i}]"),
                        format!("never takes a request: lanes[{j}] has the same match"),
                    ));
                }
            }
        }
        found
    }

    /// Rules naming a route, service or method the suite does not have:
    /// valid, and never applied.
    fn unknown_names(&self, found: &mut Vec<Conflict>) {
        for route in self.gateway.timeouts_ms.keys() {
            if route != "*" && !is_route(route) {
                found.push(conflict(
                    format!("gateway.timeouts_ms.{route}"),
                    "names no route of the API: it never applies",
                ));
            }
        }
        for (i, rule) in self.gateway.rate_limits.iter().enumerate() {
            if rule.route != "*" && !is_route(&rule.route) {
                found.push(conflict(
                    format!("gateway.rate_limits[{i}].route"),
                    format!(
                        "{} is no route of the API: the rule never applies",
                        rule.route
                    ),
                ));
            }
        }
        let mut named: Vec<(String, &str, Vec<&str>)> = Vec::new();
        for (service, methods) in &self.clients {
            named.push((
                format!("clients.{service}"),
                service,
                methods.keys().map(String::as_str).collect(),
            ));
        }
        for (service, rule) in &self.servers {
            named.push((
                format!("servers.{service}.methods"),
                service,
                rule.methods.keys().map(String::as_str).collect(),
            ));
        }
        for (i, fault) in self.faults.iter().enumerate() {
            named.push((format!("faults[{i}]"), &fault.service, vec![&fault.method]));
        }
        for service in self.routing.keys() {
            named.push((format!("routing.{service}"), service, Vec::new()));
        }
        for (path, service, methods) in named {
            let Some(known) = methods_of(service) else {
                found.push(conflict(
                    path,
                    format!("{service:?} is not a service of the suite ({USER}, {NOTE})"),
                ));
                continue;
            };
            for method in methods {
                if method != "*" && !known.contains(&method) {
                    found.push(conflict(
                        format!("{path}.{method}"),
                        format!("{service} has no method {method:?}: the rule never applies"),
                    ));
                }
            }
        }
    }

    /// Retries that cannot all run within the deadline of the routes that
    /// make them. Reported once per method, against its tightest route.
    fn deadline_conflicts(&self, found: &mut Vec<Conflict>) {
        let mut tightest: BTreeMap<(&str, &str), (Duration, String)> = BTreeMap::new();
        let mut tighten = |call: (&'static str, &'static str), limit: Duration, what: String| {
            let entry = tightest.entry(call).or_insert((limit, what.clone()));
            if limit < entry.0 {
                *entry = (limit, what);
            }
        };
        for (route, calls) in GATEWAY_ROUTES {
            let deadline = self.route_timeout(route);
            for call in *calls {
                tighten(
                    *call,
                    deadline,
                    format!("the deadline of {route} ({} ms)", ms(deadline)),
                );
            }
        }
        for ((service, method), (limit, what)) in tightest {
            let policy = self.client_policy(service, method);
            let worst = policy.timeout * policy.max_attempts;
            if policy.max_attempts > 1 && worst > limit {
                found.push(conflict(
                    format!("clients.{service}.{method}"),
                    format!(
                        "{} attempts of {} ms ({} ms) exceed {what}: a retry after an attempt that timed out is cut short or never starts",
                        policy.max_attempts,
                        ms(policy.timeout),
                        ms(worst)
                    ),
                ));
            }
        }
    }

    /// Lanes that point at metadata no registered instance of their service
    /// has (`instances`: what the registry holds now, per service). Such a
    /// lane's requests fall back to the default instances.
    pub fn lane_conflicts(&self, instances: &BTreeMap<String, Vec<Instance>>) -> Vec<Conflict> {
        let mut found = Vec::new();
        for (service, routing) in &self.routing {
            let live = instances.get(service).map_or(&[][..], Vec::as_slice);
            for (i, lane) in routing.lanes.iter().enumerate() {
                if !live
                    .iter()
                    .any(|instance| instance.matches(&lane.instances))
                {
                    found.push(conflict(
                        format!("routing.{service}.lanes[{i}].instances"),
                        format!(
                            "none of the {} registered instances of {service} has {}: the lane's requests go to the default instances",
                            live.len(),
                            pairs(&lane.instances)
                        ),
                    ));
                }
            }
        }
        found
    }
}

#[cfg(test)]
mod tests;
