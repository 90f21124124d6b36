//! note-service: notes, with their authors' names from user-service, over gRPC.
//!
//! [`NoteServer::build`] connects the database, applies migrations and binds
//! the listener (port 0 works); [`NoteServer::run`] serves until shutdown.

mod config;
mod error;
pub mod repo;
mod service;

use std::net::SocketAddr;

use anyhow::Context as _;
use easynote_shared::{
    db::Migrations, governance::Upstream, grpc::GrpcService,
    proto::note::v1::note_service_server::NoteServiceServer, service_name, shutdown::Shutdown,
};

pub use config::Config;
pub use error::NoteError;

/// Registry and telemetry name of this service.
pub const SERVICE: &str = service_name::NOTE;

/// What the binary is, for `--help`.
pub const ABOUT: &str = "note-service: notes over gRPC; asks user-service for authors' names.";

/// How `note-service healthcheck` probes a running server.
pub const PROBE: easynote_shared::app::Probe = easynote_shared::app::Probe::Grpc {
    addr_var: "EASYNOTE_GRPC_ADDR",
    default_addr: config::DEFAULT_GRPC_ADDR,
};

/// This service's migrations, per backend.
pub fn migrations() -> Migrations {
    Migrations::new(
        sqlx::migrate!("./migrations/sqlite"),
        sqlx::migrate!("./migrations/mysql"),
    )
}

/// Builds the note-service the environment describes and runs it until
/// `shutdown`: the whole life of the `note-service` binary.
pub async fn serve(env: easynote_shared::config::Env, shutdown: Shutdown) -> anyhow::Result<()> {
    let server = NoteServer::build(Config::from_env(&env)?).await?;
    easynote_shared::app::report_addrs(&env, &[("note_grpc", server.local_addr())])?;
    server.run(shutdown).await
}

/// A note-service ready to serve: database migrated, listener bound,
/// user-service subscribed.
#[derive(Debug)]
pub struct NoteServer {
    service: GrpcService,
    users: Upstream,
}

impl NoteServer {
    /// Connects storage, binds `config.grpc_addr` and subscribes to user-service.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let service = GrpcService::build(SERVICE, &config.service, &migrations()).await?;
        let users = Upstream::connect(
            service.discovery(),
            service_name::USER,
            config.channels.with_tls(service.tls().cloned()),
            service.governance().clone(),
        )
        .await
        .context("subscribing to user-service")?;
        Ok(Self { service, users })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.service.local_addr()
    }

    /// Serves until `shutdown`, then deregisters, drains and closes the pool.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let repo = repo::NoteRepo::open(self.service.db().clone())
            .await
            .context("looking for the note text index")?;
        let api = service::NoteApi::new(repo, self.users);
        self.service
            .serve(
                NoteServiceServer::new(api)
                    .max_decoding_message_size(easynote_shared::grpc::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(easynote_shared::grpc::MAX_MESSAGE_BYTES),
                shutdown,
            )
            .await
    }
}
