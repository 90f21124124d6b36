//! The user-service gRPC API, served for real on `127.0.0.1:0` over a fresh
//! database: SQLite for every test, plus MySQL/MariaDB for the smoke test of
//! the create/check flow when `EASYNOTE_TEST_MYSQL_URL` is set.

use std::net::SocketAddr;

use easynote_shared::{
    config::Environment,
    db::Database,
    discovery::DiscoveryConfig,
    governance::GovernanceConfig,
    grpc::ServiceConfig,
    on_pool,
    process::ProcessConfig,
    proto::user::v1::{
        CheckTokenRequest, CheckTokenResponse, CheckUserRequest, CheckUserResponse,
        CreateUserRequest, MGetUserRequest, RevokeTokensRequest, User,
        user_service_client::UserServiceClient,
    },
    tls::TlsSettings,
};
use easynote_testkit::{TestDatabase, assert_grpc_serving, assert_status, server::RunningServer};
use tonic::{Code, Status, transport::Channel};
use user_service::{Config, UserServer};

const PASSWORD: &str = "correct horse battery";

/// A user-service serving on its own port over its own database.
struct TestApp {
    addr: SocketAddr,
    client: UserServiceClient<Channel>,
    db: TestDatabase,
    server: RunningServer,
}

/// Builds and starts a user-service over `db`, on a port of its own.
async fn spawn_app(db: TestDatabase) -> TestApp {
    let config = Config {
        service: ServiceConfig {
            process: ProcessConfig {
                environment: Environment::Development,
                // Static discovery registers nothing; the addresses are never dialled.
                discovery: DiscoveryConfig::Static {
                    user_addrs: vec!["127.0.0.1:1".into()],
                    note_addrs: vec!["127.0.0.1:1".into()],
                },
                lifecycle: Default::default(),
                governance: GovernanceConfig::defaults(),
                tls: TlsSettings::plaintext(),
            },
            grpc_addr: "127.0.0.1:0".parse().expect("an address"),
            database: db.config(),
        },
    };
    let server = UserServer::build(config)
        .await
        .unwrap_or_else(|err| panic!("{}: build user-service: {err:?}", db.backend));
    let server = RunningServer::spawn("user-service", server.local_addr(), |shutdown| {
        server.run(shutdown)
    });
    let client = UserServiceClient::new(server.channel().await);
    TestApp {
        addr: server.addr,
        client,
        db,
        server,
    }
}

async fn spawn_sqlite_app() -> TestApp {
    spawn_app(TestDatabase::sqlite()).await
}

