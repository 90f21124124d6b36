//! Outlier detection: a sick instance is taken out of rotation, not the
//! whole service (Envoy's consecutive-gateway-failure detection, Kitex's
//! instance breaker).
//!
//! Each instance a caller knows keeps a count of consecutive failures that
//! are its own: no answer within the attempt's full timeout, a broken or
//! refused connection, or UNAVAILABLE from the server (a server shedding
//! load is healthy and is not counted). At `consecutive_failures` in a row
//! (a refused connection at once) the instance is ejected for
//! `base_ejection`, doubled at every ejection while it stays sick, up to
//! `max_ejection`, and never when that would leave more than
//! `max_ejected_percent` of the instances out at once. When its time is
//! up it is on probation: one call at a time (a trial) goes to it; an
//! answer brings it back into rotation, a failure ejects it again for
//! longer.
//!
//! Measured on two note-service replicas, one frozen with SIGSTOP under
//! steady queries: without this, the per-method breaker counted the frozen
//! replica's timeouts against the whole service and 6 of 323 queries were
//! served from 5 s to 30 s after the freeze; with it, see the drill in
//! `docs/benchmarks.md`.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::rules::OutlierPolicy;

/// The outlier state of one instance. Shared between the old and new
/// instance sets when the registry changes, so an update keeps it.
#[derive(Debug, Default)]
pub struct InstanceHealth {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Failures of the instance's own in a row.
    consecutive: u32,
    /// Ejections since it last answered; sets the next ejection's length.
    ejections: u32,
    /// Out of rotation until then; once past, on probation until an answer.
    ejected_until: Option<Instant>,
    /// A trial call is in flight (on probation).
    trial: bool,
    /// Bumped at every ejection: outcomes of calls started before it are
    /// stale and ignored.
    generation: u64,
}

/// Whether an instance may take a call now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// In rotation.
    InRotation,
    /// On probation with no trial in flight: it may take one call.
    Trial,
    /// Ejected, or on probation with its trial in flight.
    Out,
}

/// How one call went, as far as the instance's health goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The instance answered (a success or a business error).
    Answered,
    /// A failure of the instance's own.
    Failed {
        /// A refused or broken connection: eject without waiting for more.
        connection: bool,
    },
    /// Neither: the server is alive but shed the call, the call was cut
    /// short by the caller's own deadline, and the like.
    Neutral,
}

/// A change of an instance's rotation, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Taken out of rotation for this long.
    Ejected {
        /// How long.
        duration: Duration,
        /// Failures in a row that led to it.
        consecutive: u32,
    },
    /// Answered on probation (or when forced): back in rotation.
    Restored,
}

/// A call let through to an instance: say how it went with
/// [`Admission::record`]. Dropping it unrecorded (a cancelled call) frees
/// the trial slot it may hold.
#[derive(Debug)]
#[must_use]
pub struct Admission {
    health: Arc<InstanceHealth>,
    generation: u64,
    trial: bool,
    recorded: bool,
}

impl Admission {
    /// Whether this call is the instance's trial on probation.
    pub fn is_trial(&self) -> bool {
        self.trial
    }

    /// Records how the call went. `may_eject` says whether the cap on
    /// ejected instances allows one more. Returns the change it caused.
    pub fn record(
        mut self,
        outcome: Outcome,
        policy: &OutlierPolicy,
        may_eject: bool,
        now: Instant,
    ) -> Option<Change> {
        self.recorded = true;
        let mut state = self.health.lock();
        if state.generation != self.generation {
            return None; // started before an ejection: says nothing new
        }
        if self.trial {
            state.trial = false;
        }
        match outcome {
            Outcome::Answered => {
                state.consecutive = 0;
                state.ejections = 0;
                state.ejected_until.take().map(|_| Change::Restored)
            }
            Outcome::Neutral => None,
            Outcome::Failed { connection } => {
                state.consecutive = state.consecutive.saturating_add(1);
                let due =
                    self.trial || connection || state.consecutive >= policy.consecutive_failures;
                let out_now = state.ejected_until.is_some_and(|until| now < until);
                if !due || out_now || !may_eject {
                    return None;
                }
                let duration = ejection_time(policy, state.ejections);
                state.ejections = state.ejections.saturating_add(1);
                state.ejected_until = Some(now + duration);
                state.generation += 1;
                Some(Change::Ejected {
                    duration,
                    consecutive: state.consecutive,
                })
            }
        }
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        if self.trial && !self.recorded {
            let mut state = self.health.lock();
            if state.generation == self.generation {
                state.trial = false;
            }
        }
    }
}

impl InstanceHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the instance may take a call now (claims nothing).
    pub fn availability(&self, now: Instant) -> Availability {
        let state = self.lock();
        match state.ejected_until {
            None => Availability::InRotation,
            Some(until) if now < until => Availability::Out,
            Some(_) if state.trial => Availability::Out,
            Some(_) => Availability::Trial,
        }
    }

    /// Whether the instance is ejected now (probation not counted).
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.lock().ejected_until.is_some_and(|until| now < until)
    }

    /// Lets a call through if the instance may take one now, claiming the
    /// trial when on probation. With `forced` (every instance is out, so
    /// one is used anyway) the call goes through whatever the state.
    pub fn admit(self: &Arc<Self>, now: Instant, forced: bool) -> Option<Admission> {
        let mut state = self.lock();
        let trial = match state.ejected_until {
            None => false,
            _ if forced => false,
            Some(until) if now < until => return None,
            Some(_) if state.trial => return None,
            Some(_) => {
                state.trial = true;
                true
            }
        };
        Some(Admission {
            health: self.clone(),
            generation: state.generation,
            trial,
            recorded: false,
        })
    }
}

