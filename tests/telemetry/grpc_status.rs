//! The gRPC status as both sides record it, read where gRPC puts it: in the
//! trailers after the messages, or in the headers of a trailers-only answer.
//!
//! A real tonic server behind `telemetry::grpc::server()` and a real client
//! through `TracedChannel`, exporting to the real OTLP receiver. The
//! OpenTelemetry SDK reads its exporter's settings from the process's
//! environment, so the calls run in a child process of this test binary
//! started with the receiver's `OTEL_*` settings; this test checks what the
//! receiver got from it.

use std::sync::Arc;

use easynote_shared::{
    config::Env,
    proto::user::v1::{
        CheckTokenRequest, CheckTokenResponse, CheckUserRequest, CheckUserResponse,
        CreateUserRequest, CreateUserResponse, MGetUserRequest, MGetUserResponse,
        RevokeTokensRequest, RevokeTokensResponse, User,
        user_service_client::UserServiceClient,
        user_service_server::{UserService, UserServiceServer},
    },
    telemetry::{self, TelemetryConfig, grpc::TracedChannel, metrics::RpcMetrics},
};
use easynote_testkit::otlp::{OtlpReceiver, ReceivedSpan, Transport};
use tonic::{Code, Request, Response, Status, transport::server::TcpIncoming};

use super::{CLIENT, SERVER};

/// Answers each method along one of the three paths a status takes.
struct Statuses;

#[tonic::async_trait]
impl UserService for Statuses {
    /// An empty answer: it fits, and OK arrives in the trailers.
    async fn create_user(
        &self,
        _: Request<CreateUserRequest>,
    ) -> Result<Response<CreateUserResponse>, Status> {
        Ok(Response::new(CreateUserResponse::default()))
    }

    /// An answer too large for the server's encoding limit: the headers are
    /// already sent when encoding fails, so the error goes in the trailers.
    async fn m_get_user(
        &self,
        _: Request<MGetUserRequest>,
    ) -> Result<Response<MGetUserResponse>, Status> {
        Ok(Response::new(MGetUserResponse {
            users: vec![User {
                user_id: 1,
                username: "too long to fit in the limit".into(),
                ..User::default()
            }],
        }))
    }

    /// An error before any message: a trailers-only answer.
    async fn check_user(
        &self,
        _: Request<CheckUserRequest>,
    ) -> Result<Response<CheckUserResponse>, Status> {
        Err(Status::unauthenticated("wrong username or password"))
    }

    /// Not called by this test.
    async fn revoke_tokens(
        &self,
        _: Request<RevokeTokensRequest>,
    ) -> Result<Response<RevokeTokensResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }

    /// Not called by this test.
    async fn check_token(
        &self,
        _: Request<CheckTokenRequest>,
    ) -> Result<Response<CheckTokenResponse>, Status> {
        Err(Status::unimplemented("not part of this test"))
    }
}

fn pair<'a>(spans: &'a [ReceivedSpan], method: &str) -> (&'a ReceivedSpan, &'a ReceivedSpan) {
    let name = format!("easynote.user.v1.UserService/{method}");
    let find = |kind| {
        spans
            .iter()
            .find(|s| s.name == name && s.kind == kind)
            .unwrap_or_else(|| panic!("no span of kind {kind} for {name}: {spans:#?}"))
    };
    (find(CLIENT), find(SERVER))
}

/// Set in the child process that makes the calls.
const CHILD: &str = "EASYNOTE_TEST_GRPC_STATUS_CHILD";

