//! Failed logins, counted per username so that guessing a password gets
//! slower with every miss, without handing a guesser the power to lock
//! the account's owner out.
//!
//! First a floor no rules document can remove: at most
//! `EASYNOTE_LOGIN_RATE_PER_SECOND` logins per second per client address
//! (burst `EASYNOTE_LOGIN_RATE_BURST`), whatever `gateway.rate_limits`
//! says; the document's own login limit applies on top and can only be
//! tighter. Then two counts, both kept whether or not the account exists
//! (the answer must not tell), keyed by the username in its stored form
//! (NFKC) and the client address (an IPv6 client's /64, client_addr.rs):
//!
//! 1. per username and client address: after `EASYNOTE_LOGIN_MAX_FAILURES`
//!    misses the pair is locked for `EASYNOTE_LOGIN_LOCK`, and each further
//!    miss after a lock doubles it, up to [`LOCK_MAX`]. Only that address
//!    is locked out: the owner logs in from anywhere else. A success clears
//!    the pair; a pair with no miss for [`FORGET_AFTER`] is forgotten.
//! 2. per username from every address, for guessing spread over many:
//!    `EASYNOTE_LOGIN_MAX_USER_FAILURES` misses within [`USER_WINDOW`]
//!    lock the username for everyone, for one `EASYNOTE_LOGIN_LOCK` only.
//!    One address, held back by its own pair lock, cannot reach that count:
//!    with the defaults it takes about 5 addresses to lock a username 30 s.
//!
//! An attempt is reserved before user-service is asked and settled by its
//! answer (a miss counts, a success clears the pair, anything else, or a
//! request abandoned midway, gives the reservation back). Reservations in
//! flight count against what is left of the allowance, so concurrent
//! guesses cannot pass `EASYNOTE_LOGIN_MAX_FAILURES` between the check and
//! the count: with 2 misses left, a third concurrent attempt is refused
//! (429, `Retry-After: 1`) until one of the two is answered. After a lock
//! has run out, one attempt at a time.
//!
//! A locked attempt is answered 429 (code 10006) with an integer
//! `Retry-After` at once, before user-service is asked, and is not
//! counted. Usernames that cannot exist (invalid once normalised) are not
//! tracked, so neither table grows by the size of a junk name.
//!
//! Where the counts live: in this process by default (each table holds at
//! most [`MAX_TRACKED`] entries; when one is full, an expired entry goes,
//! else the least recently failing one that is neither locked nor in
//! flight; a locked entry is never dropped to make room, and when every
//! entry is locked a new pair is refused, 429 until the soonest lock ends,
//! so filling the table cannot unlock anyone). With `EASYNOTE_REDIS_URL`,
//! in Redis, shared by every gateway replica (one budget, not one per
//! replica): each reservation and each settlement is one Lua script, so it
//! is atomic across replicas; Redis's clock times the locks, and keys
//! expire by themselves. A reservation is a member of a sorted set that
//! expires with the request timeout, so a replica that dies mid-login does
//! not hold the allowance for longer. If Redis cannot be reached, logins
//! fail closed: 503 (code 10001, `Retry-After`), without asking
//! user-service, since a throttle that opens when its store is down can be
//! opened on purpose; everything but login goes on.

use std::{
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::Arc,
    time::{Duration, Instant},
};

