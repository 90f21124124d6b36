//! Spans and RED metrics around every gRPC call, on both sides, with the
//! trace context carried in the request metadata.
//!
//! - [`ServerTelemetryLayer`] goes on each tonic server: a server span per
//!   call, child of the caller's `traceparent`.
//! - [`TracedChannel`] wraps each client channel: a client span per call,
//!   whose context it injects into the request.
//!
//! Health checks are served but not traced: probes would drown the traces.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use tonic::{
    body::Body,
    codegen::http::{HeaderMap, Request, Response},
    transport::{Channel, Server, server::Router},
};
use tower::{
    Layer, Service,
    layer::util::{Identity, Stack},
};
use tracing::{Instrument as _, Span, field::Empty, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use super::{
    metrics::{RpcMetrics, RpcSide},
    propagation,
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `/package.Service/Method`, split for span names and attributes.
#[derive(Debug, Clone)]
struct RpcName {
    full: Arc<str>,
    service: Arc<str>,
    method: Arc<str>,
}

impl RpcName {
    fn from_path(path: &str) -> Self {
        let trimmed = path.trim_start_matches('/');
        let (service, method) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        Self {
            full: trimmed.into(),
            service: service.into(),
            method: method.into(),
        }
    }

    fn is_health(&self) -> bool {
        self.service.as_ref() == "grpc.health.v1.Health"
    }
}

/// The gRPC status of a unary response: `grpc-status` in the headers for a
/// trailers-only (error) response, otherwise OK (an error found only in the
/// trailers of a streamed response would be missed; our APIs are unary).
fn status_of(headers: &HeaderMap) -> (i32, Option<String>) {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(super::percent_decode);
    (code, message)
}

/// Records the outcome on the span. Server spans are errors only for codes
/// that mean the server failed (the semantic conventions' rule); client
/// spans for any code but OK.
fn record_outcome(span: &Span, side: RpcSide, code: i32, message: Option<String>) {
    span.record("rpc.grpc.status_code", code);
    let server_fault = matches!(code, 2 | 4 | 12 | 13 | 14 | 15);
    let is_error = match side {
        RpcSide::Server => server_fault,
        RpcSide::Client => code != 0,
    };
    if is_error {
        span.record("otel.status_code", "ERROR");
        span.record(
            "otel.status_description",
            message
                .unwrap_or_else(|| format!("gRPC status {code}"))
                .as_str(),
        );
    }
}

/// A tonic server builder with [`ServerTelemetryLayer`] installed.
pub fn server() -> Server<Stack<ServerTelemetryLayer, Identity>> {
    Server::builder().layer(ServerTelemetryLayer::new())
}

/// The router [`server`] builds once services are added.
pub type TracedRouter = Router<Stack<ServerTelemetryLayer, Identity>>;

/// Adds a server span and metrics to every call of a tonic server.
#[derive(Debug, Clone, Default)]
pub struct ServerTelemetryLayer {
    metrics: RpcMetrics,
}

impl ServerTelemetryLayer {
    /// A layer recording into the global meter provider.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<S> Layer<S> for ServerTelemetryLayer {
    type Service = ServerTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServerTelemetry {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See [`ServerTelemetryLayer`].
#[derive(Debug, Clone)]
pub struct ServerTelemetry<S> {
    inner: S,
    metrics: RpcMetrics,
}

impl<S, B, RB> Service<Request<B>> for ServerTelemetry<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let name = RpcName::from_path(request.uri().path());
        if name.is_health() {
            return Box::pin(self.inner.call(request));
        }
        let span = info_span!(
            "gRPC server call",
            otel.name = %name.full,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.service = %name.service,
            rpc.method = %name.method,
            rpc.grpc.status_code = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let _ = span.set_parent(propagation::extract(request.headers()));
        let started = Instant::now();
        let future = span.in_scope(|| self.inner.call(request));
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = future.instrument(span.clone()).await;
            let (code, message) = match &result {
                Ok(response) => status_of(response.headers()),
                Err(_) => (2, None),
            };
            record_outcome(&span, RpcSide::Server, code, message);
            let millis = started.elapsed().as_secs_f64() * 1000.0;
            metrics.record(RpcSide::Server, millis, &name.service, &name.method, code);
            result
        })
    }
}

/// A client channel that opens a client span per call, injects its context
/// into the request, and records the call's duration and status.
#[derive(Debug, Clone)]
pub struct TracedChannel {
    channel: Channel,
    peer: Arc<str>,
    metrics: RpcMetrics,
}

impl TracedChannel {
    /// Wraps `channel`, a connection to the instance at `peer` (`host:port`).
    pub fn new(channel: Channel, peer: Arc<str>, metrics: RpcMetrics) -> Self {
        Self {
            channel,
            peer,
            metrics,
        }
    }
}

impl Service<Request<Body>> for TracedChannel {
    type Response = Response<Body>;
    type Error = tonic::transport::Error;
    type Future = BoxFuture<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request<Body>>::poll_ready(&mut self.channel, cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        let name = RpcName::from_path(request.uri().path());
        let span = if name.is_health() {
            Span::none()
        } else {
            info_span!(
                "gRPC client call",
                otel.name = %name.full,
                otel.kind = "client",
                rpc.system = "grpc",
                rpc.service = %name.service,
                rpc.method = %name.method,
                server.address = %self.peer,
                rpc.grpc.status_code = Empty,
                otel.status_code = Empty,
                otel.status_description = Empty,
            )
        };
        if !span.is_disabled() {
            propagation::inject(&span.context(), request.headers_mut());
        }
        let started = Instant::now();
        let future = self.channel.call(request);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let result = future.instrument(span.clone()).await;
            if !name.is_health() {
                // A transport failure (connection refused, timeout) is UNAVAILABLE to the caller.
                let (code, message) = match &result {
                    Ok(response) => status_of(response.headers()),
                    Err(err) => (14, Some(err.to_string())),
                };
                record_outcome(&span, RpcSide::Client, code, message);
                let millis = started.elapsed().as_secs_f64() * 1000.0;
                metrics.record(RpcSide::Client, millis, &name.service, &name.method, code);
            }
            result
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        let name = RpcName::from_path("/easynote.note.v1.NoteService/QueryNote");
        assert_eq!(&*name.full, "easynote.note.v1.NoteService/QueryNote");
        assert_eq!(&*name.service, "easynote.note.v1.NoteService");
        assert_eq!(&*name.method, "QueryNote");
        assert!(RpcName::from_path("/grpc.health.v1.Health/Check").is_health());
    }

    #[test]
    fn status_comes_from_trailers_only_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(status_of(&headers), (0, None));
        headers.insert("grpc-status", "5".parse().expect("header"));
        headers.insert(
            "grpc-message",
            "note%20not%20found".parse().expect("header"),
        );
        assert_eq!(status_of(&headers), (5, Some("note not found".to_owned())));
    }
}
