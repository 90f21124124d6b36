//! The HTTP side of errors: the contract's codes, statuses and envelope, and
//! the one mapping from gRPC statuses.

use axum::{
    Json,
    extract::rejection::{JsonRejection, PathRejection, QueryRejection},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use easynote_shared::governance::{self, RuleRef};
use tonic::Code;

use crate::envelope::Envelope;

/// `Result` of handlers.
pub type ApiResult<T, E = ApiError> = Result<T, E>;

/// Every error the public API answers with.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// 400, code 10002: validation, bad JSON, bad ids.
    #[error("{0}")]
    BadRequest(String),
    /// 413, code 10002: the body exceeds the limit.
    #[error("request body is too large (limit {0} bytes)")]
    PayloadTooLarge(usize),
    /// 408, code 10002: the request's body did not arrive within the
    /// request timeout.
    #[error("request not received within {}", humantime::format_duration(*.0))]
    RequestTimeout(std::time::Duration),
    /// 404, code 10002: no such route.
    #[error("no route for {method} {path}")]
    NoRoute {
        /// Request method.
        method: String,
        /// Request path.
        path: String,
    },
    /// 405, code 10002: the route exists for other methods.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 422, code 10002: the `Idempotency-Key` was used before for another
    /// note (another title or content).
    #[error("this Idempotency-Key was already used for a different note")]
    IdempotencyKeyReused,
    /// 409, code 10003.
    #[error("User already exists")]
    UserExists,
    /// 401, code 10004: missing, expired or forged token; bad login.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 404, code 10005: missing, deleted, or another user's note.
    #[error("Note not found")]
    NoteNotFound,
    /// 503, code 10001: a downstream service is down or too slow; comes
    /// with `Retry-After`.
    #[error("service temporarily unavailable, please retry")]
    Unavailable,
    /// 503, code 10001: the gateway or a service is at its in-flight
    /// limit and sheds the request; comes with `Retry-After`.
    #[error("service overloaded, please retry")]
    Overloaded,
    /// 429, code 10006: over a rate limit; comes with `Retry-After`.
    #[error("too many requests, retry after {retry_after}s")]
    RateLimited {
        /// Seconds until a request would be let through.
        retry_after: u64,
    },
    /// 500, code 10001: anything unexpected (details are logged, not sent).
    #[error("internal error")]
    Internal,
    /// `error` (a 429 or 503) produced by a governance rule: answered as
    /// `error`, with the rule's id and revision in `x-easynote-rule` and
    /// `x-easynote-rules-revision`.
    #[error("{error}")]
    ByRule {
        /// The refusal.
        error: Box<ApiError>,
        /// The rule that made it.
        rule: RuleRef,
    },
}

impl ApiError {
    /// The contract's `code`.
    pub fn code(&self) -> i32 {
        match self {
            Self::Internal | Self::Unavailable | Self::Overloaded => 10001,
            Self::BadRequest(_)
            | Self::PayloadTooLarge(_)
            | Self::RequestTimeout(_)
            | Self::NoRoute { .. }
            | Self::MethodNotAllowed
            | Self::IdempotencyKeyReused => 10002,
            Self::UserExists => 10003,
            Self::Unauthorized(_) => 10004,
            Self::NoteNotFound => 10005,
            Self::RateLimited { .. } => 10006,
            Self::ByRule { error, .. } => error.code(),
        }
    }

    /// This refusal, naming the rule that made it.
    pub fn by_rule(self, rule: RuleRef) -> Self {
        Self::ByRule {
            error: Box::new(self),
            rule,
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::NoRoute { .. } | Self::NoteNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UserExists => StatusCode::CONFLICT,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Unavailable | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::ByRule { error, .. } => error.status(),
        }
    }
}

