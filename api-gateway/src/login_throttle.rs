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
    collections::HashMap,
    hash::Hash,
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use easynote_shared::{
    config::{ConfigError, Env},
    validate,
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock as _};
use secrecy::{ExposeSecret as _, SecretString};

use crate::{client_addr::limit_key, error::ApiError};

/// The longest lock of a (username, address) pair.
pub const LOCK_MAX: Duration = Duration::from_secs(15 * 60);
/// A pair with no failure for this long, and not locked, is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// The window of the per-username count.
pub const USER_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Entries kept per in-process table.
pub const MAX_TRACKED: usize = 10_000;
/// The longest wait for Redis before a login fails closed.
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

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
            store: Store::Memory(Memory {
                tables: Mutex::new(Tables::default()),
                capacity,
            }),
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
        // The URL may hold a password: the error says what, not where.
        let client = redis::Client::open(shared.url.expose_secret())
            .map_err(|_| anyhow::anyhow!("EASYNOTE_REDIS_URL is not a Redis URL"))?;
        let manager_config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(REDIS_TIMEOUT))
            .set_response_timeout(Some(REDIS_TIMEOUT))
            .set_number_of_retries(1);
        let manager = redis::aio::ConnectionManager::new_lazy_with_config(client, manager_config)
            .map_err(|err| {
            anyhow::anyhow!("setting up the Redis connection: {:?}", err.kind())
        })?;
        Ok(Self {
            config,
            floor: floor(config),
            store: Store::Redis(RedisStore {
                manager,
                prefix: shared.key_prefix.clone(),
                reservation_ttl: request_timeout.max(Duration::from_secs(1)),
                next_id: AtomicU64::new(random_u64()),
                reserve: redis::Script::new(RESERVE_SCRIPT),
                settle: redis::Script::new(SETTLE_SCRIPT),
            }),
        })
    }

    /// Lets `attempt` go ahead, holding its share of the allowance: 429
    /// over the floor rate, while the pair or the username is locked, or
    /// while attempts in flight hold what is left; 503 when the shared
    /// store cannot be reached.
    pub async fn reserve(self: &Arc<Self>, attempt: &Attempt) -> Result<Reservation, ApiError> {
        if let Err(not_until) = self.floor.check_key(&attempt.ip) {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
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
            Store::Memory(memory) => {
                let tables = memory.tables();
                (tables.pairs.len(), tables.users.len())
            }
            Store::Redis(_) => (0, 0),
        }
    }
}

fn floor(config: LoginThrottleConfig) -> DefaultKeyedRateLimiter<IpAddr> {
    let per_second = NonZeroU32::new(config.rate_per_second).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(config.rate_burst).unwrap_or(NonZeroU32::MIN);
    RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst))
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

/// The in-process tables.
#[derive(Debug)]
struct Memory {
    tables: Mutex<Tables>,
    capacity: usize,
}

#[derive(Debug, Default)]
struct Tables {
    pairs: HashMap<Key, Failures>,
    users: HashMap<String, Failures>,
}

/// Failures of one key.
#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    /// The first failure of the count (the per-username window).
    first: Instant,
    last: Instant,
    locked_until: Option<Instant>,
    /// Reservations not yet settled.
    pending: u32,
}

impl Failures {
    fn new(now: Instant) -> Self {
        Self {
            count: 0,
            first: now,
            last: now,
            locked_until: None,
            pending: 0,
        }
    }

    fn locked_for(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }
}

/// Attempts that may be in flight with `failures` of `max` used: what is
/// left, or one at a time once a lock has run out.
fn allowance(max: u32, failures: u32) -> u32 {
    max.saturating_sub(failures).max(1)
}

fn pair_failures(f: &Failures, now: Instant) -> u32 {
    if now.duration_since(f.last) >= FORGET_AFTER {
        0
    } else {
        f.count
    }
}

fn user_failures(f: &Failures, now: Instant) -> u32 {
    if now.duration_since(f.first) >= USER_WINDOW {
        0
    } else {
        f.count
    }
}

