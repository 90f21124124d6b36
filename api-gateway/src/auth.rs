//! JWT authentication: HS256 tokens carrying the user id, read from the
//! `Authorization: Bearer` header, then the `token` query parameter (only
//! with `EASYNOTE_JWT_QUERY_TOKEN=true`: URLs end up in logs and `Referer`
//! headers), then the `jwt` cookie, as the reference does.
//!
//! Every token names its issuer and audience (`iss`, `aud`, both checked),
//! has a unique `jti` (128 random bits as 32 hex digits) and carries the
//! user's token epoch at login (`epoch`); a token lacking any of them is
//! refused. Whether a valid token is still in force (not logged out) is
//! asked of user-service through [`crate::revocation`].
//!
//! All of it happens once per request, in the authentication layer
//! ([`crate::authenticate`]): it leaves the outcome in the request as a
//! [`Caller`], which the per-user rate limit and the lanes read, and which
//! the [`AuthUser`] extractor of the routes that need a user turns into
//! the user or a 401.

#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
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

use crate::{
    config::{ClaimsConfig, JwtConfig},
    error::ApiError,
};

/// The claims of our tokens.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id.
    pub id: i64,
    /// Expiry, Unix seconds.
    pub exp: u64,
    /// Issue time, Unix seconds.
    pub iat: u64,
    /// Who issued it (`EASYNOTE_JWT_ISSUER`).
    pub iss: String,
    /// Whom it is for (`EASYNOTE_JWT_AUDIENCE`).
    pub aud: String,
    /// This token's id: 32 hex digits.
    pub jti: String,
    /// The user's token epoch when it was issued; "log out everywhere"
    /// moves the user's on, which revokes every token of an earlier one.
    pub epoch: i64,
}

/// What identifies one token for revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenId {
    /// The `jti`.
    pub jti: u128,
    /// The `epoch` claim.
    pub epoch: i64,
    /// The `exp` claim: a revocation is kept until then.
    pub expires_at: u64,
}

impl TokenId {
    /// The `jti` as issued: 32 lowercase hex digits.
    pub fn jti_hex(&self) -> String {
        format!("{:032x}", self.jti)
    }
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
    claims: ClaimsConfig,
    /// Tokens verified, counted for a test only (not in a release build's
    /// hot path).
    #[cfg(test)]
    verified: AtomicU64,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    /// Keys from the configured secret, issuing and requiring `claims`'
    /// issuer and audience.
    pub fn new(config: &JwtConfig, claims: &ClaimsConfig) -> Self {
        let secret = config.secret.expose_secret().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud"]);
        validation.set_issuer(&[&claims.issuer]);
        validation.set_audience(&[&claims.audience]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl: config.ttl,
            query_token: config.query_token,
            claims: claims.clone(),
            #[cfg(test)]
            verified: AtomicU64::new(0),
        }
    }

    /// How many tokens [`JwtKeys::verify`] has checked: one per request
    /// that carries a token (`one_verification_per_request` counts them).
    #[cfg(test)]
    pub(crate) fn verifications(&self) -> u64 {
        self.verified.load(Ordering::Relaxed)
    }

    /// Whether the `token` query parameter is read (`EASYNOTE_JWT_QUERY_TOKEN`).
    pub fn query_token(&self) -> bool {
        self.query_token
    }

    /// Issues a token for `user_id` in its token epoch `epoch`, valid for
    /// the configured lifetime.
    pub fn issue(&self, user_id: i64, epoch: i64) -> Result<IssuedToken, ApiError> {
        let now = SystemTime::now();
        let expires_at = now + self.ttl;
        let claims = Claims {
            id: user_id,
            exp: unix_seconds(expires_at),
            iat: unix_seconds(now),
            iss: self.claims.issuer.clone(),
            aud: self.claims.audience.clone(),
            jti: new_jti()?,
            epoch,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|err| {
            tracing::error!(error = %err, "signing a token failed");
            ApiError::Internal
        })?;
        Ok(IssuedToken { token, expires_at })
    }

    /// The claims of a valid token: HS256 only (so `alg: none` and other
    /// algorithms fail), signed with our key, not expired, our issuer and
    /// audience, with a `jti` and an `epoch`. Whether it was revoked is
    /// not checked here (see [`crate::revocation`]).
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        #[cfg(test)]
        self.verified.fetch_add(1, Ordering::Relaxed);
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => ApiError::Unauthorized("token has expired"),
                _ => ApiError::Unauthorized("invalid token"),
            })?
            .claims;
        if claims.id <= 0 || parse_jti(&claims.jti).is_none() || claims.epoch < 0 {
            return Err(ApiError::Unauthorized("invalid token"));
        }
        Ok(claims)
    }
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

/// A fresh `jti`: 128 bits from the system's randomness.
fn new_jti() -> Result<String, ApiError> {
    use ring::rand::{SecureRandom as _, SystemRandom};
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).map_err(|_| {
        tracing::error!("no system randomness for a token id");
        ApiError::Internal
    })?;
    Ok(format!("{:032x}", u128::from_be_bytes(bytes)))
}

/// A `jti` as we issue them (32 lowercase hex digits), as a number.
fn parse_jti(jti: &str) -> Option<u128> {
    (jti.len() == 32 && jti.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| u128::from_str_radix(jti, 16).ok())
        .flatten()
}

/// The authenticated caller of a route; extracting it answers 401 (code
/// 10004) when no valid token comes with the request, or when the token
/// was revoked (logged out).
#[derive(Debug, Clone, Copy)]
pub struct AuthUser {
    /// The user's id, from the token.
    pub id: i64,
    /// The token the request came with.
    pub token: TokenId,
}

