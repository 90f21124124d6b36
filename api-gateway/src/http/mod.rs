//! The gateway's HTTP/1 server: an accept loop on hyper that bounds how
//! long, and how many, connections a client can hold.
//!
//! `axum::serve` keeps a connection open for as long as its client likes:
//! 3,000 connections that never finished their headers were all still open
//! after 35 s, and the gateway's resident memory had grown from 52 MB to
//! 116 MB (docs/benchmarks.md). Here every connection is in one of four
//! phases, each with a bound:
//!
//! | phase | begins | bound |
//! |---|---|---|
//! | head | at accept, or at the first byte after an idle spell | `EASYNOTE_HTTP_HEADER_TIMEOUT` until the headers are read |
//! | handling | the headers are read | `EASYNOTE_HTTP_REQUEST_TIMEOUT` (or the route's shorter deadline), then the answer is an error ([`deadline`]) |
//! | answering | the answer is ready | `EASYNOTE_HTTP_REQUEST_TIMEOUT` without the client reading any of it |
//! | idle | the answer is written | `EASYNOTE_HTTP_IDLE_TIMEOUT` |
//!
//! A connection past the bound of its head, answering or idle phase is
//! closed without an answer. hyper's own `header_read_timeout` is not used:
//! in hyper 1.x its clock also runs while a kept-alive connection waits for
//! its next request, so idle connections would be cut at the header
//! timeout, whatever the idle timeout says.
//!
//! At most `EASYNOTE_HTTP_MAX_CONNECTIONS` connections are served at once.
//! A connection beyond them is accepted, answered 503 (code 10001,
//! `Retry-After: 1`, `Connection: close`) and closed: the client learns at
//! once that this gateway is full and can go elsewhere, rather than
//! waiting in the listen backlog behind the connections holding it.
//!
//! One address cannot take all of them: at most
//! `EASYNOTE_HTTP_MAX_CONNECTIONS_PER_ADDRESS` connections come from one
//! peer address (an IPv6 peer's /64), every route alike (`/ping` too);
//! beyond it a new connection is answered 429 (code 10006, `Retry-After:
//! 1`) and closed. The trusted proxies (`EASYNOTE_TRUSTED_PROXIES`) carry
//! every client's connections and are not capped; their kept-alive
//! connections wait `EASYNOTE_HTTP_PROXY_IDLE_TIMEOUT`, longer than a load
//! balancer's own idle timeout, so that the gateway never closes a
//! connection the balancer is about to reuse.
//!
//! Each request's client address is derived here, once, from the peer and
//! the trusted proxies (client_addr.rs), and left in its extensions.

use std::{io, sync::Arc, sync::atomic::Ordering, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use easynote_shared::{
    config::{ConfigError, Env},
    governance::context::CallContext,
};
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::{net::TcpListener, sync::Semaphore};

pub(crate) use self::connection::BodyReceived;
use self::{
    admission::{PerAddress, Refusal, Refusals},
    connection::{ConnectionService, PhaseClock, Watched},
};
use crate::{
    client_addr::{ClientAddrs, limit_key},
    error::ApiError,
    governance::{EdgeGovernance, route_deadline},
};

mod admission;
mod connection;

/// Bounds of the HTTP server (`EASYNOTE_HTTP_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpConfig {
    /// `EASYNOTE_HTTP_HEADER_TIMEOUT` (default 10s): from accepting a
    /// connection, or from the first byte of a request on a kept-alive one,
    /// until its headers are read.
    pub header_timeout: Duration,
    /// `EASYNOTE_HTTP_REQUEST_TIMEOUT` (default 30s): from a request's
    /// headers to its answer (body included); also how long an answer may
    /// wait for the client to read any of it.
    pub request_timeout: Duration,
    /// `EASYNOTE_HTTP_IDLE_TIMEOUT` (default 10s): how long a kept-alive
    /// connection may wait for its next request.
    pub idle_timeout: Duration,
    /// `EASYNOTE_HTTP_PROXY_IDLE_TIMEOUT` (default 75s): the same for a
    /// connection from a trusted proxy.
    pub proxy_idle_timeout: Duration,
    /// `EASYNOTE_HTTP_MAX_CONNECTIONS` (default 2048): connections served at
    /// once; beyond them a new connection is answered 503 and closed.
    pub max_connections: usize,
    /// `EASYNOTE_HTTP_MAX_CONNECTIONS_PER_ADDRESS` (default 64): connections
    /// from one peer address (IPv6: one /64) at once, trusted proxies
    /// excepted; beyond them a new one is answered 429 and closed.
    pub max_connections_per_address: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            // Long enough for a client's next request in a burst; an idle
            // connection is a slot held for nothing.
            idle_timeout: Duration::from_secs(10),
            // Load balancers commonly keep idle backend connections up to
            // 60 s: the backend must wait longer, or it closes a connection
            // the balancer is sending a request on (a 502).
            proxy_idle_timeout: Duration::from_secs(75),
            // About 20 KB each when idle (measured): 2048 stay well inside
            // the 128 MiB the Kubernetes base gives the gateway.
            max_connections: 2048,
            // A browser opens 6 per host; 64 leaves room for a small NAT
            // and takes one host 32 of the 2048.
            max_connections_per_address: 64,
        }
    }
}

