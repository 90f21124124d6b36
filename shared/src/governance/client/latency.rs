//! How long a method's calls take, as its caller measured them: the last
//! [`SAMPLES`] answers, for deadline-aware retries and hedges (an attempt
//! is not started when what is left of the deadline is shorter than the
//! method's median). Recording is two relaxed atomic operations on the
//! call path; the median is computed only when a retry is considered.

use std::{
    sync::atomic::{AtomicU32, AtomicUsize, Ordering},
    time::Duration,
};

/// Answers remembered per method.
pub(super) const SAMPLES: usize = 32;

/// See the module documentation.
#[derive(Debug, Default)]
pub(super) struct RecentLatency {
    /// Microseconds, 0 for a slot not filled yet.
    slots: [AtomicU32; SAMPLES],
    next: AtomicUsize,
}

impl RecentLatency {
    /// Remembers one answer's time.
    pub(super) fn record(&self, took: Duration) {
        let micros = u32::try_from(took.as_micros()).unwrap_or(u32::MAX).max(1);
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % SAMPLES;
        self.slots[slot].store(micros, Ordering::Relaxed);
    }

    /// The median of the answers remembered, if any.
    pub(super) fn median(&self) -> Option<Duration> {
        let mut seen: Vec<u32> = self
            .slots
            .iter()
            .map(|slot| slot.load(Ordering::Relaxed))
            .filter(|&micros| micros > 0)
            .collect();
        if seen.is_empty() {
            return None;
        }
        let middle = seen.len() / 2;
        let (_, median, _) = seen.select_nth_unstable(middle);
        Some(Duration::from_micros(u64::from(*median)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_follows_the_last_answers() {
        let latency = RecentLatency::default();
        assert_eq!(latency.median(), None);
        for ms in [5, 1, 9] {
            latency.record(Duration::from_millis(ms));
        }
        assert_eq!(latency.median(), Some(Duration::from_millis(5)));
        for _ in 0..SAMPLES {
            latency.record(Duration::from_millis(40));
        }
        assert_eq!(
            latency.median(),
            Some(Duration::from_millis(40)),
            "older answers are forgotten"
        );
    }
}
