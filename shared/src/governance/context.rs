//! What governance carries along one request, hop by hop: the deadline,
//! the lane, and whether the call is itself a retry.
//!
//! It lives in a task-local for the request's task: the gateway sets it
//! per request, a gRPC server per call (from the caller's `grpc-timeout`
//! and metadata), and [`Upstream`](crate::governance::Upstream) reads it to
//! send each downstream call what is left.

use std::{sync::Arc, time::Instant};

use tonic::metadata::{MetadataMap, MetadataValue};

/// gRPC metadata carrying the lane.
pub const LANE_HEADER: &str = "x-easynote-lane";
/// gRPC metadata marking a retried or hedged attempt.
pub const RETRY_HEADER: &str = "x-easynote-retry";

/// The governance context of the current request.
#[derive(Debug, Clone, Default)]
pub struct CallContext {
    /// When the whole request must be answered.
    pub deadline: Option<Instant>,
    /// The lane the request travels in.
    pub lane: Option<Arc<str>>,
    /// The call being served is a retry: its own downstream calls are not
    /// retried again (no retry of a retry).
    pub retried: bool,
}

tokio::task_local! {
    static CONTEXT: CallContext;
}

impl CallContext {
    /// The context of the running task (empty outside any request).
    pub fn current() -> Self {
        CONTEXT.try_with(Clone::clone).unwrap_or_default()
    }

    /// Runs `fut` with this context.
    pub async fn scope<F: Future>(self, fut: F) -> F::Output {
        CONTEXT.scope(self, fut).await
    }

    /// The context a server reads from an incoming call.
    pub fn from_metadata(headers: &tonic::codegen::http::HeaderMap) -> Self {
        let deadline = headers
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let lane = headers
            .get(LANE_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 64)
            .map(Arc::from);
        Self {
            deadline,
            lane,
            retried: headers.contains_key(RETRY_HEADER),
        }
    }

    /// Adds the lane and the retry mark to an outgoing call.
    pub(crate) fn write_metadata(&self, metadata: &mut MetadataMap, retry: bool) {
        if let Some(lane) = &self.lane
            && let Ok(value) = MetadataValue::try_from(&**lane)
        {
            metadata.insert(LANE_HEADER, value);
        }
        if retry || self.retried {
            metadata.insert(RETRY_HEADER, MetadataValue::from_static("1"));
        }
    }
}

/// A `grpc-timeout` value (`<digits><unit>`, unit one of H M S m u n).
pub fn parse_grpc_timeout(value: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn grpc_timeouts_parse_every_unit_and_refuse_junk() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "m", "12", "1x", "-1m", "1234567890m"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_context_is_scoped_to_its_task() {
        assert!(CallContext::current().lane.is_none());
        let ctx = CallContext {
            lane: Some("canary".into()),
            ..CallContext::default()
        };
        let seen = ctx
            .scope(async { CallContext::current().lane.map(|l| l.to_string()) })
            .await;
        assert_eq!(seen.as_deref(), Some("canary"));
        assert!(CallContext::current().lane.is_none());
    }

    #[test]
    fn incoming_metadata_sets_deadline_lane_and_retry() {
        let mut headers = tonic::codegen::http::HeaderMap::new();
        headers.insert("grpc-timeout", "500m".parse().unwrap());
        headers.insert(LANE_HEADER, "canary".parse().unwrap());
        headers.insert(RETRY_HEADER, "1".parse().unwrap());
        let ctx = CallContext::from_metadata(&headers);
        let left = ctx.deadline.expect("deadline") - Instant::now();
        assert!(left <= Duration::from_millis(500));
        assert_eq!(ctx.lane.as_deref(), Some("canary"));
        assert!(ctx.retried);
    }
}