/// Accepted range of each timeout.
const TIMEOUT_MIN: Duration = Duration::from_millis(100);
const HEADER_TIMEOUT_MAX: Duration = Duration::from_secs(300);
const REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
const IDLE_TIMEOUT_MAX: Duration = Duration::from_secs(3600);
/// Accepted range of `EASYNOTE_HTTP_MAX_CONNECTIONS`.
const MAX_CONNECTIONS_MAX: usize = 1_000_000;

impl HttpConfig {
    /// Reads the server's bounds, refusing zero and absurd values.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let timeout = |var: &str, default: Duration, max: Duration| {
            let value = env.duration(var, default)?;
            if (TIMEOUT_MIN..=max).contains(&value) {
                Ok(value)
            } else {
                Err(ConfigError::invalid(
                    var,
                    format!(
                        "must be between {} and {}",
                        humantime::format_duration(TIMEOUT_MIN),
                        humantime::format_duration(max)
                    ),
                ))
            }
        };
        let max_connections =
            env.parse("EASYNOTE_HTTP_MAX_CONNECTIONS", defaults.max_connections)?;
        if !(1..=MAX_CONNECTIONS_MAX).contains(&max_connections) {
            return Err(ConfigError::invalid(
                "EASYNOTE_HTTP_MAX_CONNECTIONS",
                format!("must be between 1 and {MAX_CONNECTIONS_MAX}"),
            ));
        }
        let max_connections_per_address = env.parse(
            "EASYNOTE_HTTP_MAX_CONNECTIONS_PER_ADDRESS",
            defaults.max_connections_per_address,
        )?;
        if !(1..=MAX_CONNECTIONS_MAX).contains(&max_connections_per_address) {
            return Err(ConfigError::invalid(
                "EASYNOTE_HTTP_MAX_CONNECTIONS_PER_ADDRESS",
                format!("must be between 1 and {MAX_CONNECTIONS_MAX}"),
            ));
        }
        Ok(Self {
            header_timeout: timeout(
                "EASYNOTE_HTTP_HEADER_TIMEOUT",
                defaults.header_timeout,
                HEADER_TIMEOUT_MAX,
            )?,
            request_timeout: timeout(
                "EASYNOTE_HTTP_REQUEST_TIMEOUT",
                defaults.request_timeout,
                REQUEST_TIMEOUT_MAX,
            )?,
            idle_timeout: timeout(
                "EASYNOTE_HTTP_IDLE_TIMEOUT",
                defaults.idle_timeout,
                IDLE_TIMEOUT_MAX,
            )?,
            proxy_idle_timeout: timeout(
                "EASYNOTE_HTTP_PROXY_IDLE_TIMEOUT",
                defaults.proxy_idle_timeout,
                IDLE_TIMEOUT_MAX,
            )?,
            max_connections,
            max_connections_per_address,
        })
    }
}

