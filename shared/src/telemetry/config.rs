//! Telemetry settings: `RUST_LOG`, `EASYNOTE_LOG_FORMAT` and the standard
//! `OTEL_*` variables, read once and checked.

use std::{fmt, time::Duration};

use opentelemetry_sdk::trace::Sampler;

use crate::config::{ConfigError, Env};

/// The default log filter: our own info logs, and only warnings from the
/// noisy libraries underneath (the Nacos SDK logs every cache hit at info).
const DEFAULT_FILTER: &str = "info,sqlx=warn,h2=warn,tower=warn,hyper=warn,nacos_sdk=warn,nacos_sdk::config::worker=off,nacos_sdk::common::cache=error,opentelemetry=warn";

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (default).
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// OTLP transport (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `grpc`: to port 4317 of a collector, or ARMS's gRPC endpoint.
    Grpc,
    /// `http/protobuf` (the specification's default): to port 4318.
    HttpProtobuf,
}

/// Where and how to export.
#[derive(Clone)]
pub struct OtlpConfig {
    /// Transport.
    pub protocol: OtlpProtocol,
    /// Full URL spans go to.
    pub traces_endpoint: String,
    /// Full URL metrics go to.
    pub metrics_endpoint: String,
    /// `OTEL_EXPORTER_OTLP_HEADERS`: sent with every export (ARMS's
    /// `Authentication` token travels here, so values are never printed).
    pub headers: Vec<(String, String)>,
    /// `OTEL_EXPORTER_OTLP_TIMEOUT` (default 10 s): bound on one export.
    pub timeout: Duration,
    /// `OTEL_METRIC_EXPORT_INTERVAL` (default 60 s).
    pub metrics_interval: Duration,
}

/// Prints endpoints as scheme and authority only (ARMS's HTTP endpoint
/// carries its token in the path) and header names without their values.
impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtlpConfig")
            .field("protocol", &self.protocol)
            .field("traces_endpoint", &redact_endpoint(&self.traces_endpoint))
            .field("metrics_endpoint", &redact_endpoint(&self.metrics_endpoint))
            .field("header_names", &header_names)
            .field("timeout", &self.timeout)
            .field("metrics_interval", &self.metrics_interval)
            .finish()
    }
}

/// `scheme://host:port/…`: the URL without its path, query and user info,
/// any of which may hold a token.
fn redact_endpoint(url: &str) -> String {
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

/// Everything telemetry reads from the environment.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// `RUST_LOG` (default `info` with quiet libraries).
    pub filter: String,
    /// `EASYNOTE_LOG_FORMAT`: `text` (default) or `json`.
    pub format: LogFormat,
    /// `OTEL_SDK_DISABLED=true`: no OpenTelemetry at all.
    pub sdk_disabled: bool,
    /// `None` when no OTLP endpoint is set: spans get ids but are not sent.
    pub otlp: Option<OtlpConfig>,
    /// `OTEL_SERVICE_NAME`: overrides the service's own name.
    pub service_name: Option<String>,
    /// `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG` (default `parentbased_always_on`).
    pub sampler: SamplerConfig,
    /// `EASYNOTE_ENV`, reported as `deployment.environment.name`.
    pub environment: String,
}

/// The head sampler.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SamplerConfig {
    /// `always_on`.
    AlwaysOn,
    /// `always_off`.
    AlwaysOff,
    /// `traceidratio` with the ratio.
    Ratio(f64),
    /// `parentbased_always_on` (default).
    ParentBasedAlwaysOn,
    /// `parentbased_always_off`.
    ParentBasedAlwaysOff,
    /// `parentbased_traceidratio` with the ratio.
    ParentBasedRatio(f64),
}

