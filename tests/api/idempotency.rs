//! `Idempotency-Key` on `POST /v1/note`: a retry answers the first create
//! and writes nothing; the key reused for another note, or a malformed key,
//! is refused and writes nothing. On every available backend.

use easynote_testkit::TestDatabase;
use reqwest::{Method, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, read};

/// A create with the given `Idempotency-Key` header values (none, one, or
/// several); the status, body and headers of the answer.
async fn create(
    app: &TestApp,
    token: &str,
    keys: &[&str],
    body: &Value,
) -> (StatusCode, Value, HeaderMap) {
    let mut request = app
        .http
        .request(Method::POST, format!("{}/v1/note", app.base))
        .bearer_auth(token)
        .json(body);
    for key in keys {
        request = request.header("Idempotency-Key", *key);
    }
    let response = request.send().await.expect("request reaches the gateway");
    let headers = response.headers().clone();
    let (status, body) = read(response).await;
    (status, body, headers)
}

/// A 10002 error whose message names the header.
#[track_caller]
fn assert_refused(case: &str, status: StatusCode, body: &Value, want: StatusCode) {
    assert_error(case, &(status, body.clone()), want, 10002);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key"),
        "{case}: message names the header: {body}"
    );
}

fn replayed(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("idempotent-replayed")
        .map(|v| v.to_str().expect("ASCII header"))
}

#[tokio::test]
async fn a_retried_create_with_the_same_key_answers_the_first_note() {
    for db in TestDatabase::all().await {
        let backend = db.backend;
        let app = TestApp::spawn_on(db).await;
        let alice = app.signed_up("alice").await;
        let bob = app.signed_up("bob").await;
        let note = json!({"title": "groceries", "content": "milk"});

        let (status, first, headers) = create(&app, &alice, &["order-7f3a"], &note).await;
        assert_eq!(status, StatusCode::OK, "{backend}: first create: {first}");
        assert_eq!(replayed(&headers), Some("false"), "{backend}");
        let id = first["data"]["note_id"].as_i64().expect("note_id");

        // The client timed out and sends the very same request again, twice
        // at once: the first note's id each time, and no new note.
        let (one, two) = tokio::join!(
            create(&app, &alice, &["order-7f3a"], &note),
            create(&app, &alice, &["order-7f3a"], &note)
        );
        for (status, body, headers) in [one, two] {
            assert_eq!(status, StatusCode::OK, "{backend}: retry: {body}");
            assert_eq!(body["data"]["note_id"], json!(id), "{backend}: retry's id");
            assert_eq!(replayed(&headers), Some("true"), "{backend}");
        }
        assert_eq!(app.row_counts().await, (2, 1, 1), "{backend}: one note");

        // The key is alice's: bob's create with it is his own new note.
        let (status, body, headers) = create(&app, &bob, &["order-7f3a"], &note).await;
        assert_eq!(status, StatusCode::OK, "{backend}: bob: {body}");
        assert_ne!(body["data"]["note_id"], json!(id), "{backend}: bob's note");
        assert_eq!(replayed(&headers), Some("false"), "{backend}");

        // Creates without a key are never replayed and carry no header.
        let (status, body, headers) = create(&app, &alice, &[], &note).await;
        assert_eq!(status, StatusCode::OK, "{backend}: no key: {body}");
        assert_eq!(replayed(&headers), None, "{backend}");
        assert_eq!(app.row_counts().await, (2, 3, 3), "{backend}: rows");
    }
}

#[tokio::test]
async fn a_key_reused_for_another_note_or_malformed_is_refused_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let token = app.signed_up("carol").await;
    let note = json!({"title": "first", "content": "one"});
    let (status, body, _) = create(&app, &token, &["k-1"], &note).await;
    assert_eq!(status, StatusCode::OK, "first create: {body}");

    let other = json!({"title": "first", "content": "two"});
    let (status, body, _) = create(&app, &token, &["k-1"], &other).await;
    assert_refused(
        "key reused",
        status,
        &body,
        StatusCode::UNPROCESSABLE_ENTITY,
    );

    let too_long = "k".repeat(256);
    for (case, keys) in [
        ("empty key", vec![""]),
        ("256 characters", vec![too_long.as_str()]),
        ("space inside", vec!["a b"]),
        ("given twice", vec!["k-2", "k-3"]),
    ] {
        let (status, body, _) = create(&app, &token, &keys, &note).await;
        assert_refused(case, status, &body, StatusCode::BAD_REQUEST);
    }
    assert_eq!(app.row_counts().await, (1, 1, 1), "only the first note");
}
