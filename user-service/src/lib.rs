//! user-service: accounts and the password check behind login, over gRPC.
//!
//! [`UserServer::build`] connects the database, applies migrations and binds
//! the listener (port 0 works); [`UserServer::run`] serves until shutdown.

mod config;
mod error;
pub mod password;
pub mod repo;
mod service;

use std::net::SocketAddr;

use easynote_shared::{
    db::Migrations, grpc::GrpcService, proto::user::v1::user_service_server::UserServiceServer,
    service_name, shutdown::Shutdown,
};

pub use config::Config;
pub use error::UserError;

/// Registry and telemetry name of this service.
pub const SERVICE: &str = service_name::USER;

/// What the binary is, for `--help`.
pub const ABOUT: &str = "user-service: accounts and the password check behind login, over gRPC.";

/// How `user-service healthcheck` probes a running server.
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

/// Builds the user-service the environment describes and runs it until
/// `shutdown`: the whole life of the `user-service` binary.
pub async fn serve(env: easynote_shared::config::Env, shutdown: Shutdown) -> anyhow::Result<()> {
    let server = UserServer::build(Config::from_env(&env)?).await?;
    easynote_shared::app::report_addrs(&env, &[("user_grpc", server.local_addr())])?;
    server.run(shutdown).await
}

/// A user-service ready to serve: database migrated, listener bound.
#[derive(Debug)]
pub struct UserServer {
    service: GrpcService,
}

impl UserServer {
    /// Connects storage and binds `config.grpc_addr`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        Ok(Self {
            service: GrpcService::build(SERVICE, &config.service, &migrations()).await?,
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.service.local_addr()
    }

    /// Mutual TLS, when on.
    pub fn tls(&self) -> Option<easynote_shared::tls::Tls> {
        self.service.tls().cloned()
    }

    /// Serves until `shutdown`, then deregisters, drains and closes the pool.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let api = service::UserApi::new(repo::UserRepo::new(self.service.db().clone()));
        self.service
            .serve(
                UserServiceServer::new(api)
                    .max_decoding_message_size(easynote_shared::grpc::MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(easynote_shared::grpc::MAX_MESSAGE_BYTES),
                shutdown,
            )
            .await
    }
}
