//! Failed logins, counted per username so that guessing a password gets
//! slower with every miss, without handing a guesser the power to lock
//! the account's owner out.
//!
//! Two counts, both kept whether or not the account exists (the answer
//! must not tell), keyed by the username in its stored form (NFKC):
//!
//! 1. per username and client IP (the IP governance derives through
//!    `trusted_proxy_hops`): after `EASYNOTE_LOGIN_MAX_FAILURES` misses the
//!    pair is locked for `EASYNOTE_LOGIN_LOCK`, and each further miss after
//!    a lock doubles it, up to [`LOCK_MAX`]. Only that IP is locked out: the
//!    owner logs in from anywhere else. A success clears the pair; a pair
//!    with no miss for [`FORGET_AFTER`] is forgotten.
//! 2. per username from every IP, for guessing spread over many addresses:
//!    `EASYNOTE_LOGIN_MAX_USER_FAILURES` misses within [`USER_WINDOW`]
//!    lock the username for everyone, for one `EASYNOTE_LOGIN_LOCK` only.
//!    One IP, held back by its own pair lock, cannot reach that count:
//!    with the defaults it takes about 5 IPs to lock a username for 30 s.
//!
//! A locked attempt is answered 429 (code 10006) with an integer
//! `Retry-After` at once, before user-service is asked, and is not
//! counted. Usernames that cannot exist (invalid once normalised) are not
//! tracked, so neither table grows by the size of a junk name; each holds
//! at most [`MAX_TRACKED`] entries, pruned like the rate-limit buckets.

use std::{
    collections::HashMap,
    hash::Hash,
    net::IpAddr,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use easynote_shared::{
    config::{ConfigError, Env},
    validate,
};

use crate::error::ApiError;

/// The longest lock of a (username, IP) pair.
pub const LOCK_MAX: Duration = Duration::from_secs(15 * 60);
/// A pair with no failure for this long, and not locked, is forgotten.
pub const FORGET_AFTER: Duration = Duration::from_secs(60 * 60);
/// The window of the per-username count.
pub const USER_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Entries kept per table; past it the least recently failing one goes.
pub const MAX_TRACKED: usize = 10_000;

/// Thresholds of the login throttle (`EASYNOTE_LOGIN_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginThrottleConfig {
    /// `EASYNOTE_LOGIN_MAX_FAILURES` (default 5): failed logins for one
    /// username from one client IP before that pair is locked.
    pub max_failures: u32,
    /// `EASYNOTE_LOGIN_LOCK` (default 30s): the first lock of a pair
    /// (doubling with each further failure, up to 15m), and the lock of a
    /// username over its all-IP count.
    pub lock: Duration,
    /// `EASYNOTE_LOGIN_MAX_USER_FAILURES` (default 50): failed logins for
    /// one username from all IPs within 15 minutes before it is locked.
    pub max_user_failures: u32,
}

impl Default for LoginThrottleConfig {
    fn default() -> Self {
        Self {
            max_failures: 5,
            lock: Duration::from_secs(30),
            max_user_failures: 50,
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
                     below it, one IP could lock a username for everyone"
                ),
            ));
        }
        Ok(Self {
            max_failures,
            lock,
            max_user_failures,
        })
    }
}

/// The failed-login counts; see the module documentation.
#[derive(Debug)]
pub struct LoginThrottle {
    config: LoginThrottleConfig,
    tables: Mutex<Tables>,
}

#[derive(Debug, Default)]
struct Tables {
    pairs: HashMap<(String, IpAddr), Failures>,
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
}

impl Failures {
    fn new(now: Instant) -> Self {
        Self {
            count: 0,
            first: now,
            last: now,
            locked_until: None,
        }
    }

    fn locked_for(&self, now: Instant) -> Option<Duration> {
        self.locked_until
            .and_then(|until| until.checked_duration_since(now))
            .filter(|left| !left.is_zero())
    }
}

/// A username and client IP to be judged: `None` when the name cannot
/// name an account.
#[derive(Debug, Clone)]
pub struct Attempt(Option<(String, IpAddr)>);

impl Attempt {
    /// The attempt of `username` from `ip` (unspecified when unknown).
    pub fn new(username: &str, ip: Option<IpAddr>) -> Self {
        let username = validate::normalize_username(username);
        let ip = ip.unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        Self(
            validate::username(&username)
                .is_ok()
                .then_some((username, ip)),
        )
    }
}

