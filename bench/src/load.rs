//! The load generator: prepares data through the public API, then drives
//! the mix closed-loop (fixed concurrency) or open-loop (fixed rate).

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use reqwest::Client;
use serde_json::{Value, json};
use tokio::{sync::Semaphore, task::JoinSet};

mod prepare;

use self::prepare::prepare;
use crate::{
    mix::{Mix, Op},
    report::{Outcome, RunReport, Stats, Summary},
};

/// How requests are paced.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// `concurrency` workers, each sending its next request when the last
    /// one answered.
    Closed { concurrency: u32 },
    /// `rate` requests per second on a fixed schedule, whatever the answers
    /// do; latency counts from each request's scheduled start.
    Open { rate: u32 },
}

/// What `easy-note-bench run` was asked to do.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub url: String,
    pub users: u32,
    pub notes_per_user: u32,
    pub mix: Mix,
    pub pacing: Pacing,
    pub duration: Duration,
    pub warmup: Duration,
    pub timeout: Duration,
    pub label: String,
    pub out: Option<PathBuf>,
    pub quiet: bool,
}

/// Open-loop requests outstanding at most; beyond it the schedule slips
/// (counted as late starts) rather than the generator running out of memory.
const MAX_IN_FLIGHT: usize = 4096;
/// Words the prepared notes contain, for `search`.
const WORDS: [&str; 4] = ["alpha", "bravo", "charlie", "delta"];
const PASSWORD: &str = "bench-password-1";
const CONTENT: &str = "Easy-Note benchmark note. It is long enough to look like a real note \
    and short enough to keep the page small: a paragraph of plain text, some punctuation, \
    numbers like 42 and 1024, and the word that search looks for: ";

/// A prepared user.
#[derive(Debug)]
struct Account {
    username: String,
    token: String,
    notes: Vec<i64>,
}

#[derive(Debug)]
struct Shared {
    client: Client,
    url: String,
    accounts: Vec<Account>,
    mix: Mix,
    stats: Mutex<Stats>,
    /// Load starts (warm-up first).
    start: Instant,
    measure_from: Instant,
    measure_until: Instant,
}

impl Shared {
    fn record(&self, op: Op, started: Instant, outcome: &Outcome) {
        let latency = started.elapsed();
        let measured = started >= self.measure_from && started < self.measure_until;
        self.stats
            .lock()
            .expect("stats lock")
            .record(op, latency, outcome, measured);
    }
}

/// `easy-note-bench run`.
pub async fn run(config: LoadConfig) -> anyhow::Result<()> {
    let client = Client::builder()
        .timeout(config.timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .build()?;
    check_reachable(&client, &config.url).await?;
    let prepared_at = Instant::now();
    let retried = Arc::new(AtomicU64::new(0));
    let accounts = prepare(&client, &config, &retried).await?;
    let notes: usize = accounts.iter().map(|a| a.notes.len()).sum();
    eprintln!(
        "prepared {} users with {notes} notes in {:.1}s ({} requests retried)",
        accounts.len(),
        prepared_at.elapsed().as_secs_f64(),
        retried.load(Ordering::Relaxed)
    );

    let start = Instant::now();
    let shared = Arc::new(Shared {
        client,
        url: config.url.clone(),
        accounts,
        mix: config.mix.clone(),
        stats: Mutex::new(Stats::default()),
        start,
        measure_from: start + config.warmup,
        measure_until: start + config.warmup + config.duration,
    });
    let progress = (!config.quiet).then(|| tokio::spawn(progress(shared.clone(), start)));
    let late_starts = match config.pacing {
        Pacing::Closed { concurrency } => {
            closed_loop(&shared, concurrency).await;
            0
        }
        Pacing::Open { rate } => open_loop(&shared, rate).await,
    };
    if let Some(progress) = progress {
        progress.abort();
    }

    let summary = shared
        .stats
        .lock()
        .expect("stats lock")
        .summary(config.duration);
    print_summary(&config, &summary, late_starts);
    if let Some(path) = &config.out {
        let report = RunReport {
            label: config.label.clone(),
            url: config.url.clone(),
            mode: match config.pacing {
                Pacing::Closed { .. } => "closed",
                Pacing::Open { .. } => "open",
            },
            concurrency: match config.pacing {
                Pacing::Closed { concurrency } => Some(concurrency),
                Pacing::Open { .. } => None,
            },
            rate: match config.pacing {
                Pacing::Open { rate } => Some(rate),
                Pacing::Closed { .. } => None,
            },
            users: config.users,
            notes_per_user: config.notes_per_user,
            mix: config
                .mix
                .shares()
                .into_iter()
                .map(|(op, share)| (op.name(), share))
                .collect::<BTreeMap<_, _>>(),
            warmup_s: config.warmup.as_secs_f64(),
            duration_s: config.duration.as_secs_f64(),
            started_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .saturating_sub(config.duration)
                .as_secs(),
            late_starts,
            summary,
        };
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n").with_context(|| format!("writing {}", path.display()))?;
        eprintln!("result written to {}", path.display());
    }
    Ok(())
}

async fn check_reachable(client: &Client, url: &str) -> anyhow::Result<()> {
    let ping = format!("{url}/ping");
    match client.get(&ping).send().await {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => bail!("{ping} answered {}", response.status()),
        Err(err) => bail!("{ping} is not reachable ({err}); is the suite running?"),
    }
}

/// One request of the mix, for a random prepared user.
async fn execute(shared: &Shared, op: Op) -> Outcome {
    let account = &shared.accounts[fastrand::usize(..shared.accounts.len())];
    let url = &shared.url;
    let client = &shared.client;
    let note_id = || account.notes[fastrand::usize(..account.notes.len())];
    let request = match op {
        Op::Query => client
            .get(format!("{url}/v1/note/query?limit=10"))
            .bearer_auth(&account.token),
        Op::Search => client
            .get(format!(
                "{url}/v1/note/query?limit=10&search_key={}",
                WORDS[fastrand::usize(..WORDS.len())]
            ))
            .bearer_auth(&account.token),
        Op::Get => client
            .get(format!("{url}/v1/note/{}", note_id()))
            .bearer_auth(&account.token),
        Op::Create => client
            .post(format!("{url}/v1/note"))
            .bearer_auth(&account.token)
            .json(&json!({"title": "created under load", "content": CONTENT})),
        Op::Update => client
            .put(format!("{url}/v1/note/{}", note_id()))
            .bearer_auth(&account.token)
            .json(&json!({"content": format!("{CONTENT}updated")})),
        Op::Login => client
            .post(format!("{url}/v1/user/login"))
            .json(&json!({"username": account.username, "password": PASSWORD})),
    };
    match request.send().await {
        Ok(response) => {
            let status = response.status();
            match response.bytes().await {
                Ok(_) if status.is_success() => Outcome::Ok,
                Ok(body) => Outcome::Status {
                    status: status.as_u16(),
                    code: serde_json::from_slice::<Value>(&body)
                        .ok()
                        .and_then(|v| v["code"].as_i64()),
                },
                Err(err) => Outcome::Transport(transport_kind(&err)),
            }
        }
        Err(err) => Outcome::Transport(transport_kind(&err)),
    }
}

fn transport_kind(err: &reqwest::Error) -> &'static str {
    if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "io"
    }
}