impl TestApp {
    fn backend(&self) -> &'static str {
        self.db.backend
    }

    async fn create_user(&self, username: &str, password: &str) -> Result<i64, Status> {
        let request = CreateUserRequest {
            username: username.into(),
            password: password.into(),
        };
        Ok(self
            .client
            .clone()
            .create_user(request)
            .await?
            .into_inner()
            .user_id)
    }

    /// `CheckUser`'s whole answer.
    async fn check(&self, username: &str, password: &str) -> Result<CheckUserResponse, Status> {
        let request = CheckUserRequest {
            username: username.into(),
            password: password.into(),
        };
        Ok(self.client.clone().check_user(request).await?.into_inner())
    }

    async fn check_user(&self, username: &str, password: &str) -> Result<i64, Status> {
        Ok(self.check(username, password).await?.user_id)
    }

    /// The token epoch a login of `username` gets.
    async fn login_epoch(&self, username: &str, password: &str) -> Result<i64, Status> {
        Ok(self.check(username, password).await?.token_epoch)
    }

    async fn revoke(&self, user_id: i64, jti: &str, everywhere: bool) -> Result<i64, Status> {
        let request = RevokeTokensRequest {
            user_id,
            jti: jti.into(),
            expires_at: i64::try_from(
                (std::time::SystemTime::now() + std::time::Duration::from_secs(3600))
                    .duration_since(std::time::UNIX_EPOCH)
                    .expect("after 1970")
                    .as_secs(),
            )
            .expect("fits"),
            everywhere,
        };
        Ok(self
            .client
            .clone()
            .revoke_tokens(request)
            .await?
            .into_inner()
            .token_epoch)
    }

    async fn check_token(&self, user_id: i64, jti: &str) -> Result<CheckTokenResponse, Status> {
        let request = CheckTokenRequest {
            user_id,
            jti: jti.into(),
        };
        Ok(self.client.clone().check_token(request).await?.into_inner())
    }

    async fn mget_users(&self, user_ids: Vec<i64>) -> Result<Vec<User>, Status> {
        let request = MGetUserRequest { user_ids };
        Ok(self
            .client
            .clone()
            .m_get_user(request)
            .await?
            .into_inner()
            .users)
    }

    /// The stored password hash of `username`, read past the service.
    async fn stored_hash(&self, username: &str) -> String {
        let db = Database::connect(&self.db.config(), &user_service::migrations())
            .await
            .expect("connect to the user database");
        let sql = "SELECT password_hash FROM user WHERE username = ?";
        let hash = on_pool!(&db, |pool| sqlx::query_scalar::<_, String>(sql)
            .bind(username)
            .fetch_one(pool)
            .await)
        .expect("read the stored hash");
        db.close().await;
        hash
    }

    /// Triggers shutdown and checks that the server stops cleanly, in time.
    async fn stop(self) {
        drop(self.client);
        self.server.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_user_can_sign_in_on_every_backend() {
    for db in TestDatabase::all().await {
        let app = spawn_app(db).await;
        let backend = app.backend();
        let id = app
            .create_user("alice", PASSWORD)
            .await
            .unwrap_or_else(|status| panic!("{backend}: create: {status:?}"));
        assert!(id > 0, "{backend}: user id {id}");
        let checked = app
            .check_user("alice", PASSWORD)
            .await
            .unwrap_or_else(|status| panic!("{backend}: check: {status:?}"));
        assert_eq!(checked, id, "{backend}: check returns the created id");
        assert_status(
            app.check_user("alice", "wrong horse battery").await,
            Code::Unauthenticated,
            "wrong username or password",
            backend,
        );
        let users = app.mget_users(vec![id]).await.expect("mget");
        assert_eq!(users.len(), 1, "{backend}: mget of the new user");
        assert_eq!(
            (users[0].user_id, users[0].username.as_str()),
            (id, "alice"),
            "{backend}"
        );
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_username_is_already_exists() {
    let app = spawn_sqlite_app().await;
    let first = app.create_user("bob", PASSWORD).await.expect("first bob");
    assert_status(
        app.create_user("bob", "another password").await,
        Code::AlreadyExists,
        "user already exists",
        "second bob",
    );
    assert_eq!(
        app.check_user("bob", PASSWORD).await.expect("check"),
        first,
        "the first bob stays"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_usernames_and_passwords_are_invalid_arguments_naming_the_field() {
    let long_name = "n".repeat(129);
    let long_password = "p".repeat(129);
    let cases = [
        ("empty username", "", PASSWORD, "username must not be empty"),
        (
            "long username",
            long_name.as_str(),
            PASSWORD,
            "username must be 1 to 128 characters, got 129",
        ),
        (
            "control character",
            "bo\nb",
            PASSWORD,
            "username must not contain control characters",
        ),
        (
            "leading space",
            " bob",
            PASSWORD,
            "username must not start or end with whitespace",
        ),
        (
            "trailing space",
            "bob ",
            PASSWORD,
            "username must not start or end with whitespace",
        ),
        (
            "empty password",
            "bob",
            "",
            "password must be 6 to 128 characters, got 0",
        ),
        (
            "short password",
            "bob",
            "12345",
            "password must be 6 to 128 characters, got 5",
        ),
        (
            "long password",
            "bob",
            long_password.as_str(),
            "password must be 6 to 128 characters, got 129",
        ),
    ];
    let app = spawn_sqlite_app().await;
    for (case, username, password, message) in cases {
        assert_status(
            app.create_user(username, password).await,
            Code::InvalidArgument,
            message,
            case,
        );
    }
    // Nothing was stored on the way: the name is still free.
    app.create_user("bob", PASSWORD)
        .await
        .expect("bob is still free");
    // The boundaries themselves are fine.
    let longest = "é".repeat(128);
    app.create_user(&longest, &"p".repeat(128))
        .await
        .expect("128-character name and password");
    app.create_user("b", "123456")
        .await
        .expect("1-character name, 6-character password");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_users_and_wrong_passwords_get_the_same_answer() {
    let app = spawn_sqlite_app().await;
    app.create_user("carol", PASSWORD)
        .await
        .expect("create carol");
    let cases = [
        ("unknown user", "nobody", PASSWORD),
        ("wrong password", "carol", "not her password"),
        ("other case of the name", "Carol", PASSWORD),
        (
            "password of another case",
            "carol",
            &PASSWORD.to_uppercase(),
        ),
        ("empty password", "carol", ""),
        ("empty username", "", PASSWORD),
        ("malformed username", " carol", PASSWORD),
    ];
    for (case, username, password) in cases {
        assert_status(
            app.check_user(username, password).await,
            Code::Unauthenticated,
            "wrong username or password",
            case,
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_returns_the_known_users_and_skips_the_unknown() {
    let app = spawn_sqlite_app().await;
    let mut ids = Vec::new();
    for name in ["ann", "ben", "cat"] {
        ids.push(app.create_user(name, PASSWORD).await.expect("create"));
    }
    let users = app
        .mget_users(vec![ids[2], ids[2] + 1000, ids[0], ids[0]])
        .await
        .expect("mget");
    let users: Vec<(i64, &str, &str)> = users
        .iter()
        .map(|u| (u.user_id, u.username.as_str(), u.avatar.as_str()))
        .collect();
    assert_eq!(
        users,
        [(ids[0], "ann", ""), (ids[2], "cat", "")],
        "known users in id order, once each"
    );
    assert!(
        app.mget_users(vec![])
            .await
            .expect("mget of none")
            .is_empty(),
        "no ids, no users"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_refuses_ids_that_cannot_exist() {
    let cases = [
        ("zero", vec![0]),
        ("negative", vec![-1]),
        ("zero among good ids", vec![1, 2, 0]),
        ("most negative", vec![i64::MIN]),
    ];
    let app = spawn_sqlite_app().await;
    for (case, ids) in cases {
        assert_status(
            app.mget_users(ids).await,
            Code::InvalidArgument,
            "user_id must be a positive integer",
            case,
        );
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mget_takes_at_most_100_ids() {
    let app = spawn_sqlite_app().await;
    assert_status(
        app.mget_users((1..=101).collect()).await,
        Code::InvalidArgument,
        "at most 100 user ids per call",
        "101 ids",
    );
    app.mget_users((1..=100).collect())
        .await
        .expect("100 ids are fine");
    let mut repeated: Vec<i64> = (1..=100).collect();
    repeated.extend(1..=50);
    app.mget_users(repeated).await.expect("repeats count once");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_are_stored_as_salted_argon2id_phc_strings() {
    let app = spawn_sqlite_app().await;
    app.create_user("dave", PASSWORD)
        .await
        .expect("create dave");
    app.create_user("erin", PASSWORD)
        .await
        .expect("create erin");
    let dave = app.stored_hash("dave").await;
    let erin = app.stored_hash("erin").await;
    for hash in [&dave, &erin] {
        assert!(
            hash.starts_with("$argon2id$v=19$"),
            "not an argon2id PHC string: {hash}"
        );
        assert!(
            !hash.contains(PASSWORD),
            "the plain password is in the hash: {hash}"
        );
    }
    assert_ne!(dave, erin, "one password, two users: the salts must differ");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_answer_serving() {
    let app = spawn_sqlite_app().await;
    assert_grpc_serving(app.addr, &["", "easynote.user.v1.UserService"]).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_the_server_and_frees_its_port() {
    let app = spawn_sqlite_app().await;
    app.create_user("frank", PASSWORD).await.expect("create");
    let addr = app.addr;
    app.stop().await;
    let refused = UserServiceClient::connect(format!("http://{addr}")).await;
    assert!(
        refused.is_err(),
        "nothing may answer on {addr} after shutdown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logging_out_denylists_one_token_or_moves_the_epoch_on_every_backend() {
    for db in TestDatabase::all().await {
        let app = spawn_app(db).await;
        let backend = app.backend();
        let id = app.create_user("quinn", PASSWORD).await.expect("create");
        assert_eq!(
            app.login_epoch("quinn", PASSWORD).await.expect("login"),
            0,
            "{backend}"
        );
        let in_force = CheckTokenResponse {
            token_epoch: 0,
            revoked: false,
        };
        assert_eq!(
            app.check_token(id, "jti-a").await.expect("check"),
            in_force,
            "{backend}"
        );

        // One token: its jti is denied, the others are not; twice is harmless.
        for _ in 0..2 {
            assert_eq!(
                app.revoke(id, "jti-a", false).await.expect("revoke"),
                0,
                "{backend}"
            );
        }
        let a = app.check_token(id, "jti-a").await.expect("check");
        assert!(a.revoked, "{backend}: the logged-out token");
        let b = app.check_token(id, "jti-b").await.expect("check");
        assert_eq!(b, in_force, "{backend}: another token of the user");

        // Everywhere: the epoch moves on, and logins carry the new one.
        assert_eq!(
            app.revoke(id, "jti-b", true).await.expect("revoke all"),
            1,
            "{backend}"
        );
        assert_eq!(
            app.check_token(id, "jti-b")
                .await
                .expect("check")
                .token_epoch,
            1
        );
        assert_eq!(
            app.login_epoch("quinn", PASSWORD).await.expect("login"),
            1,
            "{backend}"
        );

        // Unknown users: nothing to revoke, and no token of theirs is in force.
        let unknown = app
            .revoke(id + 1000, "jti-c", true)
            .await
            .expect_err("unknown user");
        assert_eq!(unknown.code(), Code::NotFound, "{backend}: {unknown:?}");
        assert!(
            app.check_token(id + 1000, "jti-c")
                .await
                .expect("check")
                .revoked,
            "{backend}"
        );
        let empty = app.check_token(id, "").await.expect_err("an empty jti");
        assert_eq!(empty.code(), Code::InvalidArgument, "{backend}");
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_flood_leaves_logins_answering() {
    let app = spawn_sqlite_app().await;
    app.create_user("rosa", PASSWORD).await.expect("create");
    // Below the server's default in-flight bound (256), so that what is
    // tested is the hashing queue, not the governance limit.
    let flood: Vec<_> = (0..200)
        .map(|i| {
            let mut client = app.client.clone();
            tokio::spawn(async move {
                client
                    .create_user(CreateUserRequest {
                        username: format!("flood-{i}"),
                        password: PASSWORD.into(),
                    })
                    .await
                    .map(drop)
            })
        })
        .collect();
    let mut logins = 0;
    while logins < 3 || flood.iter().any(|task| !task.is_finished()) {
        let id = app.check_user("rosa", PASSWORD).await;
        assert!(id.is_ok(), "login {logins} during the flood: {id:?}");
        logins += 1;
    }
    let mut refused = 0;
    for task in flood {
        match task.await.expect("join") {
            Ok(()) => {}
            Err(status) if status.code() == Code::ResourceExhausted => refused += 1,
            Err(status) => panic!("a registration failed otherwise: {status:?}"),
        }
    }
    println!("{logins} logins answered during 200 registrations, {refused} of them shed");
    app.stop().await;
}
