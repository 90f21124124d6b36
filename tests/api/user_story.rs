//! The whole story of a user, as the contract describes it.

use easynote_shared::on_pool;
use easynote_testkit::TestDatabase;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, now};

#[tokio::test(flavor = "multi_thread")]
async fn the_whole_user_story_works_on_every_backend() {
    for db in TestDatabase::all().await {
        let backend = db.backend;
        let app = TestApp::spawn_on(db).await;
        user_story(&app, backend).await;
    }
}

async fn user_story(app: &TestApp, backend: &str) {
    // Register, twice.
    let (status, body) = app.register("alice", "wonderland").await;
    assert_eq!(status, StatusCode::OK, "{backend}: {body}");
    assert_eq!(
        body,
        json!({"code": 0, "message": "Success", "data": null}),
        "{backend}"
    );
    let again = app.register("alice", "another-password").await;
    assert_error(
        &format!("{backend}: duplicate register"),
        &again,
        StatusCode::CONFLICT,
        10003,
    );

    // Login: wrong password, then right.
    let wrong = app.login("alice", "not-her-password").await;
    assert_error(
        &format!("{backend}: wrong password"),
        &wrong,
        StatusCode::UNAUTHORIZED,
        10004,
    );
    let (status, body) = app.login("alice", "wonderland").await;
    assert_eq!(status, StatusCode::OK, "{backend}: {body}");
    assert_eq!(body["code"], 0, "{backend}");
    assert_eq!(body["message"], "Success", "{backend}");
    let token = body["token"].as_str().expect("top-level token").to_owned();
    assert_eq!(body["data"]["token"], json!(token), "{backend}: data.token");
    assert_eq!(
        body["expire"], body["data"]["expire"],
        "{backend}: data.expire"
    );
    let expire = humantime::parse_rfc3339(body["expire"].as_str().expect("expire"))
        .expect("RFC 3339 expire");
    let lifetime = expire
        .duration_since(std::time::SystemTime::now())
        .expect("expire in the future");
    assert!(
        (3590..=3600).contains(&lifetime.as_secs()),
        "{backend}: default lifetime 1h, got {lifetime:?}"
    );

    // Create three notes.
    let first = app.create_note(&token, "Shopping", "milk, eggs").await;
    let second = app
        .create_note(&token, "Discount", "50% off_everything")
        .await;
    let third = app
        .create_note(&token, "Unicode 笔记", "Ünïcödé content ✓")
        .await;
    assert!(
        first > 0 && second > first && third > second,
        "{backend}: ids {first} {second} {third}"
    );

    // Query: newest first, paging, search.
    let (status, body) = app.get("/v1/note/query", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{backend}: {body}");
    assert_eq!(body["data"]["total"], 3, "{backend}");
    assert_eq!(
        ids(&body),
        vec![third, second, first],
        "{backend}: newest first"
    );
    let (_, page1) = app
        .get("/v1/note/query?limit=2&offset=0", Some(&token))
        .await;
    let (_, page2) = app
        .get("/v1/note/query?limit=2&offset=2", Some(&token))
        .await;
    assert_eq!(ids(&page1), vec![third, second], "{backend}: page 1");
    assert_eq!(ids(&page2), vec![first], "{backend}: page 2");
    assert_eq!(page2["data"]["total"], 3, "{backend}: total on every page");

    let searches: &[(&str, Vec<i64>)] = &[
        ("search_key=shop", vec![first]),
        ("search_key=SHOP", vec![first]),
        ("search_key=EGGS", vec![first]),
        ("search_keyword=discount", vec![second]),
        ("search_key=%25", vec![second]),
        ("search_key=_", vec![second]),
        ("search_key=f_e", vec![second]),
        ("search_key=%25%25", vec![]),
        ("search_key=笔记", vec![third]),
        ("search_key=x%27%20OR%20%271%27%3D%271", vec![]),
        ("search_key=", vec![third, second, first]),
    ];
    for (query, want) in searches {
        let (status, body) = app
            .get(&format!("/v1/note/query?{query}"), Some(&token))
            .await;
        assert_eq!(status, StatusCode::OK, "{backend}: {query}: {body}");
        assert_eq!(&ids(&body), want, "{backend}: {query}");
        assert_eq!(
            body["data"]["total"],
            json!(want.len()),
            "{backend}: {query} total"
        );
    }

    // Get one note, with its author.
    let (status, body) = app.get(&format!("/v1/note/{second}"), Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{backend}: {body}");
    let note = &body["data"];
    assert_eq!(note["note_id"], second, "{backend}");
    assert_eq!(note["title"], "Discount", "{backend}");
    assert_eq!(note["content"], "50% off_everything", "{backend}");
    assert_eq!(note["user_name"], "alice", "{backend}");
    assert_eq!(note["user_avatar"], "", "{backend}");
    let user_id = note["user_id"].as_i64().expect("user_id");
    let created = note["create_time"].as_i64().expect("create_time");
    assert!(
        (now() - created).abs() < 60,
        "{backend}: create_time {created} is unix seconds"
    );

    // Update one field, then the other.
    let (status, body) = app
        .put(
            &format!("/v1/note/{second}"),
            &token,
            &json!({"title": "Big discount"}),
        )
        .await;
    assert_eq!(
        (status, body["code"].clone()),
        (StatusCode::OK, json!(0)),
        "{backend}: {body}"
    );
    let (status, _) = app
        .put(
            &format!("/v1/note/{second}"),
            &token,
            &json!({"title": "Big discount"}),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{backend}: an update that changes nothing still succeeds"
    );
    let (status, _) = app
        .put(
            &format!("/v1/note/{second}"),
            &token,
            &json!({"content": "now 60%"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{backend}");
    let (_, body) = app.get(&format!("/v1/note/{second}"), Some(&token)).await;
    assert_eq!(body["data"]["title"], "Big discount", "{backend}");
    assert_eq!(body["data"]["content"], "now 60%", "{backend}");

    // Delete, then every way of touching the deleted note is 404.
    let (status, body) = app.delete(&format!("/v1/note/{first}"), &token).await;
    assert_eq!(
        body,
        json!({"code": 0, "message": "Success", "data": null}),
        "{backend}: {status}"
    );
    let path = format!("/v1/note/{first}");
    assert_error(
        &format!("{backend}: get deleted"),
        &app.get(&path, Some(&token)).await,
        StatusCode::NOT_FOUND,
        10005,
    );
    assert_error(
        &format!("{backend}: delete twice"),
        &app.delete(&path, &token).await,
        StatusCode::NOT_FOUND,
        10005,
    );
    let update = app.put(&path, &token, &json!({"title": "zombie"})).await;
    assert_error(
        &format!("{backend}: update deleted"),
        &update,
        StatusCode::NOT_FOUND,
        10005,
    );
    let (_, body) = app.get("/v1/note/query", Some(&token)).await;
    assert_eq!(
        ids(&body),
        vec![third, second],
        "{backend}: deleted note gone from queries"
    );

    // The database: soft delete, argon2id hash, nothing stored in the clear.
    let db = app.database().await;
    let deleted_at: Option<i64> = on_pool!(&db, |pool| sqlx::query_scalar(
        "SELECT deleted_at FROM note WHERE id = ?"
    )
    .bind(first)
    .fetch_one(pool)
    .await)
    .expect("deleted row is kept");
    assert!(
        deleted_at.is_some(),
        "{backend}: soft delete sets deleted_at"
    );
    let hash: String = on_pool!(&db, |pool| sqlx::query_scalar(
        "SELECT password_hash FROM user WHERE id = ?"
    )
    .bind(user_id)
    .fetch_one(pool)
    .await)
    .expect("user row");
    assert!(hash.starts_with("$argon2id$v=19$"), "{backend}: {hash}");
    assert!(
        !hash.contains("wonderland"),
        "{backend}: password stored in the clear"
    );
    db.close().await;
}

fn ids(body: &Value) -> Vec<i64> {
    body["data"]["notes"]
        .as_array()
        .unwrap_or_else(|| panic!("notes in {body}"))
        .iter()
        .map(|n| n["note_id"].as_i64().expect("note_id"))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn another_users_notes_are_invisible_and_untouchable() {
    let app = TestApp::spawn().await;
    let alice = app.signed_up("alice").await;
    let bob = app.signed_up("bob").await;
    let note = app.create_note(&alice, "private", "alice only").await;
    let path = format!("/v1/note/{note}");

    let cases = [
        ("bob gets", app.get(&path, Some(&bob)).await),
        (
            "bob updates",
            app.put(&path, &bob, &json!({"title": "pwned"})).await,
        ),
        ("bob deletes", app.delete(&path, &bob).await),
    ];
    for (case, reply) in &cases {
        assert_error(case, reply, StatusCode::NOT_FOUND, 10005);
        assert_eq!(
            reply.1["message"], "Note not found",
            "{case}: same answer as a missing note"
        );
    }
    let (_, body) = app.get("/v1/note/query", Some(&bob)).await;
    assert_eq!(
        body["data"],
        json!({"total": 0, "notes": []}),
        "bob sees none of alice's notes"
    );

    let (status, body) = app.get(&path, Some(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["data"]["title"], "private",
        "bob's update changed nothing"
    );
    assert_eq!(
        app.row_counts().await,
        (2, 1, 1),
        "bob's delete changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_are_accepted_from_header_cookie_and_query_when_the_query_is_turned_on() {
    // The query is off by default (security::a_token_in_the_url_is_refused_unless_turned_on).
    let app = TestApp::spawn_with(&[("EASYNOTE_JWT_QUERY_TOKEN", "true")]).await;
    let token = app.signed_up("carol").await;
    let url = format!("{}/v1/note/query", app.base);
    let by_header = app
        .http
        .get(&url)
        .bearer_auth(&token)
        .send()
        .await
        .expect("send");
    let by_query = app
        .http
        .get(format!("{url}?token={token}"))
        .send()
        .await
        .expect("send");
    let by_cookie = app
        .http
        .get(&url)
        .header("Cookie", format!("theme=dark; jwt={token}"))
        .send()
        .await
        .expect("send");
    for (case, response) in [
        ("header", by_header),
        ("query", by_query),
        ("cookie", by_cookie),
    ] {
        assert_eq!(response.status(), StatusCode::OK, "token in the {case}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn login_answers_an_unknown_user_and_a_wrong_password_alike() {
    let app = TestApp::spawn().await;
    app.signed_up("dave").await;
    let unknown = app.login("nobody", "password123").await;
    let wrong = app.login("dave", "password124").await;
    assert_error("unknown user", &unknown, StatusCode::UNAUTHORIZED, 10004);
    assert_error("wrong password", &wrong, StatusCode::UNAUTHORIZED, 10004);
    assert_eq!(
        unknown.1, wrong.1,
        "the replies must not tell which one was wrong"
    );
}

/// The largest page the contract allows, 100 notes of 64 KiB, comes back
/// whole on every backend: the gRPC message limits are set for it on both
/// sides (the default 4 MiB used to answer 400 with the library's text).
#[tokio::test(flavor = "multi_thread")]
async fn a_full_page_of_the_largest_notes_comes_back_whole() {
    for db in TestDatabase::all().await {
        let backend = db.backend;
        let app = TestApp::spawn_on(db).await;
        let token = app.signed_up("hoarder").await;
        let content = "x".repeat(easynote_shared::validate::CONTENT_MAX_BYTES);
        for i in 0..easynote_shared::validate::LIMIT_MAX {
            app.create_note(&token, &format!("note {i}"), &content)
                .await;
        }
        let (status, body) = app.get("/v1/note/query?limit=100", Some(&token)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "{backend}: {}",
            &body.to_string()[..200.min(body.to_string().len())]
        );
        let notes = body["data"]["notes"].as_array().expect("notes");
        assert_eq!(notes.len(), 100, "{backend}");
        assert_eq!(body["data"]["total"], 100, "{backend}");
        assert!(
            notes
                .iter()
                .all(|n| n["content"].as_str() == Some(content.as_str())),
            "{backend}: every note whole"
        );
    }
}

/// Look-alike names are one account: a full-width name logs in as its
/// plain form and cannot be registered twice; invisible characters are
/// refused with a clear message and create nothing.
#[tokio::test(flavor = "multi_thread")]
async fn look_alike_usernames_are_one_account_and_invisible_characters_are_refused() {
    let app = TestApp::spawn().await;
    let (status, body) = app.register("ｇｒａｃｅ", "hopper-1906").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.login("grace", "hopper-1906").await;
    assert_eq!(status, StatusCode::OK, "the plain form logs in: {body}");
    let again = app.register("grace", "another-pw").await;
    assert_error(
        "the plain form is taken",
        &again,
        StatusCode::CONFLICT,
        10003,
    );
    let before = app.row_counts().await;
    for sneaky in ["gr\u{200B}ace", "\u{202E}ecarg"] {
        let (status, body) = app.register(sneaky, "hopper-1906").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{sneaky:?}: {body}");
        assert_eq!(body["code"], 10002, "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap_or("")
                .contains("zero-width"),
            "{body}"
        );
    }
    assert_eq!(app.row_counts().await, before, "nothing was created");
}
