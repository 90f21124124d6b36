//! Hedged requests: when the first attempt has not answered within the
//! rules' hedging delay, a second one on another instance, paid from the
//! retry budget; the first success wins.

use std::time::{Duration, Instant};

use tonic::Status;

use super::{MethodState, Upstream, pick::Backend};
use crate::{
    governance::{context::CallContext, rules::ClientPolicy},
    telemetry::grpc::TracedChannel,
};

impl Upstream {
    /// Waits `delay` for `first`; then, if the budget allows, races it with
    /// a second request on another instance and takes the first success.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn hedge<Req, Res, F, Fut>(
        &self,
        first: impl Future<Output = Result<tonic::Response<Res>, Status>>,
        delay: Duration,
        call: &F,
        backend: &Backend,
        request: &Req,
        timeout: Duration,
        context: &CallContext,
        policy: &ClientPolicy,
        state: &MethodState,
        method: &'static str,
    ) -> Result<tonic::Response<Res>, Status>
    where
        Req: Clone,
        F: Fn(TracedChannel, tonic::Request<Req>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Res>, Status>>,
    {
        tokio::pin!(first);
        tokio::select! {
            result = &mut first => return result,
            () = tokio::time::sleep(delay) => {}
        }
        if !state.time_for_another(context) {
            self.count(
                &self.inner.governance.metrics().retries_skipped,
                method,
                Some("deadline"),
            );
            return first.await;
        }
        let selector = self.selector(&self.inner.governance.active().rules, context);
        let (second_backend, admission) =
            match self.pick_backend(&selector, Some(&backend.instance.addr)) {
                Ok(picked) => picked,
                Err(_) => return first.await,
            };
        if !state
            .budget
            .try_withdraw(policy.budget_ratio, policy.min_per_second, Instant::now())
        {
            self.count(
                &self.inner.governance.metrics().budget_exhausted,
                method,
                None,
            );
            return first.await;
        }
        self.count(
            &self.inner.governance.metrics().retries,
            method,
            Some("hedge"),
        );
        let left = timeout.saturating_sub(delay);
        let second = self.attempt(
            call,
            second_backend,
            admission,
            request,
            left,
            context,
            true,
            policy,
        );
        tokio::pin!(second);
        tokio::select! {
            result = &mut first => match result {
                Ok(response) => Ok(response),
                Err(_) => second.await,
            },
            result = &mut second => match result {
                Ok(response) => Ok(response),
                Err(_) => first.await,
            },
        }
    }
}
