//! The counts in Redis, shared by every gateway replica: one Lua script per
//! reservation and per settlement (see the parent module's documentation).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use super::{
    FORGET_AFTER, Held, Key, LOCK_MAX, LoginThrottleConfig, Outcome, SharedStoreConfig,
    USER_WINDOW, warn_user_locked,
};
use crate::error::ApiError;

/// The longest wait for Redis before a login fails closed.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

/// The counts in Redis; see the module documentation.
pub(super) struct RedisStore {
    manager: redis::aio::ConnectionManager,
    prefix: String,
    reservation_ttl: Duration,
    next_id: AtomicU64,
    reserve: redis::Script,
    settle: redis::Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Reserves an attempt. KEYS: pair hash, pair reservations, user hash,
/// user reservations. ARGV: reservation id, max failures, max user
/// failures, forget-after ms, user window ms, reservation ttl ms.
/// Answers 0 when reserved, -1 when busy, else the ms left of a lock.
const RESERVE_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function num(key, field)
  return tonumber(redis.call('HGET', key, field) or '0') or 0
end
local left = math.max(num(KEYS[1], 'l'), num(KEYS[3], 'l')) - now
if left > 0 then return left end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
local pf = num(KEYS[1], 'f')
if now - num(KEYS[1], 't') >= tonumber(ARGV[4]) then pf = 0 end
local uf = num(KEYS[3], 'f')
if now - num(KEYS[3], 'w') >= tonumber(ARGV[5]) then uf = 0 end
if redis.call('ZCARD', KEYS[2]) >= math.max(tonumber(ARGV[2]) - pf, 1)
  or redis.call('ZCARD', KEYS[4]) >= math.max(tonumber(ARGV[3]) - uf, 1) then
  return -1
end
local ttl = tonumber(ARGV[6])
redis.call('ZADD', KEYS[2], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[2], ttl)
redis.call('ZADD', KEYS[4], now + ttl, ARGV[1])
redis.call('PEXPIRE', KEYS[4], ttl)
return 0
";

/// Settles a reservation. KEYS as [`RESERVE_SCRIPT`]. ARGV: reservation
/// id, outcome, max failures, max user failures, lock ms, longest lock ms,
/// forget-after ms, user window ms. Answers the username's count when this
/// failure locked it, else 0.
const SETTLE_SCRIPT: &str = r"
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[4], ARGV[1])
if ARGV[2] == 'succeeded' then
  redis.call('DEL', KEYS[1])
  return 0
end
if ARGV[2] ~= 'failed' then return 0 end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function num(key, field)
  return tonumber(redis.call('HGET', key, field) or '0') or 0
end
local lock = tonumber(ARGV[5])
local forget = tonumber(ARGV[7])
local f = num(KEYS[1], 'f')
if now - num(KEYS[1], 't') >= forget then f = 0 end
f = f + 1
redis.call('HSET', KEYS[1], 'f', f, 't', now)
local keep = forget
local beyond = f - tonumber(ARGV[3])
if beyond >= 0 then
  local pair_lock = math.floor(math.min(lock * 2 ^ math.min(beyond, 31), tonumber(ARGV[6])))
  redis.call('HSET', KEYS[1], 'l', now + pair_lock)
  keep = math.max(keep, pair_lock)
end
redis.call('PEXPIRE', KEYS[1], keep)
local window = tonumber(ARGV[8])
local uf = num(KEYS[3], 'f')
local w = num(KEYS[3], 'w')
if now - w >= window then uf = 0; w = now end
uf = uf + 1
local locked = 0
if uf >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[3], 'f', 0, 'w', now, 'l', now + lock)
  locked = uf
else
  redis.call('HSET', KEYS[3], 'f', uf, 'w', w)
