//! What both gRPC services share: their common settings and start-up
//! ([`GrpcService`]: the [`Process`] every server starts with, then
//! storage and the listener), serving a router through
//! the one [`lifecycle`](crate::lifecycle) with health reporting, and the
//! one place where unexpected errors become `Status::internal`.

use std::{convert::Infallible, error::Error, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::{
    Status,
    body::Body,
    codegen::http::{Request, Response},
    server::NamedService,
};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    config::{ConfigError, Env},
    db::{Database, DatabaseConfig, Migrations},
    discovery::Discovery,
    error::ErrorChain,
    governance::{
        Governance,
        server::{Governed, Revisioned},
    },
    lifecycle,
    process::{Process, ProcessConfig},
    shutdown::Shutdown,
    telemetry,
    tls::{Tls, authz::Authorized, server::incoming},
};

/// The largest gRPC message any hop sends or accepts, both ways, set on
/// every client and server of the suite. The largest legitimate message is
/// a full page: `LIMIT_MAX` notes of `CONTENT_MAX_BYTES` each, with a
/// title of `TITLE_MAX_CHARS` (at most 4 bytes a character), and a few
/// bytes of framing per note: about 6.6 MB, beyond tonic's 4 MiB default.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

const _: () = {
    use crate::validate::{CONTENT_MAX_BYTES, LIMIT_MAX, TITLE_MAX_CHARS};
    let page = LIMIT_MAX as usize * (CONTENT_MAX_BYTES + 4 * TITLE_MAX_CHARS + 256);
    assert!(
        page < MAX_MESSAGE_BYTES,
        "a full page must fit in one message"
    );
};

