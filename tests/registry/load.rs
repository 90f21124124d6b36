//! Steady client traffic through the gateway, with every failure recorded.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

/// One failed request.
#[derive(Debug, Clone)]
pub struct Failure {
    /// When it was answered, from the start of the load.
    pub at: Duration,
    /// How long it took to answer.
    pub took: Duration,
    pub op: &'static str,
    pub detail: String,
}

/// One request, failed or not.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When it was sent, from the start of the load.
    pub sent: Duration,
    /// How long it took to answer.
    pub took: Duration,
    pub ok: bool,
}

/// What the load saw.
#[derive(Debug)]
pub struct Report {
    pub started: Instant,
    pub total: usize,
    pub by_op: Vec<(&'static str, usize)>,
    pub failures: Vec<Failure>,
    /// Every request, in the order sent.
    pub samples: Vec<Sample>,
}

impl Report {
    /// How long failures went on: from the first to the last.
    pub fn failure_window(&self) -> Duration {
        match (self.failures.first(), self.failures.last()) {
            (Some(first), Some(last)) => last.at - first.at,
            _ => Duration::ZERO,
        }
    }

    /// Failures answered after `instant`.
    pub fn failures_after(&self, instant: Instant) -> Vec<&Failure> {
        let since = instant.saturating_duration_since(self.started);
        self.failures.iter().filter(|f| f.at > since).collect()
    }

    /// The requests sent between `from` and `to`.
    pub fn sent_between(&self, from: Instant, to: Instant) -> Vec<Sample> {
        let (from, to) = (
            from.saturating_duration_since(self.started),
            to.saturating_duration_since(self.started),
        );
        self.samples
            .iter()
            .filter(|s| s.sent >= from && s.sent < to)
            .copied()
            .collect()
    }

    /// A one-paragraph summary for the test output.
    pub fn summary(&self) -> String {
        let shown: Vec<String> = self
            .failures
            .iter()
            .take(10)
            .map(|f| {
                format!(
                    "  {:>7.3}s {} (took {:.3}s) {}",
                    f.at.as_secs_f64(),
                    f.op,
                    f.took.as_secs_f64(),
                    f.detail
                )
            })
            .collect();
        format!(
            "{} requests ({:?}), {} failed over {:?}{}{}",
            self.total,
            self.by_op,
            self.failures.len(),
            self.failure_window(),
            if shown.is_empty() { "" } else { ":\n" },
            shown.join("\n")
        )
    }
}

/// What one worker saw: requests per operation, its failures, and every
/// request.
type Seen = (Vec<(&'static str, usize)>, Vec<Failure>, Vec<Sample>);

/// What the workers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    /// Creates, queries and reads by id.
    Steady,
    /// Queries only.
    Queries,
}

/// Client workers looping over create / query / get through one gateway.
#[derive(Debug)]
pub struct Load {
    started: Instant,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Seen>>,
}

impl Load {
    /// Starts `workers` clients of the gateway at `base` as the user of
    /// `token`, reading `note_id` and the user's notes and creating more.
    pub fn start(base: &str, token: &str, note_id: i64, workers: usize) -> Self {
        Self::with_mix(base, token, note_id, workers, Mix::Steady)
    }

    /// Starts `workers` clients of the gateway at `base` sending only
    /// queries of the notes of `token`'s user.
    pub fn queries(base: &str, token: &str, workers: usize) -> Self {
        Self::with_mix(base, token, 0, workers, Mix::Queries)
    }

    fn with_mix(base: &str, token: &str, note_id: i64, workers: usize, mix: Mix) -> Self {
        let started = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("an HTTP client");
        let workers = (0..workers)
            .map(|worker| {
                let (http, stop) = (http.clone(), stop.clone());
                let (base, token) = (base.to_owned(), token.to_owned());
                tokio::spawn(async move {
                    let mut failures = Vec::new();
                    let mut samples = Vec::new();
                    let mut counts = vec![("create", 0), ("query", 0), ("get", 0)];
                    let mut n = worker;
                    while !stop.load(Ordering::Relaxed) {
                        n += 1;
                        let (op, request) = match if mix == Mix::Queries { 1 } else { n % 4 } {
                            0 => (
                                "create",
                                http.post(format!("{base}/v1/note")).json(
                                    &json!({"title": format!("load {n}"), "content": "steady"}),
                                ),
                            ),
                            1 | 3 => ("query", http.get(format!("{base}/v1/note/query?limit=5"))),
                            _ => ("get", http.get(format!("{base}/v1/note/{note_id}"))),
                        };
                        let sent = Instant::now();
                        let sent_at = started.elapsed();
                        let result = request.bearer_auth(&token).send().await;
                        let failure = match result {
                            Ok(response) if response.status().is_success() => {
                                let body: Value = response.json().await.unwrap_or(Value::Null);
                                (body["code"] != 0).then(|| format!("body {body}"))
                            }
                            Ok(response) => {
                                let status = response.status();
                                Some(format!(
                                    "{status} {}",
                                    response.text().await.unwrap_or_default()
                                ))
                            }
                            Err(err) => Some(format!("transport: {err}")),
                        };
                        if let Some(entry) = counts.iter_mut().find(|(name, _)| *name == op) {
                            entry.1 += 1;
                        }
                        samples.push(Sample {
                            sent: sent_at,
                            took: sent.elapsed(),
                            ok: failure.is_none(),
                        });
                        if let Some(detail) = failure {
                            failures.push(Failure {
                                at: started.elapsed(),
                                took: sent.elapsed(),
                                op,
                                detail,
                            });
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    (counts, failures, samples)
                })
            })
            .collect();
        Self {
            started,
            stop,
            workers,
        }
    }

    /// Stops the workers and collects what they saw.
    pub async fn finish(self) -> Report {
        self.stop.store(true, Ordering::Relaxed);
        let mut by_op = vec![("create", 0), ("query", 0), ("get", 0)];
        let mut failures = Vec::new();
        let mut samples = Vec::new();
        for worker in self.workers {
            let (counts, seen, sent) = worker.await.expect("a load worker");
            samples.extend(sent);
            for (op, count) in counts {
                if let Some(entry) = by_op.iter_mut().find(|(name, _)| *name == op) {
                    entry.1 += count;
                }
            }
            failures.extend(seen);
        }
        failures.sort_by_key(|f| f.at);
        samples.sort_by_key(|s| s.sent);
        Report {
            started: self.started,
            total: by_op.iter().map(|(_, c)| c).sum(),
            by_op,
            failures,
            samples,
        }
    }
}
