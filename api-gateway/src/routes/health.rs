//! `/ping`, `/healthz` (liveness) and `/readyz` (readiness: both downstream
//! services answer their gRPC health checks, and requests are not
//! panicking). These are public and never
//! limited (an orchestrator must reach them), so none costs more than a
//! constant: `/readyz` reuses its downstream check for a second.

use axum::{Json, Router, extract::State, http::StatusCode, routing::get};
use serde_json::{Value, json};

use easynote_shared::governance;

use crate::{envelope::Envelope, state::AppState};

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

/// Readiness: both services answer their gRPC health checks (checked at
/// most once a second), requests are not panicking one after another, and
/// the gateway is not stopping. The answer is the same generic one whatever
/// the reason; the reasons are logged. Either way it names the revision of
/// the governance rules the gateway applies (`x-easynote-rules-revision`,
/// and `rules_revision` when ready).
#[utoipa::path(get, path = "/readyz", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Envelope<Value>,
            headers(("x-easynote-rules-revision" = String, description = "The governance rules' revision (content hash, or `default`)")),
            example = json!({"code": 0, "message": "Success", "data": {"status": "ready", "rules_revision": "default"}})),
        (status = 503, description = "Not ready: a service is not, requests keep panicking, or the gateway is stopping (code 10001)", body = Envelope<Value>,
            headers(("x-easynote-rules-revision" = String, description = "The governance rules' revision"))),
    ))]
pub(crate) async fn readyz(
    State(state): State<AppState>,
) -> (StatusCode, [(&'static str, String); 1], Envelope<Value>) {
    let revision = state.edge.governance().active().version.clone();
    let header = [(governance::REVISION_HEADER, revision.clone())];
    let panicking = state.panics.failing();
    if panicking {
        tracing::warn!("not ready: requests keep panicking");
    }
    let ready = !state.shutdown.is_requested()
        && !panicking
        && state
            .readiness
            .downstreams_ready(&state.users, &state.notes)
            .await
        && !state.shutdown.is_requested();
    if ready {
        let data = json!({ "status": "ready", "rules_revision": revision });
        (StatusCode::OK, header, Envelope::ok(data))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            header,
            Envelope {
                code: 10001,
                message: "not ready".to_owned(),
                data: None,
            },
        )
    }
}