fn pair_expired(f: &Failures, now: Instant) -> bool {
    f.pending == 0 && f.locked_for(now).is_none() && now.duration_since(f.last) >= FORGET_AFTER
}

fn user_expired(f: &Failures, now: Instant) -> bool {
    f.pending == 0 && f.locked_for(now).is_none() && now.duration_since(f.first) >= USER_WINDOW
}

impl Memory {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reserve_at(
        &self,
        config: &LoginThrottleConfig,
        key: &Key,
        now: Instant,
    ) -> Result<(), Held> {
        let mut tables = self.tables();
        let pair = tables.pairs.get(key).copied();
        let user = tables.users.get(&key.0).copied();
        let locked = [
            pair.and_then(|f| f.locked_for(now)),
            user.and_then(|f| f.locked_for(now)),
        ];
        if let Some(left) = locked.into_iter().flatten().max() {
            return Err(Held::Locked(left));
        }
        let pair_busy = pair
            .is_some_and(|f| f.pending >= allowance(config.max_failures, pair_failures(&f, now)));
        let user_busy = user.is_some_and(|f| {
            f.pending >= allowance(config.max_user_failures, user_failures(&f, now))
        });
        if pair_busy || user_busy {
            return Err(Held::Busy);
        }
        make_room(&mut tables.pairs, key, now, pair_expired, self.capacity)?;
        make_room(&mut tables.users, &key.0, now, user_expired, self.capacity)?;
        tables
            .pairs
            .entry(key.clone())
            .or_insert_with(|| Failures::new(now))
            .pending += 1;
        tables
            .users
            .entry(key.0.clone())
            .or_insert_with(|| Failures::new(now))
            .pending += 1;
        Ok(())
    }

    fn settle_at(&self, config: &LoginThrottleConfig, key: &Key, outcome: Outcome, now: Instant) {
        let mut tables = self.tables();
        let tables = &mut *tables;
        if let Some(user) = tables.users.get_mut(&key.0) {
            user.pending = user.pending.saturating_sub(1);
        }
        match outcome {
            Outcome::Released => {
                if let Some(pair) = tables.pairs.get_mut(key) {
                    pair.pending = pair.pending.saturating_sub(1);
                }
            }
            Outcome::Succeeded => {
                if let Some(pair) = tables.pairs.get_mut(key) {
                    let pending = pair.pending.saturating_sub(1);
                    if pending == 0 {
                        tables.pairs.remove(key);
                    } else {
                        // Attempts of the pair still in flight keep an
                        // entry to settle against.
                        *pair = Failures::new(now);
                        pair.pending = pending;
                    }
                }
            }
            Outcome::Failed => {
                let pair = tables
                    .pairs
                    .entry(key.clone())
                    .or_insert_with(|| Failures::new(now));
                pair.pending = pair.pending.saturating_sub(1);
                pair.count = pair_failures(pair, now) + 1;
                pair.last = now;
                if let Some(beyond) = pair.count.checked_sub(config.max_failures) {
                    let lock = config
                        .lock
                        .saturating_mul(2u32.saturating_pow(beyond.min(31)))
                        .min(LOCK_MAX);
                    pair.locked_until = Some(now + lock);
                }

                let user = tables
                    .users
                    .entry(key.0.clone())
                    .or_insert_with(|| Failures::new(now));
                if now.duration_since(user.first) >= USER_WINDOW {
                    user.count = 0;
                    user.first = now;
                }
                user.count += 1;
                user.last = now;
                if user.count >= config.max_user_failures {
                    warn_user_locked(user.count, config.lock);
                    // A fresh count after the lock: a distributed guesser
                    // must reach the threshold again for each short lock.
                    user.count = 0;
                    user.first = now;
                    user.locked_until = Some(now + config.lock);
                }
            }
        }
    }

    fn prune(&self, now: Instant) {
        let mut tables = self.tables();
        tables.pairs.retain(|_, f| !pair_expired(f, now));
        tables.users.retain(|_, f| !user_expired(f, now));
        tables.pairs.shrink_to_fit();
        tables.users.shrink_to_fit();
    }
}

fn warn_user_locked(failures: u32, lock: Duration) {
    tracing::warn!(
        failures,
        ?lock,
        "failed logins for one username from many addresses: locking it briefly"
    );
}