/// `base_ejection` doubled per earlier ejection, at most `max_ejection`.
fn ejection_time(policy: &OutlierPolicy, earlier: u32) -> Duration {
    let factor = 1u32.checked_shl(earlier.min(16)).unwrap_or(u32::MAX);
    policy
        .base_ejection
        .checked_mul(factor)
        .unwrap_or(policy.max_ejection)
        .min(policy.max_ejection)
}

/// Whether one more of `total` instances may be ejected while `ejected`
/// already are: at most `max_ejected_percent` of them, rounded down, so a
/// lone instance is never ejected (there is nowhere else to go).
pub fn may_eject(policy: &OutlierPolicy, ejected: usize, total: usize) -> bool {
    let allowed = (total as f64 * policy.max_ejected_percent / 100.0).floor() as usize;
    ejected < allowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierPolicy {
        OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(2),
            max_ejection: Duration::from_secs(10),
            max_ejected_percent: 50.0,
        }
    }

    const FAILED: Outcome = Outcome::Failed { connection: false };

    fn call(health: &Arc<InstanceHealth>, outcome: Outcome, now: Instant) -> Option<Change> {
        let admission = health.admit(now, false).expect("admitted");
        admission.record(outcome, &policy(), true, now)
    }

    #[test]
    fn consecutive_failures_eject_and_an_answer_in_between_resets_the_count() {
        let health = Arc::new(InstanceHealth::default());
        let now = Instant::now();
        assert_eq!(call(&health, FAILED, now), None);
        assert_eq!(call(&health, FAILED, now), None);
        assert_eq!(call(&health, Outcome::Answered, now), None);
        assert_eq!(call(&health, FAILED, now), None);
        assert_eq!(call(&health, Outcome::Neutral, now), None, "neutral");
        assert_eq!(call(&health, FAILED, now), None);
        assert_eq!(
            call(&health, FAILED, now),
            Some(Change::Ejected {
                duration: Duration::from_secs(2),
                consecutive: 3
            })
        );
        assert_eq!(health.availability(now), Availability::Out);
        assert!(health.admit(now, false).is_none());
    }

    #[test]
    fn a_refused_connection_ejects_at_once() {
        let health = Arc::new(InstanceHealth::default());
        let now = Instant::now();
        let change = call(&health, Outcome::Failed { connection: true }, now);
        assert!(matches!(change, Some(Change::Ejected { .. })), "{change:?}");
    }

    #[test]
    fn probation_lets_one_trial_through_and_its_answer_restores_the_instance() {
        let health = Arc::new(InstanceHealth::default());
        let start = Instant::now();
        call(&health, Outcome::Failed { connection: true }, start);
        let later = start + Duration::from_secs(3);
        assert_eq!(health.availability(later), Availability::Trial);
        let trial = health.admit(later, false).expect("the trial");
        assert!(trial.is_trial());
        assert!(health.admit(later, false).is_none(), "one trial at a time");
        drop(trial);
        assert_eq!(
            health.availability(later),
            Availability::Trial,
            "a cancelled trial frees the slot"
        );
        assert_eq!(
            call(&health, Outcome::Answered, later),
            Some(Change::Restored)
        );
        assert_eq!(health.availability(later), Availability::InRotation);
    }

    #[test]
    fn ejections_grow_while_the_instance_stays_sick_up_to_the_cap() {
        let health = Arc::new(InstanceHealth::default());
        let mut now = Instant::now();
        let mut lengths = Vec::new();
        for _ in 0..5 {
            let change = call(&health, Outcome::Failed { connection: true }, now);
            let Some(Change::Ejected { duration, .. }) = change else {
                panic!("ejected: {change:?}");
            };
            lengths.push(duration.as_secs());
            now += duration;
        }
        assert_eq!(lengths, vec![2, 4, 8, 10, 10]);
        call(&health, Outcome::Answered, now);
        let change = call(&health, Outcome::Failed { connection: true }, now);
        assert_eq!(
            change,
            Some(Change::Ejected {
                duration: Duration::from_secs(2),
                consecutive: 1
            }),
            "an answer starts the backoff over"
        );
    }

    #[test]
    fn outcomes_of_calls_started_before_an_ejection_are_ignored() {
        let health = Arc::new(InstanceHealth::default());
        let now = Instant::now();
        let old = health.admit(now, false).expect("admitted");
        call(&health, Outcome::Failed { connection: true }, now);
        assert_eq!(old.record(Outcome::Answered, &policy(), true, now), None);
        assert!(health.is_ejected(now), "a stale answer restores nothing");
    }

    #[test]
    fn the_cap_keeps_most_instances_in_rotation() {
        let p = policy();
        assert!(!may_eject(&p, 0, 1), "a lone instance stays");
        assert!(may_eject(&p, 0, 2));
        assert!(!may_eject(&p, 1, 2));
        assert!(may_eject(&p, 1, 4));
        assert!(!may_eject(&p, 2, 4));
        let health = Arc::new(InstanceHealth::default());
        let now = Instant::now();
        let admission = health.admit(now, false).expect("admitted");
        let refused = admission.record(Outcome::Failed { connection: true }, &p, false, now);
        assert_eq!(refused, None);
        assert_eq!(health.availability(now), Availability::InRotation);
    }

    #[test]
    fn a_forced_call_goes_through_and_its_answer_restores() {
        let health = Arc::new(InstanceHealth::default());
        let now = Instant::now();
        call(&health, Outcome::Failed { connection: true }, now);
        let forced = health.admit(now, true).expect("forced");
        assert!(!forced.is_trial());
        assert_eq!(
            forced.record(Outcome::Answered, &policy(), true, now),
            Some(Change::Restored)
        );
    }
}
