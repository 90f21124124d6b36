//! Bad input on every route: the contract's error, a clear message, never a
//! 500, and nothing changed in the database.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{JWT_SECRET, TestApp, now, read, token_with};

/// The body of a case.
enum Body {
    None,
    Json(Value),
    /// Raw bytes with a content type (or none).
    Raw(String, Option<&'static str>),
}

/// The token of a case.
#[derive(Clone, Copy)]
enum Auth {
    None,
    Valid,
    Forged,
    Expired,
    AlgNone,
    Garbage,
    UnknownClaims,
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    auth: Auth,
    body: Body,
    status: StatusCode,
    code: i64,
    message: &'static str,
}

fn case(
    name: &'static str,
    method: Method,
    path: impl Into<String>,
    auth: Auth,
    body: Body,
) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        auth,
        body,
        status: StatusCode::BAD_REQUEST,
        code: 10002,
        message: "",
    }
}

impl Case {
    fn expect(mut self, status: StatusCode, code: i64, message: &'static str) -> Self {
        self.status = status;
        self.code = code;
        self.message = message;
        self
    }
}

fn creds(username: Value, password: Value) -> Body {
    Body::Json(json!({"username": username, "password": password}))
}

fn cases(note: i64) -> Vec<Case> {
    use Auth::{AlgNone, Expired, Forged, Garbage, UnknownClaims, Valid};
    let (bad, unauthorized, not_found) = (
        StatusCode::BAD_REQUEST,
        StatusCode::UNAUTHORIZED,
        StatusCode::NOT_FOUND,
    );
    let post = || Method::POST;
    let note_path = format!("/v1/note/{note}");
    let big = "x".repeat(300 * 1024);
    vec![
        // register
        case(
            "register: missing password",
            post(),
            "/v1/user/register",
            Auth::None,
            Body::Json(json!({"username": "eve"})),
        )
        .expect(bad, 10002, "missing field `password`"),
        case(
            "register: extra field",
            post(),
            "/v1/user/register",
            Auth::None,
            Body::Json(json!({"username": "eve", "password": "secret1", "admin": true})),
        )
        .expect(bad, 10002, "unknown field `admin`"),
        case(
            "register: wrong type",
            post(),
            "/v1/user/register",
            Auth::None,
            creds(json!(12345), json!("secret1")),
        )
        .expect(bad, 10002, "invalid type"),
        case(
            "register: not JSON",
            post(),
            "/v1/user/register",
            Auth::None,
            Body::Raw("username=eve".into(), Some("application/json")),
        )
        .expect(bad, 10002, "request body must be a JSON object"),
        case(
            "register: no content type",
            post(),
            "/v1/user/register",
            Auth::None,
            Body::Raw(r#"{"username":"eve","password":"secret1"}"#.into(), None),
        )
        .expect(bad, 10002, "Content-Type: application/json"),
        case(
            "register: empty body",
            post(),
            "/v1/user/register",
            Auth::None,
            Body::Raw(String::new(), Some("application/json")),
        )
        .expect(bad, 10002, "EOF"),
        case(
            "register: JSON array",
            post(),
            "/v1/user/register",
            Auth::None,
            Body::Json(json!(["eve", "secret1"])),
        )
        .expect(bad, 10002, "request body must be a JSON object"),
        case(
            "register: JSON string",
            post(),
            "/v1/user/register",
            Auth::None,
            Body::Json(json!("eve")),
        )
        .expect(bad, 10002, "request body must be a JSON object"),
        case(
            "update: JSON array",
            Method::PUT,
            format!("/v1/note/{note}"),
            Valid,
            Body::Json(json!(["t", "c"])),
        )
        .expect(bad, 10002, "request body must be a JSON object"),
        case(
            "register: empty username",
            post(),
            "/v1/user/register",
            Auth::None,
            creds(json!(""), json!("secret1")),
        )
        .expect(bad, 10002, "username must not be empty"),
        case(
            "register: 129-char username",
            post(),
            "/v1/user/register",
            Auth::None,
            creds(json!("u".repeat(129)), json!("secret1")),
        )
        .expect(bad, 10002, "username must be 1 to 128 characters"),
        case(
            "register: 5-char password",
            post(),
            "/v1/user/register",
            Auth::None,
            creds(json!("eve"), json!("12345")),
        )
        .expect(bad, 10002, "password must be 6 to 128 characters"),
        case(
            "register: 129-char password",
            post(),
            "/v1/user/register",
            Auth::None,
            creds(json!("eve"), json!("p".repeat(129))),
        )
        .expect(bad, 10002, "password must be 6 to 128 characters"),
        case(
            "register: control character",
            post(),
            "/v1/user/register",
            Auth::None,
            creds(json!("eve\u{0}"), json!("secret1")),
        )
        .expect(bad, 10002, "control characters"),
        case(
            "register: oversized body",
            post(),
            "/v1/user/register",
            Auth::None,
            creds(json!(big.clone()), json!("secret1")),
        )
        .expect(
            StatusCode::PAYLOAD_TOO_LARGE,
            10002,
            "request body is too large",
        ),
        // login
        case(
            "login: missing username",
            post(),
            "/v1/user/login",
            Auth::None,
            Body::Json(json!({"password": "secret1"})),
        )
        .expect(bad, 10002, "missing field `username`"),
        case(
            "login: unknown user",
            post(),
            "/v1/user/login",
            Auth::None,
            creds(json!("nobody"), json!("secret1")),
        )
        .expect(unauthorized, 10004, "wrong username or password"),
        case(
            "login: SQL in the username",
            post(),
            "/v1/user/login",
            Auth::None,
            creds(json!("' OR '1'='1"), json!("' OR '1'='1")),
        )
        .expect(unauthorized, 10004, "wrong username or password"),
        // create
        case(
            "create: no token",
            post(),
            "/v1/note",
            Auth::None,
            Body::Json(json!({"title": "t", "content": "c"})),
        )
        .expect(unauthorized, 10004, "missing token"),
        case(
            "create: forged token",
            post(),
            "/v1/note",
            Forged,
            Body::Json(json!({"title": "t", "content": "c"})),
        )
        .expect(unauthorized, 10004, "invalid token"),
        case(
            "create: expired token",
            post(),
            "/v1/note",
            Expired,
            Body::Json(json!({"title": "t", "content": "c"})),
        )
        .expect(unauthorized, 10004, "token has expired"),
        case(
            "create: alg none token",
            post(),
            "/v1/note",
            AlgNone,
            Body::Json(json!({"title": "t", "content": "c"})),
        )
        .expect(unauthorized, 10004, "invalid token"),
        case(
            "create: garbage token",
            post(),
            "/v1/note",
            Garbage,
            Body::Json(json!({"title": "t", "content": "c"})),
        )
        .expect(unauthorized, 10004, "invalid token"),
        case(
            "create: token without id",
            post(),
            "/v1/note",
            UnknownClaims,
            Body::Json(json!({"title": "t", "content": "c"})),
        )
        .expect(unauthorized, 10004, "invalid token"),
        case(
            "create: empty title",
            post(),
            "/v1/note",
            Valid,
            Body::Json(json!({"title": "", "content": "c"})),
        )
        .expect(bad, 10002, "title must not be empty"),
        case(
            "create: blank title",
            post(),
            "/v1/note",
            Valid,
            Body::Json(json!({"title": "   ", "content": "c"})),
        )
        .expect(bad, 10002, "title must not be blank"),
        case(
            "create: 129-char title",
            post(),
            "/v1/note",
            Valid,
            Body::Json(json!({"title": "t".repeat(129), "content": "c"})),
        )
        .expect(bad, 10002, "title must be 1 to 128 characters"),
        case(
            "create: content over 64 KiB",
            post(),
            "/v1/note",
            Valid,
            Body::Json(json!({"title": "t", "content": "c".repeat(64 * 1024 + 1)})),
        )
        .expect(bad, 10002, "content must be at most 65536 bytes"),
        case(
            "create: missing content",
            post(),
            "/v1/note",
            Valid,
            Body::Json(json!({"title": "t"})),
        )
        .expect(bad, 10002, "missing field `content`"),
        case(
            "create: wrong-typed title",
            post(),
            "/v1/note",
            Valid,
            Body::Json(json!({"title": ["t"], "content": "c"})),
        )
        .expect(bad, 10002, "invalid type"),
        case(
            "create: extra field",
            post(),
            "/v1/note",
            Valid,
            Body::Json(json!({"title": "t", "content": "c", "user_id": 1})),
        )
        .expect(bad, 10002, "unknown field `user_id`"),
        case(
            "create: oversized body",
            post(),
            "/v1/note",
            Valid,
            Body::Json(json!({"title": "t", "content": big})),
        )
        .expect(
            StatusCode::PAYLOAD_TOO_LARGE,
            10002,
            "request body is too large",
        ),
        // ids
        case("get: id 0", Method::GET, "/v1/note/0", Valid, Body::None).expect(
            bad,
            10002,
            "note_id must be a positive integer",
        ),
        case(
            "get: negative id",
            Method::GET,
            "/v1/note/-1",
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "note_id must be a positive integer"),
        case(
            "get: non-numeric id",
            Method::GET,
            "/v1/note/abc",
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "note_id must be a positive integer"),
        case(
            "get: fractional id",
            Method::GET,
            "/v1/note/1.5",
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "note_id must be a positive integer"),
        case(
            "get: huge id",
            Method::GET,
            "/v1/note/99999999999999999999",
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "note_id must be a positive integer"),
        case(
            "get: max id",
            Method::GET,
            format!("/v1/note/{}", i64::MAX),
            Valid,
            Body::None,
        )
        .expect(not_found, 10005, "Note not found"),
        case(
            "get: no token",
            Method::GET,
            note_path.clone(),
            Auth::None,
            Body::None,
        )
        .expect(unauthorized, 10004, "missing token"),
        case(
            "delete: id 0",
            Method::DELETE,
            "/v1/note/0",
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "note_id must be a positive integer"),
        case(
            "delete: missing note",
            Method::DELETE,
            "/v1/note/987654",
            Valid,
            Body::None,
        )
        .expect(not_found, 10005, "Note not found"),
        case(
            "delete: expired token",
            Method::DELETE,
            note_path.clone(),
            Expired,
            Body::None,
        )
        .expect(unauthorized, 10004, "token has expired"),
        // update
        case(
            "update: no fields",
            Method::PUT,
            note_path.clone(),
            Valid,
            Body::Json(json!({})),
        )
        .expect(
            bad,
            10002,
            "at least one of title and content must be given",
        ),
        case(
            "update: null fields",
            Method::PUT,
            note_path.clone(),
            Valid,
            Body::Json(json!({"title": null, "content": null})),
        )
        .expect(
            bad,
            10002,
            "at least one of title and content must be given",
        ),
        case(
            "update: empty title",
            Method::PUT,
            note_path.clone(),
            Valid,
            Body::Json(json!({"title": ""})),
        )
        .expect(bad, 10002, "title must not be empty"),
        case(
            "update: wrong type",
            Method::PUT,
            note_path.clone(),
            Valid,
            Body::Json(json!({"content": 42})),
        )
        .expect(bad, 10002, "invalid type"),
        case(
            "update: extra field",
            Method::PUT,
            note_path.clone(),
            Valid,
            Body::Json(json!({"title": "t", "owner": 2})),
        )
        .expect(bad, 10002, "unknown field `owner`"),
        case(
            "update: not JSON",
            Method::PUT,
            note_path.clone(),
            Valid,
            Body::Raw("{title:".into(), Some("application/json")),
        )
        .expect(bad, 10002, "Failed to parse the request body as JSON"),
        case(
            "update: bad id",
            Method::PUT,
            "/v1/note/x",
            Valid,
            Body::Json(json!({"title": "t"})),
        )
        .expect(bad, 10002, "note_id must be a positive integer"),
        case(
            "update: missing note",
            Method::PUT,
            "/v1/note/987654",
            Valid,
            Body::Json(json!({"title": "t"})),
        )
        .expect(not_found, 10005, "Note not found"),
        // query
        case(
            "query: negative offset",
            Method::GET,
            "/v1/note/query?offset=-1",
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "offset must not be negative"),
        case(
            "query: limit 0",
            Method::GET,
            "/v1/note/query?limit=0",
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "limit must be 1 to 100, got 0"),
        case(
            "query: limit 101",
            Method::GET,
            "/v1/note/query?limit=101",
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "limit must be 1 to 100, got 101"),
        case(
            "query: non-numeric limit",
            Method::GET,
            "/v1/note/query?limit=ten",
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "limit must be an integer"),
        case(
            "query: huge offset",
            Method::GET,
            "/v1/note/query?offset=99999999999999999999",
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "offset must be an integer"),
        case(
            "query: long search key",
            Method::GET,
            format!("/v1/note/query?search_key={}", "k".repeat(129)),
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "search_key must be 0 to 128 characters"),
        case(
            "query: malformed cursor",
            Method::GET,
            "/v1/note/query?cursor=abc",
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "cursor is not one this API gave out"),
        case(
            "query: cursor of the right length but not hex",
            Method::GET,
            "/v1/note/query?cursor=zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz",
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "cursor is not one this API gave out"),
        case(
            "query: cursor and offset together",
            Method::GET,
            "/v1/note/query?offset=10&cursor=0000000000000001000000000000000a",
            Valid,
            Body::None,
        )
        .expect(bad, 10002, "give offset or cursor, not both"),
        case(
            "query: forged token",
            Method::GET,
            "/v1/note/query",
            Forged,
            Body::None,
        )
        .expect(unauthorized, 10004, "invalid token"),
        // routing
        case(
            "unknown route",
            Method::GET,
            "/v2/whatever",
            Auth::None,
            Body::None,
        )
        .expect(not_found, 10002, "no route for GET /v2/whatever"),
        case("wrong method", Method::PATCH, note_path, Valid, Body::None).expect(
            StatusCode::METHOD_NOT_ALLOWED,
            10002,
            "method not allowed",
        ),
    ]
}

fn token_for(auth: Auth, valid: &str, user_id: i64) -> Option<String> {
    // Everything a token of ours has, so that only the case's fault is wrong.
    let claims = |exp: i64| {
        json!({"id": user_id, "exp": exp, "iat": now() - 10, "iss": "easy-note",
               "aud": "easy-note-api", "jti": "0123456789abcdef0123456789abcdef", "epoch": 0})
    };
    match auth {
        Auth::None => None,
        Auth::Valid => Some(valid.to_owned()),
        Auth::Forged => Some(token_with(
            &claims(now() + 600),
            "somebody-elses-secret-0123456789abcdef",
        )),
        Auth::Expired => Some(token_with(&claims(now() - 5), JWT_SECRET)),
        Auth::AlgNone => {
            // {"alg":"none","typ":"JWT"} with valid claims and no signature.
            let payload = base64url(&claims(now() + 600).to_string());
            Some(format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}."))
        }
        Auth::Garbage => Some("not.a.jwt".to_owned()),
        Auth::UnknownClaims => Some(token_with(
            &json!({"sub": "x", "exp": now() + 600, "iat": now()}),
            JWT_SECRET,
        )),
    }
}

fn base64url(text: &str) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = text.as_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_kind_of_bad_input_gets_a_clear_error_and_changes_nothing() {
    let app = TestApp::spawn().await;
    let token = app.signed_up("frank").await;
    let note = app.create_note(&token, "keep me", "as I am").await;
    let (_, body) = app.get(&format!("/v1/note/{note}"), Some(&token)).await;
    let user_id = body["data"]["user_id"].as_i64().expect("user_id");
    let before = app.row_counts().await;

    let mut failures = Vec::new();
    for case in cases(note) {
        let mut request = app
            .http
            .request(case.method.clone(), format!("{}{}", app.base, case.path));
        if let Some(token) = token_for(case.auth, &token, user_id) {
            request = request.bearer_auth(token);
        }
        request = match case.body {
            Body::None => request,
            Body::Json(value) => request.json(&value),
            Body::Raw(raw, content_type) => {
                let request = request.body(raw);
                match content_type {
                    Some(ct) => request.header("Content-Type", ct),
                    None => request,
                }
            }
        };
        let (status, body) = read(request.send().await.expect("send")).await;
        let message = body["message"].as_str().unwrap_or_default();
        let ok = status == case.status
            && body["code"] == json!(case.code)
            && body["data"].is_null()
            && message.contains(case.message);
        if !ok {
            failures.push(format!(
                "{}: want {} {} ~{:?}, got {status} {body}",
                case.name, case.status, case.code, case.message
            ));
        }
        assert_ne!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "{}: never a 500: {body}",
            case.name
        );
    }
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );

    assert_eq!(
        app.row_counts().await,
        before,
        "bad input changed the database"
    );
    let (_, body) = app.get(&format!("/v1/note/{note}"), Some(&token)).await;
    assert_eq!(body["data"]["title"], "keep me");
    assert_eq!(body["data"]["content"], "as I am");
}

#[tokio::test(flavor = "multi_thread")]
async fn unicode_and_boundary_values_are_accepted() {
    let app = TestApp::spawn().await;
    let name = "名前".repeat(64); // 128 characters
    let (status, body) = app.register(&name, &"密".repeat(6)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app.login(&name, &"密".repeat(6)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().expect("token");
    let title = "题".repeat(128);
    let content = "c".repeat(64 * 1024);
    let id = app.create_note(token, &title, &content).await;
    let (_, body) = app.get(&format!("/v1/note/{id}"), Some(token)).await;
    assert_eq!(body["data"]["title"], json!(title));
    assert_eq!(
        body["data"]["content"].as_str().map(str::len),
        Some(64 * 1024)
    );
    assert_eq!(body["data"]["user_name"], json!(name));
    let (status, body) = app
        .get("/v1/note/query?limit=100&offset=0", Some(token))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
