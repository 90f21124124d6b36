//! What every Easy-Note service shares: the generated gRPC code, typed
//! configuration, storage, service discovery, the serving lifecycle, error
//! mapping, validation rules, page cursors, shutdown and telemetry.
//!
//! Service crates stay thin: they own their domain logic, schema and
//! migrations, and take everything cross-cutting from here.

pub(crate) mod addr;
pub mod app;
pub(crate) mod code;
pub mod config;
pub mod cursor;
pub mod db;
pub mod discovery;
pub(crate) mod error;
pub mod governance;
pub mod grpc;
pub mod lifecycle;
pub mod process;
pub mod proto;
pub mod rpc;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod validate;

/// Registry names of the three services (Nacos service names, OTel `service.name`).
pub mod service_name {
    /// The HTTP gateway.
    pub const GATEWAY: &str = "easy-note-gateway";
    /// Accounts.
    pub const USER: &str = "easy-note-user";
    /// Notes.
    pub const NOTE: &str = "easy-note-note";
}

/// Default listen addresses, which are also the static discovery defaults:
/// written once, here.
pub mod default_addr {
    /// user-service's gRPC address (`EASYNOTE_GRPC_ADDR`, `EASYNOTE_USER_ADDRS`).
    pub const USER_GRPC: &str = "127.0.0.1:8889";
    /// note-service's gRPC address (`EASYNOTE_GRPC_ADDR`, `EASYNOTE_NOTE_ADDRS`).
    pub const NOTE_GRPC: &str = "127.0.0.1:8888";
    /// The gateway's HTTP address (`EASYNOTE_HTTP_ADDR`).
    pub const GATEWAY_HTTP: &str = "127.0.0.1:8080";
}
