//! The Easy-Note test kit, a dev-dependency of every crate's tests: real
//! things, started per test and stopped on drop.
//!
//! - [`TestDatabase`]: a fresh database per test, on every backend available;
//! - [`server`]: a server of this workspace in-process on port 0;
//! - [`process`]: service binaries as child processes that bind port 0 and
//!   report the address they bound ([`process::ProcessSuite`]);
//! - [`client`]: the suite as a client sees it, the register / log in /
//!   create steps written once ([`client::GatewayClient`]);
//! - [`rnacos`]: a real Nacos-compatible registry;
//! - [`otlp`]: a real OTLP receiver;
//! - [`browser`]: headless Chromium over WebDriver, for the web app;
//! - [`proxy`]: a TCP proxy that takes a real server away and back;
//! - [`redis`]: a `redis-server` of the test's own;
//! - [`eventually`]: the one way tests wait, failing with what they saw.
//!
//! Databases:
//! SQLite always (a file in a temporary directory); MySQL/MariaDB when
//! `EASYNOTE_TEST_MYSQL_URL` names a server where the user may create
//! databases (each test gets `CREATE DATABASE easynote_t_…`, dropped
//! afterwards). Under CI (`CI` set) a missing MySQL URL is an error rather
//! than a silent skip.

pub mod browser;
mod child;
pub mod client;
mod eventually;
pub mod otlp;
pub mod process;
pub mod proxy;
pub mod redis;
pub mod rnacos;
pub mod server;

pub use eventually::eventually;

use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::{Connection, mysql::MySqlConnection};

use easynote_shared::db::DatabaseConfig;

/// The variable naming the MySQL server for tests.
pub const MYSQL_URL_VAR: &str = "EASYNOTE_TEST_MYSQL_URL";

/// A database that exists for one test.
#[derive(Debug)]
pub struct TestDatabase {
    /// Its connection URL.
    pub url: String,
    /// `sqlite` or `mysql`, for assertion messages.
    pub backend: &'static str,
    guard: Guard,
}

#[derive(Debug)]
enum Guard {
    Dir(#[allow(dead_code)] tempfile::TempDir),
    MySql { server_url: String, name: String },
}

impl TestDatabase {
    /// A fresh SQLite file.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let url = format!("sqlite://{}", dir.path().join("test.db").display());
        Self {
            url,
            backend: "sqlite",
            guard: Guard::Dir(dir),
        }
    }

    /// A fresh MySQL database, or `None` when no test server is configured
    /// (outside CI).
    pub async fn mysql() -> Option<Self> {
        let Some(server_url) = std::env::var(MYSQL_URL_VAR).ok().filter(|v| !v.is_empty()) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{MYSQL_URL_VAR} must be set under CI: the MySQL tests may not be skipped"
            );
            return None;
        };
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        let name = format!(
            "easynote_t_{}_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos % 1_000_000
        );
        let mut admin = MySqlConnection::connect(&server_url)
            .await
            .unwrap_or_else(|err| panic!("{MYSQL_URL_VAR} is set but the server refuses: {err}"));
        sqlx::query(&format!(
            "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci"
        ))
        .execute(&mut admin)
        .await
        .expect("create the test database");
        admin.close().await.ok();
        Some(Self {
            url: with_database(&server_url, &name),
            backend: "mysql",
            guard: Guard::MySql { server_url, name },
        })
    }

    /// One fresh database per available backend: SQLite, then MySQL if configured.
    pub async fn all() -> Vec<Self> {
        let mut all = vec![Self::sqlite()];
        all.extend(Self::mysql().await);
        all
    }

    /// Storage settings pointing at this database.
    pub fn config(&self) -> DatabaseConfig {
        let mut config = DatabaseConfig::new(self.url.clone());
        config.max_connections = 5;
        config.connect_timeout = std::time::Duration::from_secs(5);
        config
    }
}

/// Asserts that the gRPC server at `addr` answers SERVING to
/// `grpc.health.v1.Health/Check` for each of `services` (`""` is the server).
pub async fn assert_grpc_serving(addr: std::net::SocketAddr, services: &[&str]) {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a URI")
        .connect()
        .await
        .expect("connect to the gRPC server");
    let mut health = HealthClient::new(channel);
    for service in services {
        let answer = health
            .check(HealthCheckRequest {
                service: (*service).into(),
            })
            .await
            .unwrap_or_else(|status| panic!("health of {service:?}: {status:?}"))
            .into_inner();
        assert_eq!(
            answer.status(),
            ServingStatus::Serving,
            "health of {service:?}"
        );
    }
}

/// Asserts that a gRPC call failed with `code` and exactly `message`;
/// `case` names the call in the failure message.
#[track_caller]
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, tonic::Status>,
    code: tonic::Code,
    message: &str,
    case: &str,
) {
    match result {
        Err(status) => assert_eq!(
            (status.code(), status.message()),
            (code, message),
            "{case}: status"
        ),
        Ok(value) => panic!("{case}: expected {code:?} {message:?}, got Ok({value:?})"),
    }
}

/// `mysql://u:p@h:1/old?x=y` with the database replaced: `mysql://u:p@h:1/new?x=y`.
fn with_database(server_url: &str, name: &str) -> String {
    let (base, query) = match server_url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (server_url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let base = match base[authority_start..].find('/') {
        Some(slash) => &base[..authority_start + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let Guard::MySql { server_url, name } = &self.guard else {
            return;
        };
        let (server_url, name) = (server_url.clone(), name.clone());
        // Drop cannot be async; a short-lived runtime on its own thread can.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                let mut admin = MySqlConnection::connect(&server_url).await.ok()?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS `{name}`"))
                    .execute(&mut admin)
                    .await
                    .ok()?;
                admin.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("note: could not drop test database {}", self.url);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_swapped_in_urls() {
        assert_eq!(
            with_database("mysql://root@127.0.0.1:3306/test", "n"),
            "mysql://root@127.0.0.1:3306/n"
        );
        assert_eq!(with_database("mysql://root@h", "n"), "mysql://root@h/n");
        assert_eq!(
            with_database("mysql://u:p@h:1/x?ssl-mode=disabled", "n"),
            "mysql://u:p@h:1/n?ssl-mode=disabled"
        );
    }
}
