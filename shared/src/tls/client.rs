//! The client side: connections to a service that prove this process's
//! identity and check that the server is the service asked for.

use std::{
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll},
};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsConnector, client::TlsStream};
use tonic::{
    codegen::http::Uri,
    transport::{Channel, Endpoint},
};
use tower::Service;

use super::{Tls, TlsError, server_name};

/// Connects to the address of a channel's URI and shakes hands as a
/// client of `service`, whose certificate must be valid for that name
/// (the registry name, never the IP the registry gave). Sets TCP_NODELAY.
#[derive(Debug, Clone)]
pub struct Connector {
    tls: Tls,
    server: ServerName<'static>,
}

/// A [`Connector`] to `service` with `tls`, for
/// [`Endpoint::connect_with_connector_lazy`].
pub fn connector(tls: &Tls, service: &str) -> Result<Connector, TlsError> {
    Ok(Connector {
        tls: tls.clone(),
        server: server_name(service)?,
    })
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TokioIo<TlsStream<TcpStream>>>> + Send>>;

impl Service<Uri> for Connector {
    type Response = TokioIo<TlsStream<TcpStream>>;
    type Error = io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        // The client side of the files as they are now: a rotation applies
        // to the next connection.
        let connector = TlsConnector::from(self.tls.client_config());
        let server = self.server.clone();
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no address in URI"))?;
            let tcp = TcpStream::connect(authority.as_str()).await?;
            tcp.set_nodelay(true)?;
            let tls = connector.connect(server, tcp).await?;
            Ok(TokioIo::new(tls))
        })
    }
}

/// A channel to the gRPC server at `addr` for a health check: plaintext,
/// or with `tls`, as this process's identity to a server that must be
/// `service`. Connects now.
pub async fn health_channel(
    addr: SocketAddr,
    tls: Option<&Tls>,
    service: &str,
) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    Ok(match tls {
        None => endpoint.connect().await?,
        Some(tls) => {
            endpoint
                .connect_with_connector(connector(tls, service)?)
                .await?
        }
    })
}
