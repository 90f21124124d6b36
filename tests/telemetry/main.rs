//! OpenTelemetry end to end: the three services as real processes (each
//! with its own `service.name`), exporting to a real OTLP receiver built on
//! the official protos, over gRPC and over HTTP/protobuf; and the gRPC
//! instrumentation in process, around a real tonic server, for the statuses
//! a process-level story cannot provoke.

mod governance;
mod grpc_status;
mod harness;

use harness::{
    CLIENT, SERVER, TracedSuite, USER_AGENT, WITHIN, assert_trace_shape, complete, in_trace,
};

use std::{collections::BTreeMap, path::Path, time::Duration};

use easynote_testkit::{
    TestDatabase,
    client::PASSWORD,
    otlp::{OtlpReceiver, Transport},
    process::Proc,
};
use reqwest::StatusCode;
use serde_json::json;

const STORY: &[(&str, &[&str])] = &[
    ("register", &["easy-note-gateway", "easy-note-user"]),
    ("login", &["easy-note-gateway", "easy-note-user"]),
    ("create", &["easy-note-gateway", "easy-note-note"]),
    (
        "query",
        &["easy-note-gateway", "easy-note-note", "easy-note-user"],
    ),
];

async fn one_trace_per_request(transport: Transport) {
    let receiver = OtlpReceiver::start(transport).await;
    let mut otel: Vec<(&str, String)> = receiver.exporter_env().into();
    otel.push((
        "OTEL_EXPORTER_OTLP_HEADERS",
        "Authentication=arms-token-123,x-team=notes".into(),
    ));
    let suite = TracedSuite::start(&otel).await;
    let traces = suite.story().await;
    let spans = receiver
        .wait_for_spans(WITHIN, |spans| complete(spans, &traces, STORY))
        .await;
    for (case, services) in STORY {
        assert_trace_shape(&spans, case, &traces[case], services, None);
    }
    let query = in_trace(&spans, &traces["query"]);
    let root = query
        .iter()
        .find(|s| s.kind == SERVER && s.service == "easy-note-gateway")
        .expect("root");
    assert_eq!(root.name, "GET /v1/note/query");
    assert_eq!(root.attr("http.route"), Some("/v1/note/query"));
    assert_eq!(root.attr("http.request.method"), Some("GET"));
    assert_eq!(root.attr("http.response.status_code"), Some("200"));
    assert_eq!(root.attr("url.scheme"), Some("http"));
    assert_eq!(root.attr("client.address"), Some("127.0.0.1"));
    assert_eq!(root.attr("user_agent.original"), Some(USER_AGENT));
    let mget = query
        .iter()
        .find(|s| s.kind == SERVER && s.service == "easy-note-user")
        .expect("user-service span in the query trace");
    assert_eq!(mget.name, "easynote.user.v1.UserService/MGetUser");
    assert_eq!(mget.attr("rpc.response.status_code"), Some("OK"));
    assert_eq!(
        mget.attr("rpc.grpc.status_code"),
        None,
        "the deprecated numeric status is gone"
    );
    // The client span names the instance called, address and port apart.
    let mget_client = query
        .iter()
        .find(|s| s.kind == CLIENT && s.name == mget.name)
        .expect("client span of MGetUser");
    let user_addr = suite.user.addr.to_string();
    assert_eq!(
        (
            mget_client.attr("server.address"),
            mget_client.attr("server.port")
        ),
        (Some("127.0.0.1"), user_addr.rsplit(':').next()),
        "server.address and server.port of {user_addr}"
    );

    // Resources: one instance id per process, the current environment key.
    let mut instances = BTreeMap::new();
    for span in &spans {
        let id = span
            .resource
            .get("service.instance.id")
            .unwrap_or_else(|| panic!("{} has no service.instance.id", span.service));
        let first = instances.entry(span.service.as_str()).or_insert(id);
        assert_eq!(*first, id, "one instance id per process");
        assert_eq!(
            span.resource
                .get("deployment.environment.name")
                .map(String::as_str),
            Some("development"),
            "{}",
            span.service
        );
        assert!(!span.resource.contains_key("deployment.environment"));
    }
    let distinct: std::collections::BTreeSet<_> = instances.values().collect();
    assert_eq!(
        (instances.len(), distinct.len()),
        (3, 3),
        "three processes, three instance ids: {instances:?}"
    );
    assert!(
        !query.iter().any(|s| s.name.starts_with("pick ")),
        "the instance pick is no span of its own: the client span names the instance"
    );

    // The ARMS token path: configured headers reach the collector.
    let headers = receiver.request_headers();
    assert!(
        headers
            .iter()
            .any(
                |h| h.get("authentication").map(String::as_str) == Some("arms-token-123")
                    && h.get("x-team").map(String::as_str) == Some("notes")
            ),
        "OTEL_EXPORTER_OTLP_HEADERS did not reach the receiver: {headers:?}"
    );

    // Logs inside a request carry its trace id.
    let logs = suite.gateway.proc.output();
    assert!(
        logs.contains(&format!("trace_id={}", traces["query"])),
        "the gateway's request log lines carry the trace id:\n{logs}"
    );
    suite.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_request_is_one_trace_across_every_service_over_grpc() {
    one_trace_per_request(Transport::Grpc).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn one_request_is_one_trace_across_every_service_over_http_protobuf() {
    one_trace_per_request(Transport::HttpProtobuf).await;
}

/// Every span of a request stays in its trace, on every backend. On MySQL
/// it once did not: sqlx's query logger (`log_enabled!` after every
/// statement, through tracing-log) left a stale per-layer filter verdict on
/// the tokio worker, and the next span there (a gRPC server span, a pick,
/// a SQL span) was dropped, its children starting traces of their own
/// (tokio-rs/tracing#2519).
#[tokio::test(flavor = "multi_thread")]
async fn every_span_of_a_request_stays_in_its_trace_on_every_backend() {
    for db in TestDatabase::all().await {
        let receiver = OtlpReceiver::start(Transport::Grpc).await;
        let suite = TracedSuite::start_on(&receiver.exporter_env(), Some(&db.url)).await;
        let traces = suite.story().await;
        // More calls, more statements on the same workers.
        let token = suite.login_token().await;
        let mut queries = Vec::new();
        for _ in 0..5 {
            let (status, body, trace) = suite
                .call(
                    reqwest::Method::GET,
                    "/v1/note/query",
                    Some(&token),
                    None,
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{}: {body}", db.backend);
            queries.push(trace.expect("x-trace-id"));
        }
        receiver
            .wait_for_spans(WITHIN, |spans| {
                complete(spans, &traces, STORY)
                    && queries.iter().all(|trace| {
                        let members = in_trace(spans, trace);
                        ["easy-note-gateway", "easy-note-note", "easy-note-user"]
                            .iter()
                            .all(|service| {
                                members
                                    .iter()
                                    .any(|s| s.service == *service && s.kind == SERVER)
                            })
                    })
            })
            .await;
        // A graceful stop flushes whatever is still queued: judge all of it.
        suite.stop().await;
        let spans = receiver.spans();
        let roots: Vec<String> = spans
            .iter()
            .filter(|s| s.service != "easy-note-gateway" && s.parent_span_id.is_empty())
            .filter(|s| !s.name.starts_with("grpc.health.v1.Health/"))
            .map(|s| format!("{} {:?}", s.service, s.name))
            .collect();
        assert!(
            roots.is_empty(),
            "{}: spans of note- and user-service that start a trace of their own: {roots:?}",
            db.backend
        );
        for (case, services) in STORY {
            assert_trace_shape(&spans, case, &traces[case], services, None);
        }
        for trace in &queries {
            let members = in_trace(&spans, trace);
            for service in ["easy-note-gateway", "easy-note-note", "easy-note-user"] {
                assert!(
                    members
                        .iter()
                        .any(|s| s.service == service && s.kind == SERVER),
                    "{}: the query trace {trace} has no server span of {service}",
                    db.backend
                );
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_incoming_traceparent_is_continued_and_errors_mark_spans() {
    let receiver = OtlpReceiver::start(Transport::Grpc).await;
    let suite = TracedSuite::start(&receiver.exporter_env()).await;
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let (status, body, trace) = suite
        .login_in_trace("nobody", &format!("00-{caller_trace}-{caller_span}-01"))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(
        trace.as_deref(),
        Some(caller_trace),
        "the caller's trace id is kept"
    );
    let spans = receiver
        .wait_for_spans(WITHIN, |spans| {
            // Each process's server span ends last, so once both are here the trace is whole.
            let trace = in_trace(spans, caller_trace);
            ["easy-note-gateway", "easy-note-user"]
                .iter()
                .all(|service| {
                    trace
                        .iter()
                        .any(|s| s.service == *service && s.kind == SERVER)
                })
        })
        .await;
    assert_trace_shape(
        &spans,
        "login",
        caller_trace,
        &["easy-note-gateway", "easy-note-user"],
        Some(caller_span),
    );
    let client = in_trace(&spans, caller_trace)
        .into_iter()
        .find(|s| s.kind == CLIENT && s.name.ends_with("/CheckUser"))
        .cloned()
        .expect("client span of CheckUser");
    assert_eq!(
        client.attr("rpc.response.status_code"),
        Some("UNAUTHENTICATED")
    );
    assert_eq!(client.attr("error.type"), Some("UNAUTHENTICATED"));
    assert_eq!(
        client.status_code, 2,
        "a failed call marks the client span as an error"
    );
    assert_eq!(client.status_message, "wrong username or password");
    suite.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn red_metrics_arrive_with_their_attributes() {
    let receiver = OtlpReceiver::start(Transport::Grpc).await;
    let suite = TracedSuite::start(&receiver.exporter_env()).await;
    suite.story().await;
    // A path no route matches: named by its method, with no http.route.
    let (status, _, unmatched_trace) = suite
        .call(reqwest::Method::GET, "/no/such/route", None, None, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let unmatched_trace = unmatched_trace.expect("x-trace-id on a 404");
    let unmatched = |p: &&easynote_testkit::otlp::ReceivedPoint| {
        p.metric == "http.server.request.duration"
            && p.attributes
                .get("http.response.status_code")
                .map(String::as_str)
                == Some("404")
    };
    let wanted = [
        ("easy-note-gateway", "http.server.request.duration"),
        ("easy-note-gateway", "rpc.client.call.duration"),
        ("easy-note-note", "rpc.server.call.duration"),
        ("easy-note-note", "rpc.client.call.duration"),
        ("easy-note-user", "rpc.server.call.duration"),
    ];
    let deadline = tokio::time::Instant::now() + WITHIN;
    let points = loop {
        let points = receiver.points();
        let all = wanted.iter().all(|(service, metric)| {
            points
                .iter()
                .any(|p| p.service == *service && p.metric == *metric)
        });
        let all = all && points.iter().any(|p| unmatched(&p));
        if all || tokio::time::Instant::now() >= deadline {
            break points;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for (service, metric) in wanted {
        assert!(
            points
                .iter()
                .any(|p| p.service == service && p.metric == metric),
            "{service} did not export {metric}; got {:?}",
            receiver.metric_names()
        );
    }
    let has = |metric: &str, pairs: &[(&str, &str)]| {
        points.iter().any(|p| {
            p.metric == metric
                && pairs
                    .iter()
                    .all(|(k, v)| p.attributes.get(*k).map(String::as_str) == Some(*v))
        })
    };
    assert!(has(
        "http.server.request.duration",
        &[
            ("http.route", "/v1/note/query"),
            ("http.request.method", "GET"),
            ("http.response.status_code", "200"),
            ("url.scheme", "http")
        ]
    ));
    assert!(has(
        "rpc.server.call.duration",
        &[
            ("rpc.system.name", "grpc"),
            ("rpc.method", "easynote.note.v1.NoteService/QueryNote"),
            ("rpc.response.status_code", "OK")
        ]
    ));
    assert!(has(
        "rpc.client.call.duration",
        &[
            ("rpc.method", "easynote.user.v1.UserService/MGetUser"),
            ("server.address", "127.0.0.1"),
        ]
    ));
    assert!(
        points.iter().all(|p| !p.metric.starts_with("rpc.")
            || (p.attributes.contains_key("rpc.response.status_code")
                && !p.attributes.contains_key("rpc.grpc.status_code"))),
        "every RPC point has the current status attribute only"
    );
    let unmatched_points: Vec<_> = points.iter().filter(unmatched).collect();
    assert!(
        !unmatched_points.is_empty()
            && unmatched_points
                .iter()
                .all(|p| !p.attributes.contains_key("http.route")),
        "an unmatched request is measured without http.route: {unmatched_points:?}"
    );
    let spans = receiver
        .wait_for_spans(WITHIN, |spans| {
            !in_trace(spans, &unmatched_trace).is_empty()
        })
        .await;
    let span = in_trace(&spans, &unmatched_trace)
        .into_iter()
        .find(|s| s.kind == SERVER)
        .cloned()
        .expect("the 404's server span");
    assert_eq!(span.name, "GET", "named by the method alone");
    assert_eq!(span.attr("http.route"), None);
    assert_eq!(span.attr("http.response.status_code"), Some("404"));

    // Two processes' streams of one instrument stay apart by instance.
    let instance_of = |service: &str| {
        points
            .iter()
            .find(|p| p.service == service)
            .and_then(|p| p.resource.get("service.instance.id").cloned())
    };
    let (note, user) = (instance_of("easy-note-note"), instance_of("easy-note-user"));
    assert!(
        note.is_some() && user.is_some() && note != user,
        "metrics carry each process's instance id: {note:?} {user:?}"
    );
    suite.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_collector_that_is_down_fails_no_request_and_spans_flow_again_when_it_returns() {
    let receiver = OtlpReceiver::start(Transport::Grpc).await;
    let addr = receiver.addr;
    let suite = TracedSuite::start(&receiver.exporter_env()).await;
    receiver.stop();
    drop(receiver);

    // Collector down: every request still succeeds.
    let traces = suite.story().await;
    for i in 0..20 {
        let (status, body, _) = suite
            .call(reqwest::Method::GET, "/ping", None, None, None)
            .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "request {i} with the collector down: {body}"
        );
    }
    assert_eq!(
        traces.len(),
        4,
        "the whole story succeeded with the collector down"
    );

    // Collector back on the same address: spans flow again.
    let receiver = OtlpReceiver::start_on(addr, Transport::Grpc).await;
    let token_body = suite
        .call(
            reqwest::Method::POST,
            "/v1/user/login",
            None,
            Some(json!({"username": "tracy", "password": PASSWORD})),
            None,
        )
        .await;
    let trace = token_body.2.expect("x-trace-id");
    let spans = receiver
        .wait_for_spans(Duration::from_secs(30), |spans| {
            let trace = in_trace(spans, &trace);
            ["easy-note-gateway", "easy-note-user"]
                .iter()
                .all(|service| trace.iter().any(|s| s.service == *service))
        })
        .await;
    let services: Vec<&str> = in_trace(&spans, &trace)
        .iter()
        .map(|s| s.service.as_str())
        .collect();
    assert!(
        services.contains(&"easy-note-gateway") && services.contains(&"easy-note-user"),
        "spans flow again once the collector is back: {services:?} of {} spans",
        spans.len()
    );
    suite.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_spans_arrive_at_graceful_shutdown() {
    let receiver = OtlpReceiver::start(Transport::HttpProtobuf).await;
    let mut otel: Vec<(&str, String)> = receiver.exporter_env().into();
    // Batches would wait a minute: only the flush at shutdown can send them.
    otel.push(("OTEL_BSP_SCHEDULE_DELAY", "60000".into()));
    let suite = TracedSuite::start(&otel).await;
    let trace = suite.register("last").await.expect("x-trace-id");
    suite.stop().await;
    let spans = receiver.spans();
    let services: Vec<&str> = in_trace(&spans, &trace)
        .iter()
        .map(|s| s.service.as_str())
        .collect();
    assert!(
        services.contains(&"easy-note-gateway") && services.contains(&"easy-note-user"),
        "spans flushed at shutdown: {services:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_sdk_disabled_nothing_is_traced() {
    let receiver = OtlpReceiver::start(Transport::Grpc).await;
    let mut otel: Vec<(&str, String)> = receiver.exporter_env().into();
    otel.push(("OTEL_SDK_DISABLED", "true".into()));
    let suite = TracedSuite::start(&otel).await;
    let trace = suite.register("quiet").await;
    assert_eq!(trace, None, "no trace id without the SDK");
    suite.stop().await;
    assert!(
        receiver.spans().is_empty(),
        "nothing is exported with OTEL_SDK_DISABLED=true"
    );
}

/// The OpenTelemetry SDK reads the standard variables itself: a signal's
/// own endpoint is used as given, `OTEL_METRICS_EXPORTER=none` turns
/// metrics off although an endpoint is set, and `OTEL_RESOURCE_ATTRIBUTES`
/// reaches every span's resource beside the services' own attributes.
#[tokio::test(flavor = "multi_thread")]
async fn the_sdk_reads_per_signal_settings_and_resource_attributes() {
    let receiver = OtlpReceiver::start(Transport::HttpProtobuf).await;
    let [(_, base), _] = receiver.exporter_env();
    let otel = [
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            format!("{base}/v1/traces"),
        ),
        (
            "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
            format!("{base}/v1/metrics"),
        ),
        ("OTEL_METRICS_EXPORTER", "none".to_owned()),
        (
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.namespace=notes,team=platform".to_owned(),
        ),
    ];
    let suite = TracedSuite::start(&otel).await;
    let trace = suite.register("standard").await.expect("x-trace-id");
    suite.stop().await;
    let spans = receiver.spans();
    let traced = in_trace(&spans, &trace);
    let services: std::collections::BTreeSet<&str> =
        traced.iter().map(|s| s.service.as_str()).collect();
    assert_eq!(
        services,
        ["easy-note-gateway", "easy-note-user"].into(),
        "the services keep their own names"
    );
    for span in traced {
        for (key, value) in [("service.namespace", "notes"), ("team", "platform")] {
            assert_eq!(
                span.resource.get(key).map(String::as_str),
                Some(value),
                "{key} of {}",
                span.service
            );
        }
        assert!(span.resource.contains_key("service.instance.id"));
    }
    assert!(
        receiver.points().is_empty(),
        "OTEL_METRICS_EXPORTER=none: no metric was exported"
    );
}

/// A value the SDK would silently replace by its default stops the process
/// at start with the variable named; an endpoint's path (ARMS's token) is
/// not echoed.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_otel_value_stops_the_process_naming_the_variable() {
    let dir = tempfile::tempdir().expect("a directory");
    for (var, value, named) in [
        ("OTEL_TRACES_SAMPLER", "sometimes", "OTEL_TRACES_SAMPLER"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            "s3cr3t",
            "OTEL_EXPORTER_OTLP_HEADERS",
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "collector/adapt_s3cr3t/api/otlp/traces",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        ),
    ] {
        let env = [
            (var.to_owned(), value.to_owned()),
            (
                "EASYNOTE_DATABASE_URL".to_owned(),
                format!("sqlite://{}", dir.path().join("user.db").display()),
            ),
            ("EASYNOTE_GRPC_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ];
        let mut proc = Proc::spawn(
            "user-service",
            Path::new(env!("CARGO_BIN_EXE_easy-note")),
            &["user-service"],
            dir.path(),
            &env,
        );
        let status = proc.wait_exit(WITHIN).await;
        let output = proc.output();
        assert!(!status.success(), "{var}={value} was accepted:\n{output}");
        assert!(output.contains(named), "{var}: {output}");
        assert!(!output.contains("s3cr3t"), "a value leaked: {output}");
    }
}

/// Sampling is decided where a trace enters a process, and nothing is built
/// beneath an unsampled span; the trace id still reaches every hop's logs.
/// A caller's sampled flag is honoured: that trace is recorded whole, SQL
/// statements and client calls included.
#[tokio::test(flavor = "multi_thread")]
async fn unsampled_traces_keep_their_ids_and_sampled_callers_are_recorded_whole() {
    let receiver = OtlpReceiver::start(Transport::Grpc).await;
    let mut otel: Vec<(&str, String)> = receiver.exporter_env().into();
    otel.push(("OTEL_TRACES_SAMPLER", "parentbased_always_off".into()));
    // The servers' "call received" line (debug) shows which trace reached them.
    otel.push((
        "RUST_LOG",
        "info,easynote_shared::governance::server=debug".into(),
    ));
    let suite = TracedSuite::start(&otel).await;
    let traces = suite.story().await;

    // A caller that samples: its trace is recorded whole.
    let token = suite.login_token().await;
    let caller_trace = "0af7651916cd43dd8448eb211c80319c";
    let (status, body, trace) = suite
        .call(
            reqwest::Method::GET,
            "/v1/note/query",
            Some(&token),
            None,
            Some(&format!("00-{caller_trace}-b7ad6b7169203331-01")),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(trace.as_deref(), Some(caller_trace));
    let expected: &[(&str, &[&str])] = &[(
        "sampled",
        &["easy-note-gateway", "easy-note-note", "easy-note-user"],
    )];
    let sampled = BTreeMap::from([("sampled", caller_trace.to_owned())]);
    let spans = receiver
        .wait_for_spans(WITHIN, |spans| complete(spans, &sampled, expected))
        .await;
    assert_trace_shape(
        &spans,
        "sampled query",
        caller_trace,
        &["easy-note-gateway", "easy-note-note", "easy-note-user"],
        Some("b7ad6b7169203331"),
    );
    let recorded = in_trace(&spans, caller_trace);
    for (kind, what) in [(CLIENT, "gRPC client"), (SERVER, "gRPC server")] {
        assert!(
            recorded
                .iter()
                .filter(|s| s.kind == kind && s.attr("rpc.method").is_some())
                .count()
                >= 2,
            "{what} spans of both hops are recorded"
        );
    }
    assert!(
        recorded
            .iter()
            .filter(|s| s.attr("db.system.name").is_some())
            .count()
            >= 2,
        "the SQL statements of both services are recorded"
    );

    // The story's own traces started here, unsampled: each hop still logs
    // under the request's trace id (the query's reached note-service and,
    // from there, user-service)...
    let query = &traces["query"];
    for (service, logs) in suite.logs() {
        assert!(
            logs.contains(&format!("trace_id={query}")),
            "{service} logs the unsampled query's trace id:\n{logs}"
        );
    }
    // ... and nothing of them is exported.
    suite.stop().await;
    let spans = receiver.spans();
    for (case, trace) in &traces {
        assert!(
            in_trace(&spans, trace).is_empty(),
            "{case}: an unsampled trace exports nothing"
        );
    }
}

/// Without an exporter no span is built, yet every request has a trace id:
/// in its `x-trace-id`, in the log lines of every hop it crosses, and the
/// caller's own when it sent a `traceparent`.
#[tokio::test(flavor = "multi_thread")]
async fn without_an_exporter_every_hop_logs_the_trace_id_and_a_callers_trace_continues() {
    let suite = TracedSuite::start(&[(
        "RUST_LOG",
        "info,easynote_shared::governance::server=debug".into(),
    )])
    .await;
    let traces = suite.story().await;
    let distinct: std::collections::BTreeSet<_> = traces.values().collect();
    assert_eq!(distinct.len(), traces.len(), "one trace per request");
    let caller_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let (status, body, trace) = suite
        .login_in_trace("tracy", &format!("00-{caller_trace}-00f067aa0ba902b7-01"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        trace.as_deref(),
        Some(caller_trace),
        "the caller's trace id"
    );
    let logs = suite.logs();
    for (service, log) in &logs {
        assert!(
            log.contains(&format!("trace_id={}", traces["query"])),
            "{service} logs the query's trace id:\n{log}"
        );
    }
    assert!(
        logs[2].1.contains(&format!("trace_id={caller_trace}")),
        "user-service logs the caller's trace id:\n{}",
        logs[2].1
    );
    suite.stop().await;
}
