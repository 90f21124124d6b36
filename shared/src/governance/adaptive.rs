//! Adaptive concurrency: a limit on calls in flight that follows measured
//! latency instead of a hand-tuned number, in the style of Netflix's
//! concurrency-limits (Gradient2) and Envoy's adaptive concurrency filter.
//!
//! Every finished call reports its time. The no-load time is measured, as
//! Envoy does, by holding the limit at `min_limit` for [`PROBE_CALLS`]
//! calls, at the start and every [`PROBE_EVERY`]: what calls take then is
//! what they take unqueued, even when the service starts under overload
//! (between probes it stays as measured: letting it drift towards what
//! loaded windows take let the limit, and with it the queue, climb without
//! end under sustained overload). Once per window (100 ms, with at least 8
//! calls) the limiter compares the window's average time with it: while
//! calls take no more than `tolerance` times the no-load time the limit
//! grows (by its square root, the queue it allows); beyond, it shrinks in
//! proportion. The limit is smoothed and kept within `[min_limit,
//! max_limit]`. Admission is one atomic compare on the call path; the
//! arithmetic happens once a window.
//!
//! Two refinements from Netflix's limiters. A window in which a call was
//! refused further in for overload ([`Outcome::Dropped`]: at the gateway,
//! a service's own limit shed it) shrinks the limit by [`BACKOFF`]: the
//! edge then refuses what the service would have refused, before the
//! internal call is paid for (at three times capacity, four refusals in
//! five came back from user-service, each a mutual-TLS call, until it
//! did). A call refused for another reason (a rate limit) is
//! [`Outcome::Ignored`]: its time says nothing about load. And the limit
//! grows only while it is used: a window whose calls in flight never
//! reached half of it leaves it where it is, so hours of light traffic do
//! not carry it to `max_limit`, from where the first burst would queue
//! for seconds before it came down.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use super::rules::AdaptivePolicy;

/// How often the limit is recomputed.
const WINDOW: Duration = Duration::from_millis(100);
/// Calls a window needs before it counts.
const MIN_SAMPLES: u32 = 8;
/// How much of each new limit is taken (the rest is the old one).
const SMOOTHING: f64 = 0.2;
/// Calls measured at `min_limit` to find the no-load time.
pub const PROBE_CALLS: u32 = 20;
/// How often the no-load time is measured again.
pub const PROBE_EVERY: Duration = Duration::from_secs(30);
/// What a window with a call refused further in for overload leaves of the
/// limit.
pub const BACKOFF: f64 = 0.9;

/// How a call under the limit ended, for the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Answered (a success or a failure that did the work): its time is a
    /// sample of the latency.
    Answered,
    /// Refused further in for overload: the limit is above what the
    /// service takes.
    Dropped,
    /// Cut short or refused for a reason unrelated to load (cancelled, a
    /// rate limit): left out.
    Ignored,
}

/// See the module documentation.
#[derive(Debug)]
pub struct AdaptiveLimit {
    limit: AtomicU32,
    in_flight: AtomicU32,
    state: Mutex<Window>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    calls: u32,
    total: Duration,
    /// Calls refused further in for overload.
    drops: u32,
    /// The most calls in flight seen when one of the window's finished.
    peak: u32,
    noload: Option<Duration>,
    limit: f64,
    /// Measuring the no-load time: calls still to come, and the limit to
    /// go back to.
    probing: Option<u32>,
    next_probe: Instant,
}

impl Window {
    /// Starts the next window at `now`.
    fn restart(&mut self, now: Instant) {
        self.started = now;
        self.calls = 0;
        self.total = Duration::ZERO;
        self.drops = 0;
        self.peak = 0;
    }
}

/// A call admitted under the limit: report how it ended to
/// [`AdaptiveLimit::finish`].
#[derive(Debug)]
#[must_use]
pub struct Admitted {
    started: Instant,
}

/// A place taken under an [`AdaptiveLimit`]: given back when dropped, with
/// the time since it was taken and its [`Outcome`] (by default answered: a
/// call cut short counts as it ran).
#[derive(Debug)]
pub struct Place {
    limiter: Arc<AdaptiveLimit>,
    admitted: Option<Admitted>,
    policy: AdaptivePolicy,
    outcome: Outcome,
}

