//! Extractors that answer bad input with the contract's errors instead of
//! axum's plain-text rejections.

use std::{convert::Infallible, net::IpAddr};

use axum::{
    Json,
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Request},
    http::{HeaderMap, StatusCode, header, request::Parts},
};
use easynote_shared::validate;
use serde::de::DeserializeOwned;

use crate::{error::ApiError, state::AppState};

/// A JSON object body: 400 (code 10002) when the content type is not JSON,
/// the body is not a JSON object, or its fields are wrong; 413 when it is
/// over the body limit.
#[derive(Debug, Clone, Copy)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        if !has_json_content_type(req.headers()) {
            return Err(ApiError::BadRequest(
                "Expected request with `Content-Type: application/json`".into(),
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(state.body_limit)
            } else {
                ApiError::BadRequest(rejection.body_text())
            }
        })?;
        // serde would also read a struct from a JSON array, by position; the
        // contract's bodies are objects, so anything else is refused.
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if first.is_some_and(|b| *b != b'{') {
            return Err(ApiError::BadRequest(
                "request body must be a JSON object".into(),
            ));
        }
        match Json::<T>::from_bytes(&bytes) {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(ApiError::from_json_rejection(&rejection, state.body_limit)),
        }
    }
}

/// `application/json` or any `application/*+json`, parameters ignored.
fn has_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence
            .strip_prefix("application/")
            .is_some_and(|subtype| subtype.ends_with("+json"))
}

/// The `{note_id}` path segment: a positive 64-bit integer, else 400.
#[derive(Debug, Clone, Copy)]
pub struct NoteId(pub i64);

impl<S: Send + Sync> FromRequestParts<S> for NoteId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state).await?;
        Ok(Self(validate::parse_id("note_id", &raw)?))
    }
}

/// The optional `Idempotency-Key` header of a create: 1 to 255 visible
/// ASCII characters, else 400 (code 10002); given twice, 400 as well.
#[derive(Debug, Clone, Default)]
pub struct IdempotencyKey(pub Option<String>);

/// The header's name.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let mut values = parts.headers.get_all(IDEMPOTENCY_KEY).iter();
        let Some(value) = values.next() else {
            return Ok(Self(None));
        };
        if values.next().is_some() {
            return Err(ApiError::BadRequest(
                "Idempotency-Key must be given once".into(),
            ));
        }
        let key = value.to_str().map_err(|_| {
            ApiError::BadRequest(
                "Idempotency-Key must be visible ASCII characters without spaces".into(),
            )
        })?;
        validate::idempotency_key(key)?;
        Ok(Self(Some(key.to_owned())))
    }
}

/// The client's address as the HTTP server derived it (client_addr.rs);
/// `None` when the request did not come through it.
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            parts
                .extensions
                .get::<crate::client_addr::ClientAddr>()
                .map(|client| client.0),
        ))
    }
}
