//! Logs, traces and metrics, set up once per process.
//!
//! - Logs: `RUST_LOG` filtering, text or JSON lines (`EASYNOTE_LOG_FORMAT`);
//!   every line logged inside a request carries its `trace_id` and `span_id`.
//! - Traces: `tracing` spans become OpenTelemetry spans (W3C trace context
//!   propagation). They are exported over OTLP (gRPC or HTTP/protobuf) when
//!   an endpoint is configured with the standard `OTEL_*` variables; without
//!   one, requests still get trace ids (for logs and propagation) and
//!   nothing is sent. `OTEL_SDK_DISABLED=true` turns the OpenTelemetry layer
//!   off entirely.
//!
//! What a span costs is paid only where it can be exported. Without a
//! traces endpoint no OpenTelemetry layer is installed: each request runs
//! under W3C trace ids only (see [`propagation::continue_trace`]), which
//! its logs, its `x-trace-id` and its calls carry, and a caller's sampled
//! flag goes on untouched to the next hop. With one, the sampler decides at
//! a trace's entry into the process (the HTTP server span, a gRPC server
//! span) and the spans beneath an unsampled one are never built (see
//! [`sampled_or_root`]): their logs carry the trace id of the span they run
//! in, and calls they make carry its context on.
//! - Metrics: the RED instruments of [`metrics`], exported over OTLP too.
//!
//! Export runs in the background with bounded queues: a collector that is
//! down or slow drops telemetry, never requests. [`Telemetry::shutdown`]
//! flushes what is queued, traces and metrics at once, within one
//! `OTEL_EXPORTER_OTLP_TIMEOUT` in all: the termination grace period must
//! cover the drain plus that timeout.
//!
//! Every process reports a `service.instance.id` of its own (random, drawn
//! at start), so replicas are distinct in traces and their metric streams
//! do not collide; `OTEL_RESOURCE_ATTRIBUTES` may set it instead.

mod config;
pub mod grpc;
mod log;
pub mod metrics;
pub mod propagation;

pub(crate) use config::percent_decode;
pub use config::{LogFormat, OtlpConfig, OtlpProtocol, SamplerConfig, TelemetryConfig};
use log::WithTraceIds;

use std::{collections::HashMap, io::IsTerminal as _, time::Duration};

use opentelemetry::{Key, KeyValue, global, trace::TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _, WithTonicConfig as _};
use opentelemetry_sdk::{
    Resource,
    metrics::{SdkMeterProvider, periodic_reader_with_async_runtime::PeriodicReader},
    propagation::TraceContextPropagator,
    runtime,
    trace::{
        BatchConfigBuilder, IdGenerator as _, RandomIdGenerator, SdkTracerProvider,
        span_processor_with_async_runtime::BatchSpanProcessor,
    },
};
use tracing::{Metadata, subscriber::Interest};
use tracing_subscriber::{
    EnvFilter, Layer as _, filter::dynamic_filter_fn, fmt as log_fmt, prelude::*,
};

use crate::config::ConfigError;

/// Crates whose spans are exported (library internals are not).
const OUR_TARGETS: [&str; 5] = [
    "api_gateway",
    "user_service",
    "note_service",
    "easynote_shared",
    "easy_note",
];

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

/// Whether the OpenTelemetry layer takes this span or event: our crates'
/// spans at INFO and above, and warnings and errors from anywhere (they
/// become span events of the span they happen in).
///
/// Its callsites are `Interest::sometimes`, never `always`, so that the
/// subscriber's `enabled` runs before every span and event: per-layer
/// filters pass their verdict to `on_new_span` through a thread-local set
/// in `enabled`, and a callsite cached as `always` skips `enabled` and reads
/// whatever the last `enabled` call on the thread left there. A `log`
/// crate `log_enabled!` (sqlx's query logger after every MySQL statement,
/// through `tracing-log`) leaves "disabled" there, and the next span on
/// that tokio worker (a gRPC server span, a `pick`, a SQL span) was then
/// dropped by both layers: its children became new roots
/// (tokio-rs/tracing#2519).
fn exported(meta: &Metadata<'_>) -> bool {
    let ours = OUR_TARGETS.iter().any(|t| meta.target().starts_with(t));
    if meta.is_span() {
        ours && *meta.level() <= tracing::Level::INFO
    } else {
        *meta.level() <= tracing::Level::WARN
    }
}

