//! `/ping`, `/healthz` (liveness) and `/readyz` (readiness: both downstream
//! services answer their gRPC health checks, and requests are not
//! panicking). These are public and never
//! limited (an orchestrator must reach them), so none costs more than a
//! constant: `/readyz` reuses its downstream check for a second.

use std::{
    error::Error as _,
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use easynote_shared::{discovery::Upstream, rpc, service_name};
use serde_json::{Value, json};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::{envelope::Envelope, state::AppState};

/// How long readiness waits for each downstream.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// Health routes; none needs a token.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ping", get(ping))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

/// The reference's bare reply: `{"message": "pong"}`.
#[utoipa::path(get, path = "/ping", tag = "health",
    responses((status = 200, description = "Alive", body = Value, example = json!({"message": "pong"}))))]
pub(crate) async fn ping() -> Json<Value> {
    Json(json!({ "message": "pong" }))
}

/// Liveness: the gateway answers.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses((status = 200, description = "Alive", body = Envelope<Value>)))]
pub(crate) async fn healthz() -> Envelope<Value> {
    Envelope::ok(json!({ "status": "alive" }))
}

/// How long a readiness result is answered before the downstreams are
/// asked again: however often `/readyz` is called, each service gets at
/// most one health check per second from this gateway.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// The last downstream check, shared by every `/readyz` request.
#[derive(Debug, Default)]
pub struct ReadinessCheck {
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl ReadinessCheck {
    /// Whether both services answered their health checks, asked at most
    /// once per [`RECHECK_AFTER`]; callers arriving during a check wait for
    /// its result rather than starting their own.
    async fn downstreams_ready(&self, state: &AppState) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ready)) = *last
            && at.elapsed() < RECHECK_AFTER
        {
            return ready;
        }
        let (users, notes) = tokio::join!(check(&state.users), check(&state.notes));
        // The reasons go to the log; the answer names none of them.
        for (service, result) in [(service_name::USER, &users), (service_name::NOTE, &notes)] {
            if let Err(reason) = result {
                tracing::warn!(service, %reason, "not ready: a downstream service is not serving");
            }
        }
        let ready = users.is_ok() && notes.is_ok();
        *last = Some((Instant::now(), ready));
        ready
    }
}

/// Readiness: both services answer their gRPC health checks (checked at
/// most once a second), requests are not panicking one after another, and
/// the gateway is not stopping. The answer is the same generic one whatever
/// the reason; the reasons are logged.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Envelope<Value>, example = json!({"code": 0, "message": "Success", "data": {"status": "ready"}})),
        (status = 503, description = "Not ready: a service is not, requests keep panicking, or the gateway is stopping (code 10001)", body = Envelope<Value>),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Envelope<Value>) {
    let panicking = state.panics.failing();
    if panicking {
        tracing::warn!("not ready: requests keep panicking");
    }
    let ready = !state.shutdown.is_requested()
        && !panicking
        && state.readiness.downstreams_ready(&state).await
        && !state.shutdown.is_requested();
    if ready {
        (StatusCode::OK, Envelope::ok(json!({ "status": "ready" })))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Envelope {
                code: 10001,
                message: "not ready".to_owned(),
                data: None,
            },
        )
    }
}
/// `Ok` when one instance of the service answers SERVING in time.
async fn check(upstream: &Upstream) -> Result<(), String> {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let check = upstream.invoke::<rpc::Check>(request);
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(reply)) if reply.get_ref().status() == ServingStatus::Serving => Ok(()),
        Ok(Ok(reply)) => Err(format!("{:?}", reply.get_ref().status())),
        Ok(Err(status))
            if status.code() == tonic::Code::Unavailable && status.source().is_none() =>
        {
            Err(status.message().to_owned())
        }
        Ok(Err(status)) => Err(format!("unreachable ({:?})", status.code())),
        Err(_) => Err("timed out".to_owned()),
    }
}
