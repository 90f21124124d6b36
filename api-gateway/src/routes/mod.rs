//! One router per resource, merged into the application (which adds the
//! OpenAPI document that describes them, [`crate::openapi`]).

pub mod health;
pub mod note;
pub mod user;

use axum::{
    Router,
    http::{Method, Uri},
};

use crate::{error::ApiError, state::AppState};

/// Every route of the contract, with enveloped 404/405 for the rest.
pub fn router() -> Router<AppState> {
    Router::new()
        .merge(user::router())
        .merge(note::router())
        .merge(health::router())
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::NoRoute {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}