/// Whether a span opened now is worth building: it would be a root here
/// (no OpenTelemetry span is active on this thread: the sampler decides),
/// or the span it would be a child of is sampled. Beneath an unsampled span
/// nothing is recorded, so its children are not built at all; the active
/// context stays the unsampled parent's, which logs and propagation use.
///
/// The active context is the one the layer attaches when a span it built
/// is entered (context activation), so this reads a thread-local and
/// allocates nothing.
fn sampled_or_root() -> bool {
    opentelemetry::Context::map_current(|cx| {
        let parent = opentelemetry::trace::TraceContextExt::span(cx);
        let parent = parent.span_context();
        !parent.is_valid() || parent.is_sampled()
    })
}

/// The installed providers; flush them with [`Telemetry::shutdown`] before exit.
#[derive(Debug, Default)]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
    /// Bound on the whole flush at shutdown (the OTLP export timeout).
    flush_timeout: Duration,
}

impl Telemetry {
    /// Flushes queued spans and metrics, both at once, for at most the
    /// OTLP export timeout in all: what is not sent by then is dropped, so
    /// the process exits within its termination grace period.
    pub async fn shutdown(self) {
        // The SDK's shutdown blocks on its background tasks, and ignores its
        // timeout argument (0.33): each flush runs on a thread of its own,
        // off the async workers that run those tasks, and a flush still
        // stuck at the deadline is left behind for the process exit to end.
        fn flush(
            signal: &'static str,
            shutdown: impl FnOnce() -> opentelemetry_sdk::error::OTelSdkResult + Send + 'static,
        ) -> tokio::sync::oneshot::Receiver<()> {
            let (done, finished) = tokio::sync::oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name(format!("flush-{signal}"))
                .spawn(move || {
                    if let Err(err) = shutdown() {
                        eprintln!("flushing {signal} failed: {err}");
                    }
                    let _ = done.send(());
                });
            if let Err(err) = spawned {
                eprintln!("flushing {signal} failed: no thread: {err}");
            }
            finished
        }
        let traces = self
            .tracer
            .map(|tracer| flush("traces", move || tracer.shutdown()));
        let metrics = self
            .meter
            .map(|meter| flush("metrics", move || meter.shutdown()));
        let both = async {
            // A dropped sender (a failed spawn) counts as done.
            if let Some(traces) = traces {
                let _ = traces.await;
            }
            if let Some(metrics) = metrics {
                let _ = metrics.await;
            }
        };
        if tokio::time::timeout(self.flush_timeout, both)
            .await
            .is_err()
        {
            eprintln!(
                "flushing telemetry took longer than {:?}: the rest is dropped",
                self.flush_timeout
            );
        }
    }
}

