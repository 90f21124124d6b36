//! Telemetry settings: `RUST_LOG`, `EASYNOTE_LOG_FORMAT` and the standard
//! `OTEL_*` variables.
//!
//! The OpenTelemetry SDK reads its own variables (endpoints, protocol,
//! headers, timeouts, batching, the metric interval, the sampler, the
//! service name and resource attributes) when the exporters and providers
//! are built. What is read here is only what the SDK leaves to us:
//! - whether anything is exported at all, and which signals (an endpoint
//!   set for them, `OTEL_{TRACES,METRICS}_EXPORTER` not `none`), which
//!   decides whether an OpenTelemetry layer is installed;
//! - the bound on the flush at shutdown (the export timeouts);
//! - and a check of every value the SDK would silently replace with its
//!   default or drop (a misspelt sampler, a header without `=`, a timeout
//!   that is no number, a protocol this build lacks), so a typo is an
//!   error at start instead of telemetry quietly going elsewhere.
//!
//! Endpoint values are never echoed: ARMS's HTTP endpoint carries its token
//! in the path.

use std::time::Duration;

use crate::config::{ConfigError, Env};

/// The default log filter: our own info logs, and only warnings from the
/// noisy libraries underneath (the Nacos SDK logs every cache hit at info).
const DEFAULT_FILTER: &str = "info,sqlx=warn,h2=warn,tower=warn,hyper=warn,nacos_sdk=warn,nacos_sdk::config::worker=off,nacos_sdk::common::cache=error,opentelemetry=warn";

/// The SDK's export timeout when none is set (the specification's 10 s).
const DEFAULT_EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (default).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// A signal exported over OTLP, as the SDK will export it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalExport {
    /// Where it goes, as scheme and authority only (for logs).
    pub endpoint: String,
    /// `grpc` or `http/protobuf`.
    pub protocol: &'static str,
}

/// Which signals are exported (`None`: that signal is not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exports {
    /// Spans.
    pub traces: Option<SignalExport>,
    /// Metrics.
    pub metrics: Option<SignalExport>,
}

/// Everything telemetry decides from the environment.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `RUST_LOG` (default `info` with quiet libraries).
    pub filter: String,
    /// `EASYNOTE_LOG_FORMAT`: `text` (default) or `json`.
    pub format: LogFormat,
    /// `OTEL_SDK_DISABLED=true`: no OpenTelemetry at all.
    pub sdk_disabled: bool,
    /// What is exported. Without a traces export no OpenTelemetry layer is
    /// installed and requests carry W3C trace ids only.
    pub exports: Exports,
    /// Bound on the whole flush at shutdown: the longest export timeout of
    /// the exported signals (`OTEL_EXPORTER_OTLP_[SIGNAL_]TIMEOUT`, 10 s by
    /// default).
    pub flush_timeout: Duration,
    /// `EASYNOTE_ENV`, reported as `deployment.environment.name`.
    pub environment: String,
}

impl TelemetryConfig {
    /// Reads the telemetry settings, and checks the `OTEL_*` values the SDK
    /// would not report.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let format = match env.string("EASYNOTE_LOG_FORMAT", "text").as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::invalid(
                    "EASYNOTE_LOG_FORMAT",
                    format!("{other:?} is neither text nor json"),
                ));
            }
        };
        let sdk_disabled = env.parse("OTEL_SDK_DISABLED", false)?;
        let none = Exports {
            traces: None,
            metrics: None,
        };
        let (exports, flush_timeout) = if sdk_disabled {
            (none, Duration::ZERO)
        } else {
            check_sdk_settings(env)?;
            let traces = signal(env, Signal::Traces)?;
            let metrics = signal(env, Signal::Metrics)?;
            let flush_timeout = [&traces, &metrics]
                .into_iter()
                .flatten()
                .map(|(_, timeout)| *timeout)
                .max()
                .unwrap_or(Duration::ZERO);
            (
                Exports {
                    traces: traces.map(|(export, _)| export),
                    metrics: metrics.map(|(export, _)| export),
                },
                flush_timeout,
            )
        };
        Ok(Self {
            filter: env.string("RUST_LOG", DEFAULT_FILTER),
            format,
            sdk_disabled,
            exports,
            flush_timeout,
            environment: env
                .string("EASYNOTE_ENV", "development")
                .to_ascii_lowercase(),
        })
    }
}

