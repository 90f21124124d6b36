//! The suite as a client sees it: JSON requests to one gateway, and the
//! steps every test takes through it (register, log in, create a note),
//! written once for the in-process suite and the suite of processes alike.

use reqwest::{Method, RequestBuilder, StatusCode, header::HeaderMap};
use serde_json::{Value, json};

/// The password [`GatewayClient::signed_up`] registers users with.
pub const PASSWORD: &str = "password123";

/// JSON requests to one gateway. Cheap to clone.
#[derive(Clone, Debug)]
pub struct GatewayClient {
    /// `http://host:port` of the gateway.
    pub base: String,
    /// The HTTP client the requests go through.
    pub http: reqwest::Client,
}

/// A gateway's answer: status, headers and the JSON body (`Null` when the
/// body is not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    /// Reads `response` to its end.
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("the response's body");
        Self {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
        }
    }

    /// A header's value, when present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl GatewayClient {
    /// A client of the gateway at `addr` (`host:port`).
    pub fn new(addr: impl std::fmt::Display, http: reqwest::Client) -> Self {
        Self {
            base: format!("http://{addr}"),
            http,
        }
    }

    /// A request to `path`, for what the helpers below do not set (headers
    /// of the test's own); send it with [`GatewayClient::reply`].
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.base))
    }

    /// Sends `request`; the whole answer.
    pub async fn reply(&self, request: RequestBuilder) -> Reply {
        Reply::read(request.send().await.expect("the gateway answers")).await
    }

    /// Sends a request with an optional bearer token and JSON body; answers
    /// the status and the JSON body.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut request = self.request(method, path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let reply = self.reply(request).await;
        (reply.status, reply.body)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.send(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: &Value) -> (StatusCode, Value) {
        self.send(Method::POST, path, token, Some(body)).await
    }

    pub async fn put(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        self.send(Method::PUT, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.send(Method::DELETE, path, Some(token), None).await
    }

    /// `POST /v1/user/register`.
    pub async fn register(&self, username: &str, password: &str) -> (StatusCode, Value) {
        let credentials = json!({"username": username, "password": password});
        self.post("/v1/user/register", None, &credentials).await
    }

    /// `POST /v1/user/login`.
    pub async fn login(&self, username: &str, password: &str) -> (StatusCode, Value) {
        let credentials = json!({"username": username, "password": password});
        self.post("/v1/user/login", None, &credentials).await
    }

    /// Registers `username` with [`PASSWORD`] and logs in; the token.
    pub async fn signed_up(&self, username: &str) -> String {
        let (status, body) = self.register(username, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "register {username}: {body}");
        let (status, body) = self.login(username, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "login {username}: {body}");
        body["token"].as_str().expect("a token").to_owned()
    }

    /// Creates a note; its id.
    pub async fn create_note(&self, token: &str, title: &str, content: &str) -> i64 {
        let note = json!({"title": title, "content": content});
        let (status, body) = self.post("/v1/note", Some(token), &note).await;
        assert_eq!(status, StatusCode::OK, "create {title:?}: {body}");
        body["data"]["note_id"].as_i64().expect("a note id")
    }
}
