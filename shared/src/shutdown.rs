//! One shutdown signal for every server in a process.
//!
//! A [`Shutdown`] is a cheap, cloneable handle that resolves once shutdown is
//! requested: by Ctrl-C or SIGTERM ([`on_signal`]), by a [`ShutdownTrigger`]
//! (tests, the all-in-one binary), or when the trigger is dropped.

use tokio::sync::watch;

/// Resolves when shutdown has been requested. Clone it into every server.
#[derive(Clone, Debug)]
pub struct Shutdown(watch::Receiver<bool>);

/// Requests shutdown of every [`Shutdown`] made with it; dropping it does too.
#[derive(Debug)]
pub struct ShutdownTrigger(watch::Sender<bool>);

/// A trigger and the handle it controls.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(tx), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Asks every holder of the matching [`Shutdown`] to stop.
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }
}

impl Shutdown {
    /// A handle that never fires by itself, for servers whose life is bounded
    /// by something else.
    pub fn never() -> Self {
        let (tx, rx) = watch::channel(false);
        // Keep the sender alive for ever so that the receiver never sees it close.
        std::mem::forget(tx);
        Shutdown(rx)
    }

    /// Waits until shutdown is requested (or the trigger is gone).
    pub async fn requested(&self) {
        let mut rx = self.0.clone();
        // An error means the trigger was dropped: nobody can keep us running.
        let _ = rx.wait_for(|stop| *stop).await;
    }

    /// Whether shutdown has been requested already.
    pub fn is_requested(&self) -> bool {
        *self.0.borrow() || self.0.has_changed().is_err()
    }
}

/// A [`Shutdown`] fired by Ctrl-C or SIGTERM (what Kubernetes and Docker send).
pub fn on_signal() -> Shutdown {
    let (trigger, shutdown) = channel();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested");
        trigger.trigger();
        // Keep the trigger alive until the process exits; a second signal
        // while draining has no extra effect by design.
        std::future::pending::<()>().await;
    });
    shutdown
}

async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn trigger_wakes_every_clone() {
        let (trigger, shutdown) = channel();
        let other = shutdown.clone();
        assert!(!shutdown.is_requested());
        trigger.trigger();
        tokio::time::timeout(Duration::from_secs(1), other.requested())
            .await
            .expect("clone must see the trigger");
        assert!(shutdown.is_requested());
    }

    #[tokio::test]
    async fn dropping_the_trigger_requests_shutdown() {
        let (trigger, shutdown) = channel();
        drop(trigger);
        tokio::time::timeout(Duration::from_secs(1), shutdown.requested())
            .await
            .expect("a dropped trigger must release waiters");
    }

    #[tokio::test]
    async fn never_stays_pending() {
        let shutdown = Shutdown::never();
        let waited = tokio::time::timeout(Duration::from_millis(50), shutdown.requested()).await;
        assert!(waited.is_err(), "Shutdown::never must not resolve");
    }
}
