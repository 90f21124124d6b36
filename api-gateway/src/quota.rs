//! Cluster-wide rate limits: a rule with `"scope": "cluster"` keeps one
//! GCRA bucket per key for every gateway replica together, in Redis
//! (`EASYNOTE_REDIS_URL`, the login throttle's server; Tair or Redis in the
//! cloud), decided by one atomic script per request with Redis's own clock.
//!
//! When Redis does not answer within [`QUOTA_TIMEOUT`], or fails, the rule
//! falls back to a bucket in this process holding its share of the budget:
//! the rate and the burst divided by the gateway replicas the registry
//! lists as live (1 with static discovery), so that N replicas still allow
//! about the budget, not N times it. A warning says so when it starts and
//! a line when Redis is back; `easynote.governance.quota.fallback` counts
//! the requests decided locally. Redis is tried again [`RETRY_AFTER`] after
//! a failure, so an outage costs one timeout a second, not one a request.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use easynote_shared::discovery::Instance;
use tokio::sync::watch;

use crate::login_throttle::SharedStoreConfig;

/// The longest wait for Redis before a request is decided locally.
pub const QUOTA_TIMEOUT: Duration = Duration::from_millis(250);
/// How long Redis is left alone after it failed.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// The start of every key the cluster quotas write.
pub const KEY_PREFIX: &str = "easy-note:quota:";

/// One GCRA step. KEYS: the bucket. ARGV: the emission interval (µs), the
/// burst. Answers 0 when the request is allowed (and records it), else the
/// µs until it would be.
const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local period = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if tat < now then tat = now end
local next_tat = tat + period
local allow_at = next_tat - period * tonumber(ARGV[2])
if now < allow_at then return allow_at - now end
redis.call('SET', KEYS[1], string.format('%d', next_tat), 'PX', math.max(1, math.ceil((next_tat - now) / 1000)))
return 0
";

/// The shared buckets; see the module documentation.
pub struct ClusterQuota {
    manager: redis::aio::ConnectionManager,
    script: redis::Script,
    /// When Redis failed last, while it is left alone.
    down_since: Mutex<Option<Instant>>,
    /// Whether the fallback is in force (for the log lines at the edges).
    degraded: AtomicBool,
    /// The gateway's own instances in the registry, when it has them.
    replicas: Option<watch::Receiver<Arc<[Instance]>>>,
}

impl std::fmt::Debug for ClusterQuota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterQuota")
            .field("degraded", &self.degraded.load(Ordering::Relaxed))
            .field("replicas", &self.replicas())
            .finish_non_exhaustive()
    }
}

/// What the shared bucket said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let through.
    Allowed,
    /// Over the limit: let through after this wait.
    Limited(Duration),
    /// Redis did not answer: decide locally.
    Unknown,
}

impl ClusterQuota {
    /// Connects lazily to the Redis `shared` names; `replicas` is the
    /// gateway's own instance set, when the registry has one.
    pub fn connect(
        shared: &SharedStoreConfig,
        replicas: Option<watch::Receiver<Arc<[Instance]>>>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            manager: shared.connect(QUOTA_TIMEOUT, 0)?,
            script: redis::Script::new(GCRA_SCRIPT),
            down_since: Mutex::new(None),
            degraded: AtomicBool::new(false),
            replicas,
        })
    }

    /// Live gateway replicas, this one included (at least 1).
    pub fn replicas(&self) -> u32 {
        self.replicas.as_ref().map_or(1, |set| {
            u32::try_from(set.borrow().len()).unwrap_or(u32::MAX).max(1)
        })
    }

    /// Takes a token from the shared bucket `bucket` (a rule's
    /// fingerprint and the caller's key), whose rule allows one request a
    /// `period` and `burst` at once.
    pub async fn check(&self, bucket: &str, period: Duration, burst: u32) -> Verdict {
        if self.resting() {
            return Verdict::Unknown;
        }
        let mut invocation = self.script.prepare_invoke();
        invocation
            .key(format!("{KEY_PREFIX}{bucket}"))
            .arg(u64::try_from(period.as_micros()).unwrap_or(u64::MAX).max(1))
            .arg(burst);
        let mut connection = self.manager.clone();
        let answer = tokio::time::timeout(
            QUOTA_TIMEOUT,
            invocation.invoke_async::<i64>(&mut connection),
        )
        .await;
        match answer {
            Ok(Ok(wait)) => {
                self.recovered();
                if wait <= 0 {
                    Verdict::Allowed
                } else {
                    Verdict::Limited(Duration::from_micros(wait.unsigned_abs()))
                }
            }
            Ok(Err(err)) => {
                self.failed(&format!("{:?}", err.kind()));
                Verdict::Unknown
            }
            Err(_) => {
                self.failed("no answer in time");
                Verdict::Unknown
            }
        }
    }

    /// Whether Redis failed less than [`RETRY_AFTER`] ago.
    fn resting(&self) -> bool {
        let mut down = self
            .down_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *down {
            Some(since) if since.elapsed() < RETRY_AFTER => true,
            Some(_) => {
                *down = None; // try again
                false
            }
            None => false,
        }
    }

    fn failed(&self, why: &str) {
        *self
            .down_since
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Instant::now());
        if !self.degraded.swap(true, Ordering::AcqRel) {
            tracing::warn!(
                reason = why,
                replicas = self.replicas(),
                "cluster quota store unavailable: rate limits with scope cluster now limit per process, each to its share of the budget"
            );
        }
    }

    fn recovered(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            tracing::info!(
                "cluster quota store answers again: rate limits with scope cluster are shared again"
            );
        }
    }
}
