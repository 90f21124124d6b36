//! One server span, one log line and one metric point per HTTP request.
//!
//! The span continues the caller's `traceparent` when there is one, is named
//! after the route template (`GET /v1/note/{note_id}`), or after the method
//! alone when no route matched, and its trace id is returned to the caller
//! in `x-trace-id`, so a user's report can be matched to the trace.

use std::{net::SocketAddr, time::Instant};

use axum::{
    extract::{ConnectInfo, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, header},
    middleware::Next,
    response::Response,
};
use easynote_shared::telemetry::{metrics::HttpServerMetrics, propagation};

use crate::client_addr::ClientAddr;
use opentelemetry::context::FutureExt as _;
use tracing::{Instrument as _, field::Empty, info_span};

/// The response header carrying the request's trace id.
pub const TRACE_ID_HEADER: &str = "x-trace-id";

/// Paths probed by orchestrators every few seconds: measured, not traced.
fn is_probe(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/ping")
}

/// `url.scheme`: what the client used. The gateway itself speaks plain
/// HTTP; behind a TLS-terminating load balancer (the ALB) the original
/// scheme arrives in `X-Forwarded-Proto`.
fn scheme(headers: &HeaderMap) -> &'static str {
    if came_over_https(headers) {
        "https"
    } else {
        "http"
    }
}

/// Whether the client reached the gateway over HTTPS (see [`scheme`]).
pub(crate) fn came_over_https(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|proto| proto.trim().eq_ignore_ascii_case("https"))
}

/// `client.address`: the client the limits count (client_addr.rs: the
/// peer, or behind trusted proxies the address they saw), else the peer.
fn client_address(request: &Request) -> Option<String> {
    let extensions = request.extensions();
    extensions
        .get::<ClientAddr>()
        .map(|client| client.0)
        .or_else(|| {
            extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|info| info.0.ip())
        })
        .map(|ip| ip.to_string())
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
    let scheme = scheme(request.headers());
    // Unmatched requests have no route: the span is named by the method
    // alone and carries no `http.route`, so scanners cannot blow up the
    // metrics' cardinality.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let span = if is_probe(&path) {
        tracing::Span::none()
    } else {
        let user_agent = request
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        let span = info_span!(
            "HTTP request",
            otel.name = %match &route {
                Some(route) => format!("{method} {route}"),
                None => method.to_string(),
            },
            otel.kind = "server",
            http.request.method = %method,
            http.route = route.as_deref(),
            url.path = %path,
            url.scheme = scheme,
            client.address = client_address(&request).as_deref(),
            user_agent.original = user_agent,
            http.response.status_code = Empty,
            user.id = Empty,
            otel.status_code = Empty,
        );
        span
    };
    let carried = propagation::continue_trace(&span, request.headers());
    let trace_id = propagation::trace_id_of(&span, carried.as_ref());

    let handled = next.run(request).instrument(span.clone());
    let mut response = match carried.clone() {
        Some(context) => handled.with_context(context).await,
        None => handled.await,
    };

    let status = response.status();
    let elapsed = started.elapsed();
    metrics.record(
        elapsed.as_secs_f64(),
        method.as_str(),
        route.as_deref(),
        status.as_u16(),
        scheme,
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
        let _carried = carried.map(opentelemetry::Context::attach);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_comes_from_the_proxy_and_the_client_is_the_one_the_limits_count() {
        let mut headers = HeaderMap::new();
        assert_eq!(scheme(&headers), "http");
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        assert_eq!(scheme(&headers), "https");

        let peer: SocketAddr = "10.0.0.9:51000".parse().expect("addr");
        let mut request = Request::new(axum::body::Body::empty());
        assert_eq!(client_address(&request), None);
        request.extensions_mut().insert(ConnectInfo(peer));
        assert_eq!(client_address(&request).as_deref(), Some("10.0.0.9"));
        // A forged header changes nothing: only the derived address counts.
        request
            .headers_mut()
            .insert("x-forwarded-for", HeaderValue::from_static("203.0.113.5"));
        assert_eq!(client_address(&request).as_deref(), Some("10.0.0.9"));
        request
            .extensions_mut()
            .insert(ClientAddr("198.51.100.4".parse().expect("ip")));
        assert_eq!(client_address(&request).as_deref(), Some("198.51.100.4"));
    }
}