/// The two exported signals, by the names their variables use.
#[derive(Debug, Clone, Copy)]
enum Signal {
    Traces,
    Metrics,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Self::Traces => "TRACES",
            Self::Metrics => "METRICS",
        }
    }
}

/// Whether `signal` is exported and how, with its export timeout: the
/// variables the SDK reads, with its precedence (the signal's own variable
/// over the shared one).
fn signal(env: &Env, signal: Signal) -> Result<Option<(SignalExport, Duration)>, ConfigError> {
    let name = signal.name();
    let exporter_var = format!("OTEL_{name}_EXPORTER");
    match env.get(&exporter_var) {
        None | Some("otlp") => {}
        Some("none") => return Ok(None),
        Some(other) => {
            return Err(ConfigError::invalid(
                &exporter_var,
                format!("{other:?} is not supported (otlp or none)"),
            ));
        }
    }
    let protocol_var = format!("OTEL_EXPORTER_OTLP_{name}_PROTOCOL");
    let (var, protocol) = first_set(env, &[&protocol_var, "OTEL_EXPORTER_OTLP_PROTOCOL"])
        .unwrap_or(("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"));
    let protocol = match protocol.to_ascii_lowercase().as_str() {
        "grpc" => "grpc",
        "http/protobuf" => "http/protobuf",
        other => {
            return Err(ConfigError::invalid(
                var,
                format!("{other:?} is not supported (grpc or http/protobuf)"),
            ));
        }
    };
    let endpoint_var = format!("OTEL_EXPORTER_OTLP_{name}_ENDPOINT");
    let Some((var, endpoint)) = first_set(env, &[&endpoint_var, "OTEL_EXPORTER_OTLP_ENDPOINT"])
    else {
        return Ok(None);
    };
    if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
        // The value is not echoed: its path may hold a token.
        return Err(ConfigError::invalid(
            var,
            "must start with http:// or https://",
        ));
    }
    let timeout_var = format!("OTEL_EXPORTER_OTLP_{name}_TIMEOUT");
    let timeout = match first_set(env, &[&timeout_var, "OTEL_EXPORTER_OTLP_TIMEOUT"]) {
        Some((var, _)) => Duration::from_millis(env.parse::<u64>(var, 0)?),
        None => DEFAULT_EXPORT_TIMEOUT,
    };
    Ok(Some((
        SignalExport {
            endpoint: redact_endpoint(endpoint),
            protocol,
        },
        timeout,
    )))
}

/// The first of `vars` that is set, with its value.
fn first_set<'a>(env: &'a Env, vars: &[&'a str]) -> Option<(&'a str, &'a str)> {
    vars.iter()
        .find_map(|&var| env.get(var).map(|value| (var, value)))
}

/// The SDK's variables whose bad values it would replace by a default or
/// drop without a word: checked here, whether or not anything is exported.
fn check_sdk_settings(env: &Env) -> Result<(), ConfigError> {
    for var in [
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_METRICS_TIMEOUT",
        "OTEL_METRIC_EXPORT_INTERVAL",
        "OTEL_METRIC_EXPORT_TIMEOUT",
        "OTEL_BSP_SCHEDULE_DELAY",
        "OTEL_BSP_EXPORT_TIMEOUT",
        "OTEL_BSP_MAX_QUEUE_SIZE",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
    ] {
        env.parse::<u64>(var, 0)?;
    }
    for var in [
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
        "OTEL_EXPORTER_OTLP_METRICS_HEADERS",
    ] {
        if let Some(raw) = env.get(var) {
            check_headers(raw).map_err(|reason| ConfigError::invalid(var, reason))?;
        }
    }
    check_sampler(env)
}

