//! Dependencies that go away, shutdown under load, and the all-in-one run.

use std::time::Duration;

use easynote_shared::{config::Env, shutdown};
use easynote_testkit::{TestDatabase, eventually};
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{TestApp, assert_error, read};

#[tokio::test(flavor = "multi_thread")]
async fn a_down_user_service_gives_503_and_the_gateway_recovers_by_itself() {
    let mut app = TestApp::spawn().await;
    let token = app.signed_up("grace").await;
    app.create_note(&token, "before", "the outage").await;

    app.user.stop().await.expect("user-service stops cleanly");
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
    let (status, body) = app.get("/readyz", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], 10001);
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
    app.note.stop().await.expect("note-service stops cleanly");
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
    app.gateway.stop().await.expect("gateway drains");
    app.note.stop().await.expect("note-service drains");
    app.user.stop().await.expect("user-service drains");

    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer task"));
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
    easy_note::wait_until_serving(user_addr, Duration::from_secs(5))
        .await
        .expect("user-service serving");
    easy_note::wait_until_serving(note_addr, Duration::from_secs(5))
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