impl SamplerConfig {
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let ratio = || -> Result<f64, ConfigError> {
            let ratio = env.parse("OTEL_TRACES_SAMPLER_ARG", 1.0f64)?;
            if !(0.0..=1.0).contains(&ratio) {
                return Err(ConfigError::invalid(
                    "OTEL_TRACES_SAMPLER_ARG",
                    "must be between 0 and 1",
                ));
            }
            Ok(ratio)
        };
        Ok(
            match env
                .string("OTEL_TRACES_SAMPLER", "parentbased_always_on")
                .as_str()
            {
                "always_on" => Self::AlwaysOn,
                "always_off" => Self::AlwaysOff,
                "traceidratio" => Self::Ratio(ratio()?),
                "parentbased_always_on" => Self::ParentBasedAlwaysOn,
                "parentbased_always_off" => Self::ParentBasedAlwaysOff,
                "parentbased_traceidratio" => Self::ParentBasedRatio(ratio()?),
                other => {
                    return Err(ConfigError::invalid(
                        "OTEL_TRACES_SAMPLER",
                        format!("{other:?} is not a supported sampler"),
                    ));
                }
            },
        )
    }

    pub(super) fn sampler(self) -> Sampler {
        match self {
            Self::AlwaysOn => Sampler::AlwaysOn,
            Self::AlwaysOff => Sampler::AlwaysOff,
            Self::Ratio(r) => Sampler::TraceIdRatioBased(r),
            Self::ParentBasedAlwaysOn => Sampler::ParentBased(Box::new(Sampler::AlwaysOn)),
            Self::ParentBasedAlwaysOff => Sampler::ParentBased(Box::new(Sampler::AlwaysOff)),
            Self::ParentBasedRatio(r) => {
                Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(r)))
            }
        }
    }
}

impl TelemetryConfig {
    /// Reads the telemetry settings.
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
        Ok(Self {
            filter: env.string("RUST_LOG", DEFAULT_FILTER),
            format,
            sdk_disabled,
            otlp: if sdk_disabled {
                None
            } else {
                otlp_from_env(env)?
            },
            service_name: env.get("OTEL_SERVICE_NAME").map(str::to_owned),
            sampler: SamplerConfig::from_env(env)?,
            environment: env
                .string("EASYNOTE_ENV", "development")
                .to_ascii_lowercase(),
        })
    }
}

