//! Panics in the request path. A panic is a bug; what a client sees of it
//! is a 500 with the envelope (code 10001), never a connection reset with
//! no reply, and what the operator sees is an error log and readiness
//! turning false while every request panics, so that a load balancer takes
//! the gateway out of rotation instead of sending it traffic it cannot
//! serve (a rate-limit rule once made every request panic while `/readyz`
//! answered 200).

use std::{
    any::Any,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse as _, Response},
};

use crate::error::ApiError;

/// Panics in a row, with no request answered in between, after which the
/// gateway reports itself not ready.
const NOT_READY_AFTER: u32 = 3;

/// How long after the last panic readiness stays false with no request
/// answered since. Past it the gateway says ready again and gets traffic:
/// if requests still panic, it turns not ready again; meanwhile the error
/// logs and the 500s say why.
const NOT_READY_FOR: Duration = Duration::from_secs(30);

/// The gateway's record of panics in the request path.
#[derive(Debug, Default)]
pub struct Panics {
    in_a_row: AtomicU32,
    last: Mutex<Option<Instant>>,
}

impl Panics {
    /// Answers a caught panic: logs it and gives the client a 500.
    pub(crate) fn caught(&self, panic: Box<dyn Any + Send + 'static>) -> Response {
        let in_a_row = self.in_a_row.fetch_add(1, Ordering::AcqRel) + 1;
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        tracing::error!(panic = %message, in_a_row, "a request panicked; answered 500");
        ApiError::Internal.into_response()
    }

    /// Notes a request answered without a panic.
    fn served(&self) {
        if self.in_a_row.load(Ordering::Acquire) != 0 {
            self.in_a_row.store(0, Ordering::Release);
        }
    }

    /// Whether requests keep panicking: readiness is false meanwhile.
    pub fn failing(&self) -> bool {
        self.in_a_row.load(Ordering::Acquire) >= NOT_READY_AFTER
            && self
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|at| at.elapsed() < NOT_READY_FOR)
    }
}

/// Middleware inside the panic catcher: a request that comes back through
/// it did not panic. Health routes do not count, or the readiness probe
/// would clear the very state it reports.
pub(crate) async fn mark_served(
    State(panics): State<Arc<Panics>>,
    request: Request,
    next: Next,
) -> Response {
    let probe = crate::governance::exempt(request.uri().path());
    let response = next.run(request).await;
    if !probe {
        panics.served();
    }
    response
}
