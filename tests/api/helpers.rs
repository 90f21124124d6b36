//! `TestApp`: a fresh database and the three services started for one test.

use std::{net::SocketAddr, path::Path, time::Duration};

use easynote_shared::{
    config::Env,
    db::Database,
    on_pool,
    shutdown::{self, ShutdownTrigger},
    telemetry::{self, TelemetryConfig},
};
use easynote_testkit::{
    TestDatabase,
    client::{GatewayClient, Reply},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// The JWT key the test servers use, so tests can mint their own tokens.
pub const JWT_SECRET: &str = "end-to-end-test-secret-0123456789abcdef";

/// `env` with the TLS files of `service` from the `dev-certs` directory
/// `dir`, re-read every 100 ms (so that rotation tests are quick).
pub fn with_certs(env: Env, dir: &Path, service: &str) -> Env {
    let files = easynote_shared::tls::devcert::files(dir, service);
    env.with("EASYNOTE_TLS_CERT", files.cert.display().to_string())
        .with("EASYNOTE_TLS_KEY", files.key.display().to_string())
        .with("EASYNOTE_TLS_CA", files.ca.display().to_string())
        .with("EASYNOTE_TLS_RELOAD_INTERVAL", "100ms")
}

/// A governance rules document in a file of its own, for a gateway's
/// `EASYNOTE_GOVERNANCE_FILE`; removed when dropped.
#[derive(Debug)]
pub struct RulesFile {
    /// Where the document is.
    pub path: String,
    _dir: tempfile::TempDir,
}

impl RulesFile {
    /// Writes `document` to a fresh file.
    pub fn new(document: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("rules.json");
        std::fs::write(&path, document).expect("write the rules");
        Self {
            path: path.display().to_string(),
            _dir: dir,
        }
    }
}

/// One running server and the means to stop it.
#[derive(Debug)]
pub struct Service {
    pub addr: SocketAddr,
    trigger: Option<ShutdownTrigger>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Service {
    fn spawn<F>(addr: SocketAddr, run: impl FnOnce(shutdown::Shutdown) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (trigger, shutdown) = shutdown::channel();
        Self {
            addr,
            trigger: Some(trigger),
            task: Some(tokio::spawn(run(shutdown))),
        }
    }

    /// Requests a graceful stop and waits for it; the server's own result.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(trigger) = self.trigger.take() {
            trigger.trigger();
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }
}

/// The suite as a client sees it (through `Deref`, the test kit's
/// [`GatewayClient`]: `app.get(..)`, `app.signed_up(..)`), plus its
/// servers and direct access to its database.
#[derive(Debug)]
pub struct TestApp {
    client: GatewayClient,
    pub db: TestDatabase,
    pub user: Service,
    pub note: Service,
    pub gateway: Service,
    env: Env,
    gateway_env: Env,
}

impl std::ops::Deref for TestApp {
    type Target = GatewayClient;

    fn deref(&self) -> &GatewayClient {
        &self.client
    }
}

impl TestApp {
    /// The suite on a fresh SQLite database.
    pub async fn spawn() -> Self {
        Self::spawn_on(TestDatabase::sqlite()).await
    }

    /// The suite on a fresh SQLite database, with `gateway_env` added to
    /// the gateway's settings.
    pub async fn spawn_with(gateway_env: &[(&str, &str)]) -> Self {
        Self::spawn_configured(TestDatabase::sqlite(), None, gateway_env).await
    }

    /// The suite on `db`; user-service and note-service share it, as they
    /// may in a deployment.
    pub async fn spawn_on(db: TestDatabase) -> Self {
        Self::spawn_configured(db, None, &[]).await
    }

    /// The suite on `db`, with mutual TLS on every gRPC hop: `certs` is a
    /// directory of `easy-note dev-certs` files, and each service presents
    /// its own certificate.
    pub async fn spawn_with_tls(db: TestDatabase, certs: &Path) -> Self {
        Self::spawn_configured(db, Some(certs), &[]).await
    }

    async fn spawn_configured(
        db: TestDatabase,
        certs: Option<&Path>,
        gateway_env: &[(&str, &str)],
    ) -> Self {
        // Logs are captured per test and shown when one fails.
        let telemetry = TelemetryConfig::from_env(&Env::from_process()).expect("RUST_LOG");
        telemetry::init(&telemetry, "easy-note").expect("logging");
        let env = Env::from_pairs([
            ("EASYNOTE_DATABASE_URL", db.url.as_str()),
            ("EASYNOTE_GRPC_ADDR", "127.0.0.1:0"),
            ("EASYNOTE_HTTP_ADDR", "127.0.0.1:0"),
            ("EASYNOTE_JWT_SECRET", JWT_SECRET),
            ("EASYNOTE_SHUTDOWN_TIMEOUT", "5s"),
            ("EASYNOTE_DB_MAX_CONNECTIONS", "5"),
        ]);
        let as_service = |env: &Env, service: &str| match certs {
            None => env.clone(),
            Some(dir) => with_certs(env.clone(), dir, service),
        };
        let env = as_service(&env, easynote_shared::service_name::USER);
        let user = start_user_service(&env).await;
        let note_env = as_service(&env, easynote_shared::service_name::NOTE)
            .with("EASYNOTE_USER_ADDRS", user.addr.to_string());
        let config = note_service::Config::from_env(&note_env).expect("note config");
        let server = note_service::NoteServer::build(config)
            .await
            .expect("build note-service");
        let note = Service::spawn(server.local_addr(), |s| server.run(s));
        let gateway_env = gateway_env.iter().fold(
            as_service(&env, easynote_shared::service_name::GATEWAY)
                .with("EASYNOTE_USER_ADDRS", user.addr.to_string())
                .with("EASYNOTE_NOTE_ADDRS", note.addr.to_string()),
            |env, (var, value)| env.with(var, *value),
        );
        let gateway = start_gateway(&gateway_env).await;
        let app = Self {
            client: GatewayClient::new(gateway.addr, reqwest::Client::new()),
            db,
            user,
            note,
            gateway,
            env,
            gateway_env,
        };
        app.wait_until_ready().await;
        app
    }

    /// Polls `/readyz` until both services answer, failing after 10 s.
    pub async fn wait_until_ready(&self) {
        easynote_testkit::eventually(Duration::from_secs(10), "the suite is ready", || async {
            match self.get("/readyz", None).await {
                (StatusCode::OK, _) => Ok(()),
                (status, body) => Err(format!("{status}: {body}")),
            }
        })
        .await;
    }

    /// Another gateway in front of the same services, with this one's
    /// settings and `extra`; ready when it returns.
    pub async fn spawn_gateway(&self, extra: &[(&str, &str)]) -> Service {
        let env = extra
            .iter()
            .fold(self.gateway_env.clone(), |env, (var, value)| {
                env.with(var, *value)
            });
        let gateway = start_gateway(&env).await;
        let base = format!("http://{}", gateway.addr);
        easynote_testkit::eventually(Duration::from_secs(10), "the gateway is ready", || async {
            let response = self
                .http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .map_err(|err| err.to_string())?;
            match response.status() {
                StatusCode::OK => Ok(()),
                status => Err(status.to_string()),
            }
        })
        .await;
        gateway
    }

    /// Another gateway in front of the same services (a second replica),
    /// with `gateway_env` added to its settings, and its base URL.
    pub async fn another_gateway(&self, gateway_env: &[(&str, &str)]) -> (Service, String) {
        let gateway = self.spawn_gateway(gateway_env).await;
        let base = format!("http://{}", gateway.addr);
        (gateway, base)
    }

    /// Starts a new user-service on the address the old one had.
    pub async fn restart_user_service(&mut self) {
        let env = self
            .env
            .clone()
            .with("EASYNOTE_GRPC_ADDR", self.user.addr.to_string());
        self.user = start_user_service(&env).await;
    }

    /// A direct connection to the suite's database.
    pub async fn database(&self) -> Database {
        Database::connect(&self.db.config(), &note_service::migrations())
            .await
            .expect("connect to the test database")
    }

    /// `(users, live notes, all note rows)` as stored.
    pub async fn row_counts(&self) -> (i64, i64, i64) {
        let db = self.database().await;
        let count = |sql: &'static str| {
            let db = db.clone();
            async move {
                on_pool!(&db, |pool| sqlx::query_scalar::<_, i64>(sql)
                    .fetch_one(pool)
                    .await)
                .expect(sql)
            }
        };
        let counts = (
            count("SELECT COUNT(*) FROM user").await,
            count("SELECT COUNT(*) FROM note WHERE deleted_at IS NULL").await,
            count("SELECT COUNT(*) FROM note").await,
        );
        db.close().await;
        counts
    }
}

