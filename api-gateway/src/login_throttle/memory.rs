//! The counts in this process: two bounded tables (see the parent module's
//! documentation).

use std::{
    collections::HashMap,
    hash::Hash,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use super::{
    FORGET_AFTER, Held, Key, LOCK_MAX, LoginThrottleConfig, Outcome, USER_WINDOW, warn_user_locked,
};

/// The in-process tables.
#[derive(Debug)]
pub(super) struct Memory {
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
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            tables: Mutex::new(Tables::default()),
            capacity,
        }
    }

    /// Entries held, pairs and usernames.
    pub(super) fn tracked(&self) -> (usize, usize) {
        let tables = self.tables();
        (tables.pairs.len(), tables.users.len())
    }

    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn reserve_at(
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

    pub(super) fn settle_at(
        &self,
        config: &LoginThrottleConfig,
        key: &Key,
        outcome: Outcome,
        now: Instant,
    ) {
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

    pub(super) fn prune(&self, now: Instant) {
        let mut tables = self.tables();
        tables.pairs.retain(|_, f| !pair_expired(f, now));
        tables.users.retain(|_, f| !user_expired(f, now));
        tables.pairs.shrink_to_fit();
        tables.users.shrink_to_fit();
    }
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
