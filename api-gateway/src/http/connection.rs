//! One connection's phases, each with its bound, and the hyper service
//! that serves the application on it (see the parent module's
//! documentation).

use std::{
    convert::Infallible,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo, response::Response};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::Notify,
    time::Instant,
};
use tower::Service as _;

use super::HttpConfig;
use crate::client_addr::{ClientAddr, ClientAddrs};

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
pub(super) struct PhaseClock {
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
    pub(super) fn new(config: HttpConfig) -> Self {
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
    pub(super) async fn enforce<F: Future>(&self, connection: F) {
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
pub(super) struct Watched {
    pub(super) tcp: TcpStream,
    pub(super) clock: Arc<PhaseClock>,
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
pub(super) struct ConnectionService {
    pub(super) app: Router,
    pub(super) peer: SocketAddr,
    pub(super) clients: Arc<ClientAddrs>,
    pub(super) clock: Arc<PhaseClock>,
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
pub(super) struct Answer {
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
pub(crate) struct BodyReceived(pub(super) Arc<AtomicBool>);

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
