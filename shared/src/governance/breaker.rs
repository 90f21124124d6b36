//! A circuit breaker per (service, method) whose thresholds may change on
//! every call: they are passed in, not stored, so a new rules document
//! takes effect on the next call.
//!
//! Closed: calls go through and their outcomes fill a sliding window of
//! ten buckets. Once the window holds at least `min_requests` calls and
//! `error_rate` of them failed, or `slow_rate` of them were slow (took
//! `slow_ms` or longer, when the rules set it), it opens. Open: calls fail
//! locally until `open` has passed. Half-open: `half_open_requests` probes
//! go through; all succeed in time → closed (with an empty window), any
//! fails or is slow → open again.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use super::rules::BreakerPolicy;

const BUCKETS: usize = 10;

/// The breaker's state, as metrics show it (0, 1, 2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls go through.
    Closed = 0,
    /// Calls fail locally.
    Open = 1,
    /// Probes go through.
    HalfOpen = 2,
}

impl BreakerState {
    /// `closed`, `open`, `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// A call let through: give it back to [`Breaker::record`].
#[derive(Debug, Clone, Copy)]
#[must_use]
pub struct Permit {
    probe: bool,
}

/// How a call let through ended, as the breaker counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// It failed in a way that counts (see the client's outcome rules).
    pub failed: bool,
    /// It took `slow_ms` or longer.
    pub slow: bool,
}

#[cfg(test)]
impl Verdict {
    /// A call that failed (or not) in time.
    pub fn failed(failed: bool) -> Self {
        Self {
            failed,
            slow: false,
        }
    }
}

/// See the module documentation.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    mode: Mode,
    window: Duration,
    epoch: Instant,
    buckets: [Bucket; BUCKETS],
}

#[derive(Debug, Clone, Copy)]
enum Mode {
    Closed,
    Open { until: Instant },
    HalfOpen { issued: u32, succeeded: u32 },
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    index: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

impl Default for Breaker {
    fn default() -> Self {
        Self::new(Instant::now())
    }
}

impl Breaker {
    /// A closed breaker.
    pub fn new(now: Instant) -> Self {
        Self {
            state: Mutex::new(State {
                mode: Mode::Closed,
                window: Duration::ZERO,
                epoch: now,
                buckets: [Bucket::default(); BUCKETS],
            }),
        }
    }

    /// The state now (an open breaker whose time is up reads half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.lock().mode {
            Mode::Closed => BreakerState::Closed,
            Mode::Open { until } if now < until => BreakerState::Open,
            Mode::Open { .. } | Mode::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// Lets a call through, or refuses it while open. Returns the
    /// transition, if this call caused one.
    pub fn acquire(
        &self,
        policy: &BreakerPolicy,
        now: Instant,
    ) -> (Option<Permit>, Option<BreakerState>) {
        let mut state = self.lock();
        match state.mode {
            Mode::Closed => (Some(Permit { probe: false }), None),
            Mode::Open { until } if now < until => (None, None),
            Mode::Open { .. } => {
                state.mode = Mode::HalfOpen {
                    issued: 1,
                    succeeded: 0,
                };
                (Some(Permit { probe: true }), Some(BreakerState::HalfOpen))
            }
            Mode::HalfOpen { issued, succeeded } if issued < policy.half_open_requests => {
                state.mode = Mode::HalfOpen {
                    issued: issued + 1,
                    succeeded,
                };
                (Some(Permit { probe: true }), None)
            }
            Mode::HalfOpen { .. } => (None, None),
        }
    }

    /// Records the outcome of a call let through; returns the transition
    /// it caused, if any.
    pub fn record(
        &self,
        permit: Permit,
        verdict: Verdict,
        policy: &BreakerPolicy,
        now: Instant,
    ) -> Option<BreakerState> {
        let mut state = self.lock();
        let slow = verdict.slow && policy.slow_call.is_some();
        match state.mode {
            Mode::Closed if !permit.probe => {
                let window = state.add(now, policy.window, verdict.failed, slow);
                let calls = f64::from(window.calls);
                if window.calls >= policy.min_requests
                    && (f64::from(window.failures) >= policy.error_rate * calls
                        || (policy.slow_call.is_some()
                            && f64::from(window.slow) >= policy.slow_rate * calls))
                {
                    state.mode = Mode::Open {
                        until: now + policy.open,
                    };
                    state.clear();
                    return Some(BreakerState::Open);
                }
                None
            }
            Mode::HalfOpen { issued, succeeded } if permit.probe => {
                if verdict.failed || slow {
                    state.mode = Mode::Open {
                        until: now + policy.open,
                    };
                    return Some(BreakerState::Open);
                }
                let succeeded = succeeded + 1;
                if succeeded >= policy.half_open_requests {
                    state.mode = Mode::Closed;
                    state.clear();
                    return Some(BreakerState::Closed);
                }
                state.mode = Mode::HalfOpen { issued, succeeded };
                None
            }
            // Outcomes of calls let through before the state changed.
            _ => None,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl State {
    /// Adds one outcome and returns the window's totals.
    fn add(&mut self, now: Instant, window: Duration, failed: bool, slow: bool) -> Bucket {
        if window != self.window {
            self.window = window;
            self.clear();
        }
        let bucket_len = (window.as_nanos() / BUCKETS as u128).max(1);
        let index =
            u64::try_from(now.saturating_duration_since(self.epoch).as_nanos() / bucket_len)
                .unwrap_or(u64::MAX);
        let slot = &mut self.buckets[(index % BUCKETS as u64) as usize];
        if slot.index != index {
            *slot = Bucket {
                index,
                ..Bucket::default()
            };
        }
        slot.calls += 1;
        slot.failures += u32::from(failed);
        slot.slow += u32::from(slow);
        let oldest = index.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| b.index >= oldest && b.index <= index && b.calls > 0)
            .fold(Bucket::default(), |sum, b| Bucket {
                index,
                calls: sum.calls + b.calls,
                failures: sum.failures + b.failures,
                slow: sum.slow + b.slow,
            })
    }

    fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            error_rate: 0.5,
            min_requests: 4,
            window: Duration::from_secs(10),
            open: Duration::from_secs(5),
            half_open_requests: 2,
            slow_call: None,
            slow_rate: 0.5,
            shadow: false,
        }
    }

