//! JWT authentication: HS256 tokens carrying the user id, read from the
//! `Authorization: Bearer` header, then the `token` query parameter (only
//! with `EASYNOTE_JWT_QUERY_TOKEN=true`: URLs end up in logs and `Referer`
//! headers), then the `jwt` cookie, as the reference does.

use std::{
    fmt,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    extract::{FromRequestParts, Query},
    http::{HeaderMap, header, request::Parts},
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};

use crate::{config::JwtConfig, error::ApiError, state::AppState};

/// The claims of our tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub id: i64,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issue time, Unix seconds.
    pub iat: u64,
}

/// A freshly issued token.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The compact JWT.
    pub token: String,
    /// When it stops being accepted.
    pub expires_at: SystemTime,
}

/// Signs and checks tokens.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
    query_token: bool,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Keys from the configured secret.
    pub fn new(config: &JwtConfig) -> Self {
        let secret = config.secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iat"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl: config.ttl,
            query_token: config.query_token,
        }
    }

    /// Whether the `token` query parameter is read (`EASYNOTE_JWT_QUERY_TOKEN`).
    pub fn query_token(&self) -> bool {
        self.query_token
    }

    /// Issues a token for `user_id`, valid for the configured lifetime.
    pub fn issue(&self, user_id: i64) -> Result<IssuedToken, ApiError> {
        let now = SystemTime::now();
        let expires_at = now + self.ttl;
        let claims = Claims {
            id: user_id,
            exp: unix_seconds(expires_at),
            iat: unix_seconds(now),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|err| {
            tracing::error!(error = %err, "signing a token failed");
            ApiError::Internal
        })?;
        Ok(IssuedToken { token, expires_at })
    }

    /// The claims of a valid token: HS256 only (so `alg: none` and other
    /// algorithms fail), signed with our key, not expired.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => ApiError::Unauthorized("token has expired"),
                _ => ApiError::Unauthorized("invalid token"),
            })?
            .claims;
        if claims.id <= 0 {
            return Err(ApiError::Unauthorized("invalid token"));
        }
        Ok(claims)
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// The authenticated caller of a route; extracting it answers 401 (code
/// 10004) when no valid token comes with the request.
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    /// The user's id, from the token.
    pub id: i64,
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The token, from the first place that has one (the query only when
/// `query_token` allows it).
pub(crate) fn find_token(parts: &Parts, query_token: bool) -> Option<String> {
    bearer(&parts.headers)
        .or_else(|| {
            if !query_token {
                return None;
            }
            Query::<TokenQuery>::try_from_uri(&parts.uri)
                .ok()
                .and_then(|q| q.0.token)
                .filter(|t| !t.is_empty())
        })
        .or_else(|| cookie(&parts.headers, "jwt"))
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
        .filter(|t| !t.is_empty())
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, value)| *key == name && !value.is_empty())
        .map(|(_, value)| value.to_owned())
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Governance already checked the token of this request.
        if let Some(user) = parts.extensions.get::<Self>() {
            return Ok(*user);
        }
        let token = find_token(parts, state.jwt.query_token())
            .ok_or(ApiError::Unauthorized("missing token"))?;
        let claims = state.jwt.verify(&token)?;
        // The request's span (see `observe`) names who made it.
        tracing::Span::current().record("user.id", claims.id);
        Ok(Self { id: claims.id })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use secrecy::SecretString;

    fn keys(secret: &str, ttl: Duration) -> JwtKeys {
        JwtKeys::new(&JwtConfig {
            secret: SecretString::from(secret),
            ttl,
            query_token: false,
        })
    }

    fn parts(builder: axum::http::request::Builder) -> Parts {
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn tokens_round_trip_and_carry_the_id() {
        let keys = keys("a-test-secret-of-enough-length!!", Duration::from_secs(60));
        let issued = keys.issue(42).expect("issue");
        assert_eq!(keys.verify(&issued.token).expect("verify").id, 42);
    }

    #[test]
    fn foreign_expired_and_unsigned_tokens_are_refused() {
        let ours = keys("a-test-secret-of-enough-length!!", Duration::from_secs(60));
        let theirs = keys("another-secret-of-enough-length!", Duration::from_secs(60));
        let forged = theirs.issue(1).expect("issue").token;
        assert!(matches!(
            ours.verify(&forged),
            Err(ApiError::Unauthorized("invalid token"))
        ));

        let now = unix_seconds(SystemTime::now());
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Claims {
                id: 1,
                exp: now - 10,
                iat: now - 100,
            },
            &EncodingKey::from_secret(b"a-test-secret-of-enough-length!!"),
        )
        .expect("encode");
        assert!(matches!(
            ours.verify(&expired),
            Err(ApiError::Unauthorized("token has expired"))
        ));

        // {"alg":"none","typ":"JWT"} . {"id":1,"exp":9999999999,"iat":0} . (no signature)
        let none =
            "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJpZCI6MSwiZXhwIjo5OTk5OTk5OTk5LCJpYXQiOjB9.";
        assert!(matches!(
            ours.verify(none),
            Err(ApiError::Unauthorized("invalid token"))
        ));
        assert!(matches!(
            ours.verify("garbage"),
            Err(ApiError::Unauthorized("invalid token"))
        ));
    }

    #[test]
    fn token_sources_are_tried_in_the_reference_order() {
        let header_and_query = parts(
            Request::builder()
                .uri("/v1/note/query?token=from-query")
                .header("Authorization", "Bearer from-header")
                .header("Cookie", "jwt=from-cookie"),
        );
        assert_eq!(
            find_token(&header_and_query, true).as_deref(),
            Some("from-header")
        );
        let query_and_cookie = parts(
            Request::builder()
                .uri("/v1/note/query?a=1&token=from-query")
                .header("Cookie", "jwt=from-cookie"),
        );
        assert_eq!(
            find_token(&query_and_cookie, true).as_deref(),
            Some("from-query")
        );
        assert_eq!(
            find_token(&query_and_cookie, false).as_deref(),
            Some("from-cookie"),
            "the query is not read unless turned on"
        );
        let query_only = parts(Request::builder().uri("/v1/note/query?token=from-query"));
        assert_eq!(find_token(&query_only, false), None);
        let cookie_only = parts(
            Request::builder()
                .uri("/x")
                .header("Cookie", "theme=dark; jwt=from-cookie"),
        );
        assert_eq!(
            find_token(&cookie_only, false).as_deref(),
            Some("from-cookie")
        );
        let basic = parts(
            Request::builder()
                .uri("/x")
                .header("Authorization", "Basic abc"),
        );
        assert_eq!(find_token(&basic, true), None);
    }
}
