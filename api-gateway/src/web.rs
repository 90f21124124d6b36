//! The web app at `/`: a page, a script, a style sheet and an icon
//! (`api-gateway/web/`), built into the binary by `build.rs`, that use the
//! public JSON API like any other client.
//!
//! - The page is rendered once at start-up (the trace UI's address goes in
//!   a `<meta>` tag) and revalidated on every load (`no-cache`); the assets
//!   have content hashes in their names, so they are cached for a year and
//!   a new build is never served stale. Gzipped copies are made at build
//!   time and sent to clients that accept them.
//! - The page's Content-Security-Policy allows scripts, styles, images and
//!   requests from this origin only: no inline script or style, no frames
//!   around it, no form posted elsewhere.
//! - The session is the `jwt` cookie that login sets ([`session_cookie`]):
//!   `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's
//!   page sends it), `Secure` when the client came over HTTPS. Why that is
//!   enough against cross-site request forgery is in `docs/api.md`.

use axum::{
    Router,
    body::Bytes,
    extract::{Path, State},
    http::{HeaderMap, HeaderValue, header},
    response::{IntoResponse, Response},
    routing::get,
};
use easynote_shared::config::{ConfigError, Env};

use crate::{error::ApiError, state::AppState};

/// One file of the app, as `build.rs` left it.
#[derive(Debug)]
struct Asset {
    /// Where it is served: `/assets/<stem>.<content hash>.<extension>`.
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    gzipped: &'static [u8],
}

const ASSETS: &[Asset] = &include!(concat!(env!("OUT_DIR"), "/assets.rs"));

/// `index.html` with the assets' hashed names in place.
const INDEX: &str = include_str!(concat!(env!("OUT_DIR"), "/index.html"));

/// The page's Content-Security-Policy.
pub(crate) const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; form-action 'self'; base-uri 'none'; \
     frame-ancestors 'none'";

/// The name of the session cookie: the one the reference reads tokens from.
pub(crate) const SESSION_COOKIE: &str = "jwt";

/// What the page is configured with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebConfig {
    /// `EASYNOTE_TRACE_UI_URL` (unset by default): a trace viewer's address
    /// with `{trace_id}` where the id goes, e.g. Jaeger's
    /// `http://127.0.0.1:16686/trace/{trace_id}`. The page then links each
    /// request's trace id to it.
    pub trace_ui_url: Option<String>,
}

impl WebConfig {
    /// Reads `EASYNOTE_TRACE_UI_URL`.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let Some(url) = env.get("EASYNOTE_TRACE_UI_URL") else {
            return Ok(Self::default());
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "EASYNOTE_TRACE_UI_URL",
                "must be an http:// or https:// address",
            ));
        }
        if !url.contains("{trace_id}") {
            return Err(ConfigError::invalid(
                "EASYNOTE_TRACE_UI_URL",
                "must contain {trace_id} where the trace id goes, e.g. \
                 http://127.0.0.1:16686/trace/{trace_id}",
            ));
        }
        Ok(Self {
            trace_ui_url: Some(url.to_owned()),
        })
    }
}

/// The page as served, rendered once (cloning it for an answer is a
/// reference count, not a copy).
#[derive(Debug)]
pub struct WebApp {
    page: Bytes,
}

impl WebApp {
    /// The page for `config`.
    pub fn new(config: &WebConfig) -> Self {
        let trace_ui = config.trace_ui_url.as_deref().unwrap_or_default();
        Self {
            page: Bytes::from(INDEX.replace("{{trace_ui}}", &escape_attribute(trace_ui))),
        }
    }
}

/// Whether `path` is the app's own (the page and its assets): answered
/// the same to everyone, so no token is looked at.
pub(crate) fn serves(path: &str) -> bool {
    path == "/" || path.starts_with("/assets/")
}

/// `/` and `/assets/…`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(page))
        .route("/assets/{file}", get(asset))
}

