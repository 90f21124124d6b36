//! The in-process counts, on a clock the tests move.

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
        memory: Memory::new(capacity),
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
        self.memory.tracked()
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
    let read =
        |url: &str| SharedStoreConfig::from_env(&Env::from_pairs([("EASYNOTE_REDIS_URL", url)]));
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
