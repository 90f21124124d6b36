//! The authentication layer: each request's token is found, verified and
//! asked about revocation here, once, and the outcome is left in the
//! request as a [`Caller`] for the layers and handlers after it (the
//! per-user rate limit, the lanes, the [`crate::auth::AuthUser`]
//! extractor).

use std::sync::Arc;

use axum::{
    extract::{Request, State},
    http::request::Parts,
    middleware::Next,
    response::Response,
};
use easynote_shared::governance::Upstream;

use crate::{
    auth::{AuthUser, Caller, JwtKeys, find_token},
    revocation::Revocations,
};

/// What authenticating a request needs: the keys, the revocation cache and
/// user-service, which says what was revoked.
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// Token checking.
    pub jwt: Arc<JwtKeys>,
    /// Which tokens were logged out, as user-service last said.
    pub revocations: Arc<Revocations>,
    /// user-service instances.
    pub users: Upstream,
}

impl Authenticator {
    /// The caller of a request with these parts.
    async fn caller(&self, parts: &Parts) -> Caller {
        let Some(token) = find_token(parts, self.jwt.query_token()) else {
            return Caller::Anonymous;
        };
        let user = match self.jwt.verify(&token) {
            Ok(claims) => AuthUser::of(&claims),
            Err(err) => return Caller::Refused(err),
        };
        match self.revocations.check(&self.users, &user).await {
            Ok(()) => Caller::User(user),
            Err(err) => Caller::Refused(err),
        }
    }
}

/// The layer; see the module documentation. Probes and the web app's page
/// and assets are not asked about.
pub async fn authenticate(
    State(authenticator): State<Authenticator>,
    request: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = request.into_parts();
    let path = parts.uri.path();
    let caller = if crate::governance::exempt(path) || crate::web::serves(path) {
        Caller::Anonymous
    } else {
        authenticator.caller(&parts).await
    };
    if let Some(user) = caller.user() {
        // The request's span (see `observe`) names who made it.
        tracing::Span::current().record("user.id", user.id);
    }
    parts.extensions.insert(caller);
    next.run(Request::from_parts(parts, body)).await
}
