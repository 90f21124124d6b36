//! What a call's result says: about the instance that took it (outlier
//! detection), about the service (the breaker, settled by
//! [`BreakerVerdict`]), whether it is worth another attempt, and whether
//! the caller may go on without it (`fallback`).

use std::time::{Duration, Instant};

use tonic::{Code, Status};

use super::{MethodState, Upstream};
use crate::governance::{
    breaker::{Permit, Verdict},
    outlier::Outcome,
    rules::BreakerPolicy,
};

/// The error of an attempt that got no answer in time.
pub(super) fn no_answer(timeout: Duration) -> Status {
    Status::deadline_exceeded(format!("no answer within {timeout:?}"))
}

/// What an attempt's result says about the instance that took it.
pub(super) fn instance_outcome<Res>(
    result: &Result<Res, Status>,
    timed_out: bool,
    full_timeout: bool,
) -> Outcome {
    let Err(status) = result else {
        return Outcome::Answered;
    };
    if timed_out {
        return if full_timeout {
            Outcome::Failed { connection: false }
        } else {
            Outcome::Neutral
        };
    }
    if is_connection_failure(status) {
        return Outcome::Failed { connection: true };
    }
    match status.code() {
        Code::Unavailable => Outcome::Failed { connection: false },
        Code::ResourceExhausted | Code::DeadlineExceeded | Code::Cancelled => Outcome::Neutral,
        _ => Outcome::Answered,
    }
}

/// Failures that count against a breaker: the downstream is unavailable,
/// too slow or overloaded, or the connection failed. Answers such as
/// NOT_FOUND or INVALID_ARGUMENT are business as usual, and so is a
/// healthy server shedding what it cannot take at once
/// ([`governance::is_shed`](crate::governance::is_shed)).
pub(super) fn counts_against_breaker(status: &Status) -> bool {
    (matches!(
        status.code(),
        Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
    ) && !crate::governance::is_shed(status))
        || is_connection_failure(status)
}

/// Whether a CANCELLED status is tonic's own client-side timeout.
pub(super) fn is_timeout(status: &Status) -> bool {
    use std::error::Error as _;
    let mut source = status.source();
    while let Some(err) = source {
        if err.to_string().contains("Timeout expired") {
            return true;
        }
        source = err.source();
    }
    status.message().contains("Timeout expired")
}

/// Whether an idempotent call that failed with `status` is worth repeating
/// elsewhere: the instance was unreachable, overloaded, too slow for its
/// attempt's deadline, refused the stream, or the connection broke
/// mid-call. Other answers from a live server are final.
pub(super) fn is_retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::ResourceExhausted | Code::DeadlineExceeded => true,
        Code::Unknown | Code::Internal | Code::Cancelled => is_connection_failure(status),
        _ => false,
    }
}

/// A failure of the connection itself (not an answer of the server): the
/// client attaches the transport error as the status's source. CANCELLED
/// is one too: hyper fails a request still queued on a connection that
/// closed ("operation was canceled: connection closed", an instance killed
/// under load) and tonic reports it as CANCELLED; a server's own CANCELLED
/// comes in trailers, with no source, and tonic's own attempt timeout is
/// told apart before this is asked ([`is_timeout`]).
pub(super) fn is_connection_failure(status: &Status) -> bool {
    use std::error::Error as _;
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal | Code::Cancelled
    ) && status.source().is_some()
}

/// Settles a call's breaker permit: with the call's final outcome and
/// whether it was slow (its time since `started`, against `slow_ms`), or as
/// a failure when the call is dropped before it ends (its deadline passed),
/// so that a half-open breaker never waits for a probe that will not come
/// back.
pub(super) struct BreakerVerdict<'a> {
    pub(super) upstream: &'a Upstream,
    pub(super) method: &'static str,
    pub(super) state: &'a MethodState,
    pub(super) policy: BreakerPolicy,
    pub(super) permit: Option<Permit>,
    pub(super) started: Instant,
}

impl BreakerVerdict<'_> {
    pub(super) fn record(&mut self, failed: bool) {
        if let Some(permit) = self.permit.take() {
            let now = Instant::now();
            let verdict = Verdict {
                failed,
                slow: self
                    .policy
                    .slow_call
                    .is_some_and(|slow| now.saturating_duration_since(self.started) >= slow),
            };
            let change = self
                .state
                .breaker
                .record(permit, verdict, &self.policy, now);
            self.upstream.transition(self.method, change);
        }
    }
}

impl Drop for BreakerVerdict<'_> {
    fn drop(&mut self) {
        self.record(true);
    }
}

impl Upstream {
    /// Whether a failed call of `method` (its final status) may be
    /// answered without the service, as the rules' `fallback` says: for a
    /// failure for want of the service (unavailable, too slow, overloaded,
    /// breaker open), never for an answer such as `NOT_FOUND`. Counted and
    /// logged when it is.
    pub fn falls_back(&self, method: &'static str, status: &Status) -> bool {
        let governance = &self.inner.governance;
        let wanting = matches!(
            status.code(),
            Code::Unavailable | Code::DeadlineExceeded | Code::ResourceExhausted
        );
        if !governance.enabled() || !wanting {
            return false;
        }
        let allowed = governance
            .active()
            .rules
            .client_policy(&self.inner.service, method)
            .fallback;
        if allowed {
            self.count(&governance.metrics().fallbacks, method, None);
            tracing::warn!(service = %self.inner.service, method, code = ?status.code(), "answering without the service: fallback reply");
        }
        allowed
    }
}