async fn closed_loop(shared: &Arc<Shared>, concurrency: u32) {
    let mut workers = JoinSet::new();
    for _ in 0..concurrency {
        let shared = shared.clone();
        workers.spawn(async move {
            loop {
                let started = Instant::now();
                if started >= shared.measure_until {
                    break;
                }
                let op = shared.mix.draw();
                let outcome = execute(&shared, op).await;
                shared.record(op, started, &outcome);
            }
        });
    }
    while workers.join_next().await.is_some() {}
}

/// Returns the number of requests that started late because
/// [`MAX_IN_FLIGHT`] were outstanding.
async fn open_loop(shared: &Arc<Shared>, rate: u32) -> u64 {
    let start = shared.start;
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let late = Arc::new(AtomicU64::new(0));
    let mut requests = JoinSet::new();
    for i in 0u64.. {
        // The schedule: request i is due at start + i/rate, independent of
        // how earlier requests fared.
        let due = start + Duration::from_nanos(i * 1_000_000_000 / u64::from(rate));
        if due >= shared.measure_until {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        let permit = match in_flight.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                late.fetch_add(1, Ordering::Relaxed);
                in_flight
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the semaphore is never closed")
            }
        };
        let shared = shared.clone();
        requests.spawn(async move {
            let op = shared.mix.draw();
            let outcome = execute(&shared, op).await;
            // Latency from when the request was due: coordinated omission
            // corrected.
            shared.record(op, due, &outcome);
            drop(permit);
        });
        while requests.try_join_next().is_some() {}
    }
    while requests.join_next().await.is_some() {}
    late.load(Ordering::Relaxed)
}

async fn progress(shared: Arc<Shared>, start: Instant) {
    let mut tick = tokio::time::interval_at(
        (start + Duration::from_secs(1)).into(),
        Duration::from_secs(1),
    );
    loop {
        let now = tick.tick().await.into_std();
        let (requests, errors, p99) = shared.stats.lock().expect("stats lock").take_interval();
        let phase = if now <= shared.measure_from {
            "warm-up"
        } else {
            "measure"
        };
        eprintln!(
            "[{:>4.0}s] {phase}  {requests:>7} req/s  p99 {:>8.2} ms  errors {errors}",
            (now - start).as_secs_f64(),
            p99.as_secs_f64() * 1000.0
        );
    }
}

fn print_summary(config: &LoadConfig, summary: &Summary, late_starts: u64) {
    let pacing = match config.pacing {
        Pacing::Closed { concurrency } => format!("closed-loop, concurrency {concurrency}"),
        Pacing::Open { rate } => format!("open-loop, {rate} req/s scheduled"),
    };
    let l = &summary.latency_ms;
    println!(
        "{}: {pacing}, {:.0}s measured after {:.0}s warm-up",
        config.label,
        config.duration.as_secs_f64(),
        config.warmup.as_secs_f64()
    );
    println!(
        "  {} requests, {:.1} req/s, {} errors{}",
        summary.requests,
        summary.throughput_rps,
        summary.errors,
        if late_starts > 0 {
            format!(", {late_starts} late starts")
        } else {
            String::new()
        }
    );
    println!(
        "  latency ms  p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
        l.p50, l.p90, l.p99, l.p999, l.max
    );
    for (op, s) in &summary.per_op {
        let l = &s.latency_ms;
        println!(
            "  {op:<7} {:>8}  p50 {:.2}  p99 {:.2}  max {:.2}",
            s.requests, l.p50, l.p99, l.max
        );
    }
    for (kind, count) in &summary.errors_by_kind {
        println!("  error {kind}: {count}");
    }
}