impl LoginThrottle {
    /// An empty throttle with `config`'s thresholds.
    pub fn new(config: LoginThrottleConfig) -> Self {
        Self {
            config,
            tables: Mutex::new(Tables::default()),
        }
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// 429 while the pair or the username is locked.
    pub fn check(&self, attempt: &Attempt) -> Result<(), ApiError> {
        self.check_at(attempt, Instant::now())
    }

    fn check_at(&self, attempt: &Attempt, now: Instant) -> Result<(), ApiError> {
        let Some(key) = &attempt.0 else {
            return Ok(());
        };
        let tables = self.tables();
        let locked = [
            tables.pairs.get(key).and_then(|f| f.locked_for(now)),
            tables.users.get(&key.0).and_then(|f| f.locked_for(now)),
        ];
        match locked.into_iter().flatten().max() {
            Some(left) => Err(ApiError::RateLimited {
                retry_after: left.as_secs() + u64::from(left.subsec_nanos() > 0),
            }),
            None => Ok(()),
        }
    }

    /// Counts a wrong username or password.
    pub fn failed(&self, attempt: &Attempt) {
        self.failed_at(attempt, Instant::now());
    }

    fn failed_at(&self, attempt: &Attempt, now: Instant) {
        let Some(key) = &attempt.0 else {
            return;
        };
        let config = self.config;
        let mut tables = self.tables();

        let pair = entry(&mut tables.pairs, key, now, pair_expired);
        if now.duration_since(pair.last) >= FORGET_AFTER {
            *pair = Failures::new(now);
        }
        pair.count += 1;
        pair.last = now;
        if let Some(beyond) = pair.count.checked_sub(config.max_failures) {
            let lock = config
                .lock
                .saturating_mul(2u32.saturating_pow(beyond.min(31)))
                .min(LOCK_MAX);
            pair.locked_until = Some(now + lock);
        }

        let user = entry(&mut tables.users, &key.0, now, user_expired);
        if now.duration_since(user.first) >= USER_WINDOW {
            *user = Failures::new(now);
        }
        user.count += 1;
        user.last = now;
        if user.count >= config.max_user_failures {
            tracing::warn!(
                failures = user.count,
                lock = ?config.lock,
                "failed logins for one username from many addresses: locking it briefly"
            );
            // A fresh count after the lock: a distributed guesser must
            // reach the threshold again for each short lock.
            *user = Failures::new(now);
            user.locked_until = Some(now + config.lock);
        }
    }

    /// A successful login clears its pair.
    pub fn succeeded(&self, attempt: &Attempt) {
        if let Some(key) = &attempt.0 {
            self.tables().pairs.remove(key);
        }
    }

    /// Forgets expired entries.
    pub fn prune(&self) {
        let now = Instant::now();
        let mut tables = self.tables();
        tables.pairs.retain(|_, f| !pair_expired(f, now));
        tables.users.retain(|_, f| !user_expired(f, now));
        tables.pairs.shrink_to_fit();
        tables.users.shrink_to_fit();
    }

    /// Entries held, pairs and usernames.
    pub fn tracked(&self) -> (usize, usize) {
        let tables = self.tables();
        (tables.pairs.len(), tables.users.len())
    }
}

fn pair_expired(f: &Failures, now: Instant) -> bool {
    f.locked_for(now).is_none() && now.duration_since(f.last) >= FORGET_AFTER
}

fn user_expired(f: &Failures, now: Instant) -> bool {
    f.locked_for(now).is_none() && now.duration_since(f.first) >= USER_WINDOW
}

/// The entry of `key`, making room when the table is full: first by
/// dropping expired entries, then the least recently failing one.
fn entry<'a, K: Hash + Eq + Clone>(
    table: &'a mut HashMap<K, Failures>,
    key: &K,
    now: Instant,
    expired: fn(&Failures, Instant) -> bool,
) -> &'a mut Failures {
    if !table.contains_key(key) && table.len() >= MAX_TRACKED {
        table.retain(|_, f| !expired(f, now));
        if table.len() >= MAX_TRACKED
            && let Some(stalest) = table
                .iter()
                .min_by_key(|(_, f)| f.last)
                .map(|(k, _)| k.clone())
        {
            table.remove(&stalest);
        }
    }
    table
        .entry(key.clone())
        .or_insert_with(|| Failures::new(now))
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    fn throttle(max_failures: u32, max_user_failures: u32) -> LoginThrottle {
        LoginThrottle::new(LoginThrottleConfig {
            max_failures,
            lock: Duration::from_secs(10),
            max_user_failures,
        })
    }

    fn retry_after(result: Result<(), ApiError>) -> Option<u64> {
        match result {
            Ok(()) => None,
            Err(ApiError::RateLimited { retry_after }) => Some(retry_after),
            Err(other) => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn locks_grow_with_each_failure_past_the_allowance_up_to_the_cap() {
        let throttle = throttle(3, 1000);
        let alice = Attempt::new("alice", Some(A));
        let mut now = Instant::now();
        for _ in 0..2 {
            throttle.failed_at(&alice, now);
            assert_eq!(retry_after(throttle.check_at(&alice, now)), None);
        }
        let mut expected = vec![10, 20, 40, 80, 160, 320, 640, 900, 900];
        expected.reverse();
        while let Some(lock) = expected.pop() {
            throttle.failed_at(&alice, now);
            assert_eq!(
                retry_after(throttle.check_at(&alice, now)),
                Some(lock),
                "lock {lock}s"
            );
            now += Duration::from_secs(lock);
            assert_eq!(retry_after(throttle.check_at(&alice, now)), None);
        }
    }

    #[test]
    fn a_success_clears_only_its_own_pair_and_quiet_pairs_are_forgotten() {
        let throttle = throttle(2, 1000);
        let (from_a, from_b) = (Attempt::new("bob", Some(A)), Attempt::new("bob", Some(B)));
        let now = Instant::now();
        for attempt in [&from_a, &from_a, &from_b, &from_b] {
            throttle.failed_at(attempt, now);
        }
        throttle.succeeded(&from_b);
        assert!(throttle.check_at(&from_b, now).is_ok());
        assert!(throttle.check_at(&from_a, now).is_err(), "A stays locked");

        let later = now + FORGET_AFTER;
        throttle.failed_at(&from_a, later);
        assert!(
            throttle.check_at(&from_a, later).is_ok(),
            "an hour later the count starts again"
        );
    }

    #[test]
    fn many_addresses_lock_a_username_briefly_for_everyone() {
        let throttle = throttle(2, 6);
        let now = Instant::now();
        for ip in 1..=3 {
            let attempt = Attempt::new("carol", Some(IpAddr::from([198, 51, 100, ip])));
            throttle.failed_at(&attempt, now);
            throttle.failed_at(&attempt, now);
        }
        let owner = Attempt::new("carol", Some(A));
        assert_eq!(retry_after(throttle.check_at(&owner, now)), Some(10));
        assert!(
            throttle
                .check_at(&owner, now + Duration::from_secs(10))
                .is_ok()
        );
        assert!(
            throttle
                .check_at(&Attempt::new("dave", Some(A)), now)
                .is_ok(),
            "other usernames are not locked"
        );
    }

    #[test]
    fn look_alike_names_share_a_count_and_impossible_names_are_not_kept() {
        let throttle = throttle(1, 1000);
        let now = Instant::now();
        throttle.failed_at(&Attempt::new("ｅｖｅ", Some(A)), now);
        assert!(
            throttle
                .check_at(&Attempt::new("eve", Some(A)), now)
                .is_err()
        );
        for junk in ["", " padded ", &"x".repeat(10_000)] {
            throttle.failed_at(&Attempt::new(junk, Some(A)), now);
        }
        assert_eq!(throttle.tracked(), (1, 1));
    }

    #[test]
    fn tables_stay_bounded() {
        let throttle = throttle(5, 1000);
        let now = Instant::now();
        for n in 0..MAX_TRACKED + 10 {
            throttle.failed_at(&Attempt::new(&format!("user{n}"), Some(A)), now);
        }
        assert_eq!(throttle.tracked(), (MAX_TRACKED, MAX_TRACKED));
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
        ];
        for (var, value) in cases {
            let err = read(&[(var, value)]).expect_err(value).to_string();
            assert!(err.starts_with(var), "{var}={value}: {err}");
        }
    }
}