fn otlp_from_env(env: &Env) -> Result<Option<OtlpConfig>, ConfigError> {
    let base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT");
    let traces = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
    let metrics = env.get("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT");
    let protocol = match env
        .string("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .as_str()
    {
        "grpc" => OtlpProtocol::Grpc,
        "http/protobuf" => OtlpProtocol::HttpProtobuf,
        other => {
            return Err(ConfigError::invalid(
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                format!("{other:?} is not supported (grpc or http/protobuf)"),
            ));
        }
    };
    if base.is_none() && traces.is_none() && metrics.is_none() {
        return Ok(None);
    }
    // Per the specification: signal endpoints are used as given; the base
    // endpoint gets `/v1/<signal>` appended for HTTP, and is used as is for gRPC.
    let derive = |signal: &str| -> Option<String> {
        base.map(|base| match protocol {
            OtlpProtocol::Grpc => base.to_owned(),
            OtlpProtocol::HttpProtobuf => format!("{}/v1/{signal}", base.trim_end_matches('/')),
        })
    };
    let traces_endpoint = traces.map(str::to_owned).or_else(|| derive("traces"));
    let metrics_endpoint = metrics.map(str::to_owned).or_else(|| derive("metrics"));
    for (var, endpoint) in [
        ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", &traces_endpoint),
        ("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", &metrics_endpoint),
    ] {
        if let Some(url) = endpoint
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            // The value is not echoed: its path may hold a token.
            return Err(ConfigError::invalid(
                var,
                "must start with http:// or https://",
            ));
        }
    }
    let headers = match env.get("OTEL_EXPORTER_OTLP_HEADERS") {
        None => Vec::new(),
        Some(raw) => parse_headers(raw)
            .map_err(|reason| ConfigError::invalid("OTEL_EXPORTER_OTLP_HEADERS", reason))?,
    };
    Ok(Some(OtlpConfig {
        protocol,
        // An endpoint for one signal only: the other is simply not exported.
        traces_endpoint: traces_endpoint.unwrap_or_default(),
        metrics_endpoint: metrics_endpoint.unwrap_or_default(),
        headers,
        timeout: Duration::from_millis(env.parse("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000u64)?),
        metrics_interval: Duration::from_millis(
            env.parse("OTEL_METRIC_EXPORT_INTERVAL", 60_000u64)?,
        ),
    }))
}

/// `key=value,key2=value2`, values percent-decoded (the W3C baggage format
/// the specification prescribes). Errors never echo a value.
fn parse_headers(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| "expected key=value pairs separated by commas".to_owned())?;
            let key = key.trim();
            if key.is_empty() {
                return Err("a header name is empty".to_owned());
            }
            Ok((key.to_owned(), percent_decode(value.trim())))
        })
        .collect()
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

    fn otlp(pairs: &[(&str, &str)]) -> Option<OtlpConfig> {
        TelemetryConfig::from_env(&Env::from_pairs(pairs.iter().copied()))
            .expect("valid")
            .otlp
    }

    #[test]
    fn no_endpoint_means_no_export() {
        assert!(otlp(&[]).is_none());
        assert!(
            otlp(&[
                ("OTEL_SDK_DISABLED", "true"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")
            ])
            .is_none()
        );
    }

    #[test]
    fn endpoints_follow_the_specification() {
        let http =
            otlp(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).expect("otlp");
        assert_eq!(
            http.protocol,
            OtlpProtocol::HttpProtobuf,
            "http/protobuf is the default"
        );
        assert_eq!(http.traces_endpoint, "http://collector:4318/v1/traces");
        assert_eq!(http.metrics_endpoint, "http://collector:4318/v1/metrics");

        let grpc = otlp(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ])
        .expect("otlp");
        assert_eq!(grpc.traces_endpoint, "http://collector:4317");

        let arms = otlp(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "http://tracing-analysis-dc-hz.aliyuncs.com/adapt_token/api/otlp/traces",
        )])
        .expect("otlp");
        assert_eq!(
            arms.traces_endpoint,
            "http://tracing-analysis-dc-hz.aliyuncs.com/adapt_token/api/otlp/traces"
        );
        assert_eq!(
            arms.metrics_endpoint, "",
            "no metrics endpoint: metrics are not exported"
        );
    }

    #[test]
    fn endpoints_are_shown_without_their_path() {
        let arms = otlp(&[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://tracing-analysis-dc-hz.aliyuncs.com/adapt_s3cr3t@abc_123/api/otlp/traces",
            ),
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "https://user:pa55@collector:4318/adapt_s3cr3t/api/otlp/metrics?token=s3cr3t",
            ),
        ])
        .expect("otlp");
        let shown = format!("{arms:?}");
        assert!(!shown.contains("s3cr3t"), "a token leaked: {shown}");
        assert!(!shown.contains("pa55"), "a password leaked: {shown}");
        assert!(
            shown.contains("http://tracing-analysis-dc-hz.aliyuncs.com/…")
                && shown.contains("https://collector:4318/…"),
            "where telemetry goes is still shown: {shown}"
        );
        let bad = TelemetryConfig::from_env(&Env::from_pairs([(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "collector/adapt_s3cr3t/api/otlp/traces",
        )]))
        .expect_err("no scheme");
        assert!(!bad.to_string().contains("s3cr3t"), "{bad}");
    }

    #[test]
    fn headers_are_parsed_and_never_shown() {
        let config = otlp(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authentication=s3cr%3Dt, x-team = notes",
            ),
        ])
        .expect("otlp");
        assert_eq!(
            config.headers,
            vec![
                ("Authentication".into(), "s3cr=t".into()),
                ("x-team".into(), "notes".into())
            ]
        );
        assert!(
            !format!("{config:?}").contains("s3cr"),
            "header values must not be printed"
        );
        let bad = TelemetryConfig::from_env(&Env::from_pairs([
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "token-without-name"),
        ]));
        assert!(bad.is_err());
    }

    #[test]
    fn bad_settings_are_named() {
        let cases = [
            (
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (("OTEL_TRACES_SAMPLER", "sometimes"), "OTEL_TRACES_SAMPLER"),
            (
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
        ];
        for ((var, value), named) in cases {
            let err = TelemetryConfig::from_env(&Env::from_pairs([(var, value)]))
                .expect_err(var)
                .to_string();
            assert!(err.starts_with(named), "{var}={value}: {err}");
        }
        let ratio = TelemetryConfig::from_env(&Env::from_pairs([
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]))
        .expect("ratio");
        assert_eq!(ratio.sampler, SamplerConfig::ParentBasedRatio(0.25));
    }
}
