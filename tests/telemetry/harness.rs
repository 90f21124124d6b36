//! The harness of the telemetry tests: the three services as processes
//! exporting to a real OTLP receiver, and checks of a trace's shape.

use std::{collections::BTreeMap, path::Path, time::Duration};

use easynote_testkit::{
    client::{GatewayClient, PASSWORD},
    otlp::ReceivedSpan,
    process::{ProcessSuite, Service},
};
use reqwest::StatusCode;
use serde_json::{Value, json};

pub(crate) const JWT_SECRET: &str = "telemetry-test-secret-0123456789abcdef";
pub(crate) const WITHIN: Duration = Duration::from_secs(20);
pub(crate) const SERVER: i32 = 2;
pub(crate) const CLIENT: i32 = 3;
pub(crate) const USER_AGENT: &str = "easy-note-telemetry-tests/1";

/// The three services as processes on static discovery, exporting to the
/// `OTEL_*` settings given.
pub(crate) struct TracedSuite {
    pub(crate) user: Service,
    pub(crate) note: Service,
    pub(crate) gateway: Service,
    /// The gateway's client (its requests carry [`USER_AGENT`]).
    pub(crate) client: GatewayClient,
    /// Holds the children's directory (databases, logs) while they run.
    /// Declared last, so dropped last: a failing test prints the children's
    /// logs as they are dropped.
    _processes: ProcessSuite,
}

impl TracedSuite {
    pub(crate) async fn start(otel: &[(&str, String)]) -> Self {
        Self::start_on(otel, None).await
    }

    /// The suite on `database` (one URL for the three), or on one SQLite
    /// file of its own.
    pub(crate) async fn start_on(otel: &[(&str, String)], database: Option<&str>) -> Self {
        let mut processes =
            ProcessSuite::with_static_lists(Path::new(env!("CARGO_BIN_EXE_easy-note")));
        processes
            .set(&[
                ("RUST_LOG", "info".to_owned()),
                ("EASYNOTE_JWT_SECRET", JWT_SECRET.to_owned()),
                ("OTEL_BSP_SCHEDULE_DELAY", "100".to_owned()),
                ("OTEL_METRIC_EXPORT_INTERVAL", "300".to_owned()),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000".to_owned()),
            ])
            .set(otel);
        // One database for the three: the services' tables differ.
        let database = database.map_or_else(|| processes.database("suite.db"), str::to_owned);
        let same_db = [("EASYNOTE_DATABASE_URL", database)];
        let user = processes.start_user_with(&same_db).await;
        let note = processes.start_note_with(&same_db).await;
        let gateway = processes.start_gateway().await;
        processes.wait_ready(&gateway).await;
        let http = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .build()
            .expect("HTTP client");
        Self {
            client: GatewayClient::new(&gateway.addr, http),
            _processes: processes,
            user,
            note,
            gateway,
        }
    }

    /// The processes, to wait on them with their logs at hand.
    pub(crate) fn processes(&self) -> &ProcessSuite {
        &self._processes
    }