/// `OTEL_TRACES_SAMPLER` and its argument: the SDK falls back to
/// `parentbased_always_on`, or to a ratio of 1, on a value it does not know.
fn check_sampler(env: &Env) -> Result<(), ConfigError> {
    let sampler = env.string("OTEL_TRACES_SAMPLER", "parentbased_always_on");
    match sampler.as_str() {
        "always_on" | "always_off" | "parentbased_always_on" | "parentbased_always_off" => Ok(()),
        "traceidratio" | "parentbased_traceidratio" => {
            let ratio = env.parse("OTEL_TRACES_SAMPLER_ARG", 1.0f64)?;
            if (0.0..=1.0).contains(&ratio) {
                Ok(())
            } else {
                Err(ConfigError::invalid(
                    "OTEL_TRACES_SAMPLER_ARG",
                    "must be between 0 and 1",
                ))
            }
        }
        other => Err(ConfigError::invalid(
            "OTEL_TRACES_SAMPLER",
            format!("{other:?} is not a supported sampler"),
        )),
    }
}

/// `key=value,key2=value2`, values percent-encoded (the W3C baggage format
/// the specification prescribes): every pair must have a name that is a
/// valid header name and a non-empty value, or the SDK would drop it.
/// Errors never echo a value.
fn check_headers(raw: &str) -> Result<(), String> {
    for pair in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| "expected key=value pairs separated by commas".to_owned())?;
        let key = key.trim();
        if key.is_empty() {
            return Err("a header name is empty".to_owned());
        }
        if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&'*+-.^_`|~".contains(&b))
        {
            return Err(format!("{key:?} is not a valid header name"));
        }
        let value = percent_decode(value.trim());
        if value.is_empty() {
            return Err(format!("the value of {key} is empty"));
        }
        if value.chars().any(char::is_control) {
            return Err(format!("the value of {key} holds a control character"));
        }
    }
    Ok(())
}

/// `scheme://host:port/…`: the URL without its path, query and user info,
/// any of which may hold a token.
pub(crate) fn redact_endpoint(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let hidden = if rest.len() > authority.len() {
        "/…"
    } else {
        ""
    };
    if scheme.is_empty() {
        format!("{host}{hidden}")
    } else {
        format!("{scheme}://{host}{hidden}")
    }
}

