//! Spans and RED metrics around every gRPC call, on both sides, with the
//! trace context carried in the request metadata.
//!
//! - [`ServerTelemetryLayer`] goes on each tonic server: a server span per
//!   call, child of the caller's `traceparent`.
//! - [`TracedChannel`] wraps each client channel: a client span per call,
//!   whose context it injects into the request.
//!
//! A call ends when its response body does, not when its headers arrive: the
//! gRPC status of a normal answer travels in the trailers, after the
//! messages. Both sides therefore wrap the response body in an
//! [`ObservedBody`] that records the span's status and the duration metric
//! from the trailers, or from the headers of a trailers-only answer (what
//! tonic sends for an error returned before any message).
//!
//! Health checks are served but not traced: probes would drown the traces.

use std::{
    error::Error as StdError,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use http_body::{Body as HttpBody, Frame, SizeHint};
use opentelemetry::context::FutureExt as _;
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

use super::{
    metrics::{RpcMetrics, RpcOutcome, RpcSide},
    propagation,
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// `/package.Service/Method`, split for span names and attributes.
#[derive(Debug, Clone)]
struct RpcName {
    full: Arc<str>,
    service: Arc<str>,
}

impl RpcName {
    fn from_path(path: &str) -> Self {
        let trimmed = path.trim_start_matches('/');
        let service = trimmed.split_once('/').map_or(trimmed, |(s, _)| s);
        Self {
            full: trimmed.into(),
            service: service.into(),
        }
    }

    fn is_health(&self) -> bool {
        self.service.as_ref() == "grpc.health.v1.Health"
    }
}

/// A gRPC status: code and message.
type GrpcStatus = (i32, Option<String>);

/// The gRPC status carried by `headers` (the trailers, or the headers of a
/// trailers-only answer), if any.
fn status_of(headers: &HeaderMap) -> Option<GrpcStatus> {
    let code = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())?;
    let message = headers
        .get("grpc-message")
        .and_then(|v| v.to_str().ok())
        .map(super::percent_decode);
    Some((code, message))
}

/// The name of a gRPC status code, as `rpc.response.status_code` and
/// `error.type` spell it ([`crate::code::code_name`]); `_OTHER` for a
/// number no code has.
fn code_name(code: i32) -> &'static str {
    if (0..=16).contains(&code) {
        crate::code::code_name(tonic::Code::from_i32(code))
    } else {
        "_OTHER"
    }
}

/// Whether `code` makes the call an error: on the server only for codes
/// that mean the server failed (the semantic conventions' rule), on the
/// client for any code but OK.
fn is_error(side: RpcSide, code: i32) -> bool {
    match side {
        RpcSide::Server => matches!(code, 2 | 4 | 12 | 13 | 14 | 15),
        RpcSide::Client => code != 0,
    }
}

/// `host:port` split into `server.address` and `server.port`; brackets of
/// an IPv6 literal are dropped.
fn split_host_port(peer: &str) -> (Arc<str>, Option<u16>) {
    match peer.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => (
            host.trim_start_matches('[').trim_end_matches(']').into(),
            port.parse().ok(),
        ),
        _ => (peer.into(), None),
    }
}

/// One call in flight: what is needed to record its end.
#[derive(Debug)]
struct CallRecord {
    span: Span,
    side: RpcSide,
    name: RpcName,
    server: Option<(Arc<str>, Option<u16>)>,
    started: Instant,
    metrics: RpcMetrics,
    /// The status of a trailers-only answer, read from its headers.
    header_status: Option<GrpcStatus>,
}

impl CallRecord {
    /// Records the outcome on the span and the duration metric.
    fn finish(self, (code, message): GrpcStatus) {
        let status = code_name(code);
        let failed = is_error(self.side, code);
        self.span.record("rpc.response.status_code", status);
        if failed {
            self.span.record("error.type", status);
            self.span.record("otel.status_code", "ERROR");
            self.span.record(
                "otel.status_description",
                message
                    .unwrap_or_else(|| format!("gRPC status {status}"))
                    .as_str(),
            );
        }
        self.metrics.record(
            self.side,
            self.started.elapsed().as_secs_f64(),
            RpcOutcome {
                method: &self.name.full,
                status,
                failed,
                server: self.server.as_ref().map(|(host, port)| (&**host, *port)),
            },
        );
    }
}

/// A gRPC response body that records its call's outcome when it ends: from
/// the trailers when they come, from the headers of a trailers-only answer,
/// from the error when the stream breaks, and as `CANCELLED` when it is
/// dropped before its end (the client went away).
#[derive(Debug)]
pub struct ObservedBody<B> {
    inner: B,
    call: Option<CallRecord>,
}

impl<B> ObservedBody<B> {
    fn untraced(inner: B) -> Self {
        Self { inner, call: None }
    }

    fn finish(&mut self, status: GrpcStatus) {
        if let Some(call) = self.call.take() {
            call.finish(status);
        }
    }
}

