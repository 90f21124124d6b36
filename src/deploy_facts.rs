//! `easy-note deploy-facts`: what a deployment of a role must agree with,
//! as this build holds it, so that deploy/check-manifests.py checks the
//! manifests against the code instead of copies of it. For the role
//! (`--service` / `EASYNOTE_SERVICE`) and the environment it is run with
//! (a container's, as the manifests give it), one JSON object:
//!
//! - `identity`: the name its certificate is issued for; `serves`: `http`
//!   or `grpc`; `database`: whether it opens one;
//! - `callers`: the roles allowed to connect to it (the gRPC services:
//!   from the authorisation table; `*`: anyone);
//! - `startup` and `stop`: the bounded waits of a start-up (database,
//!   Nacos) and of a stop (deregistration grace, drain, telemetry flush),
//!   each read from the environment with the code's default;
//! - `readyz_timeout` (the gateway's `/readyz`) and `healthcheck_timeout`
//!   (`easy-note healthcheck`), which probes must outlast.
//!
//! Secrets are neither needed nor read. A setting the service would refuse
//! is refused here with the same message.

use std::time::Duration;

use easynote_shared::{
    app::{self, Probe},
    config::{ConfigError, Env},
    db::DatabaseConfig,
    discovery::{DiscoveryConfig, nacos::NacosConfig},
    governance::rules::SERVICE_METHODS,
    lifecycle::LifecycleConfig,
    service_name,
    telemetry::TelemetryConfig,
    tls::{self, Callers, devcert},
};
use serde_json::{Value, json};

use crate::Role;

/// The facts of `role` configured by `env`.
pub fn deploy_facts(role: Role, env: &Env) -> Result<Value, ConfigError> {
    let wait = |what: &str, took: Duration| json!({"what": what, "seconds": took.as_secs_f64()});
    let nacos = DiscoveryConfig::is_nacos(env)?;
    let mut startup = Vec::new();
    if role.has_database() {
        startup.push(wait(
            "EASYNOTE_DB_CONNECT_TIMEOUT",
            DatabaseConfig::connect_timeout(env)?,
        ));
    }
    let mut stop = Vec::new();
    if nacos {
        startup.push(wait(
            "NACOS_CONNECT_TIMEOUT",
            NacosConfig::connect_timeout(env)?,
        ));
        stop.push(wait(
            "EASYNOTE_DEREGISTER_GRACE",
            NacosConfig::deregister_grace(env)?,
        ));
    }
    stop.push(wait(
        "EASYNOTE_SHUTDOWN_TIMEOUT",
        LifecycleConfig::shutdown_timeout(env)?,
    ));
    let flush = TelemetryConfig::from_env(env)?.flush_timeout;
    if !flush.is_zero() {
        stop.push(wait("telemetry flush (OTEL_EXPORTER_OTLP_TIMEOUT)", flush));
    }
    let (serves, readyz) = match role.probe() {
        Probe::Http { .. } => ("http", Some(api_gateway::READYZ_CHECK_TIMEOUT)),
        Probe::Grpc { .. } => ("grpc", None),
    };
    Ok(json!({
        "role": role.name(),
        "identity": role.identity(),
        "serves": serves,
        "database": role.has_database(),
        "callers": callers(role),
        "startup": startup,
        "stop": stop,
        "readyz_timeout": readyz.map(|timeout| timeout.as_secs_f64()),
        "healthcheck_timeout": app::HEALTHCHECK_TIMEOUT.as_secs_f64(),
    }))
}

/// Every role's facts with `env`, keyed by role.
pub fn every_role(env: &Env) -> Result<Value, ConfigError> {
    Role::EVERY
        .into_iter()
        .map(|role| Ok((role.name(), deploy_facts(role, env)?)))
        .collect::<Result<serde_json::Map<_, _>, _>>()
        .map(Value::Object)
}

/// The roles allowed to connect to `role`: anyone for the HTTP edge, the
/// callers of any of its methods for a gRPC service.
fn callers(role: Role) -> Vec<String> {
    let service = match role {
        Role::UserService => service_name::USER,
        Role::NoteService => service_name::NOTE,
        Role::All | Role::ApiGateway => return vec!["*".to_owned()],
    };
    let allowed = SERVICE_METHODS
        .iter()
        .filter(|(name, _)| *name == service)
        .flat_map(|(_, methods)| methods.iter())
        .fold(Callers::NONE, |callers, method| {
            callers.union(tls::allowed(service, method))
        });
    allowed
        .names()
        .filter_map(|identity| Role::EVERY.into_iter().find(|r| r.identity() == identity))
        .map(Role::name)
        .collect()
}

