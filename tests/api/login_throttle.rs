//! Failed logins per username: locked out from one address while the
//! owner logs in from another, for growing but bounded times, the same
//! for accounts that exist and ones that do not.
//!
//! Clients come from different loopback addresses (127.0.0.2, …), which
//! the gateway sees as different client IPs without any proxy header.
//! Governance is off and the login rate floor raised so that per-address
//! rate limits stay out of the way; the throttle does not depend on them.

use std::{net::IpAddr, time::Duration};

use easynote_testkit::eventually;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, read};

/// The suite with small thresholds: locked after `max_failures` per
/// address, a first lock of one second.
async fn spawn(max_failures: &str, max_user_failures: &str) -> TestApp {
    TestApp::spawn_with(&[
        ("EASYNOTE_GOVERNANCE", "off"),
        ("EASYNOTE_LOGIN_MAX_FAILURES", max_failures),
        ("EASYNOTE_LOGIN_LOCK", "1s"),
        ("EASYNOTE_LOGIN_MAX_USER_FAILURES", max_user_failures),
        ("EASYNOTE_LOGIN_RATE_PER_SECOND", "1000"),
        ("EASYNOTE_LOGIN_RATE_BURST", "1000"),
    ])
    .await
}

/// A client whose connections come from `127.0.0.{host}`.
fn client_from(host: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, host]))
        .build()
        .expect("a client")
}

/// One login: status, `Retry-After` as a number when present, body.
async fn login(
    app: &TestApp,
    client: &reqwest::Client,
    username: &str,
    password: &str,
) -> (StatusCode, Option<u64>, Value) {
    let response = client
        .post(format!("{}/v1/user/login", app.base))
        .json(&json!({"username": username, "password": password}))
        .send()
        .await
        .expect("the gateway answers");
    let retry_after = response.headers().get("retry-after").map(|value| {
        value
            .to_str()
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("Retry-After is not an integer: {value:?}"))
    });
    let (status, body) = read(response).await;
    (status, retry_after, body)
}

#[track_caller]
fn assert_locked(case: &str, (status, retry_after, body): &(StatusCode, Option<u64>, Value)) {
    assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{case}: {body}");
    assert_eq!(body["code"], 10006, "{case}: {body}");
    assert!(
        retry_after.is_some_and(|s| (1..=2).contains(&s)),
        "{case}: Retry-After {retry_after:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_logins_lock_out_that_address_only_and_alike_for_unknown_users() {
    let app = spawn("3", "100").await;
    let (status, body) = app.register("alice", "wonderland").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (guesser, owner) = (client_from(2), client_from(3));

    let mut answers = Vec::new();
    for username in ["alice", "nobody"] {
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(login(&app, &guesser, username, "wrong-password").await);
        }
        if username == "alice" {
            // Checked at once, well within the one-second lock.
            let right_from_guesser = login(&app, &guesser, "alice", "wonderland").await;
            assert_locked(
                "the right password from the locked address",
                &right_from_guesser,
            );
            let (status, _, body) = login(&app, &owner, "alice", "wonderland").await;
            assert_eq!(
                status,
                StatusCode::OK,
                "the owner from another address: {body}"
            );
            assert!(body["token"].is_string(), "{body}");
        }
        answers.push(seen);
    }
    for (username, seen) in ["alice", "nobody"].iter().zip(&answers) {
        for (attempt, answer) in seen.iter().enumerate().take(3) {
            assert_eq!(
                answer.0,
                StatusCode::UNAUTHORIZED,
                "{username} #{attempt}: {:?}",
                answer.2
            );
        }
        assert_locked(&format!("{username}'s fourth failure"), &seen[3]);
    }
    let shape = |seen: &Vec<(StatusCode, Option<u64>, Value)>| {
        seen.iter()
            .map(|(status, retry_after, body)| (*status, *retry_after, body["message"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        shape(&answers[0]),
        shape(&answers[1]),
        "an existing and an unknown username are answered alike"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lock_expires_a_success_resets_the_count_and_repeated_locks_grow() {
    let app = spawn("2", "100").await;
    app.register("bob", "builder-bob").await;
    let client = client_from(4);

    for _ in 0..2 {
        let (status, _, body) = login(&app, &client, "bob", "wrong-password").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert_locked(
        "after two failures",
        &login(&app, &client, "bob", "builder-bob").await,
    );
    eventually(Duration::from_secs(10), "the lock expires", || async {
        match login(&app, &client, "bob", "builder-bob").await {
            (StatusCode::OK, _, _) => Ok(()),
            (status, _, body) => Err(format!("{status} {body}")),
        }
    })
    .await;

    // The success cleared the count: one failure is not a lock.
    let (status, _, body) = login(&app, &client, "bob", "wrong-password").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, body) = login(&app, &client, "bob", "builder-bob").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Locked again; one more failure after that lock doubles it.
    for _ in 0..2 {
        login(&app, &client, "bob", "wrong-password").await;
    }
    let (_, first_lock, _) = login(&app, &client, "bob", "wrong-password").await;
    assert_eq!(first_lock, Some(1));
    eventually(
        Duration::from_secs(10),
        "the first lock expires",
        || async {
            match login(&app, &client, "bob", "wrong-password").await {
                (StatusCode::UNAUTHORIZED, _, _) => Ok(()),
                (status, _, body) => Err(format!("{status} {body}")),
            }
        },
    )
    .await;
    let (status, second_lock, body) = login(&app, &client, "bob", "builder-bob").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(second_lock, Some(2), "the second lock is twice the first");
}

#[tokio::test(flavor = "multi_thread")]
async fn failures_from_many_addresses_lock_the_username_briefly_for_everyone() {
    let app = spawn("2", "4").await;
    app.register("carol", "carol-secret").await;
    for host in [5, 6] {
        let guesser = client_from(host);
        for _ in 0..2 {
            let (status, _, body) = login(&app, &guesser, "carol", "wrong-password").await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        }
    }
    let owner = client_from(7);
    assert_locked(
        "the owner while the username is locked",
        &login(&app, &owner, "carol", "carol-secret").await,
    );
    let (status, _, body) = login(&app, &owner, "someone-else", "whatever-password").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "other names go on: {body}"
    );
    eventually(
        Duration::from_secs(10),
        "the short lock expires",
        || async {
            match login(&app, &owner, "carol", "carol-secret").await {
                (StatusCode::OK, _, _) => Ok(()),
                (status, _, body) => Err(format!("{status} {body}")),
            }
        },
    )
    .await;
}
