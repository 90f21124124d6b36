//! Logs, traces and metrics, set up once per process.
//!
//! - Logs: `RUST_LOG` filtering, text or JSON lines (`EASYNOTE_LOG_FORMAT`);
//!   every line logged inside a request carries its `trace_id` and `span_id`.
//! - Traces: `tracing` spans become OpenTelemetry spans (W3C trace context
//!   propagation). They are exported over OTLP (gRPC or HTTP/protobuf) when
//!   an endpoint is configured with the standard `OTEL_*` variables; without
//!   one, spans still get ids (for logs and propagation) and nothing is sent.
//!   `OTEL_SDK_DISABLED=true` turns the OpenTelemetry layer off entirely.
//! - Metrics: the RED instruments of [`metrics`], exported over OTLP too.
//!
//! Export runs in the background with bounded queues: a collector that is
//! down or slow drops telemetry, never requests. [`Telemetry::shutdown`]
//! flushes what is queued.

pub mod grpc;
pub mod metrics;
pub mod propagation;

use std::{collections::HashMap, fmt, io::IsTerminal as _, time::Duration};

use opentelemetry::{KeyValue, global, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    Resource,
    metrics::{SdkMeterProvider, periodic_reader_with_async_runtime::PeriodicReader},
    propagation::TraceContextPropagator,
    runtime,
    trace::{
        BatchConfigBuilder, Sampler, SdkTracerProvider,
        span_processor_with_async_runtime::BatchSpanProcessor,
    },
};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{
    EnvFilter, Layer as _,
    filter::filter_fn,
    fmt::{self as log_fmt, FmtContext, FormatEvent, FormatFields, format::Writer},
    prelude::*,
    registry::LookupSpan,
};

use crate::config::{ConfigError, Env};

/// The default log filter: our own info logs, and only warnings from the
/// noisy libraries underneath (the Nacos SDK logs every cache hit at info).
const DEFAULT_FILTER: &str =
    "info,sqlx=warn,h2=warn,tower=warn,hyper=warn,nacos_sdk=warn,opentelemetry=warn";

/// Crates whose spans are exported (library internals are not).
const OUR_TARGETS: [&str; 5] = [
    "api_gateway",
    "user_service",
    "note_service",
    "easynote_shared",
    "easy_note",
];

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

impl fmt::Debug for OtlpConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header_names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("OtlpConfig")
            .field("protocol", &self.protocol)
            .field("traces_endpoint", &self.traces_endpoint)
            .field("metrics_endpoint", &self.metrics_endpoint)
            .field("header_names", &header_names)
            .field("timeout", &self.timeout)
            .field("metrics_interval", &self.metrics_interval)
            .finish()
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
    /// `EASYNOTE_ENV`, reported as `deployment.environment`.
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

    fn sampler(self) -> Sampler {
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
            return Err(ConfigError::invalid(
                var,
                format!("{url:?} must start with http:// or https://"),
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

/// Telemetry could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A setting is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The OTLP exporter refused its settings.
    #[error("building the OTLP exporter failed")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The installed providers; flush them with [`Telemetry::shutdown`] before exit.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Flushes queued spans and metrics (bounded by the export timeout).
    pub async fn shutdown(self) {
        // The SDK's shutdown blocks on its background tasks; keep it off the
        // async workers that run those tasks.
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(tracer) = self.tracer
                && let Err(err) = tracer.shutdown()
            {
                eprintln!("flushing traces failed: {err}");
            }
            if let Some(meter) = self.meter
                && let Err(err) = meter.shutdown()
            {
                eprintln!("flushing metrics failed: {err}");
            }
        })
        .await;
    }
}