    fn call(b: &Breaker, p: &BreakerPolicy, now: Instant, failed: bool) -> Option<BreakerState> {
        let (permit, _) = b.acquire(p, now);
        b.record(
            permit.expect("let through"),
            Verdict::failed(failed),
            p,
            now,
        )
    }

    fn slow_call(b: &Breaker, p: &BreakerPolicy, now: Instant, slow: bool) -> Option<BreakerState> {
        let (permit, _) = b.acquire(p, now);
        let verdict = Verdict {
            failed: false,
            slow,
        };
        b.record(permit.expect("let through"), verdict, p, now)
    }

    #[test]
    fn opens_at_the_error_rate_once_min_requests_is_reached() {
        let t0 = Instant::now();
        let p = policy();
        let b = Breaker::new(t0);
        assert_eq!(call(&b, &p, t0, true), None);
        assert_eq!(call(&b, &p, t0, true), None);
        assert_eq!(call(&b, &p, t0, true), None, "3 calls < min_requests");
        assert_eq!(call(&b, &p, t0, false), Some(BreakerState::Open));
        assert_eq!(b.state(t0), BreakerState::Open);
        assert!(b.acquire(&p, t0 + Duration::from_secs(4)).0.is_none());
    }

    #[test]
    fn a_low_error_rate_never_opens_it() {
        let t0 = Instant::now();
        let p = policy();
        let b = Breaker::new(t0);
        for i in 0..100 {
            assert_eq!(call(&b, &p, t0, i % 3 == 2), None);
        }
        assert_eq!(b.state(t0), BreakerState::Closed);
    }

    #[test]
    fn half_open_probes_close_it_or_open_it_again() {
        let t0 = Instant::now();
        let p = policy();
        let b = Breaker::new(t0);
        for _ in 0..4 {
            call(&b, &p, t0, true);
        }
        let t1 = t0 + p.open;
        assert_eq!(b.state(t1), BreakerState::HalfOpen);
        let (first, change) = b.acquire(&p, t1);
        assert_eq!(change, Some(BreakerState::HalfOpen));
        let (second, _) = b.acquire(&p, t1);
        assert!(b.acquire(&p, t1).0.is_none(), "only two probes");
        assert_eq!(
            b.record(first.unwrap(), Verdict::failed(false), &p, t1),
            None
        );
        assert_eq!(
            b.record(second.unwrap(), Verdict::failed(false), &p, t1),
            Some(BreakerState::Closed)
        );
        // Failing again: a failed probe reopens at once.
        for _ in 0..4 {
            call(&b, &p, t1, true);
        }
        let t2 = t1 + p.open;
        let (probe, _) = b.acquire(&p, t2);
        assert_eq!(
            b.record(probe.unwrap(), Verdict::failed(true), &p, t2),
            Some(BreakerState::Open)
        );
        assert!(b.acquire(&p, t2).0.is_none());
    }

    #[test]
    fn old_outcomes_leave_the_window() {
        let t0 = Instant::now();
        let p = policy();
        let b = Breaker::new(t0);
        for _ in 0..3 {
            call(&b, &p, t0, true);
        }
        let later = t0 + Duration::from_secs(11);
        assert_eq!(call(&b, &p, later, true), None, "the old failures expired");
        assert_eq!(b.state(later), BreakerState::Closed);
    }

    #[test]
    fn thresholds_change_live() {
        let t0 = Instant::now();
        let mut p = policy();
        let b = Breaker::new(t0);
        p.min_requests = 100;
        for _ in 0..10 {
            assert_eq!(call(&b, &p, t0, true), None);
        }
        p.min_requests = 2;
        assert_eq!(call(&b, &p, t0, true), Some(BreakerState::Open));
    }

    #[test]
    fn slow_calls_open_it_only_when_the_rules_name_a_slow_threshold() {
        let t0 = Instant::now();
        let mut p = policy();
        let b = Breaker::new(t0);
        for _ in 0..10 {
            assert_eq!(slow_call(&b, &p, t0, true), None, "no slow_ms: not counted");
        }
        p.slow_call = Some(Duration::from_millis(100));
        p.slow_rate = 0.75;
        let b = Breaker::new(t0);
        for slow in [true, true, false, false, true, true, true] {
            // 2 of 4, 3 of 5, 4 of 6, 5 of 7: under 75 %.
            assert_eq!(slow_call(&b, &p, t0, slow), None);
        }
        assert_eq!(
            slow_call(&b, &p, t0, true),
            Some(BreakerState::Open),
            "6 of 8 slow"
        );
        // Half-open: a probe that answers, but slowly, opens it again.
        let t1 = t0 + p.open;
        let (probe, _) = b.acquire(&p, t1);
        let slow = Verdict {
            failed: false,
            slow: true,
        };
        assert_eq!(
            b.record(probe.expect("a probe"), slow, &p, t1),
            Some(BreakerState::Open)
        );
    }
}