/// Decodes `%XX` escapes (OTLP header values, gRPC `grpc-message`).
pub(crate) fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(byte) = bytes
                .get(i + 1..i + 3)
                .and_then(|hex| std::str::from_utf8(hex).ok())
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
        {
            out.push(byte);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(pairs: &[(&str, &str)]) -> TelemetryConfig {
        TelemetryConfig::from_env(&Env::from_pairs(pairs.iter().copied())).expect("valid")
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        TelemetryConfig::from_env(&Env::from_pairs(pairs.iter().copied()))
            .expect_err("invalid")
            .to_string()
    }

    fn export(endpoint: &str, protocol: &'static str) -> Option<SignalExport> {
        Some(SignalExport {
            endpoint: endpoint.to_owned(),
            protocol,
        })
    }

    #[test]
    fn no_endpoint_means_no_export() {
        let none = config(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]);
        assert_eq!((none.exports.traces, none.exports.metrics), (None, None));
        assert_eq!(none.flush_timeout, Duration::ZERO);
        let disabled = config(&[
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
        ]);
        assert!(disabled.sdk_disabled);
        assert_eq!(disabled.exports.traces, None);
    }

    #[test]
    fn signals_follow_the_sdks_precedence() {
        let both = config(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]);
        assert_eq!(
            both.exports,
            Exports {
                traces: export("http://collector:4318/…", "http/protobuf"),
                metrics: export("http://collector:4318/…", "http/protobuf"),
            },
            "http/protobuf is the default"
        );
        assert_eq!(both.flush_timeout, Duration::from_secs(10));

        let grpc_traces = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://jaeger:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc"),
            ("OTEL_METRICS_EXPORTER", "none"),
        ]);
        assert_eq!(
            grpc_traces.exports,
            Exports {
                traces: export("http://jaeger:4317", "grpc"),
                metrics: None,
            }
        );

        let arms = config(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://tracing-analysis-dc-hz.aliyuncs.com/adapt_token/api/otlp/traces",
        )]);
        assert!(arms.exports.traces.is_some());
        assert_eq!(arms.exports.metrics, None, "no metrics endpoint");
    }

    #[test]
    fn the_flush_is_bounded_by_the_longest_export_timeout() {
        let timeouts = config(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "3500"),
        ]);
        assert_eq!(timeouts.flush_timeout, Duration::from_millis(3500));
        let traces_only = config(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c:4318/v1/traces",
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_EXPORTER_OTLP_METRICS_TIMEOUT", "3500"),
        ]);
        assert_eq!(traces_only.flush_timeout, Duration::from_millis(2000));
    }

    #[test]
    fn endpoints_are_shown_without_their_path() {
        let arms = config(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://tracing-analysis-dc-hz.aliyuncs.com/adapt_s3cr3t@abc_123/api/otlp/traces",
            ),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "https://user:pa55@collector:4318/adapt_s3cr3t/api/otlp/metrics?token=s3cr3t",
            ),
        ]);
        let shown = format!("{arms:?}");
        assert!(!shown.contains("s3cr3t"), "a token leaked: {shown}");
        assert!(!shown.contains("pa55"), "a password leaked: {shown}");
        assert!(
            shown.contains("http://tracing-analysis-dc-hz.aliyuncs.com/…")
                && shown.contains("https://collector:4318/…"),
            "where telemetry goes is still shown: {shown}"
        );
        let bad = error(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "collector/adapt_s3cr3t/api/otlp/traces",
        )]);
        assert!(!bad.contains("s3cr3t"), "{bad}");
    }

    #[test]
    fn headers_the_sdk_would_drop_are_refused_without_their_values() {
        config(&[(
            "OTEL_EXPORTER_OTLP_HEADERS",
            "Authentication=s3cr%3Dt, x-team = notes",
        )]);
        for (var, raw) in [
            ("OTEL_EXPORTER_OTLP_HEADERS", "s3cr3t-without-name"),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "=s3cr3t"),
            ("OTEL_EXPORTER_OTLP_METRICS_HEADERS", "bad name=s3cr3t"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "Authentication="),
            ("OTEL_EXPORTER_OTLP_HEADERS", "Authentication=s3cr3t%0A"),
        ] {
            let err = error(&[(var, raw)]);
            assert!(err.starts_with(var), "{var}={raw}: {err}");
            assert!(!err.contains("s3cr3t"), "a value leaked: {err}");
        }
    }

    #[test]
    fn values_the_sdk_would_replace_by_its_default_are_named() {
        let cases = [
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "udp"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
            ("OTEL_METRIC_EXPORT_INTERVAL", "1m"),
            ("OTEL_BSP_SCHEDULE_DELAY", "-1"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "many"),
            ("OTEL_TRACES_EXPORTER", "console"),
        ];
        for (var, value) in cases {
            let err = error(&[
                (var, value),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ]);
            assert!(err.starts_with(var), "{var}={value}: {err}");
        }
        let err = error(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
        ]);
        assert!(err.starts_with("OTEL_TRACES_SAMPLER_ARG"), "{err}");
        config(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]);
        let err = error(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")]);
        assert!(err.starts_with("OTEL_EXPORTER_OTLP_ENDPOINT"), "{err}");
    }
}
