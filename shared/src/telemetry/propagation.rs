//! W3C trace context in and out of HTTP/2 and HTTP/1 headers (gRPC
//! metadata is headers too).

use opentelemetry::{
    Context, global,
    trace::TraceContextExt as _,
    propagation::{Extractor, Injector},
};
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

/// Makes `span`, just created, the child of the remote parent carried by
/// `headers` (a new root when there is none). Call it before the span is
/// entered or its context read: after that its parent is fixed.
pub fn set_remote_parent(span: &tracing::Span, headers: &HeaderMap) {
    if span.is_disabled() {
        return;
    }
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
