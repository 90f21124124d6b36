//! The one serving lifecycle of every server in the suite, gRPC and HTTP:
//!
//! 1. serve, and register in the registry once serving (so the first callers
//!    the registry sends are answered);
//! 2. on shutdown, tell the server's own health checks (the `stopping`
//!    hook), then deregister;
//! 3. keep serving for the registry's grace period while callers learn the
//!    instance is gone;
//! 4. stop accepting and drain in-flight work, within a bound.
//!
//! A shutdown during a slow registration (Nacos still unreachable) stops
//! without waiting for it, and deregisters all the same: the registration
//! may have reached the registry.

use std::{collections::BTreeMap, fmt, time::Duration};

use anyhow::Context as _;

use crate::{
    config::{ConfigError, Env},
    discovery::{BoxFuture, Discovery, Registration},
    error::ErrorChain,
    shutdown::Shutdown,
};

/// Lifecycle settings every server shares.
#[derive(Debug, Clone)]
pub struct LifecycleConfig {
    /// `EASYNOTE_SHUTDOWN_TIMEOUT` (default 10s): the bound on draining
    /// in-flight requests after a shutdown signal.
    pub shutdown_timeout: Duration,
    /// `EASYNOTE_INSTANCE_METADATA` (`lane=canary,version=0.2.0`): metadata
    /// registered with this instance, for routing by lane.
    pub metadata: BTreeMap<String, String>,
}

impl LifecycleConfig {
    /// Reads the lifecycle settings.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let metadata = instance_metadata(env)?;
        Ok(Self {
            shutdown_timeout: Self::shutdown_timeout(env)?,
            metadata,
        })
    }

    /// `EASYNOTE_SHUTDOWN_TIMEOUT` alone (for `easy-note deploy-facts`).
    pub fn shutdown_timeout(env: &Env) -> Result<Duration, ConfigError> {
        env.duration(
            "EASYNOTE_SHUTDOWN_TIMEOUT",
            Self::default().shutdown_timeout,
        )
    }
}

/// `EASYNOTE_INSTANCE_METADATA`, checked: what this instance registers
/// about itself (its lane, its zone).
pub fn instance_metadata(env: &Env) -> Result<BTreeMap<String, String>, ConfigError> {
    crate::discovery::parse_instance_metadata(
        env.get("EASYNOTE_INSTANCE_METADATA").unwrap_or_default(),
    )
    .map_err(|reason| ConfigError::invalid("EASYNOTE_INSTANCE_METADATA", reason))
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            shutdown_timeout: Duration::from_secs(10),
            metadata: BTreeMap::new(),
        }
    }
}

/// Where a server announces itself, and how long it may drain.
#[derive(Debug)]
pub struct Lifecycle {
    /// Where to announce this instance.
    pub discovery: Discovery,
    /// This instance as the registry should see it.
    pub registration: Registration,
    /// Bound on draining in-flight work after shutdown.
    pub drain_timeout: Duration,
}

/// The signal a server is given to stop accepting and drain: it resolves
/// when the lifecycle reaches step 4.
pub type StopAccepting = BoxFuture<'static, ()>;

