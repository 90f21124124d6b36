//! The HTTP edge under clients that hold connections: half-sent requests,
//! idle keep-alives, bodies that never come, more connections than the
//! bound. Raw TCP, since an HTTP client will not misbehave on purpose.

use std::{net::SocketAddr, time::Duration};

use easynote_testkit::eventually;
use reqwest::StatusCode;
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    task::JoinSet,
};

use crate::helpers::TestApp;

/// Request line and headers, cut off before the blank line that ends them.
const HALF_SENT: &[u8] = b"GET /v1/note/query HTTP/1.1\r\nHost: gateway\r\nX-Slow: ";

/// Opens `count` connections, 100 at a time, each sending `prefix`; a
/// connection the server has closed meanwhile is kept all the same.
async fn open_connections(addr: SocketAddr, count: usize, prefix: &'static [u8]) -> Vec<TcpStream> {
    let mut open = Vec::with_capacity(count);
    for batch in 0..count.div_ceil(100) {
        let mut connecting = JoinSet::new();
        for _ in (batch * 100)..count.min((batch + 1) * 100) {
            connecting.spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.expect("connect");
                let _ = tcp.write_all(prefix).await;
                tcp
            });
        }
        open.extend(connecting.join_all().await);
    }
    open
}

/// Waits for the server to close `tcp`: true on end of stream or reset,
/// false if it answered something or stayed open for `within`.
async fn closed_by_server(mut tcp: TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    match tokio::time::timeout(within, tcp.read(&mut byte)).await {
        Ok(Ok(0) | Err(_)) => true,
        Ok(Ok(_)) | Err(_) => false,
    }
}

/// Sends `request` on `tcp` and reads one answer: status, headers (lower
/// case) and JSON body. The answer must carry `content-length`.
async fn exchange(tcp: &mut TcpStream, request: &[u8]) -> Result<(u16, String, Value), String> {
    tcp.write_all(request)
        .await
        .map_err(|err| format!("sending: {err}"))?;
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            let n = tcp
                .read(&mut chunk)
                .await
                .map_err(|err| format!("reading: {err}"))?;
            if n == 0 {
                return Err(format!(
                    "closed before a whole answer: {:?}",
                    String::from_utf8_lossy(&received)
                ));
            }
            received.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&received);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let head = head.to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|line| line.strip_prefix("content-length:"))
                    .and_then(|value| value.trim().parse().ok())
                    .ok_or_else(|| format!("no content-length in {head}"))?;
                if body.len() >= length {
                    let status = head[9..12]
                        .parse()
                        .map_err(|_| format!("no status in {head}"))?;
                    let body = serde_json::from_str(&body[..length]).unwrap_or(Value::Null);
                    return Ok((status, head, body));
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .map_err(|_| "no answer within 10 s".to_owned())?
}

const PING: &[u8] = b"GET /ping HTTP/1.1\r\nHost: gateway\r\n\r\n";

async fn ping(app: &TestApp) -> StatusCode {
    match reqwest::Client::new()
        .get(format!("{}/ping", app.base))
        .send()
        .await
    {
        Ok(response) => response.status(),
        Err(err) => panic!("/ping on a new connection: {err}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_thousand_half_sent_requests_are_closed_at_the_header_timeout_while_ping_answers() {
    let app = TestApp::spawn_with(&[
        ("EASYNOTE_HTTP_HEADER_TIMEOUT", "1s"),
        ("EASYNOTE_HTTP_MAX_CONNECTIONS", "4096"),
        ("EASYNOTE_HTTP_MAX_CONNECTIONS_PER_ADDRESS", "4096"),
    ])
    .await;
    let addr = app.gateway.addr;
    let attack = open_connections(addr, 2000, HALF_SENT).await;
    assert_eq!(ping(&app).await, StatusCode::OK, "/ping during the attack");

    let mut waits = JoinSet::new();
    for tcp in attack {
        waits.spawn(closed_by_server(tcp, Duration::from_secs(30)));
    }
    let closed = waits.join_all().await.into_iter().filter(|c| *c).count();
    assert_eq!(closed, 2000, "every half-sent request closed by the server");
    assert_eq!(ping(&app).await, StatusCode::OK, "/ping after the attack");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_alive_connection_outlives_the_header_timeout_and_closes_at_the_idle_timeout() {
    let app = TestApp::spawn_with(&[
        ("EASYNOTE_HTTP_HEADER_TIMEOUT", "1s"),
        ("EASYNOTE_HTTP_IDLE_TIMEOUT", "3s"),
    ])
    .await;
    let mut tcp = TcpStream::connect(app.gateway.addr).await.expect("connect");
    let (status, _, body) = exchange(&mut tcp, PING).await.expect("an answer");
    assert_eq!((status, &body["message"]), (200, &Value::from("pong")));

    // Idle for longer than the header timeout: still open.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, _, _) = exchange(&mut tcp, PING)
        .await
        .expect("the second request on a kept-alive connection");
    assert_eq!(status, 200);

    assert!(
        closed_by_server(tcp, Duration::from_secs(20)).await,
        "an idle connection is closed at the idle timeout"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_never_arrives_is_answered_408_at_the_request_timeout() {
    let app = TestApp::spawn_with(&[("EASYNOTE_HTTP_REQUEST_TIMEOUT", "1s")]).await;
    let mut tcp = TcpStream::connect(app.gateway.addr).await.expect("connect");
    let (status, head, body) = exchange(
        &mut tcp,
        b"POST /v1/user/login HTTP/1.1\r\nHost: gateway\r\n\
          Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"username\":",
    )
    .await
    .expect("an answer");
    assert_eq!(status, 408, "{head}\n{body}");
    assert_eq!(body["code"], 10002, "{body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("not received within 1s")),
        "{body}"
    );
    assert!(
        closed_by_server(tcp, Duration::from_secs(10)).await,
        "the connection, its body unread, is closed"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_bound_are_answered_503_and_the_gateway_recovers() {
    let app = TestApp::spawn_with(&[
        ("EASYNOTE_HTTP_MAX_CONNECTIONS", "20"),
        ("EASYNOTE_HTTP_MAX_CONNECTIONS_PER_ADDRESS", "100"),
        ("EASYNOTE_HTTP_HEADER_TIMEOUT", "60s"),
    ])
    .await;
    let addr = app.gateway.addr;
    let held = open_connections(addr, 20, HALF_SENT).await;

    let refusal = eventually(
        Duration::from_secs(10),
        "a connection beyond the bound is refused",
        || async {
            let mut tcp = TcpStream::connect(addr)
                .await
                .map_err(|err| format!("connect: {err}"))?;
            match exchange(&mut tcp, PING).await? {
                (503, head, body) => Ok((head, body)),
                (status, _, body) => Err(format!("{status}: {body}")),
            }
        },
    )
    .await;
    let (head, body) = refusal;
    assert_eq!(body["code"], 10001, "{body}");
    assert!(head.contains("retry-after: 1"), "{head}");
    assert!(head.contains("connection: close"), "{head}");

    drop(held);
    eventually(
        Duration::from_secs(10),
        "served again once connections close",
        || async {
            let mut tcp = TcpStream::connect(addr)
                .await
                .map_err(|err| format!("connect: {err}"))?;
            match exchange(&mut tcp, PING).await? {
                (200, _, _) => Ok(()),
                (status, _, body) => Err(format!("{status}: {body}")),
            }
        },
    )
    .await;
}