/// Installs logging and OpenTelemetry for the process, as `service_name`.
/// A second call in one process (tests) installs nothing and returns an
/// empty [`Telemetry`].
pub fn init(config: &TelemetryConfig, service_name: &str) -> Result<Telemetry, TelemetryError> {
    let log_filter = EnvFilter::try_new(&config.filter)
        .map_err(|err| ConfigError::invalid("RUST_LOG", err.to_string()))?;
    let fmt_layer = match config.format {
        LogFormat::Text => log_fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .event_format(WithTraceIds {
                inner: log_fmt::format(),
                json: false,
            })
            .with_filter(log_filter)
            .boxed(),
        LogFormat::Json => log_fmt::layer()
            .event_format(WithTraceIds {
                inner: log_fmt::format()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true),
                json: true,
            })
            .fmt_fields(log_fmt::format::JsonFields::new())
            .with_filter(log_filter)
            .boxed(),
    };
    if config.sdk_disabled {
        let _ = tracing_subscriber::registry().with(fmt_layer).try_init();
        return Ok(Telemetry::default());
    }

    let resource = Resource::builder()
        .with_service_name(
            config
                .service_name
                .clone()
                .unwrap_or_else(|| service_name.to_owned()),
        )
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new("deployment.environment", config.environment.clone()),
            KeyValue::new("host.name", host_name()),
        ])
        .build();
    let mut tracer_builder = SdkTracerProvider::builder()
        .with_sampler(config.sampler.sampler())
        .with_resource(resource.clone());
    let mut meter = None;
    if let Some(otlp) = &config.otlp {
        if !otlp.traces_endpoint.is_empty() {
            let processor = BatchSpanProcessor::builder(span_exporter(otlp)?, runtime::Tokio)
                // A collector that is down fills the queue; what does not fit is dropped.
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_max_queue_size(4096)
                        .build(),
                )
                .build();
            tracer_builder = tracer_builder.with_span_processor(processor);
        }
        if !otlp.metrics_endpoint.is_empty() {
            let reader = PeriodicReader::builder(metric_exporter(otlp)?, runtime::Tokio)
                .with_interval(otlp.metrics_interval)
                .with_timeout(otlp.timeout)
                .build();
            let provider = SdkMeterProvider::builder()
                .with_reader(reader)
                .with_resource(resource)
                .build();
            meter = Some(provider);
        }
    }
    let tracer_provider = tracer_builder.build();
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer_provider.tracer("easy-note"))
        .with_filter(filter_fn(|meta| {
            let ours = OUR_TARGETS.iter().any(|t| meta.target().starts_with(t));
            if meta.is_span() {
                ours && *meta.level() <= tracing::Level::INFO
            } else {
                // Warnings and errors become span events of the span they happen in.
                *meta.level() <= tracing::Level::WARN
            }
        }));
    if tracing_subscriber::registry()
        .with(fmt_layer)
        .with(otel_layer)
        .try_init()
        .is_err()
    {
        // Already initialised in this process: keep the first set-up.
        let _ = tracer_provider.shutdown();
        if let Some(meter) = meter {
            let _ = meter.shutdown();
        }
        return Ok(Telemetry::default());
    }
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(tracer_provider.clone());
    if let Some(meter) = &meter {
        global::set_meter_provider(meter.clone());
    }
    if let Some(otlp) = &config.otlp {
        tracing::info!(?otlp, "exporting telemetry over OTLP");
    }
    Ok(Telemetry {
        tracer: Some(tracer_provider),
        meter,
    })
}

/// Both signals' exporters take the same settings; only the builder type
/// and the endpoint differ.
macro_rules! otlp_exporter {
    ($builder:expr, $endpoint:expr, $otlp:expr) => {
        match $otlp.protocol {
            OtlpProtocol::Grpc => $builder
                .with_tonic()
                .with_endpoint($endpoint)
                .with_timeout($otlp.timeout)
                .with_metadata(metadata(&$otlp.headers))
                .build(),
            OtlpProtocol::HttpProtobuf => $builder
                .with_http()
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_endpoint($endpoint)
                .with_timeout($otlp.timeout)
                .with_headers($otlp.headers.iter().cloned().collect::<HashMap<_, _>>())
                .build(),
        }
    };
}

fn span_exporter(
    otlp: &OtlpConfig,
) -> Result<opentelemetry_otlp::SpanExporter, opentelemetry_otlp::ExporterBuildError> {
    otlp_exporter!(
        opentelemetry_otlp::SpanExporter::builder(),
        &otlp.traces_endpoint,
        otlp
    )
}

fn metric_exporter(
    otlp: &OtlpConfig,
) -> Result<opentelemetry_otlp::MetricExporter, opentelemetry_otlp::ExporterBuildError> {
    otlp_exporter!(
        opentelemetry_otlp::MetricExporter::builder(),
        &otlp.metrics_endpoint,
        otlp
    )
}

fn metadata(headers: &[(String, String)]) -> tonic::metadata::MetadataMap {
    let mut map = tonic::metadata::MetadataMap::new();
    for (name, value) in headers {
        let key = tonic::metadata::MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes());
        let value = tonic::metadata::MetadataValue::try_from(value.as_str());
        match (key, value) {
            (Ok(key), Ok(value)) => {
                map.insert(key, value);
            }
            _ => {
                tracing::warn!(header = %name, "ignoring an OTLP header that is not valid gRPC metadata")
            }
        }
    }
    map
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The trace and span id of the current span, if it has a valid context.
pub fn current_ids() -> Option<(String, String)> {
    let context = tracing::Span::current().context();
    let span = opentelemetry::trace::TraceContextExt::span(&context);
    let ids = span.span_context();
    ids.is_valid()
        .then(|| (ids.trace_id().to_string(), ids.span_id().to_string()))
}

/// Wraps an event formatter to add `trace_id` and `span_id` to every line
/// logged inside a traced span: as a prefix on text lines, as fields of the
/// object on JSON lines.
struct WithTraceIds<F> {
    inner: F,
    json: bool,
}

impl<S, N, F> FormatEvent<S, N> for WithTraceIds<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let Some((trace_id, span_id)) = current_ids() else {
            return self.inner.format_event(ctx, writer, event);
        };
        if !self.json {
            write!(writer, "trace_id={trace_id} span_id={span_id} ")?;
            return self.inner.format_event(ctx, writer, event);
        }
        let mut line = String::new();
        self.inner
            .format_event(ctx, Writer::new(&mut line), event)?;
        match line.strip_prefix('{') {
            Some(rest) => write!(
                writer,
                "{{\"trace_id\":\"{trace_id}\",\"span_id\":\"{span_id}\",{rest}"
            ),
            None => writer.write_str(&line),
        }
    }
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
