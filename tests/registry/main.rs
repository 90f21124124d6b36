//! Service discovery through a real Nacos-compatible registry (rnacos):
//! the three services as separate processes register, find each other,
//! balance, fail over, survive a registry outage, and refuse bad settings
//! with clear errors. Every test starts its own rnacos; every service binds
//! port 0 and reports its address; see `harness` for how rnacos and the
//! binaries are found.

mod errors;
mod failover;
mod governance;
mod harness;
mod isolation;
mod load;
mod registration;

use std::time::Duration;

use crate::harness::{GatewayClient, ProcessSuite, Service};

/// Holds the registry tests to one at a time under `cargo test` (nextest
/// runs them one at a time by its `registry` test group): each runs an
/// rnacos and four service processes, and measures failover timing.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The suite started by the registry tests: user, note(s), gateway, and
/// (through `Deref`) a client of the gateway.
struct RegisteredSuite {
    client: GatewayClient,
    user: Service,
    notes: Vec<Service>,
    gateway: Service,
    /// Declared last, so dropped last: its directory holds the children's
    /// logs, which a failing test prints as the children are dropped.
    cluster: ProcessSuite,
}

/// How a suite's services find each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FoundThrough {
    /// Through rnacos.
    Nacos,
    /// By static address lists (`EASYNOTE_*_ADDRS`).
    StaticLists,
}

/// The rules of most registry tests. Their load comes from one user,
/// faster than the default per-user rate limit allows. Their note-services
/// share one SQLite file, where a write can wait seconds for the other
/// process's lock, or for a synced commit, on a busy machine (CI runs other
/// tests' databases beside them): the route deadline (3 s by default) and
/// the per-call timeouts (1 s) are raised so that such a wait, which is not
/// what these tests are about, does not fail a request. Creates are never
/// retried, so one slow commit would.
const PATIENT_RULES: &str = r#"{
    "gateway": {"rate_limits": [], "timeouts_ms": {"*": 10000}},
    "clients": {
        "easy-note-note": {"*": {"timeout_ms": 10000}},
        "easy-note-user": {"*": {"timeout_ms": 10000}}
    }
}"#;

impl RegisteredSuite {
    /// rnacos, one user-service, `notes` note-services and a gateway (ready
    /// when there is a note-service), under [`PATIENT_RULES`].
    async fn start(notes: usize) -> Self {
        Self::start_with(FoundThrough::Nacos, notes, PATIENT_RULES).await
    }

    /// One user-service, `notes` note-services and a gateway found through
    /// `registry`, under the rules `document`.
    async fn start_with(registry: FoundThrough, notes: usize, document: &str) -> Self {
        let mut cluster = match registry {
            FoundThrough::Nacos => harness::cluster().await,
            FoundThrough::StaticLists => harness::static_cluster(),
        };
        let rules = cluster.dir.path().join("governance.json");
        std::fs::write(&rules, document).expect("write the rules");
        cluster.set(&[("EASYNOTE_GOVERNANCE_FILE", rules.display().to_string())]);
        let user = cluster.start_user().await;
        let mut started = Vec::new();
        for _ in 0..notes {
            started.push(cluster.start_note().await);
        }
        let gateway = match registry {
            FoundThrough::Nacos => cluster.start_gateway().await,
            // The suite's static lists name the last note-service only.
            FoundThrough::StaticLists => {
                let addrs: Vec<&str> = started.iter().map(|n| n.addr.as_str()).collect();
                cluster
                    .start_gateway_with(&[("EASYNOTE_NOTE_ADDRS", addrs.join(","))])
                    .await
            }
        };
        if notes > 0 {
            cluster.wait_ready(&gateway).await;
        }
        Self {
            client: cluster.client(&gateway),
            cluster,
            user,
            notes: started,
            gateway,
        }
    }
}

impl std::ops::Deref for RegisteredSuite {
    type Target = GatewayClient;

    fn deref(&self) -> &GatewayClient {
        &self.client
    }
}

/// Lets the load run for `duration`.
async fn under_load_for(duration: Duration) {
    tokio::time::sleep(duration).await;
}
