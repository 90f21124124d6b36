//! `/ping`, `/healthz` (liveness) and `/readyz` (readiness: both downstream
//! services answer their gRPC health checks, and requests are not
//! panicking).

use std::{error::Error as _, time::Duration};

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use easynote_shared::discovery::Upstream;
use serde::Serialize;
use serde_json::{Value, json};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use utoipa::ToSchema;

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

/// Readiness of each downstream.
#[derive(Debug, Serialize, ToSchema)]
pub struct Readiness {
    user_service: String,
    note_service: String,
}

/// Readiness: both services answer their gRPC health checks.
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Envelope<Readiness>),
        (status = 503, description = "A service is not ready, or the gateway is stopping (code 10001)", body = Envelope<Readiness>),
    ))]
pub(crate) async fn readyz(State(state): State<AppState>) -> (StatusCode, Envelope<Readiness>) {
    let (users, notes) = tokio::join!(check(&state.users), check(&state.notes));
    let stopping = state.shutdown.is_requested();
    let panicking = state.panics.failing();
    let ready = users.is_ok() && notes.is_ok() && !stopping && !panicking;
    let describe = |r: Result<(), String>| r.map_or_else(|e| e, |()| "SERVING".to_owned());
    let readiness = Readiness {
        user_service: describe(users),
        note_service: describe(notes),
    };
    if ready {
        (StatusCode::OK, Envelope::ok(readiness))
    } else {
        let message = if stopping {
            "shutting down"
        } else if panicking {
            "requests are failing"
        } else {
            "a downstream service is not ready"
        };
        let mut body = Envelope::ok(readiness);
        body.code = 10001;
        body.message = message.to_owned();
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

/// `Ok` when one instance of the service answers SERVING in time.
async fn check(upstream: &Upstream) -> Result<(), String> {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let check = upstream.call("Check", request, |channel, request| async move {
        HealthClient::new(channel).check(request).await
    });
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