/// Makes room for `key` in a full table: expired entries go first, then
/// the least recently failing one that is neither locked nor in flight.
/// When every entry is locked or in flight, nothing goes: [`Held::Full`].
fn make_room<K: Hash + Eq + Clone>(
    table: &mut HashMap<K, Failures>,
    key: &K,
    now: Instant,
    expired: fn(&Failures, Instant) -> bool,
    capacity: usize,
) -> Result<(), Held> {
    if table.contains_key(key) || table.len() < capacity {
        return Ok(());
    }
    table.retain(|_, f| !expired(f, now));
    if table.len() < capacity {
        return Ok(());
    }
    let evictable = table
        .iter()
        .filter(|(_, f)| f.pending == 0 && f.locked_for(now).is_none())
        .min_by_key(|(_, f)| f.last)
        .map(|(k, _)| k.clone());
    if let Some(stalest) = evictable {
        table.remove(&stalest);
        return Ok(());
    }
    let soonest = table
        .values()
        .filter_map(|f| f.locked_for(now))
        .min()
        .unwrap_or(Duration::from_secs(1));
    tracing::warn!(
        capacity,
        "the failed-login table is full of locked entries: new ones are refused until a lock ends"
    );
    Err(Held::Full(soonest))
}

/// The counts in Redis; see the module documentation.
struct RedisStore {
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

