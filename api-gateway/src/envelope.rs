//! The reply envelope of the contract: `{"code", "message", "data"}`.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

/// `code` 0, `message` "Success".
pub const SUCCESS: &str = "Success";

/// Every JSON reply of the API.
#[derive(Debug, Serialize, ToSchema)]
pub struct Envelope<T> {
    /// 0 on success, otherwise one of the contract's error codes.
    pub code: i32,
    /// Human-readable outcome.
    pub message: String,
    /// The payload, or `null`.
    pub data: Option<T>,
}

impl<T: Serialize> Envelope<T> {
    /// A success carrying `data`.
    pub fn ok(data: T) -> Self {
        Self {
            code: 0,
            message: SUCCESS.to_owned(),
            data: Some(data),
        }
    }
}

impl Envelope<()> {
    /// A success with `data: null`.
    pub fn empty() -> Self {
        Self {
            code: 0,
            message: SUCCESS.to_owned(),
            data: None,
        }
    }

    /// An error with `data: null`.
    pub fn error(code: i32, message: String) -> Self {
        Self {
            code,
            message,
            data: None,
        }
    }
}

impl<T: Serialize> IntoResponse for Envelope<T> {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}
