//! A server of this workspace running in-process on its own port (bind
//! `127.0.0.1:0` in its config), stopped cleanly on [`RunningServer::stop`]
//! (or [`RunningServer::shut_down`], for a test that looks at how it stopped).

use std::{net::SocketAddr, time::Duration};

use easynote_shared::shutdown::{self, Shutdown, ShutdownTrigger};
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Bound on a server's stop after its shutdown is triggered.
pub const STOP_WITHIN: Duration = Duration::from_secs(15);

/// A server task and the handle that stops it.
#[derive(Debug)]
pub struct RunningServer {
    /// A name for messages.
    pub name: &'static str,
    /// The address it is bound to.
    pub addr: SocketAddr,
    trigger: Option<ShutdownTrigger>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningServer {
    /// Runs `run(shutdown)` (a built server's `run`) on its own task.
    /// `addr` is the server's `local_addr()`.
    pub fn spawn<F>(name: &'static str, addr: SocketAddr, run: impl FnOnce(Shutdown) -> F) -> Self
    where
        F: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (trigger, shutdown) = shutdown::channel();
        let task = tokio::spawn(run(shutdown));
        Self {
            name,
            addr,
            trigger: Some(trigger),
            task: Some(task),
        }
    }

    /// A connected gRPC channel to the server.
    pub async fn channel(&self) -> Channel {
        tonic::transport::Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("a URI")
            .connect()
            .await
            .unwrap_or_else(|err| panic!("connect to {} at {}: {err}", self.name, self.addr))
    }

    /// Whether the server task has ended (by itself, unless it was shut
    /// down: a failure).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Triggers shutdown and waits, unbounded, for `run` to return; its
    /// result (`Ok` when it was already shut down).
    pub async fn shut_down(&mut self) -> anyhow::Result<()> {
        if let Some(trigger) = self.trigger.take() {
            trigger.trigger();
        }
        match self.task.take() {
            Some(task) => task.await?,
            None => Ok(()),
        }
    }

    /// Triggers shutdown and asserts the server stops within
    /// [`STOP_WITHIN`] and its `run` returns `Ok`.
    pub async fn stop(mut self) {
        let name = self.name;
        let stopped = tokio::time::timeout(STOP_WITHIN, self.shut_down())
            .await
            .unwrap_or_else(|_| panic!("{name} must stop within {STOP_WITHIN:?} of shutdown"));
        if let Err(err) = stopped {
            panic!("{name}: run() must return Ok after shutdown: {err:?}");
        }
    }
}