impl Role {
    /// Every role, in the order `--help` lists them.
    pub const EVERY: [Self; 4] = [
        Self::All,
        Self::UserService,
        Self::NoteService,
        Self::ApiGateway,
    ];

    /// As written on the command line and in `EASYNOTE_SERVICE` (clap's
    /// name for it).
    pub fn name(self) -> String {
        clap::ValueEnum::to_possible_value(&self)
            .expect("no role is hidden")
            .get_name()
            .to_owned()
    }

    /// The name its certificate is issued for (the registry name; the
    /// all-in-one's certificate carries all three).
    pub fn identity(self) -> &'static str {
        match self {
            Self::All => devcert::ALL_IN_ONE,
            Self::UserService => user_service::SERVICE,
            Self::NoteService => note_service::SERVICE,
            Self::ApiGateway => api_gateway::SERVICE,
        }
    }

    /// How `easy-note healthcheck` probes it.
    pub fn probe(self) -> Probe {
        match self {
            Self::All => crate::PROBE,
            Self::UserService => user_service::PROBE,
            Self::NoteService => note_service::PROBE,
            Self::ApiGateway => api_gateway::PROBE,
        }
    }

    /// Whether it opens a database.
    pub fn has_database(self) -> bool {
        !matches!(self, Self::ApiGateway)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(role: Role, pairs: &[(&str, &str)]) -> Value {
        deploy_facts(role, &Env::from_pairs(pairs.iter().copied())).unwrap()
    }

    fn waits(facts: &Value, key: &str) -> Vec<(String, f64)> {
        facts[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| {
                (
                    w["what"].as_str().unwrap().to_owned(),
                    w["seconds"].as_f64().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn the_defaults_and_what_the_environment_changes() {
        let user = facts(Role::UserService, &[]);
        assert_eq!(user["identity"], "easy-note-user");
        assert_eq!(user["serves"], "grpc");
        assert_eq!(user["callers"], json!(["api-gateway", "note-service"]));
        assert_eq!(
            waits(&user, "startup"),
            [("EASYNOTE_DB_CONNECT_TIMEOUT".to_owned(), 30.0)]
        );
        assert_eq!(
            waits(&user, "stop"),
            [("EASYNOTE_SHUTDOWN_TIMEOUT".to_owned(), 10.0)],
            "no exporter, no flush"
        );
        let note = facts(
            Role::NoteService,
            &[
                ("EASYNOTE_REGISTRY", "nacos"),
                ("NACOS_CONNECT_TIMEOUT", "2m"),
                ("EASYNOTE_DEREGISTER_GRACE", "500ms"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "4000"),
            ],
        );
        assert_eq!(note["callers"], json!(["api-gateway"]));
        assert_eq!(
            waits(&note, "startup")[1],
            ("NACOS_CONNECT_TIMEOUT".to_owned(), 120.0)
        );
        let stop = waits(&note, "stop");
        assert_eq!(stop[0], ("EASYNOTE_DEREGISTER_GRACE".to_owned(), 0.5));
        assert_eq!(stop[2].1, 4.0, "{stop:?}");
        let gateway = facts(Role::ApiGateway, &[]);
        assert_eq!(
            (gateway["serves"].as_str(), gateway["database"].as_bool()),
            (Some("http"), Some(false))
        );
        assert_eq!(gateway["callers"], json!(["*"]));
        assert_eq!(gateway["readyz_timeout"], 1.0);
        assert_eq!(facts(Role::All, &[])["identity"], "easy-note");
    }

    #[test]
    fn a_setting_the_service_would_refuse_is_refused() {
        let err = deploy_facts(
            Role::ApiGateway,
            &Env::from_pairs([("EASYNOTE_SHUTDOWN_TIMEOUT", "soon")]),
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("EASYNOTE_SHUTDOWN_TIMEOUT"),
            "{err}"
        );
    }
}
