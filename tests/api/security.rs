//! The gateway exposed to clients that lie: forged tokens, spoofed
//! `X-Forwarded-For`, concurrent and distributed password guessing, a host
//! holding connections, rules that try to switch protection off.
//!
//! Clients come from different loopback addresses (127.0.0.2, …); a
//! "proxy" is a client from an address listed in
//! `EASYNOTE_TRUSTED_PROXIES`. The shared-throttle tests use the local
//! Redis (`EASYNOTE_TEST_REDIS_URL`, default `redis://127.0.0.1:6379`),
//! each under a key prefix of its own.

use std::{net::IpAddr, time::Duration};

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpSocket, TcpStream},
    task::JoinSet,
};

use crate::helpers::{RulesFile, TestApp, now, read, token_with};

/// A client whose connections come from `127.0.0.{host}`.
fn client_from(host: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from([127, 0, 0, host]))
        .build()
        .expect("a client")
}

/// The Redis the shared-throttle tests use.
fn redis_url() -> String {
    std::env::var("EASYNOTE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test, and no earlier run, has used.
fn fresh_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    format!("easy-note-test:{test}:{}-{nanos}:", std::process::id())
}

/// Settings that keep per-address rate limits out of a throttle test.
const NO_RATE_LIMITS: [(&str, &str); 3] = [
    ("EASYNOTE_GOVERNANCE", "off"),
    ("EASYNOTE_LOGIN_RATE_PER_SECOND", "1000"),
    ("EASYNOTE_LOGIN_RATE_BURST", "1000"),
];

/// One login through `base` by `client`, with `forwarded_for` as
/// `X-Forwarded-For` when given: the status and body.
async fn login_via(
    client: &reqwest::Client,
    base: &str,
    forwarded_for: Option<&str>,
    username: &str,
    password: &str,
) -> (StatusCode, Value) {
    let mut request = client
        .post(format!("{base}/v1/user/login"))
        .json(&json!({"username": username, "password": password}));
    if let Some(value) = forwarded_for {
        request = request.header("x-forwarded-for", value);
    }
    read(request.send().await.expect("the gateway answers")).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_development_gateway_beyond_loopback_refuses_tokens_signed_with_the_development_key() {
    // No key set, listening on every interface, development mode.
    let app = TestApp::spawn_with(&[
        ("EASYNOTE_HTTP_ADDR", "0.0.0.0:0"),
        ("EASYNOTE_JWT_SECRET", ""),
    ])
    .await;
    let token = app.signed_up("mallory-target").await;
    let (status, body) = app.get("/v1/note/query", Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "its own token works: {body}");

    let user_id = decode_id(&token);
    let forged = token_with(
        &json!({"id": user_id, "iat": now(), "exp": now() + 3600}),
        api_gateway::DEV_JWT_SECRET,
    );
    let (status, body) = app.get("/v1/note/query", Some(&forged)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "forged: {body}");
    assert_eq!(body["code"], 10004, "{body}");
}

/// The `id` claim of a token, read without checking it.
fn decode_id(token: &str) -> i64 {
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.insecure_disable_signature_validation();
    validation.validate_aud = false;
    let data = jsonwebtoken::decode::<Value>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(b"unused"),
        &validation,
    )
    .expect("a JWT");
    data.claims["id"].as_i64().expect("id")
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy_and_read_from_the_right() {
    let mut settings = NO_RATE_LIMITS.to_vec();
    settings.extend([
        ("EASYNOTE_TRUSTED_PROXIES", "127.0.0.2/32"),
        ("EASYNOTE_LOGIN_MAX_FAILURES", "2"),
    ]);
    let app = TestApp::spawn_with(&settings).await;
    app.register("victor", "victor-secret").await;
    let (proxy, direct) = (client_from(2), client_from(3));

    // A direct client cannot shed its address by inventing a new one
    // each time: the header is ignored and its own address is locked.
    for n in 1..=2 {
        let spoofed = format!("198.51.100.{n}");
        let (status, body) = login_via(&direct, &app.base, Some(&spoofed), "victor", "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "miss {n}: {body}");
    }
    let (status, body) = login_via(
        &direct,
        &app.base,
        Some("198.51.100.99"),
        "victor",
        "victor-secret",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::TOO_MANY_REQUESTS,
        "spoofing did not help: {body}"
    );

    // Through the trusted proxy, the client it names is the one counted.
    for _ in 0..2 {
        let (status, body) =
            login_via(&proxy, &app.base, Some("203.0.113.9"), "victor", "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    }
    let cases = [
        (
            Some("203.0.113.9"),
            StatusCode::TOO_MANY_REQUESTS,
            "the locked client",
        ),
        (
            Some("6.6.6.6, 203.0.113.9"),
            StatusCode::TOO_MANY_REQUESTS,
            "an entry forged to the left of it changes nothing",
        ),
        (
            Some("203.0.113.10"),
            StatusCode::OK,
            "another client behind the proxy",
        ),
        (None, StatusCode::OK, "the proxy's own address"),
    ];
    for (forwarded_for, expected, case) in cases {
        let (status, body) =
            login_via(&proxy, &app.base, forwarded_for, "victor", "victor-secret").await;
        assert_eq!(status, expected, "{case}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_clients_are_counted_per_slash_64() {
    let mut settings = NO_RATE_LIMITS.to_vec();
    settings.extend([
        ("EASYNOTE_TRUSTED_PROXIES", "127.0.0.2/32"),
        ("EASYNOTE_LOGIN_MAX_FAILURES", "2"),
    ]);
    let app = TestApp::spawn_with(&settings).await;
    app.register("wendy", "wendy-secret").await;
    let proxy = client_from(2);
    for address in ["2001:db8:1:1::1", "2001:db8:1:1::2"] {
        let (status, body) = login_via(&proxy, &app.base, Some(address), "wendy", "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{address}: {body}");
    }
    let cases = [
        (
            "2001:db8:1:1:ffff:ffff:ffff:ffff",
            StatusCode::TOO_MANY_REQUESTS,
            "the same /64",
        ),
        ("2001:db8:1:2::1", StatusCode::OK, "the next /64"),
    ];
    for (address, expected, case) in cases {
        let (status, body) =
            login_via(&proxy, &app.base, Some(address), "wendy", "wendy-secret").await;
        assert_eq!(status, expected, "{case}: {body}");
    }
}

/// Sends `count` wrong-password logins for `username` at once, spread
/// over `bases` in turn: the statuses.
async fn concurrent_misses(bases: &[String], count: usize, username: &str) -> Vec<StatusCode> {
    let client = client_from(4);
    let mut logins = JoinSet::new();
    for n in 0..count {
        let (client, base, username) = (
            client.clone(),
            bases[n % bases.len()].clone(),
            username.to_owned(),
        );
        logins.spawn(async move {
            login_via(&client, &base, None, &username, "wrong-password")
                .await
                .0
        });
    }
    logins.join_all().await
}

#[track_caller]
fn assert_misses_within_budget(statuses: &[StatusCode], budget: usize) {
    let misses = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let held = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(misses, budget, "passwords checked: {statuses:?}");
    assert_eq!(misses + held, statuses.len(), "nothing else: {statuses:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_wrong_passwords_never_exceed_the_allowed_failures() {
    let mut settings = NO_RATE_LIMITS.to_vec();
    settings.push(("EASYNOTE_LOGIN_MAX_FAILURES", "3"));
    let app = TestApp::spawn_with(&settings).await;
    app.register("xavier", "xavier-secret").await;
    let statuses = concurrent_misses(std::slice::from_ref(&app.base), 24, "xavier").await;
    assert_misses_within_budget(&statuses, 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_gateways_sharing_redis_enforce_one_failure_budget() {
    let prefix = fresh_prefix("one-budget");
    let url = redis_url();
    let mut settings = NO_RATE_LIMITS.to_vec();
    settings.extend([
        ("EASYNOTE_LOGIN_MAX_FAILURES", "3"),
        ("EASYNOTE_REDIS_URL", url.as_str()),
        ("EASYNOTE_REDIS_KEY_PREFIX", prefix.as_str()),
    ]);
    let app = TestApp::spawn_with(&settings).await;
    let mut second = app.spawn_gateway(&[]).await;
    let bases = [app.base.clone(), format!("http://{}", second.addr)];
    app.register("yvonne", "yvonne-secret").await;
    app.register("zack", "zack-secret").await;
    let client = client_from(5);

    // In turn: two misses on one gateway, one on the other, and both
    // refuse the next attempt.
    for base in [&bases[0], &bases[1], &bases[0]] {
        let (status, body) = login_via(&client, base, None, "yvonne", "wrong").await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{base}: {body}");
    }
    for base in &bases {
        let (status, body) = login_via(&client, base, None, "yvonne", "yvonne-secret").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{base}: {body}");
        assert_eq!(body["code"], 10006, "{body}");
    }

    // At once, spread over both: still one budget.
    let statuses = concurrent_misses(&bases, 24, "zack").await;
    assert_misses_within_budget(&statuses, 3);
    second.shut_down().await.expect("the second gateway stops");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_its_redis_unreachable_login_fails_closed_and_the_rest_goes_on() {
    // Port 1 on loopback: nothing listens there.
    let mut settings = NO_RATE_LIMITS.to_vec();
    settings.push(("EASYNOTE_REDIS_URL", "redis://127.0.0.1:1"));
    let app = TestApp::spawn_with(&settings).await;
    let (status, body) = app.register("olivia", "olivia-secret").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "register does not need Redis: {body}"
    );
    let (status, body) = app.login("olivia", "olivia-secret").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["code"], 10001, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rules_document_without_rate_limits_still_leaves_the_login_floor() {
    let rules = RulesFile::new(r#"{"gateway": {"rate_limits": []}}"#);
    let app = TestApp::spawn_with(&[
        ("EASYNOTE_GOVERNANCE_FILE", rules.path.as_str()),
        ("EASYNOTE_LOGIN_RATE_PER_SECOND", "1"),
        ("EASYNOTE_LOGIN_RATE_BURST", "3"),
    ])
    .await;
    let client = client_from(6);
    let mut statuses = Vec::new();
    for n in 0..20 {
        let username = format!("nobody{n}");
        statuses.push(
            login_via(&client, &app.base, None, &username, "whatever-password")
                .await
                .0,
        );
    }
    assert_eq!(
        &statuses[..3],
        &[StatusCode::UNAUTHORIZED; 3],
        "the burst is let through"
    );
    assert!(
        statuses.contains(&StatusCode::TOO_MANY_REQUESTS),
        "the floor holds without any rule: {statuses:?}"
    );
    let (status, body) = login_via(
        &client_from(7),
        &app.base,
        None,
        "nobody",
        "whatever-password",
    )
    .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "another address is not limited: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_in_the_url_is_refused_unless_turned_on() {
    for (setting, expected) in [
        ("false", StatusCode::UNAUTHORIZED),
        ("true", StatusCode::OK),
    ] {
        let app = TestApp::spawn_with(&[("EASYNOTE_JWT_QUERY_TOKEN", setting)]).await;
        let token = app.signed_up("quincy").await;
        let (status, body) = app
            .get(&format!("/v1/note/query?token={token}"), None)
            .await;
        assert_eq!(
            status, expected,
            "EASYNOTE_JWT_QUERY_TOKEN={setting}: {body}"
        );
    }
    let app = TestApp::spawn().await;
    let token = app.signed_up("rita").await;
    let (status, body) = app
        .get(&format!("/v1/note/query?token={token}"), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "off by default: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_says_nosniff_no_store_no_referrer_and_no_framing() {
    let app = TestApp::spawn().await;
    app.register("sybil", "sybil-secret").await;
    let http = &app.http;
    let answers = [
        (
            "a login, carrying a token",
            http.post(format!("{}/v1/user/login", app.base))
                .json(&json!({"username": "sybil", "password": "sybil-secret"})),
        ),
        (
            "an error",
            http.get(format!("{}/v1/no-such-route", app.base)),
        ),
        ("/ping", http.get(format!("{}/ping", app.base))),
    ];
    for (case, request) in answers {
        let response = request.send().await.expect("an answer");
        let headers = response.headers();
        assert_eq!(
            headers
                .get("x-content-type-options")
                .and_then(|v| v.to_str().ok()),
            Some("nosniff"),
            "{case}: {headers:?}"
        );
        assert_eq!(
            headers.get("cache-control").and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{case}: {headers:?}"
        );
        for (header, wanted) in [
            ("referrer-policy", "no-referrer"),
            ("x-frame-options", "DENY"),
            (
                "content-security-policy",
                "default-src 'none'; frame-ancestors 'none'",
            ),
        ] {
            assert_eq!(
                headers.get(header).and_then(|v| v.to_str().ok()),
                Some(wanted),
                "{case}: {headers:?}"
            );
        }
    }
}

/// A raw connection from `127.0.0.{host}`.
async fn connect_from(host: u8, to: std::net::SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .bind((IpAddr::from([127, 0, 0, host]), 0).into())
        .expect("bind a loopback address");
    socket.connect(to).await.expect("connect")
}

/// Sends `/ping` on `tcp` and reads the status line's code and the body.
async fn ping_on(tcp: &mut TcpStream) -> (u16, String) {
    tcp.write_all(b"GET /ping HTTP/1.1\r\nHost: gateway\r\n\r\n")
        .await
        .expect("send");
    let mut received = Vec::new();
    let mut chunk = [0u8; 1024];
    let read = async {
        loop {
            let n = tcp.read(&mut chunk).await.unwrap_or(0);
            received.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&received).into_owned();
            if n == 0 || text.contains("}") {
                return text;
            }
        }
    };
    let text = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an answer within 10 s");
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_address_holds_at_most_its_share_of_connections_pings_included() {
    let app = TestApp::spawn_with(&[
        ("EASYNOTE_HTTP_MAX_CONNECTIONS_PER_ADDRESS", "5"),
        ("EASYNOTE_HTTP_IDLE_TIMEOUT", "60s"),
    ])
    .await;
    let addr = app.gateway.addr;
    let mut held = Vec::new();
    for n in 0..5 {
        let mut tcp = connect_from(8, addr).await;
        let (status, text) = ping_on(&mut tcp).await;
        assert_eq!(status, 200, "connection {n}: {text}");
        held.push(tcp);
    }
    let mut sixth = connect_from(8, addr).await;
    let (status, text) = ping_on(&mut sixth).await;
    assert_eq!(status, 429, "the sixth from one address: {text}");
    assert!(text.contains("\"code\":10006"), "{text}");
    assert!(
        text.to_ascii_lowercase().contains("retry-after: 1"),
        "{text}"
    );

    let mut other = connect_from(9, addr).await;
    let (status, text) = ping_on(&mut other).await;
    assert_eq!(status, 200, "another address is served: {text}");

    drop(held);
    easynote_testkit::eventually(
        Duration::from_secs(10),
        "served again once connections close",
        || async {
            let mut tcp = connect_from(8, addr).await;
            match ping_on(&mut tcp).await {
                (200, _) => Ok(()),
                (status, text) => Err(format!("{status}: {text}")),
            }
        },
    )
    .await;
}
