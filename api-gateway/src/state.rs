//! The one application state every handler shares.

use std::sync::Arc;

use easynote_shared::{governance::Upstream, shutdown::Shutdown};

use crate::{
    auth::JwtKeys, governance::EdgeGovernance, login_throttle::LoginThrottle, panics::Panics,
    readiness::ReadinessCheck, revocation::Revocations, web::WebApp,
};

/// Cheap to clone: handles to the downstream services and the JWT keys.
#[derive(Debug, Clone)]
pub struct AppState {
    /// user-service instances.
    pub users: Upstream,
    /// note-service instances.
    pub notes: Upstream,
    /// Token signing and checking.
    pub jwt: Arc<JwtKeys>,
    /// Which tokens were logged out, as user-service last said.
    pub revocations: Arc<Revocations>,
    /// Largest accepted request body, for error messages.
    pub body_limit: usize,
    /// Fires when the gateway is stopping (readiness turns false).
    pub shutdown: Shutdown,
    /// Shedding, rate limits, deadlines and lanes.
    pub edge: Arc<EdgeGovernance>,
    /// Failed logins per username.
    pub logins: Arc<LoginThrottle>,
    /// The last downstream readiness check (`/readyz`).
    pub(crate) readiness: Arc<ReadinessCheck>,
    /// The bound on answering one request (`EASYNOTE_HTTP_REQUEST_TIMEOUT`).
    pub request_timeout: std::time::Duration,
    /// Panics caught in the request path (readiness turns false while
    /// requests keep panicking).
    pub panics: Arc<Panics>,
    /// The web app's page, rendered at start-up.
    pub web: Arc<WebApp>,
}
