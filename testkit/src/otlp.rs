//! A real OTLP receiver for tests, on the official protos: the
//! `opentelemetry-proto` tonic servers for gRPC, and a small HTTP server
//! decoding `http/protobuf` bodies. It keeps every span, metric name and
//! request header it receives.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{AnyValue, KeyValue, any_value::Value},
    metrics::v1::metric::Data,
};
use prost::Message as _;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::wrappers::TcpListenerStream;

/// One received span, flattened for assertions.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// The attributes of the resource that sent it, values as text.
    pub resource: BTreeMap<String, String>,
    /// Span name.
    pub name: String,
    /// Hex trace id.
    pub trace_id: String,
    /// Hex span id.
    pub span_id: String,
    /// Hex parent span id; empty for a root span.
    pub parent_span_id: String,
    /// OTLP span kind (2 server, 3 client, 1 internal).
    pub kind: i32,
    /// Attributes, values as text.
    pub attributes: BTreeMap<String, String>,
    /// OTLP status code (0 unset, 1 ok, 2 error).
    pub status_code: i32,
    /// Status message.
    pub status_message: String,
    /// Start, in nanoseconds since the Unix epoch.
    pub start_unix_nanos: u64,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
}

impl ReceivedSpan {
    /// An attribute's value as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// One received metric data point: name, instrument kind and unit, and
/// attributes as text.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedPoint {
    /// `service.name` of the resource that sent it.
    pub service: String,
    /// The attributes of the resource that sent it, values as text.
    pub resource: BTreeMap<String, String>,
    /// Instrument name.
    pub metric: String,
    /// What kind of data the metric carries.
    pub kind: PointKind,
    /// The instrument's unit (`s`, `By`, or empty).
    pub unit: String,
    /// Point attributes.
    pub attributes: BTreeMap<String, String>,
}

/// The data a metric carries, as OTLP encodes it: what decides its name in
/// Prometheus (`_total` for counters, `_bucket`/`_sum`/`_count` for
/// histograms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PointKind {
    /// Explicit-bucket histogram.
    Histogram,
    /// Exponential histogram.
    ExponentialHistogram,
    /// A sum: a counter when monotonic, an up-down counter otherwise.
    Sum {
        /// Whether it only goes up.
        monotonic: bool,
    },
    /// Gauge.
    Gauge,
    /// Summary (not made by the OpenTelemetry SDKs, kept for completeness).
    Summary,
    /// A metric without data.
    Empty,
}

impl PointKind {
    /// The kind's name: `histogram`, `exponential_histogram`, `counter`,
    /// `updowncounter`, `gauge`, `summary` or `empty`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Histogram => "histogram",
            Self::ExponentialHistogram => "exponential_histogram",
            Self::Sum { monotonic: true } => "counter",
            Self::Sum { monotonic: false } => "updowncounter",
            Self::Gauge => "gauge",
            Self::Summary => "summary",
            Self::Empty => "empty",
        }
    }
}

#[derive(Debug, Default)]
struct Store {
    spans: Vec<ReceivedSpan>,
    points: Vec<ReceivedPoint>,
    headers: Vec<BTreeMap<String, String>>,
}

type Shared = Arc<Mutex<Store>>;

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

/// The resource's attributes, and its `service.name` among them.
fn resource_of(
    resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
) -> (String, BTreeMap<String, String>) {
    let attributes = resource
        .map(|r| attributes(&r.attributes))
        .unwrap_or_default();
    let service = attributes.get("service.name").cloned().unwrap_or_default();
    (service, attributes)
}

fn store_traces(
    store: &Shared,
    request: &ExportTraceServiceRequest,
    headers: BTreeMap<String, String>,
) {
    let mut store = store.lock().expect("receiver store");
    store.headers.push(headers);
    for resource_spans in &request.resource_spans {
        let (service, resource) = resource_of(resource_spans.resource.as_ref());
        for scope in &resource_spans.scope_spans {
            for span in &scope.spans {
                let status = span.status.clone().unwrap_or_default();
                store.spans.push(ReceivedSpan {
                    service: service.clone(),
                    resource: resource.clone(),
                    name: span.name.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    status_code: status.code,
                    status_message: status.message,
                    start_unix_nanos: span.start_time_unix_nano,
                    end_unix_nanos: span.end_time_unix_nano,
                });
            }
        }
    }
}

