//! `POST /v1/user/logout`: revoked tokens are refused, on this gateway at
//! once and on another replica within its `EASYNOTE_REVOCATION_CACHE_TTL`;
//! tokens of another issuer or audience, or without a `jti`, never pass.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, RulesFile, TestApp, assert_error, now, read, token_with};

/// Logs in as `username` (password `password123`) once more.
async fn another_token(app: &TestApp, username: &str) -> String {
    let (status, body) = app.login(username, "password123").await;
    assert_eq!(status, StatusCode::OK, "login {username}: {body}");
    body["token"].as_str().expect("token").to_owned()
}

/// The status of listing notes with `token` at the gateway `base`.
async fn notes_status(app: &TestApp, base: &str, token: &str) -> StatusCode {
    let response = app
        .http
        .get(format!("{base}/v1/note/query"))
        .bearer_auth(token)
        .send()
        .await
        .expect("request reaches the gateway");
    read(response).await.0
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_revokes_the_token_presented_and_no_other() {
    let app = TestApp::spawn().await;
    let phone = app.signed_up("lena").await;
    let laptop = another_token(&app, "lena").await;

    let (status, body) = app
        .send(reqwest::Method::POST, "/v1/user/logout", Some(&phone), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"], Value::Null, "{body}");

    let refused = app.get("/v1/note/query", Some(&phone)).await;
    assert_error(
        "the logged-out token",
        &refused,
        StatusCode::UNAUTHORIZED,
        10004,
    );
    assert_eq!(refused.1["message"], "token has been revoked");
    let (status, body) = app.get("/v1/note/query", Some(&laptop)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the other token still works: {body}"
    );
    // Logging out again with the revoked token is refused like any use.
    let again = app.post("/v1/user/logout", Some(&phone), &json!({})).await;
    assert_error("a second logout", &again, StatusCode::UNAUTHORIZED, 10004);
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_everywhere_revokes_every_earlier_token_and_a_new_login_works() {
    let app = TestApp::spawn().await;
    let tokens = [
        app.signed_up("mara").await,
        another_token(&app, "mara").await,
        another_token(&app, "mara").await,
    ];
    let bystander = app.signed_up("nils").await;

    let (status, body) = app
        .post(
            "/v1/user/logout",
            Some(&tokens[0]),
            &json!({"everywhere": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for (i, token) in tokens.iter().enumerate() {
        let refused = app.get("/v1/note/query", Some(token)).await;
        assert_error(
            &format!("token {i}"),
            &refused,
            StatusCode::UNAUTHORIZED,
            10004,
        );
    }
    let (status, body) = app.get("/v1/note/query", Some(&bystander)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "another user's token is untouched: {body}"
    );
    let fresh = another_token(&app, "mara").await;
    let (status, body) = app.get("/v1/note/query", Some(&fresh)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a login after the logout works: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn another_gateway_refuses_logged_out_tokens_within_its_cache_bound() {
    let app = TestApp::spawn().await;
    let (mut replica, replica_base) = app
        .another_gateway(&[("EASYNOTE_REVOCATION_CACHE_TTL", "1s")])
        .await;
    let token = app.signed_up("olga").await;
    let other = another_token(&app, "olga").await;
    // The replica has seen (and cached) the tokens in force.
    assert_eq!(
        notes_status(&app, &replica_base, &token).await,
        StatusCode::OK
    );
    assert_eq!(
        notes_status(&app, &replica_base, &other).await,
        StatusCode::OK
    );

    let (status, body) = app
        .post(
            "/v1/user/logout",
            Some(&other),
            &json!({"everywhere": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The bound is 1 s; the margin is for a loaded machine, not the promise
    // (revocation.rs's tests hold the cache to the bound exactly).
    easynote_testkit::eventually(Duration::from_secs(10), "the replica refuses", || async {
        match notes_status(&app, &replica_base, &token).await {
            StatusCode::UNAUTHORIZED => Ok(()),
            status => Err(format!("still {status}")),
        }
    })
    .await;
    replica
        .shut_down()
        .await
        .expect("the replica stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokens_of_another_issuer_or_audience_or_without_a_jti_are_refused() {
    let app = TestApp::spawn().await;
    let token = app.signed_up("pia").await;
    let (_, body) = app.get("/v1/note/query", Some(&token)).await;
    assert_eq!(body["code"], 0, "the user's own token works: {body}");
    let (status, body) = app.login("pia", "password123").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let user_id = claims_of(body["token"].as_str().expect("token"))["id"].clone();

    let good = json!({"id": user_id, "exp": now() + 600, "iat": now(), "iss": "easy-note",
                      "aud": "easy-note-api", "jti": "00112233445566778899aabbccddeeff", "epoch": 0});
    let (status, body) = app
        .get("/v1/note/query", Some(&token_with(&good, JWT_SECRET)))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a well-formed token minted here passes: {body}"
    );
    let cases: [(&str, &str, Value); 5] = [
        ("another issuer", "iss", json!("someone-else")),
        ("another audience", "aud", json!("another-api")),
        ("no issuer", "iss", Value::Null),
        ("no audience", "aud", Value::Null),
        ("no jti", "jti", Value::Null),
    ];
    for (what, claim, value) in cases {
        let mut claims = good.clone();
        if value.is_null() {
            claims.as_object_mut().expect("object").remove(claim);
        } else {
            claims[claim] = value;
        }
        let refused = app
            .get("/v1/note/query", Some(&token_with(&claims, JWT_SECRET)))
            .await;
        assert_error(what, &refused, StatusCode::UNAUTHORIZED, 10004);
    }
}

/// The claims of a token, unverified.
fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    let mut bits = Vec::new();
    let (mut acc, mut n) = (0u32, 0);
    for c in payload.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            bits.push((acc >> n) as u8);
            acc &= (1 << n) - 1;
        }
    }
    serde_json::from_slice(&bits).expect("JSON claims")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_logged_out_token_cannot_use_up_its_users_rate_limit() {
    // The per-user limit is keyed by the caller authentication accepted:
    // a revoked token is no user's, so its requests count against its
    // address, and the user's own bucket stays whole for their live tokens.
    let rules = RulesFile::new(
        r#"{"gateway": {"rate_limits": [
            {"route": "GET /v1/note/query", "key": "user", "per_second": 0.1, "burst": 3}]}}"#,
    );
    let app = TestApp::spawn_with(&[("EASYNOTE_GOVERNANCE_FILE", rules.path.as_str())]).await;
    let stolen = app.signed_up("mia").await;
    let kept = another_token(&app, "mia").await;
    let (status, body) = app
        .send(
            reqwest::Method::POST,
            "/v1/user/logout",
            Some(&stolen),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    for _ in 0..6 {
        let (status, body) = app.get("/v1/note/query", Some(&stolen)).await;
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS,
            "the revoked token: {status} {body}"
        );
    }
    for n in 0..3 {
        let (status, body) = app.get("/v1/note/query", Some(&kept)).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "request {n} with the live token: the user's bucket is whole: {body}"
        );
    }
}