impl<B> HttpBody for ObservedBody<B>
where
    B: HttpBody + Unpin,
    B::Error: StdError + 'static,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if self.call.is_some() {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(status) = frame.trailers_ref().and_then(status_of) {
                        self.finish(status);
                    }
                }
                Poll::Ready(Some(Err(err))) => {
                    let status = match (err as &dyn StdError).downcast_ref::<tonic::Status>() {
                        Some(status) => (status.code() as i32, Some(status.message().to_owned())),
                        None => (2, Some(err.to_string())),
                    };
                    self.finish(status);
                }
                Poll::Ready(None) => {
                    // The end without trailers: a trailers-only answer, or a
                    // peer that broke the protocol (UNKNOWN, as tonic reports it).
                    let status = self
                        .call
                        .as_mut()
                        .and_then(|call| call.header_status.take())
                        .unwrap_or((2, Some("the response ended without a gRPC status".into())));
                    self.finish(status);
                }
                Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for ObservedBody<B> {
    fn drop(&mut self) {
        // A trailers-only answer is never polled (its body is empty and says
        // so): its status is in the headers. Otherwise the body went before
        // its end: the call was cancelled.
        if let Some(mut call) = self.call.take() {
            let status = call.header_status.take().unwrap_or((1, None));
            call.finish(status);
        }
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
    RB: Send + 'static,
{
    type Response = Response<ObservedBody<RB>>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Self::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let name = RpcName::from_path(request.uri().path());
        if name.is_health() {
            let future = self.inner.call(request);
            return Box::pin(async move {
                future
                    .await
                    .map(|response| response.map(ObservedBody::untraced))
            });
        }
        let span = info_span!(
            "gRPC server call",
            otel.name = %name.full,
            otel.kind = "server",
            rpc.system.name = "grpc",
            rpc.method = %name.full,
            rpc.response.status_code = Empty,
            "error.type" = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        let carried = propagation::continue_trace(&span, request.headers());
        let started = Instant::now();
        let future = {
            let _carried = carried.clone().map(opentelemetry::Context::attach);
            span.in_scope(|| self.inner.call(request))
        };
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let instrumented = future.instrument(span.clone());
            let result = match carried {
                Some(context) => instrumented.with_context(context).await,
                None => instrumented.await,
            };
            let mut call = CallRecord {
                span,
                side: RpcSide::Server,
                name,
                server: None,
                started,
                metrics,
                header_status: None,
            };
            match result {
                Ok(response) => {
                    call.header_status = status_of(response.headers());
                    Ok(response.map(|inner| ObservedBody {
                        inner,
                        call: Some(call),
                    }))
                }
                Err(err) => {
                    call.finish((2, None));
                    Err(err)
                }
            }
        })
    }
}

/// A client channel that opens a client span per call, injects its context
/// into the request, and records the call's duration and status.
#[derive(Debug, Clone)]
pub struct TracedChannel {
    channel: Channel,
    /// `server.address` and `server.port` of the instance.
    server: (Arc<str>, Option<u16>),
    metrics: RpcMetrics,
}

impl TracedChannel {
    /// Wraps `channel`, a connection to the instance at `peer` (`host:port`).
    pub fn new(channel: Channel, peer: Arc<str>, metrics: RpcMetrics) -> Self {
        Self {
            channel,
            server: split_host_port(&peer),
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
        if name.is_health() {
            return Box::pin(self.channel.call(request));
        }
        let (address, port) = &self.server;
        let span = info_span!(
            "gRPC client call",
            otel.name = %name.full,
            otel.kind = "client",
            rpc.system.name = "grpc",
            rpc.method = %name.full,
            server.address = %address,
            server.port = port.map(i64::from),
            rpc.response.status_code = Empty,
            "error.type" = Empty,
            otel.status_code = Empty,
            otel.status_description = Empty,
        );
        if !span.is_disabled() {
            propagation::inject(&propagation::context_of(&span), request.headers_mut());
        }
        let started = Instant::now();
        let future = self.channel.call(request);
        let mut call = CallRecord {
            span: span.clone(),
            side: RpcSide::Client,
            name,
            server: Some(self.server.clone()),
            started,
            metrics: self.metrics.clone(),
            header_status: None,
        };
        Box::pin(async move {
            match future.instrument(span).await {
                Ok(response) => {
                    call.header_status = status_of(response.headers());
                    Ok(response.map(|inner| {
                        Body::new(ObservedBody {
                            inner,
                            call: Some(call),
                        })
                    }))
                }
                Err(err) => {
                    // A transport failure (connection refused, timeout) is UNAVAILABLE to the caller.
                    call.finish((14, Some(err.to_string())));
                    Err(err)
                }
            }
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
        assert!(RpcName::from_path("/grpc.health.v1.Health/Check").is_health());
    }

    #[test]
    fn status_is_read_from_trailers_or_trailers_only_headers() {
        let mut headers = HeaderMap::new();
        assert_eq!(status_of(&headers), None, "no grpc-status: not the end yet");
        headers.insert("grpc-status", "5".parse().expect("header"));
        headers.insert(
            "grpc-message",
            "note%20not%20found".parse().expect("header"),
        );
        assert_eq!(
            status_of(&headers),
            Some((5, Some("note not found".to_owned())))
        );
        assert_eq!(code_name(5), "NOT_FOUND");
        assert_eq!(code_name(16), "UNAUTHENTICATED");
        assert_eq!(code_name(99), "_OTHER");
    }

    #[test]
    fn peers_split_into_address_and_port() {
        let cases = [
            ("10.0.0.7:8888", ("10.0.0.7", Some(8888))),
            ("note-service:8888", ("note-service", Some(8888))),
            ("[::1]:8889", ("::1", Some(8889))),
            ("note-service", ("note-service", None)),
        ];
        for (peer, (address, port)) in cases {
            let (got_address, got_port) = split_host_port(peer);
            assert_eq!((&*got_address, got_port), (address, port), "{peer}");
        }
    }
}
