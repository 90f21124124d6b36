//! What every Easy-Note service shares: the generated gRPC code, typed
//! configuration, storage, service discovery, the gRPC server lifecycle,
//! error mapping, validation rules, shutdown and telemetry.
//!
//! Service crates stay thin: they own their domain logic, schema and
//! migrations, and take everything cross-cutting from here.

pub mod app;
pub mod config;
pub mod db;
pub mod discovery;
pub mod grpc;
pub mod proto;
pub mod shutdown;
pub mod telemetry;
pub mod validate;

#[cfg(feature = "testing")]
pub mod testing;

/// Registry names of the three services (Nacos service names, OTel `service.name`).
pub mod service_name {
    /// The HTTP gateway.
    pub const GATEWAY: &str = "easy-note-gateway";
    /// Accounts.
    pub const USER: &str = "easy-note-user";
    /// Notes.
    pub const NOTE: &str = "easy-note-note";
}