impl Place {
    /// How the call ended, when not simply answered.
    pub fn set_outcome(&mut self, outcome: Outcome) {
        self.outcome = outcome;
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        if let Some(admitted) = self.admitted.take() {
            self.limiter
                .finish(admitted, self.outcome, &self.policy, Instant::now());
        }
    }
}

impl AdaptiveLimit {
    /// A place under the limit, or, when it is full, `Err` with a place
    /// taken anyway if `force` (a rule in shadow mode, which still
    /// measures) and `None` if not.
    pub fn enter(
        self: &Arc<Self>,
        policy: &AdaptivePolicy,
        force: bool,
    ) -> Result<Place, Option<Place>> {
        let now = Instant::now();
        let place = |admitted| Place {
            limiter: self.clone(),
            admitted: Some(admitted),
            policy: *policy,
            outcome: Outcome::Answered,
        };
        match self.admit(now) {
            Some(admitted) => Ok(place(admitted)),
            None if force => Err(Some(place(self.force(now)))),
            None => Err(None),
        }
    }

    /// A limiter starting at `policy.initial_limit`.
    pub fn new(policy: &AdaptivePolicy, now: Instant) -> Self {
        let initial = policy
            .initial_limit
            .clamp(policy.min_limit, policy.max_limit);
        Self {
            limit: AtomicU32::new(policy.min_limit),
            in_flight: AtomicU32::new(0),
            state: Mutex::new(Window {
                started: now,
                calls: 0,
                total: Duration::ZERO,
                drops: 0,
                peak: 0,
                noload: None,
                limit: f64::from(initial),
                probing: Some(PROBE_CALLS),
                next_probe: now + PROBE_EVERY,
            }),
        }
    }

    /// The limit now.
    pub fn limit(&self) -> u32 {
        self.limit.load(Ordering::Relaxed)
    }

    /// Takes a place under the limit, or `None` when it is full.
    pub fn admit(&self, now: Instant) -> Option<Admitted> {
        let limit = self.limit();
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .ok()
            .map(|_| Admitted { started: now })
    }

    /// Takes a place whatever the limit (a rule in shadow mode, which
    /// still measures).
    pub fn force(&self, now: Instant) -> Admitted {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Admitted { started: now }
    }

    /// Gives the place back and records how the call ended.
    pub fn finish(
        &self,
        admitted: Admitted,
        outcome: Outcome,
        policy: &AdaptivePolicy,
        now: Instant,
    ) {
        let in_flight = self.in_flight.fetch_sub(1, Ordering::AcqRel);
        if outcome != Outcome::Ignored {
            let took = now.saturating_duration_since(admitted.started);
            self.record(took, outcome, in_flight, policy, now);
        }
    }

    fn record(
        &self,
        took: Duration,
        outcome: Outcome,
        in_flight: u32,
        policy: &AdaptivePolicy,
        now: Instant,
    ) {
        let mut window = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        window.peak = window.peak.max(in_flight);
        match outcome {
            // During a probe the limit is at its floor already.
            Outcome::Dropped if window.probing.is_some() => return,
            Outcome::Dropped => window.drops += 1,
            Outcome::Answered | Outcome::Ignored => {
                window.calls += 1;
                window.total += took;
            }
        }
        if let Some(left) = window.probing {
            // Calls admitted before the probe began may still be finishing:
            // the probe's first `min_limit` calls are not counted.
            if left > 1 {
                window.probing = Some(left - 1);
                if left > PROBE_CALLS.saturating_sub(policy.min_limit) {
                    window.calls = 0;
                    window.total = Duration::ZERO;
                }
                return;
            }
            window.noload = Some(window.total / window.calls.max(1));
            window.probing = None;
            window.next_probe = now + PROBE_EVERY;
            window.restart(now);
            self.store(window.limit, policy);
            return;
        }
        if now.saturating_duration_since(window.started) < WINDOW
            || (window.calls < MIN_SAMPLES && window.drops == 0)
        {
            return;
        }
        if now >= window.next_probe {
            window.probing = Some(PROBE_CALLS);
            window.restart(now);
            self.limit.store(policy.min_limit, Ordering::Relaxed);
            return;
        }
        let next = if window.drops > 0 {
            window.limit * BACKOFF
        } else {
            let average = window.total / window.calls;
            let noload = *window.noload.get_or_insert(average);
            let tolerated = noload.as_secs_f64() * policy.tolerance;
            let gradient = (tolerated / average.as_secs_f64().max(1e-9)).clamp(0.5, 1.0);
            let mut proposed = window.limit * gradient + window.limit.sqrt();
            if f64::from(window.peak) * 2.0 < window.limit {
                // Less than half of it used: no reason to grow it.
                proposed = proposed.min(window.limit);
            }
            window.limit * (1.0 - SMOOTHING) + proposed * SMOOTHING
        };
        window.limit = next.clamp(f64::from(policy.min_limit), f64::from(policy.max_limit));
        window.restart(now);
        self.store(window.limit, policy);
    }

