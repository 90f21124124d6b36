//! api-gateway: the public HTTP/JSON API of Easy-Note, with JWT auth, in
//! front of user-service and note-service.
//!
//! [`Gateway::build`] binds the listener (port 0 works) and subscribes to
//! the two services; [`Gateway::run`] serves until shutdown, then drains.

pub mod auth;
mod config;
mod envelope;
mod error;
mod extract;
mod routes;
mod state;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{Router, extract::DefaultBodyLimit, response::IntoResponse};
use easynote_shared::{
    discovery::{Discovery, Upstream},
    service_name,
    shutdown::Shutdown,
};
use tokio::net::TcpListener;
use tower_http::{
    catch_panic::CatchPanicLayer,
    trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer},
};
use tracing::Level;

pub use config::{Config, DEV_JWT_SECRET, JwtConfig};
pub use error::ApiError;
pub use state::AppState;

/// A gateway ready to serve: listener bound, downstreams subscribed.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    listener: TcpListener,
    users: Upstream,
    notes: Upstream,
}

impl Gateway {
    /// Binds `config.http_addr` and subscribes to user-service and note-service.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let discovery = Discovery::from_config(&config.discovery);
        let users = Upstream::connect(&discovery, service_name::USER, config.rpc)
            .await
            .context("subscribing to user-service")?;
        let notes = Upstream::connect(&discovery, service_name::NOTE, config.rpc)
            .await
            .context("subscribing to note-service")?;
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding EASYNOTE_HTTP_ADDR {}", config.http_addr))?;
        Ok(Self {
            config,
            listener,
            users,
            notes,
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Serves until `shutdown`, then stops accepting and drains in-flight
    /// requests for at most the configured shutdown timeout.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let state = AppState {
            users: self.users,
            notes: self.notes,
            jwt: Arc::new(auth::JwtKeys::new(&self.config.jwt)),
            body_limit: self.config.body_limit,
            shutdown: shutdown.clone(),
        };
        let app = app(state);
        tracing::info!(%addr, "serving HTTP");
        let graceful = shutdown.clone();
        let server = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { graceful.requested().await });
        let drain_timeout = self.config.lifecycle.shutdown_timeout;
        tokio::select! {
            result = server.into_future() => {
                result.context("serving HTTP")?;
                tracing::info!("HTTP server stopped");
            }
            () = async { shutdown.requested().await; tokio::time::sleep(drain_timeout).await } => {
                tracing::warn!(?drain_timeout, "drain timed out; abandoning requests still running");
            }
        }
        Ok(())
    }
}

/// The whole HTTP application over `state`.
pub fn app(state: AppState) -> Router {
    let body_limit = state.body_limit;
    routes::router()
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal.into_response()
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(DefaultMakeSpan::new().level(Level::INFO))
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .with_state(state)
}