/// A user-service client on `channel`, within [`MAX_MESSAGE_BYTES`].
pub fn user_client(
    channel: telemetry::grpc::TracedChannel,
) -> crate::proto::user::v1::user_service_client::UserServiceClient<telemetry::grpc::TracedChannel>
{
    crate::proto::user::v1::user_service_client::UserServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// A note-service client on `channel`, within [`MAX_MESSAGE_BYTES`].
pub fn note_client(
    channel: telemetry::grpc::TracedChannel,
) -> crate::proto::note::v1::note_service_client::NoteServiceClient<telemetry::grpc::TracedChannel>
{
    crate::proto::note::v1::note_service_client::NoteServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// The settings every gRPC service of the suite reads.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// What every server process reads.
    pub process: ProcessConfig,
    /// `EASYNOTE_GRPC_ADDR` (the service's default port on loopback).
    pub grpc_addr: SocketAddr,
    /// `EASYNOTE_DATABASE_URL` and pool settings (an embedded SQLite file by default).
    pub database: DatabaseConfig,
}

impl ServiceConfig {
    /// Reads the settings, failing on the first unusable one.
    pub fn from_env(
        env: &Env,
        default_grpc_addr: &str,
        default_database_url: &str,
    ) -> Result<Self, ConfigError> {
        Ok(Self {
            process: ProcessConfig::from_env(env)?,
            grpc_addr: env.socket_addr("EASYNOTE_GRPC_ADDR", default_grpc_addr)?,
            database: DatabaseConfig::from_env(env, default_database_url)?,
        })
    }
}

/// A gRPC service ready to serve: started as a [`Process`], its database
/// connected and migrated, its listener bound (port 0 works).
#[derive(Debug)]
pub struct GrpcService {
    process: Process,
    db: Database,
    listener: TcpListener,
}

impl GrpcService {
    /// Starts the [`Process`] (TLS, registry, governance rules) as `name`,
    /// the registry name, then connects storage (applying `migrations`)
    /// and binds `config.grpc_addr`.
    pub async fn build(
        name: &'static str,
        config: &ServiceConfig,
        migrations: &Migrations,
    ) -> anyhow::Result<Self> {
        let process = Process::start(name, &config.process).await?;
        let db = Database::connect(&config.database, migrations)
            .await
            .with_context(|| format!("connecting the database of {name}"))?;
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding EASYNOTE_GRPC_ADDR {}", config.grpc_addr))?;
        Ok(Self {
            process,
            db,
            listener,
        })
    }

    /// Mutual TLS, when on: the identity to call other services with.
    pub fn tls(&self) -> Option<&Tls> {
        self.process.tls.as_ref()
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// The service's database.
    pub fn db(&self) -> &Database {
        &self.db
    }

    /// The registry, to subscribe to other services.
    pub fn discovery(&self) -> &Discovery {
        &self.process.discovery
    }

    /// The governance rules this process follows.
    pub fn governance(&self) -> &Governance {
        &self.process.governance
    }

    /// Serves `api` under the governance rules, to the callers the
    /// [authorisation table](crate::tls::authz) allows when TLS is on,
    /// beside the health service, on the traced server, through the
    /// [`lifecycle`](crate::lifecycle) until `shutdown`, then closes the
    /// database pool. Health answers SERVING from the start for the server
    /// and `api`, NOT_SERVING for both while the database does not answer,
    /// and NOT_SERVING for good once shutdown begins (readiness). The
    /// health service [`LIVENESS`] answers SERVING for as long as the
    /// process serves at all, whatever its database does.
    pub async fn serve<S>(mut self, api: S, shutdown: Shutdown) -> anyhow::Result<()>
    where
        S: tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        let addr = self.local_addr();
        let (health, health_service) = tonic_health::server::health_reporter();
        let name = S::NAME;
        for service in [name, LIVENESS] {
            health
                .set_service_status(service, ServingStatus::Serving)
                .await;
        }
        let process = &mut self.process;
        let router = telemetry::grpc::server()
            .add_service(Revisioned::new(health_service, process.governance.clone()))
            .add_service(Authorized::new(
                Governed::new(
                    api,
                    process.name,
                    process.lifecycle.metadata.clone(),
                    process.governance.clone(),
                ),
                process.name,
                process.tls.is_some(),
            ));
        let incoming = incoming(self.listener, process.tls.take());
        let stopped = Arc::new(tokio::sync::Mutex::new(false));
        let watcher = tokio::spawn(watch_database(
            self.db.clone(),
            health.clone(),
            name,
            stopped.clone(),
        ));
        let stopping = async {
            *stopped.lock().await = true;
            for service in ["", name] {
                health
                    .set_service_status(service, ServingStatus::NotServing)
                    .await;
            }
        };
        let served = lifecycle::serve(
            |stop| router.serve_with_incoming_shutdown(incoming, stop),
            self.process.into_lifecycle(addr, "grpc"),
            shutdown,
            stopping,
        )
        .await;
        watcher.abort();
        self.db.close().await;
        served
    }
}

/// The gRPC health service name of liveness: SERVING while the process
/// serves, whatever its database and downstream services do. Liveness
/// probes ask it (`easy-note healthcheck --live`); readiness asks the
/// server as a whole (`""`), which follows the database.
pub const LIVENESS: &str = "liveness";

/// How often a serving process checks that its database answers.
const DB_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// Keeps health in step with the database: NOT_SERVING (for the server and
/// `name`) while a check fails or takes longer than [`DB_CHECK_INTERVAL`],
/// SERVING again once it answers, until `stopped` (shutdown owns health
/// from then on).
async fn watch_database(
    db: Database,
    health: HealthReporter,
    name: &'static str,
    stopped: Arc<tokio::sync::Mutex<bool>>,
) {
    let mut serving = true;
    let mut tick = tokio::time::interval(DB_CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let answers = matches!(
            tokio::time::timeout(DB_CHECK_INTERVAL, db.ping()).await,
            Ok(Ok(()))
        );
        if answers == serving {
            continue;
        }
        let stopped = stopped.lock().await;
        if *stopped {
            return;
        }
        serving = answers;
        let status = if answers {
            tracing::info!(service = name, "the database answers again: SERVING");
            ServingStatus::Serving
        } else {
            tracing::warn!(
                service = name,
                "the database does not answer: NOT_SERVING until it does"
            );
            ServingStatus::NotServing
        };
        for service in ["", name] {
            health.set_service_status(service, status).await;
        }
    }
}

/// A storage failure as the caller sees it: `UNAVAILABLE` (the gateway
/// answers 503 and may retry elsewhere) when the database cannot be
/// reached, else a bare `INTERNAL`; logged with its cause chain either way.
pub fn storage(context: &str, db: &sqlx::Error, err: &(dyn Error + 'static)) -> Status {
    if crate::db::is_unavailable(db) {
        tracing::warn!(error = %ErrorChain(err), "{context}: the database is unavailable");
        return Status::unavailable("the database is unavailable");
    }
    internal(context, err)
}

/// Logs an unexpected error with its whole cause chain, once, and answers the
/// caller with a bare `INTERNAL` that leaks nothing.
pub fn internal(context: &str, err: &(dyn Error + 'static)) -> Status {
    tracing::error!(error = %ErrorChain(err), "{context}");
    Status::internal("internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_errors_leak_nothing() {
        let err = std::io::Error::other("SELECT secret FROM db.host.internal");
        let status = internal("testing", &err);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}
