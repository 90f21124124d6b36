//! Dependencies that go away, shutdown under load, and the all-in-one run.

use std::time::{Duration, Instant};

use easynote_shared::{config::Env, shutdown};
use easynote_testkit::{TestDatabase, eventually, proxy::TcpProxy, server::RunningServer};
use reqwest::StatusCode;
use serde_json::json;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::helpers::{TestApp, assert_error, read};

#[tokio::test(flavor = "multi_thread")]
async fn a_down_user_service_gives_503_and_the_gateway_recovers_by_itself() {
    let mut app = TestApp::spawn().await;
    let token = app.signed_up("grace").await;
    app.create_note(&token, "before", "the outage").await;

    app.user
        .shut_down()
        .await
        .expect("user-service stops cleanly");
    let register = app.register("henry", "password123").await;
    assert_error(
        "register while user-service is down",
        &register,
        StatusCode::SERVICE_UNAVAILABLE,
        10001,
    );
    // note-service needs user-service for author names: the query fails the same way.
    let query = app.get("/v1/note/query", Some(&token)).await;
    assert_error(
        "query while user-service is down",
        &query,
        StatusCode::SERVICE_UNAVAILABLE,
        10001,
    );
    // Readiness reuses its downstream check for up to a second.
    let body = eventually(Duration::from_secs(10), "readiness turns 503", || async {
        match app.get("/readyz", None).await {
            (StatusCode::SERVICE_UNAVAILABLE, body) => Ok(body),
            (status, body) => Err(format!("{status}: {body}")),
        }
    })
    .await;
    assert_eq!(
        body,
        json!({"code": 10001, "message": "not ready", "data": null}),
        "a generic answer: the reason is in the log, not the reply"
    );
    let (status, _) = app.get("/healthz", None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "liveness does not depend on downstreams"
    );

    app.restart_user_service().await;
    eventually(Duration::from_secs(10), "the gateway recovers", || async {
        match app.register("henry", "password123").await {
            (StatusCode::OK, _) => Ok(()),
            (status, body) => {
                assert_eq!(
                    status,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "only 503 while recovering: {body}"
                );
                Err(body.to_string())
            }
        }
    })
    .await;
    let (status, body) = app.get("/v1/note/query", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "note-service recovered too: {body}");
    assert_eq!(body["data"]["total"], 1);
    app.wait_until_ready().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_down_note_service_gives_503_while_accounts_keep_working() {
    let mut app = TestApp::spawn().await;
    let token = app.signed_up("ivan").await;
    app.note
        .shut_down()
        .await
        .expect("note-service stops cleanly");
    let create = app
        .post(
            "/v1/note",
            Some(&token),
            &json!({"title": "t", "content": "c"}),
        )
        .await;
    assert_error(
        "create while note-service is down",
        &create,
        StatusCode::SERVICE_UNAVAILABLE,
        10001,
    );
    let (status, body) = app.login("ivan", "password123").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The MySQL server of `url` behind a proxy that can take it away: the
/// proxy, and `url` pointed at it.
async fn behind_a_proxy(url: &str) -> (TcpProxy, String) {
    let rest = url.strip_prefix("mysql://").expect("a mysql:// URL");
    let host_start = rest.find('@').map_or(0, |at| at + 1);
    let host_end = rest[host_start..]
        .find('/')
        .map_or(rest.len(), |i| host_start + i);
    let authority = &rest[host_start..host_end];
    let target = tokio::net::lookup_host(if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:3306")
    })
    .await
    .expect("resolve the MySQL server")
    .next()
    .expect("an address");
    let proxy = TcpProxy::start(target).await;
    let proxied = format!(
        "mysql://{}{}{}",
        &rest[..host_start],
        proxy.addr,
        &rest[host_end..]
    );
    (proxy, proxied)
}

/// gRPC health of the server at `addr`.
async fn health_of(addr: std::net::SocketAddr) -> Result<ServingStatus, String> {
    let channel = easynote_shared::tls::health_channel(addr, None, "")
        .await
        .map_err(|err| err.to_string())?;
    HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await
        .map(|reply| reply.get_ref().status())
        .map_err(|status| status.to_string())
}

/// Longer than the liveness probes of the Kubernetes manifests give a
/// process before it is killed (`periodSeconds` 10 x `failureThreshold` 3).
const LIVENESS_WINDOW: Duration = Duration::from_secs(31);

/// `easy-note healthcheck [--live] ROLE` against the server at `addr`, as
/// the container probes run it: whether it passed.
async fn healthcheck(role: &str, addr: std::net::SocketAddr, live: bool) -> bool {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_easy-note"));
    command.arg("healthcheck").arg(role);
    if live {
        command.arg("--live");
    }
    command
        .env_clear()
        .env("EASYNOTE_GRPC_ADDR", addr.to_string());
    // Off the test's runtime, which serves the in-process servers.
    tokio::task::spawn_blocking(move || command.output().expect("run easy-note healthcheck"))
        .await
        .expect("the probe ran")
        .status
        .success()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stopped_database_gives_503_and_not_serving_then_recovers() {
    let Some(mut db) = TestDatabase::mysql().await else {
        eprintln!(
            "skipped: no MySQL server configured ({})",
            easynote_testkit::MYSQL_URL_VAR
        );
        return;
    };
    let (proxy, proxied) = behind_a_proxy(&db.url).await;
    db.url = proxied;
    let app = TestApp::spawn_on(db).await;
    let token = app.signed_up("ida").await;
    app.create_note(&token, "before", "the outage").await;

    proxy.cut();
    // Reads and writes answer 503 / 10001 while it lasts, never 500.
    eventually(Duration::from_secs(30), "query answers 503", || async {
        let (status, body) = app.get("/v1/note/query", Some(&token)).await;
        match status {
            StatusCode::SERVICE_UNAVAILABLE => Ok(()),
            StatusCode::INTERNAL_SERVER_ERROR => panic!("a database outage is not a 500: {body}"),
            _ => Err(format!("{status}: {body}")),
        }
    })
    .await;
    let create = app
        .post(
            "/v1/note",
            Some(&token),
            &json!({"title": "during", "content": "the outage"}),
        )
        .await;
    assert_error(
        "create while the database is down",
        &create,
        StatusCode::SERVICE_UNAVAILABLE,
        10001,
    );
    let login = app.login("ida", "password123").await;
    assert_error(
        "login while the database is down",
        &login,
        StatusCode::SERVICE_UNAVAILABLE,
        10001,
    );
    // Both services say so to their health checks, and the gateway is not ready.
    for (name, addr) in [
        ("user-service", app.user.addr),
        ("note-service", app.note.addr),
    ] {
        eventually(
            Duration::from_secs(10),
            &format!("{name} NOT_SERVING"),
            || async {
                match health_of(addr).await? {
                    ServingStatus::NotServing => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    eventually(Duration::from_secs(10), "readiness turns 503", || async {
        match app.get("/readyz", None).await {
            (StatusCode::SERVICE_UNAVAILABLE, _) => Ok(()),
            (status, body) => Err(format!("{status}: {body}")),
        }
    })
    .await;

    // Liveness is not readiness: for longer than the Kubernetes liveness
    // window (3 failed probes 10 s apart), the binary's own liveness probe
    // keeps passing while its readiness probe fails, so no replica would be
    // killed for a database outage.
    let window = Instant::now() + LIVENESS_WINDOW;
    let mut probes = 0;
    while Instant::now() < window {
        for (role, addr) in [
            ("user-service", app.user.addr),
            ("note-service", app.note.addr),
        ] {
            assert!(
                healthcheck(role, addr, true).await,
                "{role}: liveness failed during a database outage"
            );
            assert!(
                !healthcheck(role, addr, false).await,
                "{role}: readiness passed during a database outage"
            );
            probes += 1;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    assert!(probes >= 12, "probed throughout the window: {probes}");
    let (status, _) = app.get("/healthz", None).await;
    assert_eq!(status, StatusCode::OK, "the gateway is alive too");

    proxy.restore();
    for (name, addr) in [
        ("user-service", app.user.addr),
        ("note-service", app.note.addr),
    ] {
        eventually(
            Duration::from_secs(15),
            &format!("{name} SERVING again"),
            || async {
                match health_of(addr).await? {
                    ServingStatus::Serving => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await;
    }
    app.wait_until_ready().await;
    // Nothing was half-done: only the note made before the outage exists.
    let (status, body) = app.get("/v1/note/query", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["total"], 1, "{body}");
    let (status, body) = app.login("ida", "password123").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Stops `service` gracefully; its drain is bounded by its shutdown
/// timeout, so 30 s without an end is a hang, not a slow drain.
async fn stop_within(service: &mut RunningServer, what: &str) {
    match tokio::time::timeout(Duration::from_secs(30), service.shut_down()).await {
        Ok(stopped) => stopped.unwrap_or_else(|err| panic!("{what} drains: {err:#}")),
        Err(_) => panic!("{what} still stopping after 30 s"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_under_load_loses_no_acknowledged_write() {
    let mut app = TestApp::spawn().await;
    let token = app.signed_up("judy").await;
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let (http, url, token) = (
                app.http.clone(),
                format!("{}/v1/note", app.base),
                token.clone(),
            );
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i * 5)).await;
                let response = http
                    .post(url)
                    .bearer_auth(token)
                    .json(&json!({"title": format!("note {i}"), "content": "load"}))
                    .send()
                    .await
                    .ok()?;
                let (status, body) = read(response).await;
                (status == StatusCode::OK)
                    .then(|| body["data"]["note_id"].as_i64())
                    .flatten()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(60)).await;
    // Front to back, as the all-in-one binary stops.
    stop_within(&mut app.gateway, "gateway").await;
    stop_within(&mut app.note, "note-service").await;
    stop_within(&mut app.user, "user-service").await;

    // Stopped, the gateway answers nothing more: every request has its
    // answer or its error by now, none is left hanging on an open
    // connection.
    let mut acknowledged = Vec::new();
    for writer in writers {
        let answered = tokio::time::timeout(Duration::from_secs(10), writer)
            .await
            .expect("a request still unanswered 10 s after the gateway stopped");
        acknowledged.extend(answered.expect("writer task"));
    }
    assert!(
        !acknowledged.is_empty(),
        "some writes should have landed before the stop"
    );
    let (_, live, _) = app.row_counts().await;
    assert_eq!(
        live,
        acknowledged.len() as i64,
        "every acknowledged note is stored, and only those"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_all_in_one_suite_serves_and_stops_cleanly() {
    let db = TestDatabase::sqlite();
    let env = Env::from_pairs([
        ("EASYNOTE_DATABASE_URL", db.url.as_str()),
        ("EASYNOTE_USER_GRPC_ADDR", "127.0.0.1:0"),
        ("EASYNOTE_NOTE_GRPC_ADDR", "127.0.0.1:0"),
        ("EASYNOTE_HTTP_ADDR", "127.0.0.1:0"),
    ]);
    let suite = easy_note::Suite::build(&env)
        .await
        .expect("build the suite");
    let base = format!("http://{}", suite.gateway_addr());
    let (user_addr, note_addr) = (suite.user_addr(), suite.note_addr());
    let (trigger, shutdown) = shutdown::channel();
    let running = tokio::spawn(suite.run(shutdown));
    easy_note::wait_until_serving(user_addr, None, "easy-note-user", Duration::from_secs(5))
        .await
        .expect("user-service serving");
    easy_note::wait_until_serving(note_addr, None, "easy-note-note", Duration::from_secs(5))
        .await
        .expect("note-service serving");

    let http = reqwest::Client::new();
    let (status, body) = read(http.get(format!("{base}/ping")).send().await.expect("ping")).await;
    assert_eq!((status, body), (StatusCode::OK, json!({"message": "pong"})));
    let (status, body) = read(
        http.get(format!("{base}/readyz"))
            .send()
            .await
            .expect("readyz"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    trigger.trigger();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the suite stops within its drain bound")
        .expect("suite task")
        .expect("the suite stops without error");
    assert!(
        http.get(format!("{base}/ping")).send().await.is_err(),
        "nothing listens after the stop"
    );
}

/// Replicas of both services starting at the same moment on an empty
/// MySQL-compatible database (a fresh `docker compose up`, a new cluster):
/// each one either applies the migrations or waits for the one that does,
/// and none fails. MariaDB once let them all migrate at once (its
/// `GET_LOCK` does not wait on the negative timeout sqlx passes), and one
/// replica in two exited.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_starting_at_once_on_an_empty_mysql_database_all_apply_the_migrations() {
    use easynote_shared::db::{Database, DatabaseConfig};
    const ROUNDS: usize = 5;
    const REPLICAS: usize = 4;
    for round in 0..ROUNDS {
        let Some(db) = TestDatabase::mysql().await else {
            eprintln!(
                "skipped: no MySQL server configured ({})",
                easynote_testkit::MYSQL_URL_VAR
            );
            return;
        };
        let mut starting = tokio::task::JoinSet::new();
        for replica in 0..REPLICAS {
            let url = db.url.clone();
            starting.spawn(async move {
                let migrations = if replica % 2 == 0 {
                    note_service::migrations()
                } else {
                    user_service::migrations()
                };
                Database::connect(&DatabaseConfig::new(url), &migrations)
                    .await
                    .map(|_| ())
                    .map_err(|err| format!("replica {replica}: {:#}", anyhow::Error::from(err)))
            });
        }
        while let Some(started) = starting.join_next().await {
            started
                .expect("a replica's task")
                .unwrap_or_else(|err| panic!("round {round}: {err}"));
        }
    }
}
