//! A retry budget: over the last ten seconds, retries (and hedged
//! requests) may be at most `ratio` of the calls made, plus
//! `min_per_second` per second, so that a failing downstream sees at most
//! a bounded extra load instead of a retry storm.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

const SLOTS: usize = 10;
const SLOT: Duration = Duration::from_secs(1);

/// See the module documentation.
#[derive(Debug)]
pub struct RetryBudget {
    epoch: Instant,
    slots: Mutex<[Slot; SLOTS]>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    second: u64,
    calls: u32,
    retries: u32,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl RetryBudget {
    /// An empty budget.
    pub fn new(now: Instant) -> Self {
        Self {
            epoch: now,
            slots: Mutex::new([Slot::default(); SLOTS]),
        }
    }

    /// Counts a call (its first attempt).
    pub fn deposit(&self, now: Instant) {
        self.with_slot(now, |slot, _| slot.calls += 1);
    }

    /// Takes one retry from the budget if it allows one.
    pub fn try_withdraw(&self, ratio: f64, min_per_second: u32, now: Instant) -> bool {
        self.with_slot(now, |slot, totals| {
            let (calls, retries) = totals;
            let allowance = ratio * f64::from(calls) + f64::from(min_per_second) * SLOTS as f64;
            if f64::from(retries) + 1.0 <= allowance {
                slot.retries += 1;
                true
            } else {
                false
            }
        })
    }

    fn with_slot<T>(&self, now: Instant, f: impl FnOnce(&mut Slot, (u32, u32)) -> T) -> T {
        let second = now.saturating_duration_since(self.epoch).as_secs() / SLOT.as_secs();
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let oldest = second.saturating_sub(SLOTS as u64 - 1);
        let totals = slots
            .iter()
            .filter(|s| s.second >= oldest && s.second <= second)
            .fold((0, 0), |(c, r), s| (c + s.calls, r + s.retries));
        let slot = &mut slots[(second % SLOTS as u64) as usize];
        if slot.second != second {
            *slot = Slot {
                second,
                calls: 0,
                retries: 0,
            };
        }
        f(slot, totals)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_the_share_of_calls() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(t0);
        let mut granted = 0;
        for _ in 0..1000 {
            budget.deposit(t0);
            if budget.try_withdraw(0.2, 0, t0) {
                granted += 1;
            }
        }
        assert_eq!(granted, 200, "20% of 1000 calls");
    }

    #[test]
    fn the_floor_allows_retries_with_few_calls() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(t0);
        budget.deposit(t0);
        let granted = (0..500).filter(|_| budget.try_withdraw(0.2, 3, t0)).count();
        assert_eq!(granted, 30, "3 per second over the 10 s window");
    }

    #[test]
    fn the_budget_refills_as_the_window_moves() {
        let t0 = Instant::now();
        let budget = RetryBudget::new(t0);
        for _ in 0..10 {
            budget.deposit(t0);
        }
        assert!(budget.try_withdraw(0.1, 0, t0));
        assert!(!budget.try_withdraw(0.1, 0, t0));
        let later = t0 + Duration::from_secs(11);
        assert!(
            !budget.try_withdraw(0.1, 0, later),
            "the old calls expired too"
        );
        for _ in 0..10 {
            budget.deposit(later);
        }
        assert!(budget.try_withdraw(0.1, 0, later));
    }
}