    async fn reserve(&self, config: &LoginThrottleConfig, key: &Key) -> Result<u64, ApiError> {
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

    async fn settle(&self, config: &LoginThrottleConfig, key: &Key, id: u64, outcome: Outcome) {
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

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn config(max_failures: u32, max_user_failures: u32) -> LoginThrottleConfig {
        LoginThrottleConfig {
            max_failures,
            lock: Duration::from_secs(10),
            max_user_failures,
            ..LoginThrottleConfig::default()
        }
    }

    /// The in-process store of a throttle, with its thresholds.
    struct Tested {
        config: LoginThrottleConfig,
        memory: Memory,
    }

    fn throttle(max_failures: u32, max_user_failures: u32) -> Tested {
        with_capacity(max_failures, max_user_failures, MAX_TRACKED)
    }

    fn with_capacity(max_failures: u32, max_user_failures: u32, capacity: usize) -> Tested {
        Tested {
            config: config(max_failures, max_user_failures),
            memory: Memory {
                tables: Mutex::new(Tables::default()),
                capacity,
            },
        }
    }

    impl Tested {
        fn key(attempt: &Attempt) -> &Key {
            attempt.key.as_ref().expect("a valid username")
        }

        /// One wrong password: reserved, then counted.
        fn miss(&self, attempt: &Attempt, now: Instant) {
            let Some(key) = &attempt.key else {
                return;
            };
            self.memory
                .reserve_at(&self.config, key, now)
                .expect("the attempt may go ahead");
            self.memory
                .settle_at(&self.config, key, Outcome::Failed, now);
        }

        fn success(&self, attempt: &Attempt, now: Instant) {
            let key = Self::key(attempt);
            self.memory
                .reserve_at(&self.config, key, now)
                .expect("may go ahead");
            self.memory
                .settle_at(&self.config, key, Outcome::Succeeded, now);
        }

        /// `None` when an attempt may go ahead now, else its `Retry-After`.
        fn retry_after(&self, attempt: &Attempt, now: Instant) -> Option<u64> {
            let key = Self::key(attempt);
            match self.memory.reserve_at(&self.config, key, now) {
                Ok(()) => {
                    self.memory
                        .settle_at(&self.config, key, Outcome::Released, now);
                    None
                }
                Err(held) => match held.into_error() {
                    ApiError::RateLimited { retry_after } => Some(retry_after),
                    other => panic!("unexpected {other:?}"),
                },
            }
        }

        fn tracked(&self) -> (usize, usize) {
            let tables = self.memory.tables();
            (tables.pairs.len(), tables.users.len())
        }
    }

    #[test]
    fn locks_grow_with_each_failure_past_the_allowance_up_to_the_cap() {
        let throttle = throttle(3, 1000);
        let alice = Attempt::new("alice", Some(A));
        let mut now = Instant::now();
        for _ in 0..2 {
            throttle.miss(&alice, now);
            assert_eq!(throttle.retry_after(&alice, now), None);
        }
        let mut expected = vec![10, 20, 40, 80, 160, 320, 640, 900, 900];
        expected.reverse();
        while let Some(lock) = expected.pop() {
            throttle.miss(&alice, now);
            assert_eq!(
                throttle.retry_after(&alice, now),
                Some(lock),
                "lock {lock}s"
            );
            now += Duration::from_secs(lock);
            assert_eq!(throttle.retry_after(&alice, now), None);
        }
    }

    #[test]
    fn a_success_clears_only_its_own_pair_and_quiet_pairs_are_forgotten() {
        let throttle = throttle(2, 1000);
        let (from_a, from_b) = (Attempt::new("bob", Some(A)), Attempt::new("bob", Some(B)));
        let now = Instant::now();
        throttle.miss(&from_a, now);
        throttle.miss(&from_a, now);
        throttle.miss(&from_b, now);
        throttle.success(&from_b, now);
        assert!(throttle.retry_after(&from_b, now).is_none());
        assert!(
            throttle.retry_after(&from_a, now).is_some(),
            "A stays locked"
        );

        let later = now + FORGET_AFTER;
        throttle.miss(&from_a, later);
        assert!(
            throttle.retry_after(&from_a, later).is_none(),
            "an hour later the count starts again"
        );
    }

    #[test]
    fn many_addresses_lock_a_username_briefly_for_everyone() {
        let throttle = throttle(2, 6);
        let now = Instant::now();
        for ip in 1..=3 {
            let attempt = Attempt::new("carol", Some(IpAddr::from([198, 51, 100, ip])));
            throttle.miss(&attempt, now);
            throttle.miss(&attempt, now);
        }
        let owner = Attempt::new("carol", Some(A));
        assert_eq!(throttle.retry_after(&owner, now), Some(10));
        assert!(
            throttle
                .retry_after(&owner, now + Duration::from_secs(10))
                .is_none()
        );
        assert!(
            throttle
                .retry_after(&Attempt::new("dave", Some(A)), now)
                .is_none(),
            "other usernames are not locked"
        );
    }

    #[test]
    fn attempts_in_flight_cannot_pass_the_allowance() {
        let throttle = throttle(3, 1000);
        let eve = Attempt::new("eve", Some(A));
        let key = Tested::key(&eve);
        let (config, memory) = (&throttle.config, &throttle.memory);
        let now = Instant::now();
        throttle.miss(&eve, now);
        // Two misses left: two attempts at once, not a third.
        memory.reserve_at(config, key, now).expect("the first");
        memory.reserve_at(config, key, now).expect("the second");
        assert_eq!(memory.reserve_at(config, key, now), Err(Held::Busy));
        // One is answered (not a miss): its place is free again.
        memory.settle_at(config, key, Outcome::Released, now);
        memory.reserve_at(config, key, now).expect("the third, now");
        memory.settle_at(config, key, Outcome::Failed, now);
        memory.settle_at(config, key, Outcome::Failed, now);
        assert!(
            matches!(memory.reserve_at(config, key, now), Err(Held::Locked(_))),
            "three misses: locked"
        );
    }

    #[test]
    fn ipv6_clients_share_a_count_per_slash_64() {
        let throttle = throttle(2, 1000);
        let now = Instant::now();
        let first: IpAddr = "2001:db8:0:1::1".parse().expect("ip");
        let same_64: IpAddr = "2001:db8:0:1:ffff:1:2:3".parse().expect("ip");
        let other_64: IpAddr = "2001:db8:0:2::1".parse().expect("ip");
        throttle.miss(&Attempt::new("frank", Some(first)), now);
        throttle.miss(&Attempt::new("frank", Some(same_64)), now);
        assert!(
            throttle
                .retry_after(&Attempt::new("frank", Some(first)), now)
                .is_some()
        );
        assert!(
            throttle
                .retry_after(&Attempt::new("frank", Some(other_64)), now)
                .is_none()
        );
    }

    #[test]
    fn look_alike_names_share_a_count_and_impossible_names_are_not_kept() {
        let throttle = throttle(1, 1000);
        let now = Instant::now();
        throttle.miss(&Attempt::new("ｅｖｅ", Some(A)), now);
        assert!(
            throttle
                .retry_after(&Attempt::new("eve", Some(A)), now)
                .is_some()
        );
        for junk in ["", " padded ", &"x".repeat(10_000)] {
            throttle.miss(&Attempt::new(junk, Some(A)), now);
        }
        assert_eq!(throttle.tracked(), (1, 1));
    }

    #[test]
    fn tables_stay_bounded() {
        let throttle = throttle(5, 1000);
        let now = Instant::now();
        for n in 0..MAX_TRACKED + 10 {
            throttle.miss(&Attempt::new(&format!("user{n}"), Some(A)), now);
        }
        assert_eq!(throttle.tracked(), (MAX_TRACKED, MAX_TRACKED));
    }

    #[test]
    fn a_full_table_keeps_its_locked_entries_and_refuses_new_ones_until_a_lock_ends() {
        let throttle = with_capacity(1, 1000, 3);
        let now = Instant::now();
        let locked: Vec<_> = (1..=3)
            .map(|n| Attempt::new(&format!("locked{n}"), Some(A)))
            .collect();
        for attempt in &locked {
            throttle.miss(attempt, now);
        }
        let newcomer = Attempt::new("newcomer", Some(A));
        assert_eq!(
            throttle.retry_after(&newcomer, now),
            Some(10),
            "refused until the soonest lock ends"
        );
        for attempt in &locked {
            assert_eq!(throttle.retry_after(attempt, now), Some(10), "still locked");
        }
        let after = now + Duration::from_secs(10);
        assert_eq!(
            throttle.retry_after(&newcomer, after),
            None,
            "an unlocked entry makes room"
        );

        // With one entry unlocked, that one goes and the locked stay.
        let throttle = with_capacity(2, 1000, 3);
        for attempt in &locked[..2] {
            throttle.miss(attempt, now);
            throttle.miss(attempt, now);
        }
        throttle.miss(&locked[2], now);
        throttle.miss(&newcomer, now);
        for attempt in &locked[..2] {
            assert!(throttle.retry_after(attempt, now).is_some(), "kept locked");
        }
        assert_eq!(throttle.tracked().0, 3);
    }

    #[test]
    fn thresholds_are_checked() {
        let read = |pairs: &[(&str, &str)]| {
            LoginThrottleConfig::from_env(&Env::from_pairs(pairs.iter().copied()))
        };
        assert_eq!(read(&[]).expect("defaults"), LoginThrottleConfig::default());
        let cases = [
            ("EASYNOTE_LOGIN_MAX_FAILURES", "0"),
            ("EASYNOTE_LOGIN_LOCK", "0s"),
            ("EASYNOTE_LOGIN_LOCK", "1h"),
            ("EASYNOTE_LOGIN_MAX_USER_FAILURES", "4"),
            ("EASYNOTE_LOGIN_RATE_PER_SECOND", "0"),
            ("EASYNOTE_LOGIN_RATE_BURST", "0"),
        ];
        for (var, value) in cases {
            let err = read(&[(var, value)]).expect_err(value).to_string();
            assert!(err.starts_with(var), "{var}={value}: {err}");
        }
    }

    #[test]
    fn a_redis_url_is_checked_and_never_echoed() {
        let read = |url: &str| {
            SharedStoreConfig::from_env(&Env::from_pairs([("EASYNOTE_REDIS_URL", url)]))
        };
        let err = read("http://user:hunter2@example")
            .expect_err("not redis")
            .to_string();
        assert!(err.starts_with("EASYNOTE_REDIS_URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let shared = read("redis://127.0.0.1:6379").expect("valid").expect("set");
        assert_eq!(shared.key_prefix, "easy-note:login:");
        assert!(
            SharedStoreConfig::from_env(&Env::default())
                .expect("unset")
                .is_none()
        );
    }
}
