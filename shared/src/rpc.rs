//! Every RPC the suite calls, each defined once: its method name (what the
//! governance rules, the breakers and the metrics key on), its request and
//! response types, and the client call. A call site names the RPC and
//! nothing else, so the name and the call cannot drift apart:
//!
//! ```ignore
//! let reply = notes.invoke::<QueryNote>(request).await?;
//! ```
//!
//! The names of gRPC status codes are here too, once: the rules' faults
//! take them and telemetry reports them.

use std::future::Future;

use tonic::{Code, Status};
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse, health_client::HealthClient};

use crate::{
    grpc::{note_client, user_client},
    proto::{note::v1 as note, user::v1 as user},
    telemetry::grpc::TracedChannel,
};

/// One RPC: see the module documentation.
pub trait Rpc {
    /// The method's name, as in the `.proto` file and the rules
    /// (`clients.SERVICE.METHOD`).
    const METHOD: &'static str;
    /// What it is sent.
    type Request: Clone + Send + 'static;
    /// What it answers.
    type Response;
    /// Sends `request` on `channel`.
    fn send(
        channel: TracedChannel,
        request: tonic::Request<Self::Request>,
    ) -> impl Future<Output = Result<tonic::Response<Self::Response>, Status>> + Send;
}

/// `Name = client.method(Request) -> Response;`: a unit type `Name`
/// implementing [`Rpc`], whose `METHOD` is `"Name"`.
macro_rules! rpcs {
    ($($(#[$doc:meta])* $name:ident = $client:ident.$method:ident($request:ty) -> $response:ty;)*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name;

        impl Rpc for $name {
            const METHOD: &'static str = stringify!($name);
            type Request = $request;
            type Response = $response;

            fn send(
                channel: TracedChannel,
                request: tonic::Request<Self::Request>,
            ) -> impl Future<Output = Result<tonic::Response<Self::Response>, Status>> + Send {
                async move { $client(channel).$method(request).await }
            }
        }
    )*};
}

rpcs! {
    /// user-service: registers a user.
    CreateUser = user_client.create_user(user::CreateUserRequest) -> user::CreateUserResponse;
    /// user-service: users by id (authors' names).
    MGetUser = user_client.m_get_user(user::MGetUserRequest) -> user::MGetUserResponse;
    /// user-service: checks a password.
    CheckUser = user_client.check_user(user::CheckUserRequest) -> user::CheckUserResponse;
    /// user-service: logs out a token, or every token of a user.
    RevokeTokens = user_client.revoke_tokens(user::RevokeTokensRequest) -> user::RevokeTokensResponse;
    /// user-service: whether a token is still in force.
    CheckToken = user_client.check_token(user::CheckTokenRequest) -> user::CheckTokenResponse;
    /// note-service: writes a note.
    CreateNote = note_client.create_note(note::CreateNoteRequest) -> note::CreateNoteResponse;
    /// note-service: notes by id.
    MGetNote = note_client.m_get_note(note::MGetNoteRequest) -> note::MGetNoteResponse;
    /// note-service: deletes a note.
    DeleteNote = note_client.delete_note(note::DeleteNoteRequest) -> note::DeleteNoteResponse;
    /// note-service: changes a note.
    UpdateNote = note_client.update_note(note::UpdateNoteRequest) -> note::UpdateNoteResponse;
    /// note-service: a page of a user's notes.
    QueryNote = note_client.query_note(note::QueryNoteRequest) -> note::QueryNoteResponse;
    /// Either service: the standard gRPC health check (readiness).
    Check = health_client.check(HealthCheckRequest) -> HealthCheckResponse;
}

/// A health client on `channel`.
fn health_client(channel: TracedChannel) -> HealthClient<TracedChannel> {
    HealthClient::new(channel)
}

/// A gRPC code from its canonical name (`UNAVAILABLE`).
pub fn code_from_name(name: &str) -> Option<Code> {
    (0..=16)
        .map(Code::from_i32)
        .find(|code| code_name(*code) == name)
}

/// The canonical name of a gRPC code: what the rules' `status` takes,
/// and what `rpc.response.status_code` and `error.type` say in telemetry.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_round_trip() {
        for n in 0..=16 {
            let code = Code::from_i32(n);
            assert_eq!(code_from_name(code_name(code)), Some(code));
        }
        assert_eq!(code_from_name("unavailable"), None);
    }
}