/// Serves `app` on `listener` until `stop` resolves, then stops accepting
/// and waits for the open connections: idle ones close at once, the
/// others after their request (the caller bounds the wait).
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    config: HttpConfig,
    clients: ClientAddrs,
    stop: impl Future<Output = ()>,
) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(config.max_connections));
    let per_address = Arc::new(PerAddress::default());
    let clients = Arc::new(clients);
    let refusals = Arc::new(Refusals::default());
    let graceful = GracefulShutdown::new();
    let mut http1 = hyper::server::conn::http1::Builder::new();
    // The phases below bound the headers; see the module documentation.
    http1.header_read_timeout(None);
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    wait_after_accept_error(err).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        // TCP_NODELAY, or a response written in two segments waits for
        // the client's delayed ACK (~40 ms on Linux).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(error = %err, "TCP_NODELAY not set");
        }
        let from_proxy = clients.is_trusted_proxy(peer.ip());
        let address_slot = if from_proxy {
            None
        } else {
            let key = limit_key(peer.ip());
            match per_address.take(key, config.max_connections_per_address) {
                Some(slot) => Some(slot),
                None => {
                    refusals.refuse(tcp, Refusal::PerAddress(key), config);
                    continue;
                }
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refusals.refuse(tcp, Refusal::Total, config);
            continue;
        };
        let mut connection_config = config;
        if from_proxy {
            connection_config.idle_timeout = config.proxy_idle_timeout;
        }
        let clock = Arc::new(PhaseClock::new(connection_config));
        let service = ConnectionService {
            app: app.clone(),
            peer,
            clients: clients.clone(),
            clock: clock.clone(),
        };
        let io = TokioIo::new(Watched {
            tcp,
            clock: clock.clone(),
        });
        let connection = graceful.watch(http1.serve_connection(io, service));
        tokio::spawn(async move {
            clock.enforce(connection).await;
            drop((slot, address_slot));
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Out of file descriptors (`EMFILE`) or memory: sleeping a second lets
/// connections close, rather than spinning on the same error.
async fn wait_after_accept_error(err: io::Error) {
    if matches!(
        err.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %err, "accepting a connection failed; retrying in 1s");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

/// Headers every answer carries: `X-Content-Type-Options: nosniff`;
/// `Referrer-Policy: no-referrer`; no framing (`X-Frame-Options: DENY`);
/// `Cache-Control: no-store` and a Content-Security-Policy that allows
/// nothing, unless the handler chose otherwise (login replies carry
/// tokens, the others a user's notes: no cache may keep them; only the web
/// app's page runs anything, under its own policy).
pub(crate) async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    headers
        .entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'",
        ));
    response
}

/// The deadline layer, the one time bound on handling a request: the
/// request timeout (`EASYNOTE_HTTP_REQUEST_TIMEOUT`), or the route's
/// deadline under the governance rules when that is shorter. The route's
/// deadline also travels downstream with every call the request makes
/// (`grpc-timeout`). Past the bound, a request whose body is still arriving
/// is answered 408 (code 10002: the client is too slow), one still being
/// handled 503 (code 10001).
pub(crate) async fn deadline(
    State((request_timeout, edge)): State<(Duration, Arc<EdgeGovernance>)>,
    request: Request,
    next: Next,
) -> Response {
    let received = request.extensions().get::<BodyReceived>().cloned();
    let route_deadline = route_deadline(&edge, &request);
    let timeout = route_deadline.map_or(request_timeout, |route| route.min(request_timeout));
    let context = CallContext {
        deadline: route_deadline.and_then(|route| std::time::Instant::now().checked_add(route)),
        ..CallContext::current()
    };
    match tokio::time::timeout(timeout, context.scope(next.run(request))).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?timeout, "request deadline passed");
            out_of_time(received.as_ref(), timeout).into_response()
        }
    }
}

