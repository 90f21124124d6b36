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

use anyhow::Context as _;
use easynote_shared::{
    db::{Database, Migrations},
    discovery::{Discovery, Registration},
    grpc::{self, ServeOptions},
    proto::user::v1::user_service_server::{SERVICE_NAME, UserServiceServer},
    service_name,
    shutdown::Shutdown,
    telemetry,
};
use tokio::net::TcpListener;

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
    config: Config,
    db: Database,
    listener: TcpListener,
    discovery: Discovery,
}

impl UserServer {
    /// Connects storage and binds `config.grpc_addr`.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = Database::connect(&config.database, &migrations())
            .await
            .context("connecting the user database")?;
        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding EASYNOTE_GRPC_ADDR {}", config.grpc_addr))?;
        let discovery = Discovery::from_config(&config.discovery)
            .await
            .context("connecting to the service registry")?;
        Ok(Self {
            config,
            db,
            listener,
            discovery,
        })
    }

    /// The address actually bound (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound TCP listener has a local address")
    }

    /// Serves until `shutdown`, then deregisters, drains and closes the pool.
    pub async fn run(self, shutdown: Shutdown) -> anyhow::Result<()> {
        let addr = self.local_addr();
        let (health, health_service) = tonic_health::server::health_reporter();
        let api = service::UserApi::new(repo::UserRepo::new(self.db.clone()));
        let router = telemetry::grpc::server()
            .add_service(health_service)
            .add_service(UserServiceServer::new(api));
        let options = ServeOptions {
            listener: self.listener,
            health,
            health_services: vec![SERVICE_NAME],
            discovery: self.discovery,
            registration: Registration::new(service_name::USER, addr, "grpc"),
            drain_timeout: self.config.lifecycle.shutdown_timeout,
        };
        let served = grpc::serve(router, options, shutdown).await;
        self.db.close().await;
        served
    }
}
