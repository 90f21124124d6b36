//! Every RPC the suite calls, each defined once: its method name (what the
//! governance rules, the breakers and the metrics key on), its request and
//! response types, and the client call. A call site names the RPC and
//! nothing else, so the name and the call cannot drift apart:
//!
//! ```ignore
//! let reply = notes.invoke::<QueryNote>(request).await?;
//! ```

use std::future::Future;

use tonic::Status;
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
