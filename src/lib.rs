//! The whole suite in one process: user-service, note-service and the
//! gateway, wired to each other by static discovery.
//!
//! `cargo run --release` uses this to bring Easy-Note up on the embedded
//! defaults; the end-to-end tests use it to start the real servers on port 0.
//! Each service reads the same variables as its own binary, except that the
//! two gRPC addresses have their own names here (`EASYNOTE_USER_GRPC_ADDR`,
//! `EASYNOTE_NOTE_GRPC_ADDR`) and the services are pointed at each other's
//! actual addresses.

use std::{net::SocketAddr, time::Duration};

use anyhow::Context as _;
use api_gateway::Gateway;
use easynote_shared::{
    config::Env,
    default_addr, service_name,
    shutdown::{self, Shutdown},
    tls::{self, Tls},
};
use note_service::NoteServer;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use user_service::UserServer;

pub mod deploy_facts;
pub mod rules;

/// The roles one `easy-note` process can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// The three services in one process.
    All,
    /// user-service.
    UserService,
    /// note-service.
    NoteService,
    /// api-gateway.
    ApiGateway,
}

/// How `easy-note healthcheck` probes the all-in-one suite: its gateway.
pub const PROBE: easynote_shared::app::Probe = api_gateway::PROBE;

/// Builds and runs the suite until `shutdown`, announcing the gateway URL
/// once both services answer their health checks.
pub async fn run_all(env: Env, shutdown: Shutdown) -> anyhow::Result<()> {
    let suite = Suite::build(&env).await?;
    let (gateway, user, note) = (suite.gateway_addr(), suite.user_addr(), suite.note_addr());
    easynote_shared::app::report_addrs(
        &env,
        &[("http", gateway), ("user_grpc", user), ("note_grpc", note)],
    )?;
    let tls = suite.tls();
    let running = tokio::spawn(suite.run(shutdown));
    let wait = Duration::from_secs(10);
    wait_until_serving(user, tls.as_ref(), service_name::USER, wait).await?;
    wait_until_serving(note, tls.as_ref(), service_name::NOTE, wait).await?;
    tracing::info!(%user, %note, "user-service and note-service are serving");
    println!(
        "Easy-Note is ready at http://{gateway}/  (open it in a browser, or curl http://{gateway}/ping; Ctrl-C stops)"
    );
    running.await?
}

/// The three servers, bound and ready to run.
#[derive(Debug)]
pub struct Suite {
    user: UserServer,
    note: NoteServer,
    gateway: Gateway,
}

impl Suite {
    /// Builds the three servers from `env`: user-service first, then
    /// note-service pointed at it, then the gateway pointed at both.
    pub async fn build(env: &Env) -> anyhow::Result<Self> {
        Self::build_each(env, |_, env| env).await
    }

    /// [`Suite::build`], with each service's settings passed through
    /// `each(role, settings)` first: the end-to-end tests give each
    /// service a certificate of its own, or the gateway settings of its own.
    pub async fn build_each(env: &Env, each: impl Fn(Role, Env) -> Env) -> anyhow::Result<Self> {
        let user_grpc = env.string("EASYNOTE_USER_GRPC_ADDR", default_addr::USER_GRPC);
        let note_grpc = env.string("EASYNOTE_NOTE_GRPC_ADDR", default_addr::NOTE_GRPC);

        let user_env = each(
            Role::UserService,
            env.clone().with("EASYNOTE_GRPC_ADDR", user_grpc),
        );
        let user = UserServer::build(user_service::Config::from_env(&user_env)?)
            .await
            .context("starting user-service")?;
        let user_addr = user.local_addr().to_string();

        let note_env = each(
            Role::NoteService,
            env.clone()
                .with("EASYNOTE_GRPC_ADDR", note_grpc)
                .with("EASYNOTE_USER_ADDRS", user_addr.clone()),
        );
        let note = NoteServer::build(note_service::Config::from_env(&note_env)?)
            .await
            .context("starting note-service")?;

        let gateway_env = each(
            Role::ApiGateway,
            env.clone()
                .with("EASYNOTE_USER_ADDRS", user_addr)
                .with("EASYNOTE_NOTE_ADDRS", note.local_addr().to_string()),
        );
        let gateway = Gateway::build(api_gateway::Config::from_env(&gateway_env)?)
            .await
            .context("starting api-gateway")?;
        Ok(Self {
            user,
            note,
            gateway,
        })
    }

    /// The gateway's address.
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway.local_addr()
    }

    /// user-service's gRPC address.
    pub fn user_addr(&self) -> SocketAddr {
        self.user.local_addr()
    }

    /// note-service's gRPC address.
    pub fn note_addr(&self) -> SocketAddr {
        self.note.local_addr()
    }

    /// Mutual TLS, when on (the all-in-one process has one identity for
    /// its three roles).
    pub fn tls(&self) -> Option<Tls> {
        self.user.tls()
    }

    /// The three servers, to be run (and stopped) one by one.
    pub fn into_parts(self) -> (UserServer, NoteServer, Gateway) {
        (self.user, self.note, self.gateway)
    }

    /// Runs the three until `shutdown`, then stops them front to back: the
    /// gateway drains first, while the services it calls still answer.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let (stop_note, note_shutdown) = shutdown::channel();
        let (stop_user, user_shutdown) = shutdown::channel();
        let user = tokio::spawn(self.user.run(user_shutdown));
        let note = tokio::spawn(self.note.run(note_shutdown));
        let gateway = self.gateway.run(shutdown).await;
        stop_note.trigger();
        let note = note.await.context("note-service task")?;
        stop_user.trigger();
        let user = user.await.context("user-service task")?;
        gateway.context("api-gateway")?;
        note.context("note-service")?;
        user.context("user-service")
    }
}

/// Waits until the gRPC server of `service` at `addr` reports SERVING,
/// for at most `timeout`; over mutual TLS when `tls` is given.
pub async fn wait_until_serving(
    addr: SocketAddr,
    tls: Option<&Tls>,
    service: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let last = match tls::health_channel(addr, tls, service).await {
            Ok(channel) => match HealthClient::new(channel)
                .check(HealthCheckRequest::default())
                .await
            {
                Ok(reply) if reply.get_ref().status() == ServingStatus::Serving => return Ok(()),
                Ok(reply) => format!("status {:?}", reply.get_ref().status()),
                Err(status) => status.to_string(),
            },
            Err(err) => err.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            anyhow::bail!("{addr} is not serving after {timeout:?}: {last}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