end
redis.call('PEXPIRE', KEYS[3], math.max(window, lock))
return locked
";

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisStore {
    /// Connects lazily to the Redis `shared` names; `request_timeout`
    /// bounds a reservation's life in Redis.
    pub(super) fn connect(
        shared: &SharedStoreConfig,
        request_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let manager = shared.connect(REDIS_TIMEOUT, 1)?;
        Ok(Self {
            manager,
            prefix: shared.key_prefix.clone(),
            reservation_ttl: request_timeout.max(Duration::from_secs(1)),
            next_id: AtomicU64::new(random_u64()),
            reserve: redis::Script::new(RESERVE_SCRIPT),
            settle: redis::Script::new(SETTLE_SCRIPT),
        })
    }

    /// The four keys of `key`. The username sits in a hash tag, so all
    /// four share a cluster slot; no address contains `}`, so two pairs
    /// never share a key.
    fn keys(&self, (username, ip): &Key) -> [String; 4] {
        let user = format!("{}{{{username}}}", self.prefix);
        [
            format!("{user}:pair:{ip}"),
            format!("{user}:pair-reserved:{ip}"),
            format!("{user}:user"),
            format!("{user}:user-reserved"),
        ]
    }

    pub(super) async fn reserve(
        &self,
        config: &LoginThrottleConfig,
        key: &Key,
    ) -> Result<u64, ApiError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut invocation = self.reserve.prepare_invoke();
        for k in self.keys(key) {
            invocation.key(k);
        }
        invocation
            .arg(id)
            .arg(config.max_failures)
            .arg(config.max_user_failures)
            .arg(millis(FORGET_AFTER))
            .arg(millis(USER_WINDOW))
            .arg(millis(self.reservation_ttl));
        let mut connection = self.manager.clone();
        let answer: i64 = match tokio::time::timeout(
            REDIS_TIMEOUT,
            invocation.invoke_async(&mut connection),
        )
        .await
        {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) => {
                tracing::error!(error.kind = ?err.kind(), "the login throttle's Redis failed: refusing logins");
                return Err(ApiError::Unavailable);
            }
            Err(_) => {
                tracing::error!(timeout = ?REDIS_TIMEOUT, "the login throttle's Redis did not answer: refusing logins");
                return Err(ApiError::Unavailable);
            }
        };
        match answer {
            0 => Ok(id),
            -1 => Err(Held::Busy.into_error()),
            left => Err(Held::Locked(Duration::from_millis(left.unsigned_abs())).into_error()),
        }
    }

    pub(super) async fn settle(
        &self,
        config: &LoginThrottleConfig,
        key: &Key,
        id: u64,
        outcome: Outcome,
    ) {
        let mut invocation = self.settle.prepare_invoke();
        for k in self.keys(key) {
            invocation.key(k);
        }
        invocation
            .arg(id)
            .arg(outcome.as_str())
            .arg(config.max_failures)
            .arg(config.max_user_failures)
            .arg(millis(config.lock))
            .arg(millis(LOCK_MAX))
            .arg(millis(FORGET_AFTER))
            .arg(millis(USER_WINDOW));
        let mut connection = self.manager.clone();
        match tokio::time::timeout(
            REDIS_TIMEOUT,
            invocation.invoke_async::<i64>(&mut connection),
        )
        .await
        {
            Ok(Ok(0)) => {}
            Ok(Ok(count)) => {
                warn_user_locked(u32::try_from(count).unwrap_or(u32::MAX), config.lock)
            }
            // The reservation expires by itself; a failure not counted is
            // what a Redis outage costs (logins are refused meanwhile).
            Ok(Err(err)) => {
                tracing::error!(error.kind = ?err.kind(), outcome = outcome.as_str(), "settling a login in Redis failed")
            }
            Err(_) => tracing::error!(
                outcome = outcome.as_str(),
                "settling a login in Redis timed out"
            ),
        }
    }
}

fn random_u64() -> u64 {
    use ring::rand::{SecureRandom as _, SystemRandom};
    let mut bytes = [0u8; 8];
    // Only needs to differ between replicas; the time will do without.
    if SystemRandom::new().fill(&mut bytes).is_err() {
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    }
    u64::from_le_bytes(bytes)
}
