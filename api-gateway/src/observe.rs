//! One server span, one log line and one metric point per HTTP request.
//!
//! The span continues the caller's `traceparent` when there is one, is named
//! after the route template (`GET /v1/note/{note_id}`), and its trace id is
//! returned to the caller in `x-trace-id`, so a user's report can be matched
//! to the trace.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::HeaderValue,
    middleware::Next,
    response::Response,
};
use easynote_shared::telemetry::{metrics::HttpServerMetrics, propagation};
use opentelemetry::trace::TraceContextExt as _;
use tracing::{Instrument as _, field::Empty, info_span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The response header carrying the request's trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// Paths probed by orchestrators every few seconds: measured, not traced.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/ping")
}

/// The middleware; install with `axum::middleware::from_fn_with_state`.
pub async fn observe(
    State(metrics): State<HttpServerMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    // Unmatched requests are grouped under one route so that scanners cannot
    // blow up the metrics' cardinality.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = if is_probe(&path) {
        tracing::Span::none()
    } else {
        info_span!(
            "HTTP request",
            otel.name = %format!("{method} {route}"),
            otel.kind = "server",
            http.request.method = %method,
            http.route = %route,
            url.path = %path,
            http.response.status_code = Empty,
            otel.status_code = Empty,
        )
    };
    let _ = span.set_parent(propagation::extract(request.headers()));
    let trace_id = span.context().span().span_context().trace_id();

    let mut response = next.run(request).instrument(span.clone()).await;

    let status = response.status();
    let elapsed = started.elapsed();
    metrics.record(
        elapsed.as_secs_f64(),
        method.as_str(),
        &route,
        status.as_u16(),
    );
    if !span.is_disabled() {
        span.record("http.response.status_code", status.as_u16());
        if status.is_server_error() {
            span.record("otel.status_code", "ERROR");
        }
        if trace_id != opentelemetry::trace::TraceId::INVALID
            && let Ok(value) = HeaderValue::from_str(&trace_id.to_string())
        {
            response.headers_mut().insert(TRACE_ID_HEADER, value);
        }
        span.in_scope(|| {
            tracing::info!(
                status = status.as_u16(),
                latency_ms = elapsed.as_secs_f64() * 1000.0,
                "{method} {path}"
            );
        });
    }
    response
}
