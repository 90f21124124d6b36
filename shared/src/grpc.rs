//! The gRPC server lifecycle both services share, and the one place where
//! unexpected errors become `Status::internal`.
//!
//! Lifecycle: serve; on shutdown mark health NOT_SERVING and deregister, keep
//! serving for the registry's grace period so callers see the change, then
//! stop accepting and drain in-flight calls within a bound.

use std::{error::Error, fmt, time::Duration};

use anyhow::Context as _;
use tokio::net::TcpListener;
use tonic::Status;
use tonic::transport::server::TcpIncoming;
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::{
    discovery::{Discovery, Registration},
    shutdown::Shutdown,
    telemetry::grpc::TracedRouter,
};

/// Everything [`serve`] needs besides the router.
#[derive(Debug)]
pub struct ServeOptions {
    /// Already bound (port 0 works; ask the listener for the real port first).
    pub listener: TcpListener,
    /// The health service registered in the router.
    pub health: HealthReporter,
    /// The gRPC service names reported in health checks.
    pub health_services: Vec<&'static str>,
    /// Where to announce this instance, and what to announce.
    pub discovery: Discovery,
    /// This instance as the registry should see it.
    pub registration: Registration,
    /// Bound on draining in-flight calls after shutdown.
    pub drain_timeout: Duration,
}

/// Serves `router` until `shutdown`, registering once serving and
/// deregistering before draining. Returns when the server has stopped.
pub async fn serve(
    router: TracedRouter,
    options: ServeOptions,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let ServeOptions {
        listener,
        health,
        health_services,
        discovery,
        registration,
        drain_timeout,
    } = options;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    // TCP_NODELAY: without it, small responses written in more than one
    // segment wait for the peer's delayed ACK (~40 ms per call on Linux).
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = router.serve_with_incoming_shutdown(incoming, async {
        let _ = stop_rx.await;
    });
    tokio::pin!(server);

    for service in &health_services {
        health
            .set_service_status(service, ServingStatus::Serving)
            .await;
    }
    // Register while already serving, so that the first callers the
    // registry sends are answered; a shutdown during a slow registration
    // (Nacos still unreachable) stops without waiting for it.
    let registered = tokio::select! {
        result = &mut server => return result.map_err(Into::into),
        registered = discovery.register(&registration) => Some(registered),
        () = shutdown.requested() => None,
    };
    let registered = match registered {
        Some(result) => {
            result.with_context(|| {
                format!(
                    "registering {} ({})",
                    registration.service, registration.addr
                )
            })?;
            tracing::info!(service = %registration.service, addr = %registration.addr, "serving gRPC");
            tokio::select! {
                result = &mut server => {
                    // The server only ends by itself on a fatal error.
                    discovery.deregister(&registration).await.ok();
                    return result.map_err(Into::into);
                }
                () = shutdown.requested() => {}
            }
            true
        }
        None => false,
    };

    tracing::info!(service = %registration.service, "shutting down: deregistering, then draining");
    health
        .set_service_status("", ServingStatus::NotServing)
        .await;
    for service in &health_services {
        health
            .set_service_status(service, ServingStatus::NotServing)
            .await;
    }
    // Also when shutdown cut a registration short: it may have reached
    // the registry all the same.
    if let Err(err) = discovery.deregister(&registration).await {
        tracing::warn!(error = %ErrorChain(&err), "deregistration failed; callers will notice on their own");
    }
    // Keep serving while callers learn that this instance is gone.
    let grace = discovery.deregister_grace();
    if registered && !grace.is_zero() {
        tokio::select! {
            result = &mut server => return result.map_err(Into::into),
            () = tokio::time::sleep(grace) => {}
        }
    }

    let _ = stop_tx.send(());
    match tokio::time::timeout(drain_timeout, &mut server).await {
        Ok(result) => {
            tracing::info!(service = %registration.service, "gRPC server stopped");
            result.map_err(Into::into)
        }
        Err(_) => {
            tracing::warn!(service = %registration.service, ?drain_timeout, "drain timed out; abandoning calls still running");
            Ok(())
        }
    }
}

/// Logs an unexpected error with its whole cause chain, once, and answers the
/// caller with a bare `INTERNAL` that leaks nothing.
pub fn internal(context: &str, err: &(dyn Error + 'static)) -> Status {
    tracing::error!(error = %ErrorChain(err), "{context}");
    Status::internal("internal error")
}

/// Displays an error followed by its causes: `outer: inner: root`.
#[derive(Debug, Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn error_chain_lists_every_cause() {
        let err = Outer(std::io::Error::other("root cause"));
        assert_eq!(ErrorChain(&err).to_string(), "outer: root cause");
    }

    #[test]
    fn internal_errors_leak_nothing() {
        let err = Outer(std::io::Error::other("SELECT secret FROM db.host.internal"));
        let status = internal("testing", &err);
        assert_eq!(status.code(), tonic::Code::Internal);
        assert_eq!(status.message(), "internal error");
    }
}
