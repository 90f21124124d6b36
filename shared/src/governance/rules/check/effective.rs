//! What a document comes to, setting by setting: one line per route,
//! service and method the suite has (`easy-note rules check` prints them,
//! and `rules diff` compares them).

use std::collections::BTreeMap;

use super::{GATEWAY_ROUTES, SERVICE_METHODS, ms};
use crate::governance::rules::{
    AdaptivePolicy, ClientPolicy, Mode, Rules, Scope, is_idempotent, route_matches,
};

impl Rules {
    /// What the rules come to for every route, service and method the suite
    /// has: one line per setting, keyed by a dotted path, in order.
    pub fn effective(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let gw = &self.gateway;
        out.insert(
            "gateway.max_in_flight".into(),
            format!("{}{}", gw.max_in_flight, shadow(gw.max_in_flight_mode)),
        );
        out.insert(
            "gateway.trusted_proxy_hops".into(),
            gw.trusted_proxy_hops.to_string(),
        );
        if let Some(adaptive) = &gw.adaptive {
            out.insert(
                "gateway.adaptive".into(),
                describe_adaptive(&AdaptivePolicy::of(adaptive), "route", false),
            );
        }
        for (route, _) in GATEWAY_ROUTES {
            out.insert(
                format!("gateway.route.{route}.deadline"),
                format!("{} ms", ms(self.route_timeout(route))),
            );
            // Shadow rules on the way, then the first that enforces.
            let mut limits = Vec::new();
            for (i, rule) in gw.rate_limits.iter().enumerate() {
                if !route_matches(&rule.route, route) {
                    continue;
                }
                let scope = match rule.scope {
                    Scope::Process => "",
                    Scope::Cluster => " across all gateways",
                };
                limits.push(format!(
                    "gateway.rate_limits[{i}]: {}/s, burst {}, per {}{scope}{}",
                    rule.per_second,
                    rule.burst,
                    rule.key,
                    shadow(rule.mode)
                ));
                if !rule.mode.is_shadow() {
                    break;
                }
            }
            let limit = if limits.is_empty() {
                "none".to_owned()
            } else {
                limits.join("; then ")
            };
            out.insert(format!("gateway.route.{route}.rate_limit"), limit);
        }
        for (service, methods) in SERVICE_METHODS {
            for method in *methods {
                let path = format!("clients.{service}.{method}");
                for (key, value) in describe_policy(&self.client_policy(service, method), method) {
                    out.insert(format!("{path}.{key}"), value);
                }
            }
        }
        for (service, rule) in &self.servers {
            let limit = |n: Option<u32>| {
                n.map_or_else(|| "unlimited".to_owned(), |n| n.to_string()) + shadow(rule.mode)
            };
            out.insert(
                format!("servers.{service}.max_in_flight"),
                limit(rule.max_in_flight),
            );
            for (method, m) in &rule.methods {
                out.insert(
                    format!("servers.{service}.methods.{method}.max_in_flight"),
                    limit(m.max_in_flight),
                );
            }
            if let Some(adaptive) = &rule.adaptive {
                out.insert(
                    format!("servers.{service}.adaptive"),
                    describe_adaptive(
                        &AdaptivePolicy::of(adaptive),
                        "method",
                        rule.mode.is_shadow(),
                    ),
                );
            }
        }
        for (service, routing) in &self.routing {
            if let Some(locality) = &routing.locality {
                out.insert(
                    format!("routing.{service}.locality"),
                    format!(
                        "the caller's own {} first, every {} when under {}% of its instances are in rotation",
                        locality.key(),
                        locality.key(),
                        locality.min_healthy_percent()
                    ),
                );
            }
            for (i, lane) in routing.lanes.iter().enumerate() {
                let matches = match (&lane.matches.header, &lane.matches.equals) {
                    (Some(header), Some(value)) => format!("header {header} = {value}"),
                    _ => format!(
                        "{}% of users",
                        lane.matches.user_percent.unwrap_or_default()
                    ),
                };
                out.insert(
                    format!("routing.{service}.lanes[{i}]"),
                    format!(
                        "{}: {matches} -> instances with {}{}",
                        lane.name,
                        pairs(&lane.instances),
                        shadow(lane.mode)
                    ),
                );
            }
        }
        for (i, fault) in self.faults.iter().enumerate() {
            let on = if fault.instances.is_empty() {
                "every instance".to_owned()
            } else {
                format!("instances with {}", pairs(&fault.instances))
            };
            out.insert(
                format!("faults[{i}]"),
                format!(
                    "{} {}: {}% aborted with {}, delayed {} ms, on {on}{}",
                    fault.service,
                    fault.method,
                    fault.abort_percent,
                    fault.status,
                    fault.delay_ms,
                    shadow(fault.mode)
                ),
            );
        }
        out
    }
}

/// One policy as settings: `timeout`, `attempts`, `hedge`, `breaker`,
/// `outlier`.
fn describe_policy(policy: &ClientPolicy, method: &str) -> [(&'static str, String); 5] {
    let attempts = if policy.max_attempts > 1 {
        format!(
            "{} (retry budget {}% of calls + {}/s)",
            policy.max_attempts,
            policy.budget_ratio * 100.0,
            policy.min_per_second
        )
    } else if is_idempotent(method) {
        "1".to_owned()
    } else {
        "1 (not idempotent)".to_owned()
    };
    let b = &policy.breaker;
    let mut breaker = format!(
        "opens at {}% failed of >= {} calls in {} ms",
        b.error_rate * 100.0,
        b.min_requests,
        ms(b.window)
    );
    if let Some(slow) = b.slow_call {
        breaker.push_str(&format!(
            " or {}% slower than {} ms",
            b.slow_rate * 100.0,
            ms(slow)
        ));
    }
    breaker.push_str(&format!(
        "; open {} ms; {} probes{}",
        ms(b.open),
        b.half_open_requests,
        if b.shadow { " (shadow)" } else { "" }
    ));
    let o = &policy.outlier;
    [
        ("timeout", format!("{} ms", ms(policy.timeout))),
        ("attempts", attempts),
        (
            "hedge",
            policy
                .backup_delay
                .map_or_else(|| "off".to_owned(), |d| format!("after {} ms", ms(d))),
        ),
        ("breaker", breaker),
        (
            "outlier",
            format!(
                "ejected after {} failures in a row, {}..{} ms, at most {}% out",
                o.consecutive_failures,
                ms(o.base_ejection),
                ms(o.max_ejection),
                o.max_ejected_percent
            ),
        ),
    ]
}

/// An adaptive limit, kept per `each` (route, method).
fn describe_adaptive(p: &AdaptivePolicy, each: &str, shadowed: bool) -> String {
    format!(
        "per {each}, {}..{} in flight (from {}), shrinking past {}x the no-load latency{}",
        p.min_limit,
        p.max_limit,
        p.initial_limit,
        p.tolerance,
        if p.shadow || shadowed {
            " (shadow)"
        } else {
            ""
        }
    )
}

/// ` (shadow)` for a rule that only counts.
fn shadow(mode: Mode) -> &'static str {
    if mode.is_shadow() { " (shadow)" } else { "" }
}

pub(super) fn pairs(map: &BTreeMap<String, String>) -> String {
    map.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}
