//! api-gateway: the public HTTP/JSON API of Easy-Note, with JWT auth, in
//! front of user-service and note-service.
//!
//! [`Gateway::build`] binds the listener (port 0 works) and subscribes to
//! the two services; [`Gateway::run`] serves until shutdown, then drains.

mod auth;
mod authenticate;
mod client_addr;
mod config;
mod envelope;
mod error;
mod extract;
mod governance;
mod http;
mod login_throttle;
mod observe;
mod openapi;
mod panics;
mod quota;
mod readiness;
mod revocation;
mod routes;
mod state;
mod web;

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use authenticate::Authenticator;
use axum::{Router, extract::DefaultBodyLimit, middleware};
use easynote_shared::telemetry::metrics::HttpServerMetrics;
use easynote_shared::{
    governance::Upstream, lifecycle, process::Process, service_name, shutdown::Shutdown,
};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

pub use auth::JwtKeys;
pub use config::{ClaimsConfig, Config, DEV_JWT_SECRET, JwtConfig};
pub use error::ApiError;
pub use http::HttpConfig;
pub use login_throttle::LoginThrottleConfig;
pub use readiness::CHECK_TIMEOUT as READYZ_CHECK_TIMEOUT;
pub use state::AppState;
pub use web::WebConfig;

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
    process: Process,
    users: Upstream,
    notes: Upstream,
    logins: Arc<login_throttle::LoginThrottle>,
    edge: Arc<governance::EdgeGovernance>,
}