fn store_metrics(
    store: &Shared,
    request: &ExportMetricsServiceRequest,
    headers: BTreeMap<String, String>,
) {
    let mut store = store.lock().expect("receiver store");
    store.headers.push(headers);
    for resource_metrics in &request.resource_metrics {
        let (service, resource) = resource_of(resource_metrics.resource.as_ref());
        for scope in &resource_metrics.scope_metrics {
            for metric in &scope.metrics {
                let (kind, point_attributes): (PointKind, Vec<BTreeMap<String, String>>) =
                    match &metric.data {
                        Some(Data::Histogram(h)) => (
                            PointKind::Histogram,
                            h.data_points
                                .iter()
                                .map(|p| attributes(&p.attributes))
                                .collect(),
                        ),
                        Some(Data::ExponentialHistogram(h)) => (
                            PointKind::ExponentialHistogram,
                            h.data_points
                                .iter()
                                .map(|p| attributes(&p.attributes))
                                .collect(),
                        ),
                        Some(Data::Sum(s)) => (
                            PointKind::Sum {
                                monotonic: s.is_monotonic,
                            },
                            s.data_points
                                .iter()
                                .map(|p| attributes(&p.attributes))
                                .collect(),
                        ),
                        Some(Data::Gauge(g)) => (
                            PointKind::Gauge,
                            g.data_points
                                .iter()
                                .map(|p| attributes(&p.attributes))
                                .collect(),
                        ),
                        Some(Data::Summary(s)) => (
                            PointKind::Summary,
                            s.data_points
                                .iter()
                                .map(|p| attributes(&p.attributes))
                                .collect(),
                        ),
                        None => (PointKind::Empty, vec![BTreeMap::new()]),
                    };
                for attributes in point_attributes {
                    store.points.push(ReceivedPoint {
                        service: service.clone(),
                        resource: resource.clone(),
                        metric: metric.name.clone(),
                        kind,
                        unit: metric.unit.clone(),
                        attributes,
                    });
                }
            }
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[derive(Clone)]
struct GrpcReceiver(Shared);

fn metadata_headers(metadata: &tonic::metadata::MetadataMap) -> BTreeMap<String, String> {
    metadata
        .clone()
        .into_headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        store_traces(
            &self.0,
            request.get_ref(),
            metadata_headers(request.metadata()),
        );
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for GrpcReceiver {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        store_metrics(
            &self.0,
            request.get_ref(),
            metadata_headers(request.metadata()),
        );
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

fn http_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

async fn http_traces(
    State(store): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Vec<u8>, (axum::http::StatusCode, String)> {
    let request = ExportTraceServiceRequest::decode(body)
        .map_err(|e| (axum::http::StatusCode::BAD_REQUEST, e.to_string()))?;
    store_traces(&store, &request, http_headers(&headers));
    Ok(ExportTraceServiceResponse::default().encode_to_vec())
}

async fn http_metrics(
    State(store): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Vec<u8>, (axum::http::StatusCode, String)> {
    let request = ExportMetricsServiceRequest::decode(body)
        .map_err(|e| (axum::http::StatusCode::BAD_REQUEST, e.to_string()))?;
    store_metrics(&store, &request, http_headers(&headers));
    Ok(ExportMetricsServiceResponse::default().encode_to_vec())
}

/// Which OTLP transport a receiver speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// OTLP/gRPC.
    Grpc,
    /// OTLP/HTTP with protobuf bodies.
    HttpProtobuf,
}

/// A running receiver. Dropping it stops it.
#[derive(Debug)]
pub struct OtlpReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What it speaks.
    pub transport: Transport,
    store: Shared,
    task: JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts a receiver on a free port of 127.0.0.1.
    pub async fn start(transport: Transport) -> Self {
        Self::start_on("127.0.0.1:0".parse().expect("addr"), transport).await
    }

    /// Starts a receiver on `addr` (to bring one back where it was).
    pub async fn start_on(addr: SocketAddr, transport: Transport) -> Self {
        let listener = TcpListener::bind(addr)
            .await
            .expect("bind the OTLP receiver");
        let addr = listener.local_addr().expect("receiver address");
        let store = Shared::default();
        let task = match transport {
            Transport::Grpc => {
                let receiver = GrpcReceiver(store.clone());
                let server = tonic::transport::Server::builder()
                    .add_service(TraceServiceServer::new(receiver.clone()))
                    .add_service(MetricsServiceServer::new(receiver))
                    .serve_with_incoming(TcpListenerStream::new(listener));
                tokio::spawn(async move {
                    let _ = server.await;
                })
            }
            Transport::HttpProtobuf => {
                let app = Router::new()
                    .route("/v1/traces", post(http_traces))
                    .route("/v1/metrics", post(http_metrics))
                    .with_state(store.clone());
                tokio::spawn(async move {
                    let _ = axum::serve(listener, app).await;
                })
            }
        };
        Self {
            addr,
            transport,
            store,
            task,
        }
    }

    /// `OTEL_EXPORTER_OTLP_ENDPOINT` and `OTEL_EXPORTER_OTLP_PROTOCOL` for it.
    pub fn exporter_env(&self) -> [(&'static str, String); 2] {
        let protocol = match self.transport {
            Transport::Grpc => "grpc",
            Transport::HttpProtobuf => "http/protobuf",
        };
        [
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", self.addr),
            ),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_owned()),
        ]
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store.lock().expect("receiver store").spans.clone()
    }

    /// Every metric data point received so far.
    pub fn points(&self) -> Vec<ReceivedPoint> {
        self.store.lock().expect("receiver store").points.clone()
    }

    /// Names of the metrics received so far.
    pub fn metric_names(&self) -> BTreeSet<String> {
        self.points().into_iter().map(|p| p.metric).collect()
    }

    /// The headers (or gRPC metadata) of every export request received.
    pub fn request_headers(&self) -> Vec<BTreeMap<String, String>> {
        self.store.lock().expect("receiver store").headers.clone()
    }

    /// Waits until `done` holds for the spans received, for at most `timeout`;
    /// answers the spans either way.
    pub async fn wait_for_spans(
        &self,
        timeout: Duration,
        done: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans();
            if done(&spans) || tokio::time::Instant::now() >= deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops listening (to play a collector that is down).
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
