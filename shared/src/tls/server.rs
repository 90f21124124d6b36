//! The server side: the connections a gRPC server accepts, in plaintext or
//! after a mutual-TLS handshake, each with the identity of its peer.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::{Stream, wrappers::ReceiverStream};
use tonic::transport::server::Connected;

use super::{Callers, Tls};

/// A handshake that takes longer is dropped (a client that connects and
/// says nothing holds only its socket, and only this long).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a server knows of the other end of a connection, in the
/// extensions of every request on it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// Its address.
    pub addr: Option<SocketAddr>,
    /// The identities its certificate proved (none in plaintext).
    pub callers: Callers,
}

/// One accepted connection.
#[derive(Debug)]
pub enum Conn {
    /// Plaintext (TLS off).
    Plain(TcpStream),
    /// After a successful mutual-TLS handshake.
    Tls(Box<TlsStream<TcpStream>>, Peer),
}

impl Connected for Conn {
    type ConnectInfo = Peer;

    fn connect_info(&self) -> Peer {
        match self {
            Self::Plain(tcp) => Peer {
                addr: tcp.peer_addr().ok(),
                callers: Callers::NONE,
            },
            Self::Tls(_, peer) => *peer,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Self::Tls(tls, _) => Pin::new(tls).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Self::Tls(tls, _) => Pin::new(tls).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Self::Tls(tls, _) => Pin::new(tls).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls, _) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Self::Tls(tls, _) => Pin::new(tls).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Self::Tls(tls, _) => Pin::new(tls).poll_shutdown(cx),
        }
    }
}

/// The connections `listener` accepts, with TCP_NODELAY set (or small
/// responses written in two segments wait for the peer's delayed ACK),
/// and with `tls`, each through a mutual-TLS handshake of its own task
/// (bounded by [`HANDSHAKE_TIMEOUT`]) so that one slow client delays no
/// other. Accepting stops when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Tls>,
) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<io::Result<Conn>>(64);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, addr) = match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait, then go on.
                    tracing::warn!(error = %err, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            if let Err(err) = tcp.set_nodelay(true) {
                tracing::debug!(error = %err, "TCP_NODELAY not set");
            }
            let Some(tls) = &tls else {
                if tx.send(Ok(Conn::Plain(tcp))).await.is_err() {
                    return;
                }
                continue;
            };
            let acceptor = TlsAcceptor::from(tls.server_config());
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let callers = stream
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(<[_]>::first)
                            .map_or(Callers::NONE, Callers::of_certificate);
                        let peer = Peer {
                            addr: Some(addr),
                            callers,
                        };
                        let _closed = tx.send(Ok(Conn::Tls(Box::new(stream), peer))).await;
                    }
                    Ok(Err(err)) => {
                        tracing::warn!(peer = %addr, error = %err, "TLS handshake refused");
                    }
                    Err(_) => tracing::warn!(peer = %addr, "TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
