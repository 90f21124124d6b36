//! What can go wrong in user-service, and the one mapping to gRPC statuses.

use easynote_shared::{grpc, validate::Invalid};
use tonic::Status;

/// A failed user operation.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    /// The input breaks a rule of the contract → `INVALID_ARGUMENT`.
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// Registration with a taken username → `ALREADY_EXISTS`.
    #[error("user already exists")]
    UsernameTaken,
    /// Revoking the tokens of an unknown or deleted user → `NOT_FOUND`.
    #[error("user not found")]
    UserNotFound,
    /// Unknown user or wrong password; deliberately indistinguishable → `UNAUTHENTICATED`.
    #[error("wrong username or password")]
    BadCredentials,
    /// Storage failed → `UNAVAILABLE` when the database is unreachable,
    /// else `INTERNAL` (logged, never sent).
    #[error("database error")]
    Database(#[from] sqlx::Error),
    /// Hashing failed → `INTERNAL` (logged, never sent); its queue is
    /// full → `RESOURCE_EXHAUSTED`.
    #[error("password hashing failed")]
    Hashing(#[from] crate::password::HashError),
}

impl From<UserError> for Status {
    fn from(err: UserError) -> Self {
        match err {
            UserError::Invalid(invalid) => Status::invalid_argument(invalid.0),
            UserError::UsernameTaken => Status::already_exists(err.to_string()),
            UserError::UserNotFound => Status::not_found(err.to_string()),
            UserError::BadCredentials => Status::unauthenticated(err.to_string()),
            UserError::Hashing(crate::password::HashError::Busy) => {
                easynote_shared::governance::shed_status(err.to_string())
            }
            UserError::Database(ref db) => grpc::storage("user operation failed", db, &err),
            UserError::Hashing(_) => grpc::internal("user operation failed", &err),
        }
    }
}
