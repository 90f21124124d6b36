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
pub mod governance;
mod http;
pub mod login_throttle;
pub mod observe;
mod openapi;
pub mod revocation;
mod routes;
mod state;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{Router, extract::DefaultBodyLimit, middleware, response::IntoResponse};
use easynote_shared::telemetry::metrics::HttpServerMetrics;
use easynote_shared::{
    discovery::{Discovery, Registration, Upstream},
    governance::Governance,
    lifecycle::{self, Lifecycle},
    service_name,
    shutdown::Shutdown,
    tls::Tls,
};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

pub use config::{Config, DEV_JWT_SECRET, JwtConfig};
pub use error::ApiError;
pub use http::HttpConfig;
pub use login_throttle::LoginThrottleConfig;
pub use state::AppState;

/// Registry and telemetry name of the gateway.
pub const SERVICE: &str = service_name::GATEWAY;

/// What the binary is, for `--help`.
pub const ABOUT: &str = "api-gateway: the public HTTP/JSON API of Easy-Note, with JWT auth.";

/// How `api-gateway healthcheck` probes a running gateway.
pub const PROBE: easynote_shared::app::Probe = easynote_shared::app::Probe::Http {
    addr_var: "EASYNOTE_HTTP_ADDR",
    default_addr: config::DEFAULT_HTTP_ADDR,
};

/// Builds the api-gateway the environment describes and runs it until
/// `shutdown`: the whole life of the `api-gateway` binary.
pub async fn serve(env: easynote_shared::config::Env, shutdown: Shutdown) -> anyhow::Result<()> {
    let server = Gateway::build(Config::from_env(&env)?).await?;
    easynote_shared::app::report_addrs(&env, &[("http", server.local_addr())])?;
    server.run(shutdown).await
}

/// A gateway ready to serve: listener bound, downstreams subscribed.
#[derive(Debug)]
pub struct Gateway {
    config: Config,
    listener: TcpListener,
    discovery: Discovery,
    governance: Governance,
    users: Upstream,
    notes: Upstream,
}

impl Gateway {
    /// Loads the TLS files, binds `config.http_addr`, subscribes to
    /// user-service and note-service, and starts following the governance
    /// rules.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let discovery = Discovery::from_config(&config.discovery)
            .await
            .context("connecting to the service registry")?;
        let governance = Governance::start(&config.governance);
        let tls = Tls::start(&config.tls, SERVICE).context("loading the TLS files")?;
        let rpc = config.rpc.clone().with_tls(tls);
        let users = Upstream::connect(
            &discovery,
            service_name::USER,
            rpc.clone(),
            governance.clone(),
        )
        .await
        .context("subscribing to user-service")?;
        let notes = Upstream::connect(&discovery, service_name::NOTE, rpc, governance.clone())
            .await
            .context("subscribing to note-service")?;
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding EASYNOTE_HTTP_ADDR {}", config.http_addr))?;
        Ok(Self {
            config,
            listener,
            discovery,
            governance,
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
            jwt: Arc::new(auth::JwtKeys::new(&self.config.jwt, &self.config.claims)),
            revocations: Arc::new(revocation::Revocations::new(self.config.revocation)),
            body_limit: self.config.body_limit,
            shutdown: shutdown.clone(),
            edge: Arc::new(governance::EdgeGovernance::new(self.governance)),
            logins: Arc::new(login_throttle::LoginThrottle::new(
                self.config.login_throttle,
            )),
            request_timeout: self.config.http.request_timeout,
        };
        prune_idle_state(&state, &shutdown);
        let app = app(state);
        let (listener, http) = (self.listener, self.config.http);
        lifecycle::serve(
            |stop| http::serve(listener, app, http, stop),
            Lifecycle {
                discovery: self.discovery,
                registration: Registration::new(SERVICE, addr, "http")
                    .with_metadata(&self.config.lifecycle.metadata),
                drain_timeout: self.config.lifecycle.shutdown_timeout,
            },
            shutdown,
            // `/readyz` already answers 503: it watches the same shutdown.
            std::future::ready(()),
        )
        .await
    }
}

/// Forgets idle rate-limit buckets, expired failed-login counts and stale
/// revocation answers every minute until shutdown.
fn prune_idle_state(state: &AppState, shutdown: &Shutdown) {
    let edge = Arc::downgrade(&state.edge);
    let logins = Arc::downgrade(&state.logins);
    let revocations = Arc::downgrade(&state.revocations);
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = shutdown.requested() => return,
            }
            let (Some(edge), Some(logins), Some(revocations)) =
                (edge.upgrade(), logins.upgrade(), revocations.upgrade())
            else {
                return;
            };
            edge.prune();
            logins.prune();
            revocations.prune();
        }
    });
}

/// The whole HTTP application over `state`: routes, body limit, panics
/// answered as 500s, governance at the edge, the request timeout, and a
/// traced, measured span per request.
pub fn app(state: AppState) -> Router {
    let (body_limit, request_timeout) = (state.body_limit, state.request_timeout);
    routes::router()
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal.into_response()
        }))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            governance::govern,
        ))
        .layer(middleware::from_fn_with_state(
            request_timeout,
            http::bound_request,
        ))
        .layer(middleware::from_fn_with_state(
            HttpServerMetrics::new(),
            observe::observe,
        ))
        .with_state(state)
}
