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

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{ProcessSuite, Service};

/// Holds the registry tests to one at a time under `cargo test` (nextest
/// runs them one at a time by its `registry` test group): each runs an
/// rnacos and four service processes, and measures failover timing.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// The suite started by the registry tests: user, note(s), gateway.
struct RegisteredSuite {
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
            cluster,
            user,
            notes: started,
            gateway,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.gateway.addr)
    }

    /// Registers and logs in `username`; returns the token.
    async fn signed_up(&self, username: &str) -> String {
        let credentials = json!({"username": username, "password": "password123"});
        let (status, body) = self.post("/v1/user/register", None, &credentials).await;
        assert_eq!(status, StatusCode::OK, "register {username}: {body}");
        let (status, body) = self.post("/v1/user/login", None, &credentials).await;
        assert_eq!(status, StatusCode::OK, "login {username}: {body}");
        body["token"].as_str().expect("a token").to_owned()
    }

    /// Creates a note; returns its id.
    async fn create_note(&self, token: &str, title: &str) -> i64 {
        let note = json!({"title": title, "content": "through the registry"});
        let (status, body) = self.post("/v1/note", Some(token), &note).await;
        assert_eq!(status, StatusCode::OK, "create {title}: {body}");
        body["data"]["note_id"].as_i64().expect("a note id")
    }

    async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut request = self
            .cluster
            .http
            .post(format!("{}{path}", self.base()))
            .json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        read(request.send().await.expect("the gateway answers")).await
    }

    async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        let request = self
            .cluster
            .http
            .get(format!("{}{path}", self.base()))
            .bearer_auth(token);
        read(request.send().await.expect("the gateway answers")).await
    }
}

async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let status = response.status();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Lets the load run for `duration`.
async fn under_load_for(duration: Duration) {
    tokio::time::sleep(duration).await;
}
