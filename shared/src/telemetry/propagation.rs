//! W3C trace context in and out of HTTP/2 and HTTP/1 headers (gRPC
//! metadata is headers too).

use std::sync::OnceLock;

use opentelemetry::{
    Context, global,
    propagation::{Extractor, Injector},
    trace::{SpanContext, TraceContextExt as _, TraceFlags, TraceId, TraceState},
};
use opentelemetry_sdk::trace::{IdGenerator as _, RandomIdGenerator};
use tonic::codegen::http::{HeaderMap, HeaderName, HeaderValue};
use tracing_opentelemetry::{OpenTelemetrySpanExt as _, SetParentError};

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(HeaderName::as_str).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(key), HeaderValue::try_from(value)) {
            self.0.insert(name, value);
        }
    }
}

/// The remote parent carried by `headers` (`traceparent`/`tracestate`), if any.
pub fn extract(headers: &HeaderMap) -> Context {
    global::get_text_map_propagator(|propagator| propagator.extract(&HeaderExtractor(headers)))
}

/// Writes `context` into `headers` for the next hop.
pub(crate) fn inject(context: &Context, headers: &mut HeaderMap) {
    global::get_text_map_propagator(|propagator| {
        propagator.inject_context(context, &mut HeaderInjector(headers))
    });
}

/// The trace context to carry on from `span`: its own, or, when it was not
/// built (beneath an unsampled span, see the module `telemetry`), the active
/// one it runs in, so the next hop continues the same trace.
pub(crate) fn context_of(span: &tracing::Span) -> Context {
    let own = span.context();
    if own.span().span_context().is_valid() {
        own
    } else {
        Context::current()
    }
}

/// How this process carries trace context, chosen once by
/// [`super::init`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carrier {
    /// Spans are exported: `tracing` spans carry their OpenTelemetry
    /// context (the OpenTelemetry layer is installed).
    Spans,
    /// Nothing is exported: no OpenTelemetry layer; each request runs in a
    /// context of ids only (see [`continue_trace`]).
    Ids,
    /// `OTEL_SDK_DISABLED=true`: no trace context at all.
    Off,
}

static CARRIER: OnceLock<Carrier> = OnceLock::new();

/// Fixes the process's [`Carrier`] (the first call wins).
pub(crate) fn set_carrier(carrier: Carrier) {
    let _ = CARRIER.set(carrier);
}

/// Continues the caller's trace, carried by `headers` (a new trace when
/// there is none), in a server's `span`, just created.
///
/// When spans are exported, the span becomes the remote parent's child
/// and carries the context itself: the answer is `None`. When nothing is
/// exported there is no OpenTelemetry layer, and the answer is the context
/// to run the request in: the caller's trace id and sampled flag (passed
/// on untouched, for a next hop that exports) with a span id of this
/// process's own, so logs carry the trace id and calls made inside carry
/// it on. That is all a span would give without an exporter, at a
/// fraction of its cost.
pub fn continue_trace(span: &tracing::Span, headers: &HeaderMap) -> Option<Context> {
    if span.is_disabled() {
        return None;
    }
    match CARRIER.get() {
        Some(Carrier::Ids) => Some(ids_only(&extract(headers))),
        Some(Carrier::Off) => None,
        Some(Carrier::Spans) | None => {
            set_remote_parent(span, headers);
            None
        }
    }
}

/// A context whose active span is this process's part of `parent`'s trace
/// (a new trace when `parent` has none), recording nothing.
fn ids_only(parent: &Context) -> Context {
    let ids = RandomIdGenerator::default();
    let caller = parent.span();
    let caller = caller.span_context();
    let (trace_id, flags, state) = if caller.is_valid() {
        (
            caller.trace_id(),
            caller.trace_flags(),
            caller.trace_state().clone(),
        )
    } else {
        (
            ids.new_trace_id(),
            TraceFlags::default(),
            TraceState::default(),
        )
    };
    parent.with_remote_span_context(SpanContext::new(
        trace_id,
        ids.new_span_id(),
        flags,
        false,
        state,
    ))
}

/// The trace id a request runs under: its carried context's, or its span's.
pub fn trace_id_of(span: &tracing::Span, carried: Option<&Context>) -> TraceId {
    match carried {
        Some(context) => context.span().span_context().trace_id(),
        None => span.context().span().span_context().trace_id(),
    }
}

/// Makes `span`, just created, the child of the remote parent carried by
/// `headers` (a new root when there is none). Call it before the span is
/// entered or its context read: after that its parent is fixed.
fn set_remote_parent(span: &tracing::Span, headers: &HeaderMap) {
    match span.set_parent(extract(headers)) {
        Ok(()) => {}
        // No OpenTelemetry layer (`OTEL_SDK_DISABLED=true`): there is no
        // trace to continue, and nothing is wrong.
        Err(SetParentError::LayerNotFound | SetParentError::SpanDisabled) => {}
        // A bug of ours: the span was started before its parent was known,
        // so the trace breaks here.
        Err(err @ SetParentError::AlreadyStarted) => {
            tracing::warn!(error = %err, "the caller's trace context was not continued");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_only_contexts_continue_the_callers_trace_or_start_one() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        let propagator = opentelemetry_sdk::propagation::TraceContextPropagator::new();
        let parent = opentelemetry::propagation::TextMapPropagator::extract(
            &propagator,
            &HeaderExtractor(&headers),
        );
        let continued = ids_only(&parent);
        let ids = continued.span().span_context().clone();
        assert_eq!(
            ids.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_ne!(
            ids.span_id().to_string(),
            "00f067aa0ba902b7",
            "a span id of its own"
        );
        assert!(ids.is_sampled(), "the caller's sampled flag goes on");

        let fresh = ids_only(&Context::new());
        let fresh = fresh.span().span_context().clone();
        assert!(
            fresh.is_valid() && !fresh.is_sampled(),
            "a new trace, unsampled"
        );
        let mut out = HeaderMap::new();
        opentelemetry::propagation::TextMapPropagator::inject_context(
            &propagator,
            &continued,
            &mut HeaderInjector(&mut out),
        );
        let sent = out["traceparent"].to_str().expect("ascii");
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"),
            "{sent}"
        );
    }
}