/// A fresh `service.instance.id`: 128 random bits from the SDK's id
/// generator, written as a version 4 UUID (the conventions' advice).
fn new_instance_id() -> String {
    let bits = u128::from_be_bytes(RandomIdGenerator::default().new_trace_id().to_bytes());
    let bits = (bits & !(0xf << 76) | (0x4 << 76)) & !(0x3 << 62) | (0x2 << 62);
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
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
        propagation::set_carrier(propagation::Carrier::Off);
        let _ = tracing_subscriber::registry().with(fmt_layer).try_init();
        return Ok(Telemetry::default());
    }

    // `OTEL_RESOURCE_ATTRIBUTES` (read by the SDK's default detectors) may
    // name the instance; otherwise each process draws its own id.
    let instance_key = Key::from_static_str("service.instance.id");
    let instance_id = Resource::builder()
        .build()
        .get(&instance_key)
        .map_or_else(new_instance_id, |id| id.to_string());
    let resource = Resource::builder()
        .with_service_name(
            config
                .service_name
                .clone()
                .unwrap_or_else(|| service_name.to_owned()),
        )
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new(instance_key, instance_id),
            KeyValue::new("deployment.environment.name", config.environment.clone()),
            KeyValue::new("host.name", host_name()),
        ])
        .build();
    let mut meter = None;
    if let Some(otlp) = config
        .otlp
        .as_ref()
        .filter(|o| !o.metrics_endpoint.is_empty())
    {
        let reader = PeriodicReader::builder(metric_exporter(otlp)?, runtime::Tokio)
            .with_interval(otlp.metrics_interval)
            .with_timeout(otlp.timeout)
            .build();
        meter = Some(
            SdkMeterProvider::builder()
                .with_reader(reader)
                .with_resource(resource.clone())
                .build(),
        );
    }
    let flush_timeout = config
        .otlp
        .as_ref()
        .map_or(Duration::from_secs(1), |otlp| otlp.timeout);

    let Some(otlp) = config
        .otlp
        .as_ref()
        .filter(|o| !o.traces_endpoint.is_empty())
    else {
        // Nowhere to send spans: no OpenTelemetry layer at all. Requests
        // still run under W3C trace ids (logs, `x-trace-id`, the next hop),
        // carried by `propagation::continue_trace` at a fraction of a
        // span's cost.
        if tracing_subscriber::registry()
            .with(fmt_layer)
            .try_init()
            .is_err()
        {
            if let Some(meter) = meter {
                let _ = meter.shutdown();
            }
            return Ok(Telemetry::default());
        }
        propagation::set_carrier(propagation::Carrier::Ids);
        global::set_text_map_propagator(TraceContextPropagator::new());
        if let Some(meter) = &meter {
            global::set_meter_provider(meter.clone());
            tracing::info!(otlp = ?config.otlp, "exporting metrics over OTLP");
        }
        return Ok(Telemetry {
            tracer: None,
            meter,
            flush_timeout,
        });
    };

    let processor = BatchSpanProcessor::builder(span_exporter(otlp)?, runtime::Tokio)
        // A collector that is down fills the queue; what does not fit is dropped.
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(4096)
                .build(),
        )
        .build();
    let tracer_provider = SdkTracerProvider::builder()
        .with_sampler(config.sampler.sampler())
        .with_resource(resource)
        .with_span_processor(processor)
        .build();
    // Spans carry what the code names, nothing per span that costs an
    // allocation or a clock read and that no one asked for: no source
    // location, target, thread or busy/idle times.
    let otel_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer_provider.tracer("easy-note"))
        .with_location(false)
        .with_target(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_filter(
            dynamic_filter_fn(|meta, _| exported(meta) && (!meta.is_span() || sampled_or_root()))
                .with_callsite_filter(|meta| {
                    // Never `always`: see `exported`.
                    if exported(meta) {
                        Interest::sometimes()
                    } else {
                        Interest::never()
                    }
                }),
        );
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
    propagation::set_carrier(propagation::Carrier::Spans);
    global::set_text_map_propagator(TraceContextPropagator::new());
    global::set_tracer_provider(tracer_provider.clone());
    if let Some(meter) = &meter {
        global::set_meter_provider(meter.clone());
    }
    tracing::info!(?otlp, "exporting telemetry over OTLP");
    Ok(Telemetry {
        tracer: Some(tracer_provider),
        meter,
        flush_timeout,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Both transports' exporters build from the settings (a header that is
    /// no valid gRPC metadata is skipped, not fatal), and a shutdown with
    /// spans and metrics queued for a collector that is not there returns
    /// within its bound instead of hanging the process's exit.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exporters_build_for_both_transports_and_shutdown_is_bounded() {
        use opentelemetry::trace::Tracer as _;
        for protocol in [OtlpProtocol::Grpc, OtlpProtocol::HttpProtobuf] {
            // Port 9 (discard): nothing listens there.
            let otlp = OtlpConfig {
                protocol,
                traces_endpoint: "http://127.0.0.1:9/v1/traces".into(),
                metrics_endpoint: "http://127.0.0.1:9/v1/metrics".into(),
                headers: vec![
                    ("Authentication".into(), "token-123".into()),
                    ("not a header".into(), "x".into()),
                ],
                timeout: Duration::from_millis(300),
                metrics_interval: Duration::from_secs(60),
            };
            let spans = span_exporter(&otlp).expect("span exporter");
            let metrics = metric_exporter(&otlp).expect("metric exporter");
            let tracer = SdkTracerProvider::builder()
                .with_span_processor(BatchSpanProcessor::builder(spans, runtime::Tokio).build())
                .build();
            let meter = SdkMeterProvider::builder()
                .with_reader(PeriodicReader::builder(metrics, runtime::Tokio).build())
                .build();
            tracer.tracer("test").in_span("queued", |_| {});
            opentelemetry::metrics::MeterProvider::meter(&meter, "test")
                .u64_counter("queued")
                .build()
                .add(1, &[]);
            let telemetry = Telemetry {
                tracer: Some(tracer),
                meter: Some(meter),
                flush_timeout: otlp.timeout,
            };
            let started = std::time::Instant::now();
            telemetry.shutdown().await;
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{protocol:?}: shutdown took {:?} with a 300 ms bound",
                started.elapsed()
            );
        }
    }

    #[test]
    fn instance_ids_are_fresh_version_4_uuids() {
        let (a, b) = (new_instance_id(), new_instance_id());
        assert_ne!(a, b);
        for id in [a, b] {
            let groups: Vec<&str> = id.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{id}"
            );
            assert!(groups[2].starts_with('4'), "version 4: {id}");
            assert!(
                matches!(&groups[3][..1], "8" | "9" | "a" | "b"),
                "RFC 4122 variant: {id}"
            );
        }
    }
}
