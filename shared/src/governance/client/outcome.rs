//! What a call's result says: about the instance that took it (outlier
//! detection), about the service (the breaker), and whether it is worth
//! another attempt.

use std::time::Duration;

use tonic::{Code, Status};

use crate::governance::outlier::Outcome;

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
        Code::Unknown | Code::Internal => is_connection_failure(status),
        _ => false,
    }
}

/// A failure of the connection itself (not an answer of the server): the
/// client attaches the transport error as the status's source.
pub(super) fn is_connection_failure(status: &Status) -> bool {
    use std::error::Error as _;
    matches!(
        status.code(),
        Code::Unavailable | Code::Unknown | Code::Internal
    ) && status.source().is_some()
}
