//! `TestApp`: a fresh database and the three services started for one
//! test, wired by `easy_note::Suite` as the all-in-one binary wires them.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use easy_note::Role;
use easynote_shared::{
    config::Env,
    db::Database,
    on_pool,
    service_name::{GATEWAY, NOTE, USER},
    telemetry::{self, TelemetryConfig},
};
use easynote_testkit::{
    TestDatabase,
    client::{GatewayClient, Reply},
    server::RunningServer,
};
use reqwest::StatusCode;
use serde_json::{Value, json};

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

/// The suite as a client sees it (through `Deref`, the test kit's
/// [`GatewayClient`]: `app.get(..)`, `app.signed_up(..)`), plus its
/// servers and direct access to its database.
#[derive(Debug)]
pub struct TestApp {
    client: GatewayClient,
    pub db: TestDatabase,
    pub user: RunningServer,
    pub note: RunningServer,
    pub gateway: RunningServer,
    settings: Settings,
}

/// What each service of a [`TestApp`] is given: the suite's settings, its
/// own certificate (with mutual TLS), and for the gateway, the test's own.
#[derive(Debug)]
struct Settings {
    suite: Env,
    certs: Option<PathBuf>,
    gateway: Vec<(String, String)>,
}

impl Settings {
    /// `env`, as `role` gets it.
    fn of(&self, role: Role, env: Env) -> Env {
        let env = match &self.certs {
            Some(dir) => with_certs(env, dir, role.identity()),
            None => env,
        };
        match role {
            Role::ApiGateway => self
                .gateway
                .iter()
                .fold(env, |env, (var, value)| env.with(var, value.clone())),
            _ => env,
        }
    }
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
        let settings = Settings {
            suite: Env::from_pairs([
                ("EASYNOTE_DATABASE_URL", db.url.as_str()),
                ("EASYNOTE_USER_GRPC_ADDR", "127.0.0.1:0"),
                ("EASYNOTE_NOTE_GRPC_ADDR", "127.0.0.1:0"),
                ("EASYNOTE_HTTP_ADDR", "127.0.0.1:0"),
                ("EASYNOTE_JWT_SECRET", JWT_SECRET),
                ("EASYNOTE_SHUTDOWN_TIMEOUT", "5s"),
                ("EASYNOTE_DB_MAX_CONNECTIONS", "5"),
            ]),
            certs: certs.map(Path::to_path_buf),
            gateway: gateway_env
                .iter()
                .map(|(var, value)| ((*var).to_owned(), (*value).to_owned()))
                .collect(),
        };
        // The suite as `easy-note` wires it, each service then run (and
        // stopped, by the tests that take one away) on its own.
        let suite =
            easy_note::Suite::build_each(&settings.suite, |role, env| settings.of(role, env))
                .await
                .expect("build the suite");
        let (user, note, gateway) = suite.into_parts();
        let user = RunningServer::spawn(USER, user.local_addr(), |s| user.run(s));
        let note = RunningServer::spawn(NOTE, note.local_addr(), |s| note.run(s));
        let gateway = RunningServer::spawn(GATEWAY, gateway.local_addr(), |s| gateway.run(s));
        let app = Self {
            client: GatewayClient::new(gateway.addr, reqwest::Client::new()),
            db,
            user,
            note,
            gateway,
            settings,
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
    pub async fn spawn_gateway(&self, extra: &[(&str, &str)]) -> RunningServer {
        let env = self.settings.of(
            Role::ApiGateway,
            self.settings
                .suite
                .clone()
                .with("EASYNOTE_USER_ADDRS", self.user.addr.to_string())
                .with("EASYNOTE_NOTE_ADDRS", self.note.addr.to_string()),
        );
        let env = extra
            .iter()
            .fold(env, |env, (var, value)| env.with(var, *value));
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
    pub async fn another_gateway(&self, gateway_env: &[(&str, &str)]) -> (RunningServer, String) {
        let gateway = self.spawn_gateway(gateway_env).await;
        let base = format!("http://{}", gateway.addr);
        (gateway, base)
    }

    /// Starts a new user-service on the address the old one had.
    pub async fn restart_user_service(&mut self) {
        let env = self.settings.of(
            Role::UserService,
            self.settings
                .suite
                .clone()
                .with("EASYNOTE_GRPC_ADDR", self.user.addr.to_string()),
        );
        let config = user_service::Config::from_env(&env).expect("user config");
        let server = user_service::UserServer::build(config)
            .await
            .expect("build user-service");
        self.user = RunningServer::spawn(USER, server.local_addr(), |s| server.run(s));
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

async fn start_gateway(env: &Env) -> RunningServer {
    let config = api_gateway::Config::from_env(env).expect("gateway config");
    let server = api_gateway::Gateway::build(config)
        .await
        .expect("build gateway");
    RunningServer::spawn(GATEWAY, server.local_addr(), |s| server.run(s))
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