    /// Sends a request; answers status, body and the `x-trace-id` header.
    pub(crate) async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        traceparent: Option<&str>,
    ) -> (StatusCode, Value, Option<String>) {
        let mut request = self.client.request(method, path);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let reply = self.client.reply(request).await;
        let trace_id = reply.header("x-trace-id").map(str::to_owned);
        (reply.status, reply.body, trace_id)
    }

    /// Registers `username`; answers the request's trace id, if any.
    pub(crate) async fn register(&self, username: &str) -> Option<String> {
        let body = json!({"username": username, "password": PASSWORD});
        let (status, body, trace) = self
            .call(
                reqwest::Method::POST,
                "/v1/user/register",
                None,
                Some(body),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "register {username}: {body}");
        trace
    }

    /// Register, log in, create a note and query: the trace id of each.
    pub(crate) async fn story(&self) -> BTreeMap<&'static str, String> {
        use reqwest::Method;
        let creds = json!({"username": "tracy", "password": PASSWORD});
        let mut traces = BTreeMap::new();
        let (status, body, trace) = self
            .call(
                Method::POST,
                "/v1/user/register",
                None,
                Some(creds.clone()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        traces.insert("register", trace.expect("x-trace-id on register"));
        let (status, body, trace) = self
            .call(Method::POST, "/v1/user/login", None, Some(creds), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        traces.insert("login", trace.expect("x-trace-id on login"));
        let token = body["token"].as_str().expect("token").to_owned();
        let note = json!({"title": "traced", "content": "across three services"});
        let (status, body, trace) = self
            .call(Method::POST, "/v1/note", Some(&token), Some(note), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        traces.insert("create", trace.expect("x-trace-id on create"));
        let (status, body, trace) = self
            .call(Method::GET, "/v1/note/query", Some(&token), None, None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        traces.insert("query", trace.expect("x-trace-id on query"));
        traces
    }

    /// Each process's log so far, by service.
    pub(crate) fn logs(&self) -> [(&'static str, String); 3] {
        [
            ("gateway", self.gateway.proc.output()),
            ("note-service", self.note.proc.output()),
            ("user-service", self.user.proc.output()),
        ]
    }

    /// Logs in as `username` (password [`PASSWORD`]) from a caller whose
    /// trace is `traceparent`; answers status, body and `x-trace-id`.
    pub(crate) async fn login_in_trace(
        &self,
        username: &str,
        traceparent: &str,
    ) -> (StatusCode, Value, Option<String>) {
        self.call(
            reqwest::Method::POST,
            "/v1/user/login",
            None,
            Some(json!({"username": username, "password": PASSWORD})),
            Some(traceparent),
        )
        .await
    }

    /// Logs in again as the user `story` registered; answers the token.
    pub(crate) async fn login_token(&self) -> String {
        let (status, body) = self.client.login("tracy", PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }

    pub(crate) async fn stop(mut self) {
        for proc in [
            &mut self.gateway.proc,
            &mut self.note.proc,
            &mut self.user.proc,
        ] {
            proc.sigterm();
            let status = proc.wait_exit(WITHIN).await;
            assert!(
                status.success(),
                "{} exited with {status}:\n{}",
                proc.name,
                proc.output()
            );
        }
    }
}

pub(crate) fn in_trace<'a>(spans: &'a [ReceivedSpan], trace_id: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.trace_id == trace_id).collect()
}

/// Checks the shape of one request's trace: which services took part, who
/// is whose parent.
pub(crate) fn assert_trace_shape(
    spans: &[ReceivedSpan],
    case: &str,
    trace_id: &str,
    services: &[&str],
    caller_span: Option<&str>,
) {
    let trace = in_trace(spans, trace_id);
    let by_id: BTreeMap<&str, &ReceivedSpan> =
        trace.iter().map(|s| (s.span_id.as_str(), *s)).collect();
    let dump = || {
        trace
            .iter()
            .map(|s| {
                format!(
                    "  {} {} kind={} id={} parent={}",
                    s.service, s.name, s.kind, s.span_id, s.parent_span_id
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };

    // The gateway's server span is the root (or the caller's span's child).
    let roots: Vec<_> = trace
        .iter()
        .filter(|s| s.service == "easy-note-gateway" && s.kind == SERVER)
        .collect();
    assert_eq!(
        roots.len(),
        1,
        "{case}: one gateway server span:\n{}",
        dump()
    );
    assert_eq!(
        roots[0].parent_span_id,
        caller_span.unwrap_or(""),
        "{case}: the gateway span's parent:\n{}",
        dump()
    );

    for service in services {
        assert!(
            trace.iter().any(|s| s.service == *service),
            "{case}: no span from {service}:\n{}",
            dump()
        );
    }
    for span in &trace {
        if span.parent_span_id.is_empty() || Some(span.parent_span_id.as_str()) == caller_span {
            continue;
        }
        let parent = by_id.get(span.parent_span_id.as_str()).unwrap_or_else(|| {
            panic!(
                "{case}: {} has a parent outside the trace:\n{}",
                span.name,
                dump()
            )
        });
        match span.kind {
            // Every RPC server span is the child of the matching client span.
            SERVER => {
                assert_eq!(
                    parent.kind,
                    CLIENT,
                    "{case}: {} under a client span:\n{}",
                    span.name,
                    dump()
                );
                assert_eq!(
                    parent.name, span.name,
                    "{case}: client and server name the same method"
                );
                assert_eq!(
                    span.attr("rpc.system.name"),
                    Some("grpc"),
                    "{case}: {}",
                    span.name
                );
                assert_eq!(
                    span.attr("rpc.method"),
                    Some(span.name.as_str()),
                    "{case}: rpc.method is the full method name"
                );
            }
            // Everything else runs inside the service that made it.
            _ => assert_eq!(
                parent.service,
                span.service,
                "{case}: {} crosses services:\n{}",
                span.name,
                dump()
            ),
        }
        assert_eq!(
            span.attr("db.system"),
            None,
            "{case}: the deprecated db.system is gone"
        );
        if span.attr("db.system.name").is_some() {
            assert_eq!(span.kind, CLIENT, "{case}: database spans are client spans");
            assert!(
                span.service == "easy-note-user" || span.service == "easy-note-note",
                "{case}: database span in {}",
                span.service
            );
            assert!(
                span.attr("db.operation.name").is_some()
                    && span.attr("db.collection.name").is_some()
            );
        }
    }
}

pub(crate) fn complete(
    spans: &[ReceivedSpan],
    traces: &BTreeMap<&str, String>,
    expected: &[(&str, &[&str])],
) -> bool {
    expected.iter().all(|(case, services)| {
        let trace = in_trace(spans, &traces[case]);
        services.iter().all(|service| {
            trace
                .iter()
                .any(|s| s.service == *service && s.kind == SERVER)
        }) && trace.iter().any(|s| s.attr("db.system.name").is_some())
    })
}