/// Runs a server through the lifecycle until `shutdown`. `start` gets the
/// stop-accepting signal and returns the server (axum's
/// `with_graceful_shutdown`, tonic's `serve_with_incoming_shutdown`);
/// `stopping` runs when shutdown begins, before deregistering (a gRPC
/// server marks its health NOT_SERVING there). Returns when the server
/// has stopped, or the drain bound has passed.
pub async fn serve<S, E>(
    start: impl FnOnce(StopAccepting) -> S,
    lifecycle: Lifecycle,
    shutdown: Shutdown,
    stopping: impl Future<Output = ()>,
) -> anyhow::Result<()>
where
    S: Future<Output = Result<(), E>>,
    E: Into<anyhow::Error>,
{
    let Lifecycle {
        discovery,
        registration,
        drain_timeout,
    } = lifecycle;
    let what = Serving(&registration);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = start(Box::pin(async move {
        let _ = stop_rx.await;
    }));
    tokio::pin!(server);
    let ended =
        |result: Result<(), E>| result.map_err(Into::into).with_context(|| what.to_string());

    let registered = tokio::select! {
        result = &mut server => return ended(result),
        registered = discovery.register(&registration) => Some(registered),
        () = shutdown.requested() => None,
    };
    let registered = match registered {
        Some(result) => {
            result.with_context(|| format!("registering {what}"))?;
            tracing::info!(service = %registration.service, addr = %registration.addr, protocol = registration.protocol(), "serving");
            tokio::select! {
                result = &mut server => {
                    // A server only ends by itself on a fatal error.
                    discovery.deregister(&registration).await.ok();
                    return ended(result);
                }
                () = shutdown.requested() => {}
            }
            true
        }
        None => false,
    };

    tracing::info!(service = %registration.service, "shutting down: deregistering, then draining");
    stopping.await;
    if let Err(err) = discovery.deregister(&registration).await {
        tracing::warn!(error = %ErrorChain(&err), "deregistration failed; callers will notice on their own");
    }
    let grace = discovery.deregister_grace();
    if registered && !grace.is_zero() {
        tokio::select! {
            result = &mut server => return ended(result),
            () = tokio::time::sleep(grace) => {}
        }
    }

    let _ = stop_tx.send(());
    match tokio::time::timeout(drain_timeout, &mut server).await {
        Ok(result) => {
            ended(result)?;
            tracing::info!(service = %registration.service, "stopped");
            Ok(())
        }
        Err(_) => {
            tracing::warn!(service = %registration.service, ?drain_timeout, "drain timed out; abandoning work still running");
            Ok(())
        }
    }
}

/// `easy-note-user (grpc on 127.0.0.1:8889)`, for error context.
#[derive(Clone, Copy)]
struct Serving<'a>(&'a Registration);

impl fmt::Display for Serving<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(f, "{} ({} on {})", r.service, r.protocol(), r.addr)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;
    use crate::{discovery::StaticDiscovery, shutdown};

    fn lifecycle(drain: Duration) -> Lifecycle {
        Lifecycle {
            discovery: Discovery::new(StaticDiscovery::new::<&str>([])),
            registration: Registration::new("svc", "127.0.0.1:1".parse().expect("addr"), "test"),
            drain_timeout: drain,
        }
    }

    #[tokio::test]
    async fn shutdown_runs_the_stopping_hook_then_stops_accepting() {
        let (trigger, shutdown) = shutdown::channel();
        let hook_ran = Arc::new(AtomicBool::new(false));
        let seen_before_stop = Arc::new(AtomicBool::new(false));
        let (hook, seen) = (hook_ran.clone(), seen_before_stop.clone());
        let served = tokio::spawn(serve(
            move |stop: StopAccepting| async move {
                stop.await;
                seen.store(hook.load(Ordering::SeqCst), Ordering::SeqCst);
                Ok::<(), std::io::Error>(())
            },
            lifecycle(Duration::from_secs(5)),
            shutdown,
            {
                let hook_ran = hook_ran.clone();
                async move { hook_ran.store(true, Ordering::SeqCst) }
            },
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!hook_ran.load(Ordering::SeqCst), "no hook before shutdown");
        trigger.trigger();
        served.await.expect("task").expect("clean stop");
        assert!(
            seen_before_stop.load(Ordering::SeqCst),
            "the stopping hook runs before the server is told to stop accepting"
        );
    }

    #[tokio::test]
    async fn a_server_that_fails_on_its_own_reports_what_it_was() {
        let (_trigger, shutdown) = shutdown::channel();
        let err = serve(
            |_stop| async { Err::<(), _>(std::io::Error::other("listener died")) },
            lifecycle(Duration::from_secs(5)),
            shutdown,
            async {},
        )
        .await
        .expect_err("the server failed");
        let chain = format!("{err:#}");
        assert!(chain.contains("svc (test on 127.0.0.1:1)"), "{chain}");
        assert!(chain.contains("listener died"), "{chain}");
    }

    #[tokio::test]
    async fn draining_is_bounded() {
        let (trigger, shutdown) = shutdown::channel();
        trigger.trigger();
        // A server that never stops draining: serve gives up on it at the
        // drain bound, well within the outer one.
        let served = serve(
            |_stop| std::future::pending::<Result<(), std::io::Error>>(),
            lifecycle(Duration::from_millis(100)),
            shutdown,
            async {},
        );
        tokio::time::timeout(Duration::from_secs(30), served)
            .await
            .expect("serve returns once the drain bound has passed")
            .expect("an abandoned drain is not an error");
    }
}