/// What a refusal was for, left in its response's extensions: the edge's
/// adaptive limit (governance/) shrinks on an overload met further in and
/// leaves a rate limit's refusal out of its latency samples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// 503 for overload: an in-flight or adaptive limit, a full queue,
    /// here or in a service.
    Overloaded,
    /// 429: a rate limit.
    RateLimited,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::ByRule { error, rule } = self {
            let mut response = error.into_response();
            for (name, value) in [
                (governance::RULE_HEADER, &rule.id),
                (governance::REVISION_HEADER, &rule.revision),
            ] {
                if let Ok(value) = axum::http::HeaderValue::from_str(value) {
                    response.headers_mut().insert(name, value);
                }
            }
            return response;
        }
        let body = Envelope::<()>::error(self.code(), self.to_string());
        let retry_after = match self {
            Self::RateLimited { retry_after } => Some(retry_after),
            Self::Unavailable | Self::Overloaded => Some(1),
            _ => None,
        };
        let mut response = (self.status(), Json(body)).into_response();
        let refusal = match self {
            Self::Overloaded => Some(Refusal::Overloaded),
            Self::RateLimited { .. } => Some(Refusal::RateLimited),
            _ => None,
        };
        if let Some(refusal) = refusal {
            response.extensions_mut().insert(refusal);
        }
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(seconds),
            );
        }
        response
    }
}

impl From<tonic::Status> for ApiError {
    /// The contract's answer to a downstream status; a refusal that names
    /// the governance rule that made it keeps naming it (headers, and the
    /// gateway's span).
    fn from(status: tonic::Status) -> Self {
        let error = Self::from_code(&status);
        match RuleRef::of(&status) {
            Some(rule) if matches!(error, Self::Overloaded | Self::Unavailable) => {
                rule.record("downstream");
                error.by_rule(rule)
            }
            _ => error,
        }
    }
}

impl ApiError {
    fn from_code(status: &tonic::Status) -> Self {
        match status.code() {
            // Messages of this code are written by our services for callers.
            // (OUT_OF_RANGE is not: tonic answers it for a message over the
            // size limit, with its own text, which is no client's fault.)
            Code::InvalidArgument => Self::BadRequest(status.message().to_owned()),
            Code::AlreadyExists => Self::UserExists,
            Code::Unauthenticated => Self::Unauthorized("wrong username or password"),
            Code::NotFound => Self::NoteNotFound,
            Code::FailedPrecondition => Self::IdempotencyKeyReused,
            Code::ResourceExhausted => {
                tracing::warn!(message = status.message(), "downstream overloaded");
                Self::Overloaded
            }
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                tracing::warn!(code = ?status.code(), message = status.message(), "downstream unavailable");
                Self::Unavailable
            }
            _ => {
                tracing::error!(code = ?status.code(), message = status.message(), "downstream call failed");
                Self::Internal
            }
        }
    }
}

impl ApiError {
    /// A rejected JSON body: 413 past `limit` bytes, 400 otherwise.
    pub fn from_json_rejection(rejection: &JsonRejection, limit: usize) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::PayloadTooLarge(limit);
        }
        Self::BadRequest(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::BadRequest(rejection.body_text())
    }
}

impl From<easynote_shared::validate::Invalid> for ApiError {
    fn from(invalid: easynote_shared::validate::Invalid) -> Self {
        Self::BadRequest(invalid.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downstream_statuses_map_to_the_contract_and_library_text_stays_inside() {
        let cases = [
            (
                Code::InvalidArgument,
                "title is too long",
                StatusCode::BAD_REQUEST,
            ),
            (
                Code::OutOfRange,
                "Error, decoded message length too large: found 6556402 bytes",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                Code::Internal,
                "h2 protocol error",
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
            (
                Code::Unavailable,
                "connection refused",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
            (
                Code::ResourceExhausted,
                "busy",
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        ];
        for (code, message, expected) in cases {
            let error = ApiError::from(tonic::Status::new(code, message));
            assert_eq!(error.status(), expected, "{code:?}");
            let shown = error.to_string();
            if expected != StatusCode::BAD_REQUEST {
                assert!(
                    !shown.contains(message),
                    "{code:?} leaks {message:?}: {shown}"
                );
            }
        }
    }
}