impl Gateway {
    /// Starts the [`Process`] (TLS, registry, governance rules) as
    /// `easy-note-gateway`, subscribes to user-service and note-service,
    /// and binds `config.http_addr`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let process = Process::start(SERVICE, &config.process).await?;
        let (discovery, governance) = (&process.discovery, &process.governance);
        let channels = config.channels.clone().with_tls(process.tls.clone());
        let users = Upstream::connect(
            discovery,
            service_name::USER,
            channels.clone(),
            governance.clone(),
        )
        .await
        .context("subscribing to user-service")?;
        let notes = Upstream::connect(discovery, service_name::NOTE, channels, governance.clone())
            .await
            .context("subscribing to note-service")?;
        let logins = login_throttle::LoginThrottle::build(
            config.login_throttle,
            config.login_store.as_ref(),
            config.http.request_timeout,
        )
        .context("setting up the login throttle")?;
        // Cluster-wide rate limits share Redis with the login throttle; the
        // gateway's own instances (under a registry) size each replica's
        // share for when Redis does not answer.
        let cluster = match &config.login_store {
            Some(shared) => {
                let replicas = discovery.subscribe(SERVICE).await.ok();
                Some(
                    quota::ClusterQuota::connect(shared, replicas)
                        .context("setting up the cluster quotas")?,
                )
            }
            None => None,
        };
        let edge = Arc::new(governance::EdgeGovernance::new(governance.clone(), cluster));
        let listener = TcpListener::bind(config.http_addr)
            .await
            .with_context(|| format!("binding EASYNOTE_HTTP_ADDR {}", config.http_addr))?;
        Ok(Self {
            config,
            listener,
            process,
            users,
            notes,
            logins: Arc::new(logins),
            edge,
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
        let clients = self.clients();
        let state = self.state(&shutdown);
        prune_idle_state(&state, &shutdown);
        let app = app(state);
        let (listener, http) = (self.listener, self.config.http);
        lifecycle::serve(
            |stop| http::serve(listener, app, http, clients, stop),
            self.process.into_lifecycle(addr, "http"),
            shutdown,
            // `/readyz` already answers 503: it watches the same shutdown.
            std::future::ready(()),
        )
        .await
    }

    /// The state every handler shares, for a gateway stopping on `shutdown`.
    fn state(&self, shutdown: &Shutdown) -> AppState {
        AppState {
            users: self.users.clone(),
            notes: self.notes.clone(),
            jwt: Arc::new(auth::JwtKeys::new(&self.config.jwt, &self.config.claims)),
            revocations: Arc::new(revocation::Revocations::new(self.config.revocation)),
            body_limit: self.config.body_limit,
            shutdown: shutdown.clone(),
            edge: self.edge.clone(),
            logins: self.logins.clone(),
            readiness: Arc::default(),
            request_timeout: self.config.http.request_timeout,
            panics: Arc::default(),
            web: Arc::new(web::WebApp::new(&self.config.web)),
        }
    }

    /// Who the gateway's clients are: the peer, or behind a trusted proxy
    /// the address it forwards.
    fn clients(&self) -> client_addr::ClientAddrs {
        client_addr::ClientAddrs::new(
            self.config.trusted_proxies.clone(),
            self.process.governance.clone(),
        )
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

/// The whole HTTP application over `state`: the API, its OpenAPI
/// document and the web app; see [`layered`].
pub fn app(state: AppState) -> Router {
    let routes = routes::router()
        .route("/openapi.json", axum::routing::get(openapi::document))
        .merge(web::router());
    layered(routes, state)
}

/// `routes` under the gateway's layers, outermost first (a request goes
/// through them in this order, its answer back in the reverse one). This is
/// the one way through a request:
///
/// 0. `secure_headers`: the headers every answer carries (`nosniff`,
///    `no-store`);
/// 1. `observe`: the traced, measured span of the request and its access
///    log line, so every answer below is seen, a caught panic's 500 too;
/// 2. the panic catcher: a panic anywhere below is a 500 with the envelope,
///    never a reset connection, and counts toward readiness
///    ([`panics`]);
/// 3. `deadline`: the one time bound on the request, the request timeout
///    or the route's shorter deadline, which also travels downstream;
/// 4. `shed`: beyond the in-flight limit, 503 at once, before any work;
/// 5. `authenticate`: the token verified and asked about revocation, once;
///    the caller left in the request;
/// 6. `limit`: the rate limits, keyed by that caller, then the lane;
/// 7. the body limit, then the handler (whose `AuthUser` only reads the
///    caller).
fn layered(routes: Router<AppState>, state: AppState) -> Router {
    let panics = state.panics.clone();
    let authenticator = Authenticator {
        jwt: state.jwt.clone(),
        revocations: state.revocations.clone(),
        users: state.users.clone(),
    };
    routes
        .layer(DefaultBodyLimit::max(state.body_limit))
        .layer(middleware::from_fn_with_state(
            state.edge.clone(),
            governance::limit,
        ))
        .layer(middleware::from_fn_with_state(
            authenticator,
            authenticate::authenticate,
        ))
        .layer(middleware::from_fn_with_state(
            state.edge.clone(),
            governance::shed,
        ))
        .layer(middleware::from_fn_with_state(
            (state.request_timeout, state.edge.clone()),
            http::deadline,
        ))
        .layer(middleware::from_fn_with_state(
            panics.clone(),
            panics::mark_served,
        ))
        .layer(CatchPanicLayer::custom(move |panic| panics.caught(panic)))
        .layer(middleware::from_fn_with_state(
            HttpServerMetrics::new(),
            observe::observe,
        ))
        .layer(middleware::from_fn(http::secure_headers))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use easynote_shared::config::Env;

    /// A gRPC health server on port 0 answering SERVING, standing in for
    /// both services (readiness asks only their health).
    async fn serving() -> String {
        let (_, service) = tonic_health::server::health_reporter();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        addr
    }

    /// A gateway on port 0 whose services are both one stand-in health
    /// server.
    async fn standing_in() -> Gateway {
        let downstream = serving().await;
        let env = Env::from_pairs([
            ("EASYNOTE_HTTP_ADDR", "127.0.0.1:0"),
            ("EASYNOTE_USER_ADDRS", downstream.as_str()),
            ("EASYNOTE_NOTE_ADDRS", downstream.as_str()),
        ]);
        Gateway::build(Config::from_env(&env).expect("config"))
            .await
            .expect("build")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn the_application_serves_its_openapi_document() {
        let gateway = standing_in().await;
        let (_trigger, shutdown) = easynote_shared::shutdown::channel();
        let request = axum::http::Request::get("/openapi.json")
            .body(axum::body::Body::empty())
            .expect("request");
        let reply = tower::ServiceExt::oneshot(app(gateway.state(&shutdown)), request)
            .await
            .expect("an answer");
        assert_eq!(reply.status(), 200);
        let body = axum::body::to_bytes(reply.into_body(), usize::MAX)
            .await
            .expect("a body");
        let doc: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(doc["openapi"], "3.1.0");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn one_verification_per_request() {
        // Whatever reads the caller (the per-user limit, the lanes, the
        // handler's AuthUser), the token is verified once, governance on or
        // off, and a good or a bad token alike.
        let downstream = serving().await;
        for governance in ["on", "off"] {
            let env = Env::from_pairs([
                ("EASYNOTE_HTTP_ADDR", "127.0.0.1:0"),
                ("EASYNOTE_USER_ADDRS", downstream.as_str()),
                ("EASYNOTE_NOTE_ADDRS", downstream.as_str()),
                ("EASYNOTE_GOVERNANCE", governance),
            ]);
            let gateway = Gateway::build(Config::from_env(&env).expect("config"))
                .await
                .expect("build");
            let (_trigger, shutdown) = easynote_shared::shutdown::channel();
            let state = gateway.state(&shutdown);
            let jwt = state.jwt.clone();
            let good = jwt.issue(7, 0).expect("a token").token;
            let app = app(state);
            for (token, what) in [
                (Some(good.as_str()), "a good token"),
                (Some("not.a.token"), "a bad token"),
                (None, "no token"),
            ] {
                let mut request = axum::http::Request::get("/v1/note/query");
                if let Some(token) = token {
                    request = request.header("authorization", format!("Bearer {token}"));
                }
                let before = jwt.verifications();
                let reply = tower::ServiceExt::oneshot(
                    app.clone(),
                    request.body(axum::body::Body::empty()).expect("request"),
                )
                .await
                .expect("an answer");
                assert_ne!(reply.status(), 200, "{what}: the stand-ins answer no query");
                assert_eq!(
                    jwt.verifications() - before,
                    u64::from(token.is_some()),
                    "governance {governance}, {what}"
                );
            }
        }
    }

    /// A handler with a bug.
    async fn boom() -> &'static str {
        panic!("a bug in a handler")
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_panicking_handler_is_a_500_and_readiness_turns_false_until_requests_are_served() {
        let gateway = standing_in().await;
        let base = format!("http://{}", gateway.local_addr());
        let (trigger, shutdown) = easynote_shared::shutdown::channel();
        let routes = routes::router()
            .route("/v1/boom", get(boom))
            .route("/v1/fine", get(|| async { "fine" }));
        let app = layered(routes, gateway.state(&shutdown));
        let clients = gateway.clients();
        let (listener, http) = (gateway.listener, gateway.config.http);
        let stop = shutdown.clone();
        tokio::spawn(async move {
            http::serve(listener, app, http, clients, async move {
                stop.requested().await
            })
            .await
        });

        let client = reqwest::Client::new();
        let get = |path: &'static str| {
            let (client, url) = (client.clone(), format!("{base}{path}"));
            async move {
                let reply = client
                    .get(url)
                    .send()
                    .await
                    .expect("an answer, not a reset");
                let status = reply.status().as_u16();
                (status, reply.text().await.expect("a body"))
            }
        };
        assert_eq!(get("/readyz").await.0, 200, "ready at first");
        for _ in 0..3 {
            let (status, body) = get("/v1/boom").await;
            assert_eq!(status, 500, "{body}");
            let body: serde_json::Value = serde_json::from_str(&body).expect("the envelope");
            assert_eq!(body["code"], 10001, "{body}");
        }
        let (status, body) = get("/readyz").await;
        assert_eq!(status, 503, "every request panics: not ready ({body})");
        assert_eq!(get("/healthz").await.0, 200, "still alive");
        assert_eq!(get("/v1/fine").await.0, 200);
        assert_eq!(get("/readyz").await.0, 200, "a request served: ready again");
        trigger.trigger();
    }
}