use easynote_shared::{
    config::{ConfigError, Env},
    validate,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use secrecy::{ExposeSecret as _, SecretString};

use self::{memory::Memory, shared_store::RedisStore};
use crate::{client_addr::limit_key, error::ApiError};

mod memory;
mod shared_store;
#[cfg(test)]
mod tests;

/// The longest lock of a (username, address) pair.
pub const LOCK_MAX: Duration = Duration::from_secs(15 * 60);
/// A pair with no failure for this long, and not locked, is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// The window of the per-username count.
pub const USER_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Entries kept per in-process table.
pub const MAX_TRACKED: usize = 10_000;

/// Thresholds of the login throttle (`EASYNOTE_LOGIN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottleConfig {
    /// `EASYNOTE_LOGIN_MAX_FAILURES` (default 5): failed logins for one
    /// username from one client address before that pair is locked.
    pub max_failures: u32,
    /// `EASYNOTE_LOGIN_LOCK` (default 30s): the first lock of a pair
    /// (doubling with each further failure, up to 15m), and the lock of a
    /// username over its all-address count.
    pub lock: Duration,
    /// `EASYNOTE_LOGIN_MAX_USER_FAILURES` (default 50): failed logins for
    /// one username from all addresses within 15 minutes before it is
    /// locked.
    pub max_user_failures: u32,
    /// `EASYNOTE_LOGIN_RATE_PER_SECOND` (default 5): logins per second per
    /// client address, whatever the governance rules say.
    pub rate_per_second: u32,
    /// `EASYNOTE_LOGIN_RATE_BURST` (default 10): logins at once per client
    /// address before that rate applies.
    pub rate_burst: u32,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            lock: Duration::from_secs(30),
            max_user_failures: 50,
            // The default rules' login limit: a document can only tighten it.
            rate_per_second: 5,
            rate_burst: 10,
        }
    }
}

impl LoginThrottleConfig {
    /// Reads the thresholds, refusing ones that would disable the throttle
    /// or lock for longer than [`LOCK_MAX`].
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let defaults = Self::default();
        let max_failures = env.parse("EASYNOTE_LOGIN_MAX_FAILURES", defaults.max_failures)?;
        if !(1..=1000).contains(&max_failures) {
            return Err(ConfigError::invalid(
                "EASYNOTE_LOGIN_MAX_FAILURES",
                "must be between 1 and 1000",
            ));
        }
        let lock = env.duration("EASYNOTE_LOGIN_LOCK", defaults.lock)?;
        if !(Duration::from_secs(1)..=LOCK_MAX).contains(&lock) {
            return Err(ConfigError::invalid(
                "EASYNOTE_LOGIN_LOCK",
                "must be between 1s and 15m",
            ));
        }
        let max_user_failures = env.parse(
            "EASYNOTE_LOGIN_MAX_USER_FAILURES",
            defaults.max_user_failures,
        )?;
        if !(max_failures..=100_000).contains(&max_user_failures) {
            return Err(ConfigError::invalid(
                "EASYNOTE_LOGIN_MAX_USER_FAILURES",
                format!(
                    "must be between EASYNOTE_LOGIN_MAX_FAILURES ({max_failures}) and 100000: \
                     below it, one address could lock a username for everyone"
                ),
            ));
        }
        let rate = |var: &str, default: u32| {
            let value = env.parse(var, default)?;
            if (1..=1_000_000).contains(&value) {
                Ok(value)
            } else {
                Err(ConfigError::invalid(var, "must be between 1 and 1000000"))
            }
        };
        Ok(Self {
            max_failures,
            lock,
            max_user_failures,
            rate_per_second: rate("EASYNOTE_LOGIN_RATE_PER_SECOND", defaults.rate_per_second)?,
            rate_burst: rate("EASYNOTE_LOGIN_RATE_BURST", defaults.rate_burst)?,
        })
    }
}

/// Where the counts live when they are shared: a Redis server.
#[derive(Debug, Clone)]
pub struct SharedStoreConfig {
    /// `EASYNOTE_REDIS_URL`: `redis://[user:password@]host:port[/db]`
    /// (`rediss://` for TLS); secret, since it may carry a password.
    pub url: SecretString,
    /// `EASYNOTE_REDIS_KEY_PREFIX` (default `easy-note:login:`): the start
    /// of every key the throttle writes.
    pub key_prefix: String,
}