async fn page(State(state): State<AppState>) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
        ],
        state.web.page.clone(),
    )
        .into_response()
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Result<Response, ApiError> {
    let path = format!("/assets/{file}");
    let asset = ASSETS
        .iter()
        .find(|asset| asset.path == path)
        .ok_or_else(|| ApiError::NoRoute {
            method: "GET".to_owned(),
            path,
        })?;
    let mut response = if accepts_gzip(&headers) {
        let mut response = asset.gzipped.into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        response
    } else {
        asset.body.into_response()
    };
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=31536000, immutable"),
    );
    headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    Ok(response)
}

/// Whether `Accept-Encoding` allows gzip (not refused with `q=0`).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            let name = parts.next().unwrap_or_default();
            let refused = parts.any(|param| {
                param
                    .strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            });
            (name.eq_ignore_ascii_case("gzip") || name == "*") && !refused
        })
}

/// The `Set-Cookie` value carrying a session token for `max_age`; `secure`
/// when the client reached the gateway over HTTPS.
pub(crate) fn session_cookie(token: &str, max_age: std::time::Duration, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{SESSION_COOKIE}={token}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        max_age.as_secs()
    )
}

/// The `Set-Cookie` value that ends the session in the browser.
pub(crate) fn cleared_session_cookie(secure: bool) -> String {
    session_cookie("", std::time::Duration::ZERO, secure)
}

/// `value` safe inside a double-quoted HTML attribute.
fn escape_attribute(value: &str) -> String {
    value
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_asset_the_page_links_is_served_and_smaller_gzipped() {
        for asset in ASSETS {
            assert!(
                INDEX.contains(asset.path),
                "index.html links {}",
                asset.path
            );
            assert!(
                asset.gzipped.len() < asset.body.len(),
                "{}: {} gzipped bytes, {} plain",
                asset.path,
                asset.gzipped.len(),
                asset.body.len()
            );
        }
        assert!(!INDEX.contains("{{app."), "a placeholder is left: {INDEX}");
    }

    #[test]
    fn the_trace_ui_address_is_checked_and_escaped_into_the_page() {
        let env = |url: &str| Env::from_pairs([("EASYNOTE_TRACE_UI_URL", url)]);
        assert_eq!(
            WebConfig::from_env(&Env::from_pairs::<&str, &str>([])).expect("unset is fine"),
            WebConfig::default()
        );
        for bad in ["javascript:alert(1)//{trace_id}", "http://jaeger/trace/"] {
            let err = WebConfig::from_env(&env(bad)).expect_err(bad).to_string();
            assert!(err.contains("EASYNOTE_TRACE_UI_URL"), "{bad}: {err}");
        }
        let config = WebConfig::from_env(&env("http://j/trace/{trace_id}?a=1&b=\"x\""))
            .expect("a good address");
        let page = String::from_utf8(WebApp::new(&config).page.to_vec()).expect("UTF-8");
        assert!(
            page.contains(r#"content="http://j/trace/{trace_id}?a=1&amp;b=&quot;x&quot;""#),
            "{page}"
        );
    }

    #[test]
    fn gzip_is_sent_only_to_clients_that_accept_it() {
        let with = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::ACCEPT_ENCODING,
                value.parse().expect("a header value"),
            );
            accepts_gzip(&headers)
        };
        assert!(with("gzip, deflate, br"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(with("*"));
        assert!(!with("gzip;q=0, br"));
        assert!(!with("br"));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }

    #[test]
    fn the_session_cookie_is_out_of_scripts_and_other_sites_reach() {
        let cookie = session_cookie("t.o.k", std::time::Duration::from_secs(3600), false);
        assert_eq!(
            cookie,
            "jwt=t.o.k; Path=/; Max-Age=3600; HttpOnly; SameSite=Strict"
        );
        assert!(session_cookie("t", std::time::Duration::from_secs(1), true).ends_with("; Secure"));
        assert_eq!(
            cleared_session_cookie(false),
            "jwt=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
        );
    }
}
