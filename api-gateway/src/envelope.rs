//! The reply envelope of the contract: `{"code", "message", "data"}`.

use axum::{
    Json,
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::{
    ToSchema,
    openapi::schema::{ObjectBuilder, Schema, Type},
};

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

/// The body of every error reply, and of a success without data:
/// `{"code", "message", "data": null}`. `code` is 0 on success, else one of
/// the contract's codes (10001 to 10006).
#[derive(ToSchema)]
#[allow(dead_code)] // describes what `Envelope::<()>` serialises
pub struct EmptyReply {
    /// 0 on success, else the contract's error code.
    code: i32,
    /// What happened, for people; never a library's text.
    message: String,
    /// Always `null`.
    #[schema(schema_with = null)]
    data: (),
}

fn null() -> Schema {
    ObjectBuilder::new().schema_type(Type::Null).build().into()
}