    /// Puts `limit` in force: rounded down, at least the floor.
    fn store(&self, limit: f64, policy: &AdaptivePolicy) {
        self.limit
            .store((limit as u32).max(policy.min_limit), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> AdaptivePolicy {
        AdaptivePolicy {
            min_limit: 5,
            max_limit: 200,
            initial_limit: 20,
            tolerance: 1.5,
            shadow: false,
        }
    }

    /// One call that took `took`, ending at `t` as `outcome` while `busy`
    /// calls (itself included) were in flight.
    fn call(
        limiter: &AdaptiveLimit,
        p: &AdaptivePolicy,
        t: Instant,
        took: Duration,
        outcome: Outcome,
        busy: u32,
    ) {
        limiter.in_flight.store(busy.max(1), Ordering::Release);
        limiter.finish(Admitted { started: t - took }, outcome, p, t);
        limiter.in_flight.store(0, Ordering::Release);
    }

    /// `n` windows of calls taking `took` each and ending as `outcome`,
    /// with `busy` calls in flight (`None`: as many as the limit allows);
    /// the limit after them.
    fn windows(
        limiter: &AdaptiveLimit,
        p: &AdaptivePolicy,
        t: &mut Instant,
        (took, outcome, busy): (Duration, Outcome, Option<u32>),
        n: u32,
    ) -> u32 {
        for _ in 0..n {
            *t += WINDOW;
            for _ in 0..MIN_SAMPLES {
                let busy = busy.unwrap_or_else(|| limiter.limit());
                call(limiter, p, *t, took, outcome, busy);
            }
        }
        limiter.limit()
    }

    /// `n` windows of answered calls taking `took`, the limit in use.
    fn run(
        limiter: &AdaptiveLimit,
        p: &AdaptivePolicy,
        t: &mut Instant,
        took: Duration,
        n: u32,
    ) -> u32 {
        windows(limiter, p, t, (took, Outcome::Answered, None), n)
    }

    #[test]
    fn the_limit_grows_while_latency_holds_and_shrinks_when_it_climbs() {
        let p = policy();
        let mut t = Instant::now();
        let limiter = AdaptiveLimit::new(&p, t);
        let grown = run(&limiter, &p, &mut t, Duration::from_millis(10), 40);
        assert!(grown > 60, "steady latency: the limit grows, to {grown}");
        let shrunk = run(&limiter, &p, &mut t, Duration::from_millis(40), 40);
        assert!(
            shrunk < grown / 4,
            "four times the no-load latency: the limit falls, {grown} -> {shrunk}"
        );
        assert!(shrunk >= p.min_limit);
        let floor = run(&limiter, &p, &mut t, Duration::from_millis(400), 30);
        assert_eq!(floor, p.min_limit, "never under the floor");
        let settled = run(&limiter, &p, &mut t, Duration::from_millis(400), 600);
        assert!(
            settled > 4 * p.min_limit,
            "a latency that stays is the no-load latency after the next probe: {settled}"
        );
        let ceiling = run(&limiter, &p, &mut t, Duration::from_millis(1), 400);
        assert_eq!(ceiling, p.max_limit, "never over the ceiling");
    }

    #[test]
    fn under_sustained_overload_the_limit_holds_a_short_queue() {
        // A server whose calls take 5 ms per call in flight (two cores, a
        // queue in front of them): the limit must settle where calls take
        // about `tolerance` times their unqueued time, and stay there
        // until the next probe, not creep up with the queue it allows.
        let p = policy();
        let mut t = Instant::now();
        let limiter = AdaptiveLimit::new(&p, t);
        let mut highest_late = 0;
        for window in 0..290 {
            t += WINDOW;
            let took = Duration::from_millis(5) * limiter.limit().max(1);
            for _ in 0..MIN_SAMPLES {
                call(&limiter, &p, t, took, Outcome::Answered, limiter.limit());
            }
            if window >= 50 {
                highest_late = highest_late.max(limiter.limit());
            }
        }
        // Equilibrium: 5 ms × L = 1.5 × 25 ms / (1 - 1/√L), L ≈ 11.
        assert!(
            highest_late <= 16,
            "the limit crept up to {highest_late} under steady overload"
        );
    }

    #[test]
    fn admission_stops_at_the_limit_and_a_forced_call_counts_in_flight() {
        let mut p = policy();
        (p.min_limit, p.initial_limit) = (2, 2);
        let t = Instant::now();
        let limiter = AdaptiveLimit::new(&p, t);
        let a = limiter.admit(t).expect("1 of 2");
        let b = limiter.admit(t).expect("2 of 2");
        assert!(limiter.admit(t).is_none(), "full");
        let forced = limiter.force(t);
        assert!(limiter.admit(t).is_none(), "still full");
        limiter.finish(forced, Outcome::Ignored, &p, t);
        limiter.finish(a, Outcome::Ignored, &p, t);
        let c = limiter.admit(t).expect("a place is free again");
        limiter.finish(b, Outcome::Ignored, &p, t);
        limiter.finish(c, Outcome::Ignored, &p, t);
    }

    #[test]
    fn a_limit_left_half_unused_does_not_grow() {
        // Light traffic: one call in flight at a time, at the no-load
        // latency. The gradient alone would carry the limit to the ceiling.
        let p = policy();
        let mut t = Instant::now();
        let limiter = AdaptiveLimit::new(&p, t);
        run(&limiter, &p, &mut t, Duration::from_millis(10), 3); // the probe
        let light = (Duration::from_millis(10), Outcome::Answered, Some(1));
        windows(&limiter, &p, &mut t, light, 400);
        assert!(
            limiter.limit() <= p.initial_limit,
            "unused, the limit climbed to {}",
            limiter.limit()
        );
        let used = run(&limiter, &p, &mut t, Duration::from_millis(10), 20);
        assert!(used > p.initial_limit, "in use, it grows: {used}");
    }

    #[test]
    fn refusals_further_in_shrink_the_limit_and_other_refusals_are_left_out() {
        let p = policy();
        let mut t = Instant::now();
        let limiter = AdaptiveLimit::new(&p, t);
        let grown = run(&limiter, &p, &mut t, Duration::from_millis(10), 40);
        // Fast refusals for another reason (a rate limit): no sample, so
        // they neither grow the limit nor close a window.
        let ignored = (Duration::from_micros(50), Outcome::Ignored, Some(grown));
        windows(&limiter, &p, &mut t, ignored, 50);
        assert_eq!(limiter.limit(), grown, "ignored calls left the limit alone");
        // One refusal for overload further in per window, among calls at
        // the no-load latency (which alone would grow the limit).
        for window in 1..=10 {
            t += WINDOW;
            call(
                &limiter,
                &p,
                t,
                Duration::from_millis(2),
                Outcome::Dropped,
                grown,
            );
            for _ in 0..MIN_SAMPLES {
                call(
                    &limiter,
                    &p,
                    t,
                    Duration::from_millis(10),
                    Outcome::Answered,
                    grown,
                );
            }
            let expected = (f64::from(grown) * BACKOFF.powi(window)) as u32;
            assert!(
                limiter.limit() <= expected.max(p.min_limit) + 1,
                "after {window} windows with drops: {} (from {grown})",
                limiter.limit()
            );
        }
    }
}
