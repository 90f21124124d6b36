//! The RED instruments (rate, errors, duration), named after the
//! OpenTelemetry semantic conventions. Each server builds its instruments
//! once, after telemetry is initialised; recording is lock-free.

use opentelemetry::{
    KeyValue, global,
    metrics::{Histogram, Meter},
};

/// Bucket boundaries in seconds for request durations (semantic conventions' advice).
const SECONDS_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Bucket boundaries in milliseconds for RPC durations.
const MILLIS_BUCKETS: [f64; 14] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0,
];

fn meter() -> Meter {
    global::meter("easy-note")
}

/// `http.server.request.duration` (s), per method, route and status: the
/// count of its data points is the request rate, the 5xx share the errors.
#[derive(Debug, Clone)]
pub struct HttpServerMetrics {
    duration: Histogram<f64>,
}

impl HttpServerMetrics {
    /// Instruments from the global meter provider.
    pub fn new() -> Self {
        Self {
            duration: meter()
                .f64_histogram("http.server.request.duration")
                .with_unit("s")
                .with_description("Duration of HTTP server requests.")
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build(),
        }
    }

    /// Records one finished request.
    pub fn record(&self, seconds: f64, method: &str, route: &str, status: u16) {
        self.duration.record(
            seconds,
            &[
                KeyValue::new("http.request.method", method.to_owned()),
                KeyValue::new("http.route", route.to_owned()),
                KeyValue::new("http.response.status_code", i64::from(status)),
            ],
        );
    }
}

impl Default for HttpServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `rpc.server.duration` and `rpc.client.duration` (ms), per service,
/// method and gRPC status code.
#[derive(Debug, Clone)]
pub struct RpcMetrics {
    server: Histogram<f64>,
    client: Histogram<f64>,
}

/// Which side of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcSide {
    /// The server handling the call.
    Server,
    /// The client making it.
    Client,
}

impl RpcMetrics {
    /// Instruments from the global meter provider.
    pub fn new() -> Self {
        let histogram = |name: &'static str, description: &'static str| {
            meter()
                .f64_histogram(name)
                .with_unit("ms")
                .with_description(description)
                .with_boundaries(MILLIS_BUCKETS.to_vec())
                .build()
        };
        Self {
            server: histogram("rpc.server.duration", "Duration of inbound gRPC calls."),
            client: histogram("rpc.client.duration", "Duration of outbound gRPC calls."),
        }
    }

    /// Records one finished call.
    pub fn record(&self, side: RpcSide, millis: f64, service: &str, method: &str, code: i32) {
        let histogram = match side {
            RpcSide::Server => &self.server,
            RpcSide::Client => &self.client,
        };
        histogram.record(
            millis,
            &[
                KeyValue::new("rpc.system", "grpc"),
                KeyValue::new("rpc.service", service.to_owned()),
                KeyValue::new("rpc.method", method.to_owned()),
                KeyValue::new("rpc.grpc.status_code", i64::from(code)),
            ],
        );
    }
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}
