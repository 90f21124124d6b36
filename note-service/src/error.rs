//! What can go wrong in note-service, and the one mapping to gRPC statuses.

use easynote_shared::{governance, grpc, validate::Invalid};
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
    /// when it is down or slow, `RESOURCE_EXHAUSTED` when it sheds load
    /// (marked as shed when it was), `INTERNAL` otherwise.
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
                governance::carry_rule(status, Status::unavailable("user-service is unavailable"))
            }
            // Overloaded, not broken: the caller answers 503 and may retry
            // later; a shed stays a shed, so no breaker counts it against
            // note-service, which is healthy.
            NoteError::UserService(ref status) if status.code() == Code::ResourceExhausted => {
                tracing::warn!(message = status.message(), "user-service overloaded");
                let message = "user-service is overloaded".to_owned();
                let passed_on = if governance::is_shed(status) {
                    governance::shed_status(message)
                } else {
                    Status::resource_exhausted(message)
                };
                governance::carry_rule(status, passed_on)
            }
            NoteError::Database(ref db) => grpc::storage("note operation failed", db, &err),
            NoteError::UserService(_) => grpc::internal("note operation failed", &err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_overloaded_user_service_is_passed_on_as_overload_not_as_an_internal_error() {
        let shed = Status::from(NoteError::UserService(governance::shed_status(
            "in-flight limit of MGetUser reached".into(),
        )));
        assert_eq!(shed.code(), Code::ResourceExhausted);
        assert_eq!(shed.message(), "user-service is overloaded");
        assert!(governance::is_shed(&shed), "a shed stays a shed");

        let exhausted = Status::from(NoteError::UserService(Status::resource_exhausted("quota")));
        assert_eq!(exhausted.code(), Code::ResourceExhausted);
        assert!(!governance::is_shed(&exhausted));

        let unavailable = Status::from(NoteError::UserService(Status::deadline_exceeded("slow")));
        assert_eq!(unavailable.code(), Code::Unavailable);
        let other = Status::from(NoteError::UserService(Status::data_loss("?")));
        assert_eq!(other.code(), Code::Internal);
    }
}
