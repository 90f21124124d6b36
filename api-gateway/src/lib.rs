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
pub mod observe;
mod routes;
mod state;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{
    Router, extract::DefaultBodyLimit, middleware, response::IntoResponse, serve::ListenerExt as _,
};
use easynote_shared::telemetry::metrics::HttpServerMetrics;
use easynote_shared::{
    discovery::{Discovery, Registration, Upstream},
    grpc::ErrorChain,
    service_name,
    shutdown::Shutdown,
};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

pub use config::{Config, DEV_JWT_SECRET, JwtConfig};
pub use error::ApiError;
pub use state::AppState;

/// Registry and telemetry name of the gateway.
pub const SERVICE: &str = service_name::GATEWAY;

/// How `api-gateway healthcheck` probes a running gateway.
pub const PROBE: easynote_shared::app::Probe = easynote_shared::app::Probe::Http {
    addr_var: "EASYNOTE_HTTP_ADDR",
    default_addr: config::DEFAULT_HTTP_ADDR,
};

/// Builds the api-gateway the environment describes and runs it until
/// `shutdown`: the whole life of the `api-gateway` binary.
pub async fn serve(env: easynote_shared::config::Env, shutdown: Shutdown) -> anyhow::Result<()> {
    Gateway::build(Config::from_env(&env)?)
        .await?
        .run(shutdown)
        .await
}

/// A gateway ready to serve: listener bound, downstreams subscribed.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    listener: TcpListener,
    discovery: Discovery,
    users: Upstream,
    notes: Upstream,
}

impl Gateway {
    /// Binds `config.http_addr` and subscribes to user-service and note-service.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let discovery = Discovery::from_config(&config.discovery)
            .await
            .context("connecting to the service registry")?;
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
            discovery,
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

    /// Serves until `shutdown`, registered as `easy-note-gateway` once
    /// serving. On shutdown: `/readyz` turns 503, the gateway deregisters,
    /// keeps serving for the registry's grace period, then stops accepting
    /// and drains in-flight requests for at most the shutdown timeout.
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
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        // TCP_NODELAY, or a response written in two segments waits for
        // the client's delayed ACK (~40 ms on Linux).
        let listener = self.listener.tap_io(|tcp| {
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "TCP_NODELAY not set");
            }
        });
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .into_future();
        tokio::pin!(server);
        let discovery = self.discovery;
        let registration = Registration::new(SERVICE, addr, "http");

        // Register while already serving; a shutdown during a slow
        // registration stops without waiting for it.
        let registered = tokio::select! {
            result = &mut server => return result.context("serving HTTP"),
            registered = discovery.register(&registration) => Some(registered),
            () = shutdown.requested() => None,
        };
        let registered = match registered {
            Some(result) => {
                result.with_context(|| format!("registering {SERVICE} ({addr})"))?;
                tracing::info!(%addr, "serving HTTP");
                tokio::select! {
                    result = &mut server => {
                        discovery.deregister(&registration).await.ok();
                        return result.context("serving HTTP");
                    }
                    () = shutdown.requested() => {}
                }
                true
            }
            None => false,
        };

        tracing::info!("shutting down: deregistering, then draining");
        // Also when shutdown cut a registration short: it may have reached
        // the registry all the same.
        if let Err(err) = discovery.deregister(&registration).await {
            tracing::warn!(error = %ErrorChain(&err), "deregistration failed; callers will notice on their own");
        }
        // Keep serving while callers learn that this instance is gone.
        let grace = discovery.deregister_grace();
        if registered && !grace.is_zero() {
            tokio::select! {
                result = &mut server => return result.context("serving HTTP"),
                () = tokio::time::sleep(grace) => {}
            }
        }
        let _ = stop_tx.send(());
        let drain_timeout = self.config.lifecycle.shutdown_timeout;
        match tokio::time::timeout(drain_timeout, &mut server).await {
            Ok(result) => {
                result.context("serving HTTP")?;
                tracing::info!("HTTP server stopped");
            }
            Err(_) => {
                tracing::warn!(
                    ?drain_timeout,
                    "drain timed out; abandoning requests still running"
                );
            }
        }
        Ok(())
    }
}

/// The whole HTTP application over `state`: routes, body limit, panics
/// answered as 500s, and a traced, measured span per request.
pub fn app(state: AppState) -> Router {
    let body_limit = state.body_limit;
    routes::router()
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal.into_response()
        }))
        .layer(middleware::from_fn_with_state(
            HttpServerMetrics::new(),
            observe::observe,
        ))
        .with_state(state)
}
