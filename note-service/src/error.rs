//! What can go wrong in note-service, and the one mapping to gRPC statuses.

use easynote_shared::{grpc, validate::Invalid};
use tonic::{Code, Status};

/// A failed note operation.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    /// The input breaks a rule of the contract → `INVALID_ARGUMENT`.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Missing, deleted, or another user's note → `NOT_FOUND`.
    #[error("note not found")]
    NotFound,
    /// The idempotency key was used before with another title or content
    /// → `FAILED_PRECONDITION`; nothing was written.
    #[error("this Idempotency-Key was already used for a different note")]
    KeyReused,
    /// Storage failed → `UNAVAILABLE` when the database is unreachable,
    /// else `INTERNAL` (logged, never sent).
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// user-service failed while attaching author names → `UNAVAILABLE`
    /// when it is down or slow, `INTERNAL` otherwise.
    #[error("user-service call failed")]
    UserService(#[source] Status),
}

impl From<NoteError> for Status {
    fn from(err: NoteError) -> Self {
        match err {
            NoteError::Invalid(invalid) => Status::invalid_argument(invalid.0),
            NoteError::NotFound => Status::not_found(err.to_string()),
            NoteError::KeyReused => Status::failed_precondition(err.to_string()),
            NoteError::UserService(ref status)
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled
                ) =>
            {
                tracing::warn!(code = ?status.code(), message = status.message(), "user-service unavailable");
                Status::unavailable("user-service is unavailable")
            }
            NoteError::Database(ref db) => grpc::storage("note operation failed", db, &err),
            NoteError::UserService(_) => grpc::internal("note operation failed", &err),
        }
    }
}