async fn start_gateway(env: &Env) -> Service {
    let config = api_gateway::Config::from_env(env).expect("gateway config");
    let server = api_gateway::Gateway::build(config)
        .await
        .expect("build gateway");
    Service::spawn(server.local_addr(), |s| server.run(s))
}

async fn start_user_service(env: &Env) -> Service {
    let config = user_service::Config::from_env(env).expect("user config");
    let server = user_service::UserServer::build(config)
        .await
        .expect("build user-service");
    Service::spawn(server.local_addr(), |s| server.run(s))
}

/// Status and JSON body of a response (`Null` when the body is not JSON).
pub async fn read(response: reqwest::Response) -> (StatusCode, Value) {
    let reply = Reply::read(response).await;
    (reply.status, reply.body)
}

/// A token signed with the test key, with any claims.
pub fn token_with(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode token")
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// Asserts the envelope of an error reply.
#[track_caller]
pub fn assert_error(
    case: &str,
    (status, body): &(StatusCode, Value),
    want_status: StatusCode,
    want_code: i64,
) {
    assert_eq!(*status, want_status, "{case}: status; body {body}");
    assert_eq!(body["code"], json!(want_code), "{case}: code; body {body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{case}: message; body {body}"
    );
    assert_eq!(body["data"], Value::Null, "{case}: data; body {body}");
}
