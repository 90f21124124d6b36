//! The RED instruments (rate, errors, duration), named after the
//! OpenTelemetry semantic conventions. Each server builds its instruments
//! once, after telemetry is initialised; recording is lock-free.

use opentelemetry::{
    KeyValue, global,
    metrics::{Histogram, Meter},
};

/// Bucket boundaries in seconds for HTTP and RPC durations: the semantic
/// conventions' advice for both instruments, with 1 ms and 2.5 ms in front
/// because a gRPC hop inside one host takes well under 5 ms.
const SECONDS_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn meter() -> Meter {
    global::meter("easy-note")
}

/// `http.server.request.duration` (s), per method, route, status and
/// scheme: the count of its data points is the request rate, the 5xx share
/// the errors.
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

    /// Records one finished request. `route` is `None` when no route
    /// matched: the point then has no `http.route` at all (the conventions'
    /// rule), which also keeps scanners from inflating the cardinality.
    pub fn record(
        &self,
        seconds: f64,
        method: &str,
        route: Option<&str>,
        status: u16,
        scheme: &'static str,
    ) {
        let mut attributes = Vec::with_capacity(4);
        attributes.push(KeyValue::new("http.request.method", method.to_owned()));
        if let Some(route) = route {
            attributes.push(KeyValue::new("http.route", route.to_owned()));
        }
        attributes.push(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        attributes.push(KeyValue::new("url.scheme", scheme));
        self.duration.record(seconds, &attributes);
    }
}

impl Default for HttpServerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `rpc.server.call.duration` and `rpc.client.call.duration` (s), per
/// method and gRPC status (and, on the client, per server instance).
///
/// Names and attributes follow the current RPC semantic conventions
/// (semconv 1.38 and later, release candidate): `rpc.system.name`,
/// `rpc.method` as the fully qualified `package.Service/Method`, and
/// `rpc.response.status_code` as the status's name (`OK`, `NOT_FOUND`).
/// They replace the deprecated `rpc.server.duration` / `rpc.client.duration`
/// in milliseconds and the numeric `rpc.grpc.status_code`. No
/// `opentelemetry-semantic-conventions` crate is in the build, so the names
/// are written here, checked against the specification's RPC pages.
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

/// How one call ended, as the metrics record it.
#[derive(Debug, Clone, Copy)]
pub struct RpcOutcome<'a> {
    /// `package.Service/Method`.
    pub method: &'a str,
    /// The gRPC status code's name (`OK`, `NOT_FOUND`).
    pub status: &'static str,
    /// Whether the call failed from this side's point of view (sets `error.type`).
    pub failed: bool,
    /// `server.address` and `server.port` of the instance called (client side).
    pub server: Option<(&'a str, Option<u16>)>,
}

impl RpcMetrics {
    /// Instruments from the global meter provider.
    pub fn new() -> Self {
        let histogram = |name: &'static str, description: &'static str| {
            meter()
                .f64_histogram(name)
                .with_unit("s")
                .with_description(description)
                .with_boundaries(SECONDS_BUCKETS.to_vec())
                .build()
        };
        Self {
            server: histogram(
                "rpc.server.call.duration",
                "Duration of inbound gRPC calls.",
            ),
            client: histogram(
                "rpc.client.call.duration",
                "Duration of outbound gRPC calls.",
            ),
        }
    }

    /// Records one finished call.
    pub fn record(&self, side: RpcSide, seconds: f64, outcome: RpcOutcome<'_>) {
        let histogram = match side {
            RpcSide::Server => &self.server,
            RpcSide::Client => &self.client,
        };
        let mut attributes = Vec::with_capacity(6);
        attributes.push(KeyValue::new("rpc.system.name", "grpc"));
        attributes.push(KeyValue::new("rpc.method", outcome.method.to_owned()));
        attributes.push(KeyValue::new("rpc.response.status_code", outcome.status));
        if outcome.failed {
            attributes.push(KeyValue::new("error.type", outcome.status));
        }
        if let Some((address, port)) = outcome.server {
            attributes.push(KeyValue::new("server.address", address.to_owned()));
            if let Some(port) = port {
                attributes.push(KeyValue::new("server.port", i64::from(port)));
            }
        }
        histogram.record(seconds, &attributes);
    }
}

impl Default for RpcMetrics {
    fn default() -> Self {
        Self::new()
    }
}