impl AuthUser {
    /// The caller a valid token names.
    pub fn of(claims: &Claims) -> Self {
        Self {
            id: claims.id,
            token: TokenId {
                jti: parse_jti(&claims.jti).unwrap_or_default(),
                epoch: claims.epoch,
                expires_at: claims.exp,
            },
        }
    }
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
        .or_else(|| from_this_site(&parts.headers).then(|| cookie(&parts.headers, "jwt"))?)
}

/// Whether a cookie may speak for the request: not when a browser says it
/// comes from another origin (`Sec-Fetch-Site` other than `same-origin`, or
/// `none` for an address typed in). The web app's cookie is
/// `SameSite=Strict`, so other sites' pages do not send it anyway; this
/// also refuses it from a sibling subdomain (same site, other origin).
/// Clients that are not browsers send no `Sec-Fetch-Site` and may present
/// the cookie as the contract allows.
fn from_this_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .is_none_or(|site| site == "same-origin" || site == "none")
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

/// Who a request comes from, as the authentication layer found it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// No token came with the request.
    Anonymous,
    /// A valid token, still in force.
    User(AuthUser),
    /// A token came but is not accepted (forged, expired, revoked), or
    /// user-service could not say whether it was revoked: what the routes
    /// that need a user answer.
    Refused(ApiError),
}

impl Caller {
    /// The user, when the token was accepted.
    pub fn user(&self) -> Option<AuthUser> {
        match self {
            Self::User(user) => Some(*user),
            Self::Anonymous | Self::Refused(_) => None,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for AuthUser {
    type Rejection = ApiError;

    /// The user the authentication layer accepted, else 401 (or 503 when
    /// user-service could not say whether the token was revoked).
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        match parts.extensions.get::<Caller>() {
            Some(Caller::User(user)) => Ok(*user),
            Some(Caller::Refused(err)) => Err(err.clone()),
            Some(Caller::Anonymous) => Err(ApiError::Unauthorized("missing token")),
            None => {
                tracing::error!("a route needs a user but the authentication layer did not run");
                Err(ApiError::Internal)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;
    use secrecy::SecretString;

    const SECRET: &str = "a-test-secret-of-enough-length!!";

    fn keys(secret: &str, ttl: Duration) -> JwtKeys {
        JwtKeys::new(
            &JwtConfig {
                secret: SecretString::from(secret),
                ttl,
                query_token: false,
            },
            &ClaimsConfig::default(),
        )
    }

    fn now() -> u64 {
        unix_seconds(SystemTime::now())
    }

    fn claims(id: i64) -> serde_json::Value {
        serde_json::json!({
            "id": id, "exp": now() + 60, "iat": now(), "iss": "easy-note",
            "aud": "easy-note-api", "jti": "00112233445566778899aabbccddeeff", "epoch": 0,
        })
    }

    fn sign(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("encode")
    }

    fn parts(builder: axum::http::request::Builder) -> Parts {
        builder.body(()).expect("request").into_parts().0
    }

    #[test]
    fn tokens_round_trip_and_carry_the_id_epoch_and_a_fresh_jti() {
        let keys = keys(SECRET, Duration::from_secs(60));
        let first = keys
            .verify(&keys.issue(42, 3).expect("issue").token)
            .expect("verify");
        let second = keys
            .verify(&keys.issue(42, 3).expect("issue").token)
            .expect("verify");
        assert_eq!((first.id, first.epoch), (42, 3));
        assert_eq!(
            (first.iss.as_str(), first.aud.as_str()),
            ("easy-note", "easy-note-api")
        );
        assert_ne!(first.jti, second.jti, "every token has its own jti");
        assert_eq!(AuthUser::of(&first).token.jti_hex(), first.jti);
    }

    #[test]
    fn tokens_of_another_issuer_or_audience_or_without_an_id_or_epoch_are_refused() {
        let ours = keys(SECRET, Duration::from_secs(60));
        assert!(
            ours.verify(&sign(&claims(1))).is_ok(),
            "the well-formed case"
        );
        type Change = fn(&mut serde_json::Value);
        let cases: [(&str, Change); 8] = [
            ("another issuer", |c| c["iss"] = "someone-else".into()),
            ("another audience", |c| c["aud"] = "another-api".into()),
            ("no issuer", |c| {
                drop(c.as_object_mut().unwrap().remove("iss"))
            }),
            ("no audience", |c| {
                drop(c.as_object_mut().unwrap().remove("aud"))
            }),
            ("no jti", |c| drop(c.as_object_mut().unwrap().remove("jti"))),
            ("a jti not of ours", |c| c["jti"] = "not-hex".into()),
            ("no epoch", |c| {
                drop(c.as_object_mut().unwrap().remove("epoch"))
            }),
            ("a negative epoch", |c| c["epoch"] = (-1).into()),
        ];
        for (what, change) in cases {
            let mut claims = claims(1);
            change(&mut claims);
            assert!(
                matches!(
                    ours.verify(&sign(&claims)),
                    Err(ApiError::Unauthorized("invalid token"))
                ),
                "a token with {what} must be refused"
            );
        }
    }

    #[test]
    fn foreign_expired_and_unsigned_tokens_are_refused() {
        let ours = keys("a-test-secret-of-enough-length!!", Duration::from_secs(60));
        let theirs = keys("another-secret-of-enough-length!", Duration::from_secs(60));
        let forged = theirs.issue(1, 0).expect("issue").token;
        assert!(matches!(
            ours.verify(&forged),
            Err(ApiError::Unauthorized("invalid token"))
        ));

        let mut expired = claims(1);
        expired["exp"] = (now() - 10).into();
        expired["iat"] = (now() - 100).into();
        let expired = sign(&expired);
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
