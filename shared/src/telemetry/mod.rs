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
//! The OpenTelemetry SDK reads the standard `OTEL_*` variables itself
//! (exporters, batching, sampler, resource); [`TelemetryConfig`] decides
//! only what is exported and checks the values the SDK would silently
//! replace by its defaults.
//!
//! Export runs in the background with bounded queues: a collector that is
//! down or slow drops telemetry, never requests. [`Telemetry::shutdown`]
//! flushes what is queued, traces and metrics at once, within one export
//! timeout in all: the termination grace period must cover the drain plus
//! that timeout.
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
pub use config::{Exports, LogFormat, SignalExport, TelemetryConfig};
use log::WithTraceIds;

use std::{io::IsTerminal as _, time::Duration};

use opentelemetry::{Key, KeyValue, global, trace::TracerProvider as _};
use opentelemetry_sdk::{
    Resource,
    metrics::{SdkMeterProvider, periodic_reader_with_async_runtime::PeriodicReader},
    propagation::TraceContextPropagator,
    runtime,
    trace::{
        IdGenerator as _, RandomIdGenerator, SdkTracerProvider,
        span_processor_with_async_runtime::BatchSpanProcessor,
    },
};
use tracing::{Metadata, subscriber::Interest};
use tracing_subscriber::{EnvFilter, Layer, filter::dynamic_filter_fn, fmt as log_fmt, prelude::*};

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
    /// The OTLP exporter of a signal refused its settings.
    #[error("building the OTLP {signal} exporter failed: {reason}")]
    Exporter {
        /// `traces` or `metrics`.
        signal: &'static str,
        /// The SDK's reason, with every quoted value left out: it quotes
        /// an endpoint it cannot parse, and an endpoint may hold a token.
        reason: String,
    },
}

impl TelemetryError {
    fn exporter(signal: &'static str, err: &opentelemetry_otlp::ExporterBuildError) -> Self {
        Self::Exporter {
            signal,
            reason: without_quoted(&err.to_string()),
        }
    }
}

/// `text` with what stands between single quotes replaced by `…`.
fn without_quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for (i, part) in text.split('\'').enumerate() {
        if i % 2 == 0 {
            out.push_str(part);
        } else {
            out.push_str("'…'");
        }
    }
    out
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

/// Installs logging and OpenTelemetry for the process, as `service_name`:
/// the log layer, then a meter provider and a tracer provider for the
/// signals that are exported. A second call in one process (tests)
/// installs nothing and returns an empty [`Telemetry`].
pub fn init(config: &TelemetryConfig, service_name: &str) -> Result<Telemetry, TelemetryError> {
    let log_layer = log_layer(config)?;
    if config.sdk_disabled {
        propagation::set_carrier(propagation::Carrier::Off);
        let _ = tracing_subscriber::registry().with(log_layer).try_init();
        return Ok(Telemetry::default());
    }
    let resource = resource(service_name, &config.environment);
    let meter = match &config.exports.metrics {
        Some(_) => Some(meter_provider(resource.clone())?),
        None => None,
    };
    let tracer = match &config.exports.traces {
        Some(_) => Some(tracer_provider(resource)?),
        None => None,
    };
    // Without a tracer no OpenTelemetry layer at all: requests still run
    // under W3C trace ids (logs, `x-trace-id`, the next hop), carried by
    // `propagation::continue_trace` at a fraction of a span's cost.
    let installed = match &tracer {
        None => tracing_subscriber::registry().with(log_layer).try_init(),
        Some(tracer) => tracing_subscriber::registry()
            .with(log_layer)
            .with(span_layer(tracer))
            .try_init(),
    };
    if installed.is_err() {
        // Already initialised in this process: keep the first set-up.
        if let Some(tracer) = tracer {
            let _ = tracer.shutdown();
        }
        if let Some(meter) = meter {
            let _ = meter.shutdown();
        }
        return Ok(Telemetry::default());
    }
    propagation::set_carrier(if tracer.is_some() {
        propagation::Carrier::Spans
    } else {
        propagation::Carrier::Ids
    });
    global::set_text_map_propagator(TraceContextPropagator::new());
    if let Some(tracer) = &tracer {
        global::set_tracer_provider(tracer.clone());
    }
    if let Some(meter) = &meter {
        global::set_meter_provider(meter.clone());
    }
    if tracer.is_some() || meter.is_some() {
        tracing::info!(exports = ?config.exports, "exporting telemetry over OTLP");
    }
    Ok(Telemetry {
        tracer,
        meter,
        flush_timeout: config.flush_timeout,
    })
}

/// Log lines: `RUST_LOG`'s filter, text or JSON, each with the trace and
/// span ids of the request it was logged in.
fn log_layer<S>(config: &TelemetryConfig) -> Result<Box<dyn Layer<S> + Send + Sync>, TelemetryError>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    let filter = EnvFilter::try_new(&config.filter)
        .map_err(|err| ConfigError::invalid("RUST_LOG", err.to_string()))?;
    Ok(match config.format {
        LogFormat::Text => log_fmt::layer()
            .with_ansi(std::io::stdout().is_terminal())
            .event_format(WithTraceIds {
                inner: log_fmt::format(),
                json: false,
            })
            .with_filter(filter)
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
            .with_filter(filter)
            .boxed(),
    })
}

