//! Whether the downstream services are ready, as `/readyz` asks it: their
//! gRPC health checks, asked at most once a second however often the
//! probe comes.

use std::{
    error::Error as _,
    time::{Duration, Instant},
};

use easynote_shared::{governance::Upstream, rpc, service_name};
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

/// How long readiness waits for each downstream (they are asked in
/// parallel, so this is also `/readyz`'s own worst case).
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a readiness result is answered before the downstreams are
/// asked again: however often `/readyz` is called, each service gets at
/// most one health check per second from this gateway.
const RECHECK_AFTER: Duration = Duration::from_secs(1);

/// The last downstream check, shared by every `/readyz` request.
#[derive(Debug, Default)]
pub(crate) struct ReadinessCheck {
    last: tokio::sync::Mutex<Option<(Instant, bool)>>,
}

impl ReadinessCheck {
    /// Whether both services answered their health checks, asked at most
    /// once per [`RECHECK_AFTER`]; callers arriving during a check wait for
    /// its result rather than starting their own.
    pub(crate) async fn downstreams_ready(&self, users: &Upstream, notes: &Upstream) -> bool {
        let mut last = self.last.lock().await;
        if let Some((at, ready)) = *last
            && at.elapsed() < RECHECK_AFTER
        {
            return ready;
        }
        let (users, notes) = tokio::join!(check(users), check(notes));
        // The reasons go to the log; the answer names none of them.
        for (service, result) in [(service_name::USER, &users), (service_name::NOTE, &notes)] {
            if let Err(reason) = result {
                tracing::warn!(service, %reason, "not ready: a downstream service is not serving");
            }
        }
        let ready = users.is_ok() && notes.is_ok();
        *last = Some((Instant::now(), ready));
        ready
    }
}

/// `Ok` when one instance of the service answers SERVING in time.
async fn check(upstream: &Upstream) -> Result<(), String> {
    let request = HealthCheckRequest {
        service: String::new(),
    };
    let check = upstream.invoke::<rpc::Check>(request);
    match tokio::time::timeout(CHECK_TIMEOUT, check).await {
        Ok(Ok(reply)) if reply.get_ref().status() == ServingStatus::Serving => Ok(()),
        Ok(Ok(reply)) => Err(format!("{:?}", reply.get_ref().status())),
        Ok(Err(status))
            if status.code() == tonic::Code::Unavailable && status.source().is_none() =>
        {
            Err(status.message().to_owned())
        }
        Ok(Err(status)) => Err(format!("unreachable ({:?})", status.code())),
        Err(_) => Err("timed out".to_owned()),
    }
}