impl SharedStoreConfig {
    /// A lazily connected, self-reconnecting connection to this Redis, each
    /// command bounded by `timeout`, retried `retries` times.
    pub fn connect(
        &self,
        timeout: std::time::Duration,
        retries: usize,
    ) -> anyhow::Result<redis::aio::ConnectionManager> {
        // The URL may hold a password: the error says what, not where.
        let client = redis::Client::open(self.url.expose_secret())
            .map_err(|_| anyhow::anyhow!("EASYNOTE_REDIS_URL is not a Redis URL"))?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(retries);
        redis::aio::ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|err| anyhow::anyhow!("setting up the Redis connection: {:?}", err.kind()))
    }

    /// The Redis settings, `None` when `EASYNOTE_REDIS_URL` is unset.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(url) = env.secret("EASYNOTE_REDIS_URL") else {
            return Ok(None);
        };
        if redis::Client::open(url.expose_secret()).is_err() {
            return Err(ConfigError::invalid(
                "EASYNOTE_REDIS_URL",
                "is not a Redis URL (redis://[user:password@]host:port[/db])",
            ));
        }
        Ok(Some(Self {
            url,
            key_prefix: env.string("EASYNOTE_REDIS_KEY_PREFIX", "easy-note:login:"),
        }))
    }
}

/// The failed-login counts; see the module documentation.
pub struct LoginThrottle {
    config: LoginThrottleConfig,
    floor: DefaultKeyedRateLimiter<IpAddr>,
    store: Store,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("config", &self.config)
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Store {
    Memory(Memory),
    Redis(RedisStore),
}

/// A username and client address to be judged: `None` when the name
/// cannot name an account.
#[derive(Debug, Clone)]
pub struct Attempt {
    key: Option<Key>,
    ip: IpAddr,
}

/// Username (NFKC) and the client address limits count under.
type Key = (String, IpAddr);

impl Attempt {
    /// The attempt of `username` from `ip` (unspecified when unknown).
    pub fn new(username: &str, ip: Option<IpAddr>) -> Self {
        let username = validate::normalize_username(username);
        let ip = limit_key(ip.unwrap_or(IpAddr::V6(Ipv6Addr::UNSPECIFIED)));
        Self {
            key: validate::username(&username)
                .is_ok()
                .then_some((username, ip)),
            ip,
        }
    }
}

/// Why an attempt may not go ahead now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    /// The pair or the username is locked for this long.
    Locked(Duration),
    /// The attempts in flight already take what is left of the allowance.
    Busy,
    /// The table is full of locked or in-flight entries; the soonest lock
    /// ends after this long.
    Full(Duration),
}

impl Held {
    fn into_error(self) -> ApiError {
        let left = match self {
            Self::Locked(left) | Self::Full(left) => left,
            Self::Busy => Duration::from_secs(1),
        };
        ApiError::RateLimited {
            retry_after: (left.as_secs() + u64::from(left.subsec_nanos() > 0)).max(1),
        }
    }
}

/// How a reserved attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Failed,
    Succeeded,
    Released,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Failed => "failed",
            Self::Succeeded => "succeeded",
            Self::Released => "released",
        }
    }
}

/// One attempt's share of the allowance, held while user-service checks
/// the password: settle it with [`Reservation::failed`] or
/// [`Reservation::succeeded`]; dropped unsettled, it is given back.
#[derive(Debug)]
#[must_use = "a reservation is given back when dropped"]
pub struct Reservation {
    throttle: Arc<LoginThrottle>,
    key: Option<Key>,
    id: u64,
}

impl Reservation {
    /// The password was wrong (or the user unknown): the miss counts.
    pub async fn failed(mut self) {
        if let Some(key) = self.key.take() {
            self.throttle.settle(&key, self.id, Outcome::Failed).await;
        }
    }