/// Metrics: the SDK reads the exporter's endpoint, protocol, headers and
/// timeout, and the reader's interval, from `OTEL_*` itself.
fn meter_provider(resource: Resource) -> Result<SdkMeterProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::MetricExporter::builder()
        .build()
        .map_err(|err| TelemetryError::exporter("metrics", &err))?;
    let reader = PeriodicReader::builder(exporter, runtime::Tokio).build();
    Ok(SdkMeterProvider::builder()
        .with_reader(reader)
        .with_resource(resource)
        .build())
}

/// Traces: the exporter's settings, the batch queue (`OTEL_BSP_*`) and the
/// sampler (`OTEL_TRACES_SAMPLER`) are the SDK's own reading of `OTEL_*`.
/// A collector that is down fills the queue; what does not fit is dropped.
fn tracer_provider(resource: Resource) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .build()
        .map_err(|err| TelemetryError::exporter("traces", &err))?;
    let processor = BatchSpanProcessor::builder(exporter, runtime::Tokio).build();
    Ok(SdkTracerProvider::builder()
        .with_resource(resource)
        .with_span_processor(processor)
        .build())
}

/// `tracing` spans as OpenTelemetry spans. They carry what the code names,
/// nothing per span that costs an allocation or a clock read and that no
/// one asked for: no source location, target, thread or busy/idle times;
/// spans beneath an unsampled one are never built.
fn span_layer<S>(tracer: &SdkTracerProvider) -> impl Layer<S> + use<S>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer("easy-note"))
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
        )
}

/// The process's resource. The SDK's detectors read `OTEL_SERVICE_NAME`
/// and `OTEL_RESOURCE_ATTRIBUTES`; where they name no service, the
/// service's own name is used, and where they give no
/// `service.instance.id`, each process draws its own.
fn resource(service_name: &str, environment: &str) -> Resource {
    // The detectors run once; what they found is the base of the resource.
    let detected = Resource::builder().build();
    let instance_key = Key::from_static_str("service.instance.id");
    let instance_id = detected
        .get(&instance_key)
        .map_or_else(new_instance_id, |id| id.to_string());
    let named = detected
        .get(&Key::from_static_str("service.name"))
        .is_some_and(|name| !name.as_str().starts_with("unknown_service"));
    let mut builder = Resource::builder_empty().with_attributes(
        detected
            .iter()
            .map(|(key, value)| KeyValue::new(key.clone(), value.clone())),
    );
    if !named {
        builder = builder.with_service_name(service_name.to_owned());
    }
    builder
        .with_attributes([
            KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
            KeyValue::new(instance_key, instance_id),
            KeyValue::new("deployment.environment.name", environment.to_owned()),
            KeyValue::new("host.name", host_name()),
        ])
        .build()
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

    /// A shutdown with spans and metrics queued for a collector that is not
    /// there returns within its bound instead of hanging the process's
    /// exit, over either transport.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_is_bounded_over_both_transports() {
        use opentelemetry::trace::Tracer as _;
        use opentelemetry_otlp::{MetricExporter, SpanExporter, WithExportConfig as _};
        // Port 9 (discard): nothing listens there.
        let endpoint = "http://127.0.0.1:9";
        let exporters = [
            (
                SpanExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .build(),
                MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .build(),
            ),
            (
                SpanExporter::builder()
                    .with_http()
                    .with_endpoint(format!("{endpoint}/v1/traces"))
                    .build(),
                MetricExporter::builder()
                    .with_http()
                    .with_endpoint(format!("{endpoint}/v1/metrics"))
                    .build(),
            ),
        ];
        for (spans, metrics) in exporters {
            let tracer = SdkTracerProvider::builder()
                .with_span_processor(
                    BatchSpanProcessor::builder(spans.expect("span exporter"), runtime::Tokio)
                        .build(),
                )
                .build();
            let meter = SdkMeterProvider::builder()
                .with_reader(
                    PeriodicReader::builder(metrics.expect("metric exporter"), runtime::Tokio)
                        .build(),
                )
                .build();
            tracer.tracer("test").in_span("queued", |_| {});
            opentelemetry::metrics::MeterProvider::meter(&meter, "test")
                .u64_counter("queued")
                .build()
                .add(1, &[]);
            let telemetry = Telemetry {
                tracer: Some(tracer),
                meter: Some(meter),
                flush_timeout: Duration::from_millis(300),
            };
            let started = std::time::Instant::now();
            telemetry.shutdown().await;
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "shutdown took {:?} with a 300 ms bound",
                started.elapsed()
            );
        }
    }

    #[test]
    fn quoted_values_are_left_out_of_exporter_errors() {
        assert_eq!(
            without_quoted("invalid endpoint 'http://h/adapt_s3cr3t/x y': invalid uri character"),
            "invalid endpoint '…': invalid uri character"
        );
        assert_eq!(without_quoted("no quotes"), "no quotes");
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
