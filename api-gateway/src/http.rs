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

use std::{
    collections::HashMap,
    convert::Infallible,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::{ConnectInfo, Request, State},
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use easynote_shared::{
    config::{ConfigError, Env},
    governance::context::CallContext,
};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper_util::{rt::TokioIo, server::graceful::GracefulShutdown};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{Notify, Semaphore},
    time::Instant,
};
use tower::Service as _;

use crate::{
    client_addr::{ClientAddr, ClientAddrs, limit_key},
    envelope::Envelope,
    error::ApiError,
    governance::{EdgeGovernance, route_deadline},
};

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

/// Connections being refused at once, each for at most [`REFUSAL_LINGER`].
const REFUSING_AT_ONCE: usize = 64;
/// How long a refused connection is read from after its answer, so that
/// the request bytes already sent do not turn the close into a reset that
/// destroys the answer before the client reads it.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);
/// At most one warning per this long while connections are refused.
const REFUSAL_WARN_EVERY: Duration = Duration::from_secs(10);

/// Open connections per peer address (an IPv6 peer's /64).
#[derive(Debug, Default)]
struct PerAddress(Mutex<HashMap<IpAddr, usize>>);

impl PerAddress {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for one more connection from `key`, unless it has `max`.
    fn take(self: &Arc<Self>, key: IpAddr, max: usize) -> Option<AddressSlot> {
        let mut open = self.lock();
        let count = open.entry(key).or_insert(0);
        if *count >= max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            table: self.clone(),
            key,
        })
    }

    #[cfg(test)]
    fn open(&self, key: IpAddr) -> usize {
        self.lock().get(&key).copied().unwrap_or(0)
    }
}

/// One connection counted against its address until dropped; the table
/// holds only addresses with open connections.
#[derive(Debug)]
struct AddressSlot {
    table: Arc<PerAddress>,
    key: IpAddr,
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.lock();
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Why a connection is refused.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    /// `EASYNOTE_HTTP_MAX_CONNECTIONS` are open.
    Total,
    /// The address has `EASYNOTE_HTTP_MAX_CONNECTIONS_PER_ADDRESS` open.
    PerAddress(IpAddr),
}

/// Answers connections beyond the bounds.
#[derive(Debug)]
struct Refusals {
    answering: Arc<Semaphore>,
    full: Arc<[u8]>,
    per_address: Arc<[u8]>,
    refused: AtomicU64,
    last_warning: Mutex<Option<Instant>>,
}

/// A whole HTTP/1.1 answer that closes the connection, with the envelope.
fn closing_answer(status: &str, error: &ApiError, message: &str) -> Arc<[u8]> {
    let body = serde_json::to_vec(&Envelope::<()>::error(error.code(), message.to_owned()))
        .expect("an envelope serializes");
    let mut answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\n\
         x-content-type-options: nosniff\r\ncache-control: no-store\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(&body);
    answer.into()
}

impl Default for Refusals {
    fn default() -> Self {
        Self {
            answering: Arc::new(Semaphore::new(REFUSING_AT_ONCE)),
            full: closing_answer(
                "503 Service Unavailable",
                &ApiError::Overloaded,
                "too many connections, please retry",
            ),
            per_address: closing_answer(
                "429 Too Many Requests",
                &ApiError::RateLimited { retry_after: 1 },
                "too many connections from your address, please retry",
            ),
            refused: AtomicU64::new(0),
            last_warning: Mutex::new(None),
        }
    }
}

impl Refusals {
    /// Answers and closes; past [`REFUSING_AT_ONCE`] answers in progress,
    /// just closes.
    fn refuse(&self, mut tcp: TcpStream, why: Refusal, config: HttpConfig) {
        let refused = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        {
            let mut last = self
                .last_warning
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_none_or(|at| at.elapsed() >= REFUSAL_WARN_EVERY) {
                *last = Some(Instant::now());
                match why {
                    Refusal::Total => tracing::warn!(
                        max_connections = config.max_connections,
                        refused_so_far = refused,
                        "at EASYNOTE_HTTP_MAX_CONNECTIONS: new connections are answered 503"
                    ),
                    Refusal::PerAddress(address) => tracing::warn!(
                        %address,
                        max_connections_per_address = config.max_connections_per_address,
                        refused_so_far = refused,
                        "an address at EASYNOTE_HTTP_MAX_CONNECTIONS_PER_ADDRESS: \
                         its new connections are answered 429"
                    ),
                }
            }
        }
        let Ok(permit) = self.answering.clone().try_acquire_owned() else {
            return;
        };
        let answer = match why {
            Refusal::Total => self.full.clone(),
            Refusal::PerAddress(_) => self.per_address.clone(),
        };
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(REFUSAL_LINGER, async {
                tcp.write_all(&answer).await?;
                tcp.shutdown().await?;
                let mut sink = [0u8; 1024];
                while tcp.read(&mut sink).await? > 0 {}
                Ok::<_, io::Error>(())
            })
            .await;
        });
    }
}

/// Where a connection is in its request/answer cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Handling,
    Answering,
    Idle,
}

/// A connection's phase, since when, and the deadline its watchdog sleeps
/// until (woken only when a phase change brings the deadline closer).
#[derive(Debug)]
struct PhaseClock {
    config: HttpConfig,
    state: Mutex<PhaseState>,
    closer: Notify,
}

#[derive(Debug)]
struct PhaseState {
    phase: Phase,
    since: Instant,
    /// Requests begun on the connection: a late end of one request's
    /// cycle must not move the next one's phase.
    cycle: u64,
    armed: Option<Instant>,
}

