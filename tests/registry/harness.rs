//! The registry tests' view of the test kit: the suite as processes
//! around a real rnacos ([`easynote_testkit::process::ProcessSuite`]), each
//! child on port 0. rnacos is found at `RNACOS_BIN` or on `PATH`
//! (`scripts/test.sh` installs it); the service binary is the `easy-note`
//! cargo builds for these tests. A test that cannot find either fails,
//! naming what is missing.

use std::path::PathBuf;

pub use easynote_testkit::{
    client::{GatewayClient, Reply},
    process::{GATEWAY, NOTE, ProcessSuite, Service, USER},
    rnacos::{REGISTRY_WITHIN, Rnacos, unreachable_nacos},
};

/// The JWT key the gateways use.
pub const JWT_SECRET: &str = "registry-test-secret-0123456789abcdef0123";

/// The suite's binary, built by cargo for these tests from this source:
/// `easy-note <service>` runs one service exactly as its own binary does.
pub fn suite_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_easy-note"))
}

/// rnacos and a directory for the services, with the settings every
/// registry test shares.
pub async fn cluster() -> ProcessSuite {
    let mut cluster = ProcessSuite::with_rnacos(&suite_bin()).await;
    cluster.set(&[("EASYNOTE_JWT_SECRET", JWT_SECRET.to_owned())]);
    cluster
}

/// A directory for the services, which find each other by static address
/// lists instead of a registry, with the same settings.
pub fn static_cluster() -> ProcessSuite {
    let mut cluster = ProcessSuite::with_static_lists(&suite_bin());
    cluster.set(&[("EASYNOTE_JWT_SECRET", JWT_SECRET.to_owned())]);
    cluster
}
