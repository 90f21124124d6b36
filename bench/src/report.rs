//! Latency histograms, error counts and the JSON result of a run.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::mix::Op;

/// Latencies are recorded in microseconds, from 1 µs to 5 minutes, with
/// three significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 300_000_000, 3).expect("valid histogram bounds")
}

/// How one request ended.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// A 2xx answer.
    Ok,
    /// Any other HTTP status, with the envelope's `code` when there was one.
    Status { status: u16, code: Option<i64> },
    /// No answer: connection refused or reset, timeout.
    Transport(&'static str),
}

impl Outcome {
    fn key(&self) -> String {
        match self {
            Self::Ok => "ok".to_owned(),
            Self::Status {
                status,
                code: Some(code),
            } => format!("http {status} code {code}"),
            Self::Status { status, code: None } => format!("http {status}"),
            Self::Transport(kind) => format!("transport: {kind}"),
        }
    }
}

/// What the workers record into; one per run, behind a mutex.
#[derive(Debug)]
pub struct Stats {
    all: Histogram<u64>,
    /// Successes only: under overload, what a served user waited.
    ok: Histogram<u64>,
    per_op: BTreeMap<Op, Histogram<u64>>,
    errors: BTreeMap<String, u64>,
    /// Since the last progress line.
    interval: Histogram<u64>,
    interval_errors: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            all: histogram(),
            ok: histogram(),
            per_op: BTreeMap::new(),
            errors: BTreeMap::new(),
            interval: histogram(),
            interval_errors: 0,
        }
    }
}

impl Stats {
    /// Records one finished request: into the progress interval always,
    /// into the result only when it started inside the measured window
    /// (`measured`), not during warm-up.
    pub fn record(&mut self, op: Op, latency: Duration, outcome: &Outcome, measured: bool) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        let failed = *outcome != Outcome::Ok;
        self.interval.saturating_record(micros);
        self.interval_errors += u64::from(failed);
        if !measured {
            return;
        }
        self.all.saturating_record(micros);
        self.per_op
            .entry(op)
            .or_insert_with(histogram)
            .saturating_record(micros);
        if failed {
            *self.errors.entry(outcome.key()).or_default() += 1;
        } else {
            self.ok.saturating_record(micros);
        }
    }

    /// Requests, errors and p99 since the last call; starts a new interval.
    pub fn take_interval(&mut self) -> (u64, u64, Duration) {
        let taken = (
            self.interval.len(),
            self.interval_errors,
            Duration::from_micros(self.interval.value_at_quantile(0.99)),
        );
        self.interval.reset();
        self.interval_errors = 0;
        taken
    }

    /// The summary of the whole measured window.
    pub fn summary(&self, elapsed: Duration) -> Summary {
        let requests = self.all.len();
        let errors: u64 = self.errors.values().sum();
        Summary {
            requests,
            errors,
            throughput_rps: requests as f64 / elapsed.as_secs_f64(),
            ok_throughput_rps: (requests - errors) as f64 / elapsed.as_secs_f64(),
            latency_ms: Percentiles::of(&self.all),
            ok_latency_ms: Percentiles::of(&self.ok),
            per_op: self
                .per_op
                .iter()
                .map(|(op, h)| {
                    (
                        op.name(),
                        OpSummary {
                            requests: h.len(),
                            latency_ms: Percentiles::of(h),
                        },
                    )
                })
                .collect(),
            errors_by_kind: self.errors.clone(),
        }
    }
}

/// The figures of a run.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub requests: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub ok_throughput_rps: f64,
    pub latency_ms: Percentiles,
    /// Successes only.
    pub ok_latency_ms: Percentiles,
    pub per_op: BTreeMap<&'static str, OpSummary>,
    pub errors_by_kind: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct OpSummary {
    pub requests: u64,
    pub latency_ms: Percentiles,
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Serialize)]
pub struct Percentiles {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    fn of(h: &Histogram<u64>) -> Self {
        let ms = |micros: u64| micros as f64 / 1000.0;
        Self {
            mean: h.mean() / 1000.0,
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

/// The JSON result file of `easy-note-bench run`.
#[derive(Debug, Serialize)]
pub struct RunReport {
    pub label: String,
    pub url: String,
    /// `closed` (fixed concurrency) or `open` (fixed rate; latencies from
    /// each request's intended start, so queueing delay counts).
    pub mode: &'static str,
    pub concurrency: Option<u32>,
    pub rate: Option<u32>,
    pub users: u32,
    pub notes_per_user: u32,
    pub mix: BTreeMap<&'static str, f64>,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// Unix seconds at the start of the measured window.
    pub started_at: u64,
    /// Open-loop only: requests the generator could not start on time
    /// because `max_in_flight` were outstanding (their latency still counts
    /// from the intended start).
    pub late_starts: u64,
    #[serde(flatten)]
    pub summary: Summary,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_errors_by_kind_and_orders_percentiles() {
        let mut stats = Stats::default();
        for ms in 1..=100 {
            stats.record(Op::Query, Duration::from_millis(ms), &Outcome::Ok, true);
        }
        stats.record(
            Op::Login,
            Duration::from_millis(5),
            &Outcome::Status {
                status: 401,
                code: Some(10004),
            },
            true,
        );
        stats.record(
            Op::Create,
            Duration::from_secs(10),
            &Outcome::Transport("timeout"),
            true,
        );
        let summary = stats.summary(Duration::from_secs(2));
        assert_eq!(summary.requests, 102);
        assert_eq!(summary.errors, 2);
        assert!((summary.throughput_rps - 51.0).abs() < 1e-9);
        assert!((summary.ok_throughput_rps - 50.0).abs() < 1e-9);
        assert_eq!(summary.errors_by_kind["http 401 code 10004"], 1);
        assert_eq!(summary.errors_by_kind["transport: timeout"], 1);
        let q = &summary.per_op["query"].latency_ms;
        assert!((q.p50 - 50.0).abs() < 0.1, "p50 {}", q.p50);
        assert!(q.p50 <= q.p90 && q.p90 <= q.p99 && q.p99 <= q.p999 && q.p999 <= q.max);
        assert!((summary.latency_ms.max - 10_000.0).abs() < 10.0);
        assert!(
            (summary.ok_latency_ms.max - 100.0).abs() < 0.1,
            "the failures stay out of the successes' latency"
        );
    }

    #[test]
    fn intervals_restart_and_warm_up_stays_out_of_the_result() {
        let mut stats = Stats::default();
        stats.record(Op::Query, Duration::from_millis(3), &Outcome::Ok, false);
        stats.record(Op::Query, Duration::from_millis(3), &Outcome::Ok, true);
        stats.record(
            Op::Query,
            Duration::from_millis(3),
            &Outcome::Transport("io"),
            true,
        );
        let (requests, errors, _) = stats.take_interval();
        assert_eq!((requests, errors), (3, 1));
        assert_eq!(stats.take_interval().0, 0);
        let summary = stats.summary(Duration::from_secs(1));
        assert_eq!((summary.requests, summary.errors), (2, 1));
    }
}