impl PhaseClock {
    fn new(config: HttpConfig) -> Self {
        Self {
            config,
            state: Mutex::new(PhaseState {
                phase: Phase::Head,
                since: Instant::now(),
                cycle: 0,
                armed: None,
            }),
            closer: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PhaseState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bound(&self, phase: Phase) -> Option<Duration> {
        match phase {
            Phase::Head => Some(self.config.header_timeout),
            // `deadline` answers at the request timeout.
            Phase::Handling => None,
            Phase::Answering => Some(self.config.request_timeout),
            Phase::Idle => Some(self.config.idle_timeout),
        }
    }

    /// Moves to `phase` when `allowed` holds, restarting its clock and
    /// waking the watchdog if the deadline comes closer.
    fn enter(&self, phase: Phase, allowed: impl FnOnce(&mut PhaseState) -> bool) {
        let mut state = self.lock();
        if !allowed(&mut state) {
            return;
        }
        let now = Instant::now();
        state.phase = phase;
        state.since = now;
        let deadline = self.bound(phase).map(|bound| now + bound);
        let closer = match (deadline, state.armed) {
            (Some(deadline), Some(armed)) => deadline < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        drop(state);
        if closer {
            self.closer.notify_one();
        }
    }

    /// The headers of a request are read: returns its cycle number.
    fn begin(&self) -> u64 {
        let mut cycle = 0;
        self.enter(Phase::Handling, |state| {
            state.cycle += 1;
            cycle = state.cycle;
            true
        });
        cycle
    }

    /// The first byte after an idle spell starts the next request's head.
    fn received(&self) {
        self.enter(Phase::Head, |state| state.phase == Phase::Idle);
    }

    /// Request `cycle` has its answer.
    fn answered(&self, cycle: u64) {
        self.enter(Phase::Answering, |state| {
            state.cycle == cycle && state.phase == Phase::Handling
        });
    }

    /// Request `cycle` is done with.
    fn ended(&self, cycle: u64) {
        self.enter(Phase::Idle, |state| state.cycle == cycle);
    }

    /// The client read some of the answer: its clock starts again.
    fn progressed(&self) {
        let mut state = self.lock();
        if state.phase == Phase::Answering {
            state.since = Instant::now();
        }
    }

    /// When the current phase runs out, recorded as armed.
    fn arm(&self) -> Option<Instant> {
        let mut state = self.lock();
        let deadline = self.bound(state.phase).map(|bound| state.since + bound);
        state.armed = deadline;
        deadline
    }

    /// Runs `connection` until it ends or its phase runs out; dropping it
    /// closes the socket.
    async fn enforce<F: Future>(&self, connection: F) {
        tokio::pin!(connection);
        loop {
            let deadline = self.arm();
            let expired = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = &mut connection => return,
                () = self.closer.notified() => {}
                () = expired => {
                    let state = self.lock();
                    if let Some(bound) = self.bound(state.phase)
                        && state.since.elapsed() >= bound
                    {
                        tracing::debug!(phase = ?state.phase, ?bound, "closing a connection past its phase's bound");
                        return;
                    }
                }
            }
        }
    }
}

/// The socket, reporting the first byte of a request and each write.
struct Watched {
    tcp: TcpStream,
    clock: Arc<PhaseClock>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.tcp).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.clock.received();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.tcp).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.progressed();
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.tcp).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.clock.progressed();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// The application as one connection's hyper service: the peer's address
/// as `ConnectInfo`, the client's as [`ClientAddr`] (observe.rs,
/// governance.rs, the login throttle), phases as they pass.
#[derive(Clone)]
struct ConnectionService {
    app: Router,
    peer: SocketAddr,
    clients: Arc<ClientAddrs>,
    clock: Arc<PhaseClock>,
}

impl hyper::service::Service<hyper::Request<Incoming>> for ConnectionService {
    type Response = Response<Answer>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let cycle = Cycle {
            number: self.clock.begin(),
            clock: self.clock.clone(),
        };
        let received = BodyReceived(Arc::new(AtomicBool::new(request.body().is_end_stream())));
        let mut request = request.map(|body| Received {
            body,
            received: received.clone(),
        });
        let client = self.clients.client(self.peer.ip(), request.headers());
        request.extensions_mut().insert(ConnectInfo(self.peer));
        request.extensions_mut().insert(ClientAddr(client));
        request.extensions_mut().insert(received);
        let mut app = self.app.clone();
        Box::pin(async move {
            let Ok(response) = app.call(request).await;
            cycle.clock.answered(cycle.number);
            Ok(response.map(|body| Answer {
                body,
                _cycle: cycle,
            }))
        })
    }
}

/// Returns the connection to idle when its answer is done with (written,
/// or abandoned with the connection).
struct Cycle {
    number: u64,
    clock: Arc<PhaseClock>,
}

impl Drop for Cycle {
    fn drop(&mut self) {
        self.clock.ended(self.number);
    }
}

/// An answer's body, ending the request/answer cycle when dropped.
struct Answer {
    body: Body,
    _cycle: Cycle,
}

impl HttpBody for Answer {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Whether a request's body has arrived whole: it tells a client that was
/// too slow to send its request from a server too slow to answer it.
#[derive(Debug, Clone)]
pub(crate) struct BodyReceived(Arc<AtomicBool>);

/// A request body that sets [`BodyReceived`] at its end.
struct Received {
    body: Incoming,
    received: BodyReceived,
}

impl HttpBody for Received {
    type Data = axum::body::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || this.body.is_end_stream() {
            this.received.0.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Headers every answer carries: `X-Content-Type-Options: nosniff`, and
/// `Cache-Control: no-store` unless the handler chose otherwise (login
/// replies carry tokens, the others a user's notes: no cache may keep them).
pub(crate) async fn secure_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
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