/// The answer to a request that ran out of `timeout`: 408 when its body
/// had not arrived whole, else 503.
fn out_of_time(received: Option<&BodyReceived>, timeout: Duration) -> ApiError {
    if received.is_some_and(|r| !r.0.load(Ordering::Acquire)) {
        ApiError::RequestTimeout(timeout)
    } else {
        ApiError::Unavailable
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;

    fn config(pairs: &[(&str, &str)]) -> Result<HttpConfig, ConfigError> {
        HttpConfig::from_env(&Env::from_pairs(pairs.iter().copied()))
    }

    #[test]
    fn bounds_default_and_refuse_zero_or_absurd_values() {
        assert_eq!(config(&[]).expect("defaults"), HttpConfig::default());
        let cases = [
            ("EASYNOTE_HTTP_HEADER_TIMEOUT", "0", "between 100ms and 5m"),
            ("EASYNOTE_HTTP_HEADER_TIMEOUT", "1h", "between 100ms and 5m"),
            ("EASYNOTE_HTTP_HEADER_TIMEOUT", "soon", "is not a duration"),
            (
                "EASYNOTE_HTTP_REQUEST_TIMEOUT",
                "10ms",
                "between 100ms and 1h",
            ),
            ("EASYNOTE_HTTP_IDLE_TIMEOUT", "2h", "between 100ms and 1h"),
            (
                "EASYNOTE_HTTP_MAX_CONNECTIONS",
                "0",
                "between 1 and 1000000",
            ),
            ("EASYNOTE_HTTP_MAX_CONNECTIONS", "-5", "cannot parse"),
            (
                "EASYNOTE_HTTP_MAX_CONNECTIONS_PER_ADDRESS",
                "0",
                "between 1 and 1000000",
            ),
            (
                "EASYNOTE_HTTP_PROXY_IDLE_TIMEOUT",
                "0",
                "between 100ms and 1h",
            ),
        ];
        for (var, value, expected) in cases {
            let err = config(&[(var, value)])
                .expect_err("must refuse")
                .to_string();
            assert!(err.starts_with(var), "{var}={value}: {err}");
            assert!(err.contains(expected), "{var}={value}: {err}");
        }
        let set = config(&[
            ("EASYNOTE_HTTP_HEADER_TIMEOUT", "1s"),
            ("EASYNOTE_HTTP_REQUEST_TIMEOUT", "2m"),
            ("EASYNOTE_HTTP_IDLE_TIMEOUT", "500ms"),
            ("EASYNOTE_HTTP_MAX_CONNECTIONS", "50"),
            ("EASYNOTE_HTTP_MAX_CONNECTIONS_PER_ADDRESS", "5"),
            ("EASYNOTE_HTTP_PROXY_IDLE_TIMEOUT", "2m"),
        ])
        .expect("valid");
        assert_eq!(set.max_connections_per_address, 5);
        assert_eq!(set.proxy_idle_timeout, Duration::from_secs(120));
        assert_eq!(set.header_timeout, Duration::from_secs(1));
        assert_eq!(set.request_timeout, Duration::from_secs(120));
        assert_eq!(set.idle_timeout, Duration::from_millis(500));
        assert_eq!(set.max_connections, 50);
    }

    #[test]
    fn refusals_are_complete_http_answers_with_the_envelope() {
        let refusals = Refusals::default();
        for (answer, status, code) in [
            (&refusals.full, "503", 10001),
            (&refusals.per_address, "429", 10006),
        ] {
            let text = std::str::from_utf8(answer).expect("ASCII");
            let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
            assert!(head.starts_with(&format!("HTTP/1.1 {status} ")), "{head}");
            assert!(head.contains("retry-after: 1"), "{head}");
            assert!(head.contains("x-content-type-options: nosniff"), "{head}");
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{head}"
            );
            let envelope: serde_json::Value = serde_json::from_str(body).expect("JSON");
            assert_eq!(envelope["code"], code);
            assert_eq!(envelope["data"], serde_json::Value::Null);
        }
    }

    #[test]
    fn an_address_holds_at_most_its_share_and_closed_connections_free_it() {
        let table = Arc::new(PerAddress::default());
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        let held: Vec<_> = (0..3).map(|_| table.take(a, 3).expect("a slot")).collect();
        assert!(table.take(a, 3).is_none(), "the fourth from one address");
        assert!(
            table.take(b, 3).is_some(),
            "another address is not affected"
        );
        drop(held);
        assert_eq!(table.open(a), 0);
        assert!(table.take(a, 3).is_some(), "free again");
    }
}
