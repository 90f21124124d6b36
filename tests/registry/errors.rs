//! Bad registry settings: refused at start with a message that says what
//! to fix, never a panic, a silent hang or a crash loop.

use std::time::{Duration, Instant};

use easynote_shared::{config::Env, shutdown};
use easynote_testkit::TestDatabase;
use user_service::{Config, UserServer};

use crate::harness::{REGISTRY_WITHIN, Rnacos, USER, unreachable_nacos};

fn nacos_env(pairs: &[(&str, &str)]) -> Env {
    Env::from_pairs(
        [
            ("EASYNOTE_REGISTRY", "nacos"),
            ("EASYNOTE_GRPC_ADDR", "127.0.0.1:0"),
            ("EASYNOTE_HTTP_ADDR", "127.0.0.1:0"),
            ("NACOS_CONNECT_TIMEOUT", "10s"),
            ("NACOS_RETRY_BACKOFF", "200ms"),
        ]
        .iter()
        .chain(pairs)
        .copied(),
    )
}

#[test]
fn malformed_or_half_given_registry_settings_name_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("NACOS_SERVER_ADDR", "http://127.0.0.1:8848")],
            "NACOS_SERVER_ADDR: \"http://127.0.0.1:8848\" must be host:port without a scheme (e.g. 127.0.0.1:8848)",
        ),
        (
            &[("NACOS_SERVER_ADDR", "127.0.0.1:88a48")],
            "NACOS_SERVER_ADDR: \"127.0.0.1:88a48\" has no valid port",
        ),
        (
            &[("NACOS_USERNAME", "nacos")],
            "NACOS_PASSWORD must be set when NACOS_USERNAME is set",
        ),
        (
            &[("NACOS_SECRET_KEY", "hidden-secret")],
            "NACOS_ACCESS_KEY must be set when NACOS_SECRET_KEY is set",
        ),
        (
            &[("EASYNOTE_ADVERTISE_ADDR", "10.0.0.1:http")],
            "EASYNOTE_ADVERTISE_ADDR: \"10.0.0.1:http\" has no valid port",
        ),
        (
            &[("EASYNOTE_REGISTRY", "zookeeper")],
            "EASYNOTE_REGISTRY: \"zookeeper\" is not a known registry (static or nacos)",
        ),
    ];
    for (pairs, expected) in cases {
        let env = nacos_env(pairs);
        let errors = [
            user_service::Config::from_env(&env).map(drop),
            note_service::Config::from_env(&env).map(drop),
            api_gateway::Config::from_env(&env).map(drop),
        ];
        for error in errors {
            let message = error.expect_err(expected).to_string();
            assert_eq!(&message, expected, "{pairs:?}");
            assert!(
                !message.contains("hidden-secret"),
                "a secret leaked: {message}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_registry_is_retried_with_backoff_then_reported() {
    let _serial = crate::one_at_a_time().await;
    // Connections to this port and to its gRPC port (+ 1000) are refused
    // while `_refusing` lives, and nothing else can listen there meanwhile.
    let cluster = crate::harness::cluster().await;
    let (_refusing, dead) = unreachable_nacos();
    let mut env = cluster.env();
    env.extend(
        [
            ("NACOS_SERVER_ADDR", dead.clone()),
            ("NACOS_CONNECT_TIMEOUT", "3s".to_owned()),
            ("NACOS_RETRY_BACKOFF", "200ms".to_owned()),
            ("EASYNOTE_GRPC_ADDR", "127.0.0.1:0".to_owned()),
            (
                "EASYNOTE_DATABASE_URL",
                format!("sqlite://{}", cluster.dir.path().join("user.db").display()),
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let started = Instant::now();
    let mut proc = easynote_testkit::process::Proc::spawn(
        "user-service-unreachable",
        &crate::harness::suite_bin(),
        &["user-service"],
        cluster.dir.path(),
        &env,
    );
    let status = proc.wait_exit(Duration::from_secs(30)).await;
    let took = started.elapsed();
    let output = proc.output();
    assert!(
        !status.success(),
        "it must not start without its registry:\n{output}"
    );
    assert!(
        output.contains("Nacos is not reachable yet; retrying"),
        "each failed attempt is logged:\n{output}"
    );
    assert!(
        output.contains(&format!(
            "cannot reach Nacos at {dead} (gRPC on port + 1000): gave up after"
        )),
        "the final error says what was tried:\n{output}"
    );
    assert!(!output.contains("panicked"), "no panic:\n{output}");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(25),
        "retried for about NACOS_CONNECT_TIMEOUT (3s), took {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_or_missing_credentials_are_refused_and_right_ones_register() {
    let _serial = crate::one_at_a_time().await;
    let nacos = Rnacos::start_with_auth("admin", "right-password-123").await;
    let cache = tempfile::tempdir().expect("a cache directory");
    let cache = cache.path().display().to_string();
    let server = nacos.addr();
    let env = |credentials: &[(&str, &str)], db: &TestDatabase| {
        let mut pairs = vec![
            ("NACOS_SERVER_ADDR", server.as_str()),
            ("NACOS_CACHE_DIR", cache.as_str()),
            ("EASYNOTE_DATABASE_URL", db.url.as_str()),
            ("EASYNOTE_DEREGISTER_GRACE", "200ms"),
        ];
        pairs.extend_from_slice(credentials);
        Config::from_env(&nacos_env(&pairs)).expect("a valid config")
    };

    // A wrong password: refused at start, at once, naming the variables.
    let db = TestDatabase::sqlite();
    let started = Instant::now();
    let err = UserServer::build(env(
        &[
            ("NACOS_USERNAME", "admin"),
            ("NACOS_PASSWORD", "wrong-password-456"),
        ],
        &db,
    ))
    .await
    .expect_err("a wrong password must be refused");
    let message = format!("{err:#}");
    assert!(
        message.contains(&format!(
            "Nacos at {server} refused the login of user \"admin\" (HTTP 403): check NACOS_USERNAME and NACOS_PASSWORD"
        )),
        "{message}"
    );
    assert!(
        !message.contains("wrong-password"),
        "the password leaked: {message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "no retries on refused credentials"
    );

    // No credentials for a Nacos that wants them: registration is refused.
    let db = TestDatabase::sqlite();
    let server_without = UserServer::build(env(&[], &db)).await.expect("connects");
    let (_trigger, shutdown) = shutdown::channel();
    let err = tokio::time::timeout(REGISTRY_WITHIN, server_without.run(shutdown))
        .await
        .expect("fails in time")
        .expect_err("registration without credentials must fail");
    let message = format!("{err:#}");
    assert!(message.contains("registering easy-note-user"), "{message}");
    assert!(message.contains("in Nacos at"), "{message}");

    // The right credentials, the password from a mounted file as compose
    // gives it (NACOS_PASSWORD_FILE, trailing newline and all): registered,
    // then gone after a graceful stop.
    let secrets = tempfile::tempdir().expect("a secrets directory");
    let password_file = secrets.path().join("nacos-password");
    std::fs::write(&password_file, "right-password-123\n").expect("write the password file");
    let password_file = password_file.display().to_string();
    let db = TestDatabase::sqlite();
    let server_right = UserServer::build(env(
        &[
            ("NACOS_USERNAME", "admin"),
            ("NACOS_PASSWORD_FILE", &password_file),
        ],
        &db,
    ))
    .await
    .expect("the right credentials are accepted");
    let addr = server_right.local_addr().to_string();
    let (trigger, shutdown) = shutdown::channel();
    let running = tokio::spawn(server_right.run(shutdown));
    nacos.wait_listed(USER, &addr, true).await;
    trigger.trigger();
    nacos.wait_listed(USER, &addr, false).await;
    tokio::time::timeout(Duration::from_secs(15), running)
        .await
        .expect("stops in time")
        .expect("the task")
        .expect("a clean stop");
}
