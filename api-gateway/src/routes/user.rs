//! `/v1/user/register`, `/v1/user/login` and `/v1/user/logout`.

use std::time::SystemTime;

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, header},
    routing::post,
};
use easynote_shared::{
    proto::user::v1::{CheckUserRequest, CreateUserRequest},
    rpc,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    auth::AuthUser,
    envelope::{EmptyReply, Envelope, SUCCESS},
    error::{ApiError, ApiResult},
    extract::{ApiJson, ClientIp},
    login_throttle::Attempt,
    observe::came_over_https,
    state::AppState,
    web::{cleared_session_cookie, session_cookie},
};

/// Routes of the user resource.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/user/register", post(register))
        .route("/v1/user/login", post(login))
        .route("/v1/user/logout", post(logout))
}

/// Body of register and login.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    /// 1 to 128 characters, no control, zero-width or bidi control
    /// characters, no surrounding spaces; compared in NFKC form.
    #[schema(min_length = 1, max_length = 128)]
    username: String,
    /// 6 to 128 characters.
    #[schema(min_length = 6, max_length = 128, format = Password)]
    password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}
/// Registers an account.
#[utoipa::path(
    post,
    path = "/v1/user/register",
    tag = "user",
    request_body = Credentials,
    responses(
        (status = 200, description = "Registered", body = EmptyReply),
        (status = 409, description = "The username is taken (code 10003)", body = EmptyReply),
    ),
)]
pub(crate) async fn register(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<Credentials>,
) -> ApiResult<Envelope<()>> {
    let request = CreateUserRequest {
        username: body.username,
        password: body.password,
    };
    state.users.invoke::<rpc::CreateUser>(request).await?;
    Ok(Envelope::empty())
}

/// The token and its expiry.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenData {
    token: String,
    /// RFC 3339, UTC.
    expire: String,
}

/// Login keeps the reference's top-level `token`/`expire` beside the envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct LoginReply {
    code: i32,
    message: &'static str,
    token: String,
    expire: String,
    data: TokenData,
}
/// Logs in: a JWT for the `Authorization: Bearer` header.
///
/// Throttled per username (login_throttle/): the check comes before
/// user-service is asked and does not depend on the account existing, so
/// a 429 says nothing about it. The reply carries a token: it is sent with
/// `Cache-Control: no-store` (http/).
#[utoipa::path(
    post,
    path = "/v1/user/login",
    tag = "user",
    request_body = Credentials,
    responses(
        (status = 200, description = "The token, in `data` and at the top level; also set as the `jwt` cookie (`HttpOnly`, `SameSite=Strict`) for the web app", body = LoginReply,
            headers(("set-cookie" = String, description = "`jwt=<token>; Path=/; Max-Age=<lifetime>; HttpOnly; SameSite=Strict`, `Secure` over HTTPS"))),
        (status = 401, description = "Wrong username or password (code 10004)", body = EmptyReply),
    ),
)]
pub(crate) async fn login(
    State(state): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ApiJson(body): ApiJson<Credentials>,
) -> ApiResult<([(header::HeaderName, String); 1], Json<LoginReply>)> {
    let attempt = Attempt::new(&body.username, ip);
    // Reserved before user-service is asked: concurrent guesses cannot
    // pass the allowance. Dropped unsettled (another error, or the client
    // gone), the reservation is given back.
    let reservation = state.logins.reserve(&attempt).await?;
    let request = CheckUserRequest {
        username: body.username,
        password: body.password,
    };
    let checked = state.users.invoke::<rpc::CheckUser>(request).await;
    let (user_id, token_epoch) = match checked {
        Ok(reply) => {
            reservation.succeeded().await;
            let reply = reply.into_inner();
            (reply.user_id, reply.token_epoch)
        }
        Err(status) => {
            if status.code() == tonic::Code::Unauthenticated {
                reservation.failed().await;
            }
            return Err(status.into());
        }
    };
    let issued = state.jwt.issue(user_id, token_epoch)?;
    let expire = rfc3339(issued.expires_at);
    // The web app's session: a cookie no script can read.
    let lifetime = issued
        .expires_at
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    let cookie = session_cookie(&issued.token, lifetime, came_over_https(&headers));
    let reply = Json(LoginReply {
        code: 0,
        message: SUCCESS,
        token: issued.token.clone(),
        expire: expire.clone(),
        data: TokenData {
            token: issued.token,
            expire,
        },
    });
    Ok(([(header::SET_COOKIE, cookie)], reply))
}

/// Body of logout; the body itself may be left out.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Logout {
    /// Also every other token of the user (every device), not only the
    /// one presented.
    #[serde(default)]
    everywhere: bool,
}

/// Logs out: the token presented is refused from now on, and with
/// `everywhere` every token the user holds.
///
/// This gateway refuses them at once; other gateway replicas within
/// `EASYNOTE_REVOCATION_CACHE_TTL` (default 1 s). A later login gets a
/// token that works.
#[utoipa::path(
    post,
    path = "/v1/user/logout",
    tag = "user",
    request_body(content = Option<Logout>, description = "Optional; `{}` or no body logs out only the token presented"),
    responses(
        (status = 200, description = "Logged out; the `jwt` cookie is cleared", body = EmptyReply),
        (status = 401, description = "No valid token (code 10004)", body = EmptyReply),
    ),
    security(("bearer" = [])),
)]
pub(crate) async fn logout(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<([(header::HeaderName, String); 1], Envelope<()>)> {
    // No body, and `null`, are the default: this token only.
    let Logout { everywhere } = if body.iter().all(u8::is_ascii_whitespace) {
        Logout::default()
    } else {
        serde_json::from_slice::<Option<Logout>>(&body)
            .map_err(|err| ApiError::BadRequest(format!("invalid logout body: {err}")))?
            .unwrap_or_default()
    };
    state
        .revocations
        .revoke(&state.users, &user, everywhere)
        .await?;
    tracing::info!(user.id = user.id, everywhere, "logged out");
    let cookie = cleared_session_cookie(came_over_https(&headers));
    Ok(([(header::SET_COOKIE, cookie)], Envelope::empty()))
}

fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}