#[tokio::test(flavor = "multi_thread")]
async fn the_grpc_status_is_read_from_trailers_and_from_trailers_only_headers() {
    if std::env::var_os(CHILD).is_some() {
        make_the_calls().await;
        return;
    }
    let receiver = OtlpReceiver::start(Transport::Grpc).await;
    let exe = std::env::current_exe().expect("the test binary");
    // This test's name as the test harness filters it (the module path
    // without the crate's name).
    let name = format!(
        "{}::the_grpc_status_is_read_from_trailers_and_from_trailers_only_headers",
        module_path!().split_once("::").map_or("", |(_, path)| path)
    );
    let mut child = std::process::Command::new(exe);
    child
        .args(["--exact", &name, "--nocapture", "--test-threads", "1"])
        .env(CHILD, "1")
        .envs(receiver.exporter_env());
    let output = tokio::task::spawn_blocking(move || child.output())
        .await
        .expect("the child's task")
        .expect("run the child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the child failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let port = stdout
        .lines()
        .find_map(|line| line.strip_prefix("server port: "))
        .unwrap_or_else(|| panic!("the child printed no port:\n{stdout}"))
        .to_owned();

    let spans = receiver.spans();
    for (method, status, client_error) in [
        ("CreateUser", "OK", false),
        ("MGetUser", "OUT_OF_RANGE", true),
        ("CheckUser", "UNAUTHENTICATED", true),
    ] {
        let (client, server) = pair(&spans, method);
        for span in [client, server] {
            assert_eq!(
                span.attr("rpc.response.status_code"),
                Some(status),
                "{method}: kind {}",
                span.kind
            );
        }
        assert_eq!(
            server.parent_span_id, client.span_id,
            "{method}: the server span is the client span's child"
        );
        assert_eq!(
            client.status_code == 2,
            client_error,
            "{method}: the client span is an error for any status but OK"
        );
        assert_eq!(
            server.status_code, 0,
            "{method}: {status} is the caller's fault, not the server's"
        );
        assert_eq!(client.attr("server.port"), Some(port.as_str()));
    }
    assert_eq!(
        pair(&spans, "MGetUser").0.attr("error.type"),
        Some("OUT_OF_RANGE")
    );

    let points = receiver.points();
    for (metric, method, status) in [
        ("rpc.server.call.duration", "MGetUser", "OUT_OF_RANGE"),
        ("rpc.client.call.duration", "MGetUser", "OUT_OF_RANGE"),
        ("rpc.server.call.duration", "CheckUser", "UNAUTHENTICATED"),
        ("rpc.server.call.duration", "CreateUser", "OK"),
    ] {
        let method = format!("easynote.user.v1.UserService/{method}");
        assert!(
            points.iter().any(|p| p.metric == metric
                && p.attributes.get("rpc.method") == Some(&method)
                && p.attributes
                    .get("rpc.response.status_code")
                    .map(String::as_str)
                    == Some(status)),
            "{metric} {method} {status}: {points:#?}"
        );
    }
}

/// The child's part: telemetry from its environment (the receiver's
/// settings), one call along each path, then the flush at shutdown, which
/// sends every span and the last metric points.
async fn make_the_calls() {
    let config = TelemetryConfig::from_env(&Env::from_process()).expect("telemetry settings");
    let telemetry = telemetry::init(&config, "grpc-status-test").expect("telemetry");

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    println!("server port: {}", addr.port());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        telemetry::grpc::server()
            .add_service(UserServiceServer::new(Statuses).max_encoding_message_size(8))
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            }),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut client = UserServiceClient::new(TracedChannel::new(
        channel,
        Arc::from(addr.to_string()),
        RpcMetrics::new(),
    ));

    client
        .create_user(CreateUserRequest::default())
        .await
        .expect("create answers OK");
    let too_large = client
        .m_get_user(MGetUserRequest::default())
        .await
        .expect_err("the answer exceeds the limit");
    assert_eq!(too_large.code(), Code::OutOfRange, "{too_large:?}");
    let refused = client
        .check_user(CheckUserRequest::default())
        .await
        .expect_err("check refuses");
    assert_eq!(refused.code(), Code::Unauthenticated);

    let _ = stop.send(());
    server.await.expect("server task").expect("server");
    telemetry.shutdown().await;
}