    /// The login succeeded: the pair's count is cleared.
    pub async fn succeeded(mut self) {
        if let Some(key) = self.key.take() {
            self.throttle
                .settle(&key, self.id, Outcome::Succeeded)
                .await;
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let Some(key) = self.key.take() else {
            return;
        };
        match &self.throttle.store {
            Store::Memory(memory) => memory.settle_at(
                &self.throttle.config,
                &key,
                Outcome::Released,
                Instant::now(),
            ),
            Store::Redis(_) => {
                let (throttle, id) = (self.throttle.clone(), self.id);
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        throttle.settle(&key, id, Outcome::Released).await;
                    });
                }
            }
        }
    }
}

impl LoginThrottle {
    /// An in-process throttle with `config`'s thresholds.
    pub fn new(config: LoginThrottleConfig) -> Self {
        Self::in_memory(config, MAX_TRACKED)
    }

    fn in_memory(config: LoginThrottleConfig, capacity: usize) -> Self {
        Self {
            config,
            floor: floor(config),
            store: Store::Memory(Memory::new(capacity)),
        }
    }

    /// A throttle whose counts live in the Redis `shared` names (in this
    /// process when `None`); `request_timeout` bounds a reservation's life
    /// in Redis. Connects lazily: a Redis that is down at start makes
    /// logins fail closed until it is up, nothing else.
    pub fn build(
        config: LoginThrottleConfig,
        shared: Option<&SharedStoreConfig>,
        request_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let Some(shared) = shared else {
            return Ok(Self::new(config));
        };
        Ok(Self {
            config,
            floor: floor(config),
            store: Store::Redis(RedisStore::connect(shared, request_timeout)?),
        })
    }

    /// Lets `attempt` go ahead, holding its share of the allowance: 429
    /// over the floor rate, while the pair or the username is locked, or
    /// while attempts in flight hold what is left; 503 when the shared
    /// store cannot be reached.
    pub async fn reserve(self: &Arc<Self>, attempt: &Attempt) -> Result<Reservation, ApiError> {
        if let Err(not_until) = self.floor.check_key(&attempt.ip) {
            // The limiter's own clock (see governance::rate_limit).
            let wait = not_until.wait_time_from(self.floor.clock().now());
            tracing::info!("login refused: over EASYNOTE_LOGIN_RATE_PER_SECOND for this address");
            return Err(ApiError::RateLimited {
                retry_after: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
            });
        }
        let Some(key) = &attempt.key else {
            return Ok(Reservation {
                throttle: self.clone(),
                key: None,
                id: 0,
            });
        };
        let id = match &self.store {
            Store::Memory(memory) => {
                memory
                    .reserve_at(&self.config, key, Instant::now())
                    .map_err(Held::into_error)?;
                0
            }
            Store::Redis(redis) => redis.reserve(&self.config, key).await?,
        };
        Ok(Reservation {
            throttle: self.clone(),
            key: Some(key.clone()),
            id,
        })
    }

    async fn settle(&self, key: &Key, id: u64, outcome: Outcome) {
        match &self.store {
            Store::Memory(memory) => memory.settle_at(&self.config, key, outcome, Instant::now()),
            Store::Redis(redis) => redis.settle(&self.config, key, id, outcome).await,
        }
    }

    /// Forgets expired entries and idle floor buckets.
    pub fn prune(&self) {
        self.floor.retain_recent();
        self.floor.shrink_to_fit();
        if let Store::Memory(memory) = &self.store {
            memory.prune(Instant::now());
        }
    }

    /// Entries held in process, pairs and usernames.
    pub fn tracked(&self) -> (usize, usize) {
        match &self.store {
            Store::Memory(memory) => memory.tracked(),
            Store::Redis(_) => (0, 0),
        }
    }
}

fn warn_user_locked(failures: u32, lock: Duration) {
    tracing::warn!(
        failures,
        ?lock,
        "failed logins for one username from many addresses: locking it briefly"
    );
}

fn floor(config: LoginThrottleConfig) -> DefaultKeyedRateLimiter<IpAddr> {
    let per_second = NonZeroU32::new(config.rate_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(config.rate_burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
}
