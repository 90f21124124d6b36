//! easy-note-bench: load generator and no-RPC baseline for Easy-Note.
//!
//! ```text
//! easy-note-bench run      [--url URL] [--users N] [--notes M] [--mix query=80,create=10,update=5,login=5]
//!                          [--concurrency C | --rate R] [--duration 20s] [--warmup 3s]
//!                          [--timeout 10s] [--label NAME] [--out FILE.json] [--quiet]
//! easy-note-bench baseline (EASYNOTE_HTTP_ADDR, EASYNOTE_DATABASE_URL, EASYNOTE_JWT_SECRET)
//! ```
//!
//! `run` prepares its own data through the public API (N fresh users with M
//! notes each), then drives the mix closed-loop at a concurrency or
//! open-loop at a fixed rate, prints progress each second and a summary at
//! the end, and writes the result as JSON. `baseline` serves the same routes
//! in one process with no RPC, for comparison.

mod baseline;
mod load;
mod mix;
mod report;

use std::{process::ExitCode, time::Duration};

use anyhow::{Context as _, bail};

use crate::{
    load::{LoadConfig, Pacing},
    mix::Mix,
};

const USAGE: &str = "\
usage:
  easy-note-bench run [--url URL] [--users N] [--notes M] [--mix SPEC]
                      [--concurrency C | --rate R] [--duration D] [--warmup D]
                      [--timeout D] [--label NAME] [--out FILE] [--quiet]
  easy-note-bench baseline

run      drives a gateway (default http://127.0.0.1:8080); SPEC like
         query=80,create=10,update=5,login=5 (kinds: query, search, get,
         create, update, login); closed-loop at --concurrency (default 32)
         unless --rate (requests/s, open-loop) is given; durations like 20s.
baseline serves the same routes with no RPC: JWT check and the same SQL in
         one process. Reads EASYNOTE_HTTP_ADDR (default 127.0.0.1:8090),
         EASYNOTE_DATABASE_URL (default sqlite://data/baseline.db) and
         EASYNOTE_JWT_SECRET.";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = match args.first().map(String::as_str) {
        Some("run") => parse_run(&args[1..]).and_then(|config| runtime.block_on(load::run(config))),
        Some("baseline") => runtime.block_on(baseline::serve()),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(())
        }
        _ => Err(anyhow::anyhow!("expected a subcommand\n{USAGE}")),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("easy-note-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn parse_run(args: &[String]) -> anyhow::Result<LoadConfig> {
    let mut config = LoadConfig {
        url: "http://127.0.0.1:8080".to_owned(),
        users: 50,
        notes_per_user: 20,
        mix: Mix::default(),
        pacing: Pacing::Closed { concurrency: 32 },
        duration: Duration::from_secs(20),
        warmup: Duration::from_secs(3),
        timeout: Duration::from_secs(10),
        label: "run".to_owned(),
        out: None,
        quiet: false,
    };
    let mut rate = None;
    let mut concurrency = None;
    let mut rest = args.iter();
    while let Some(flag) = rest.next() {
        if flag == "--quiet" {
            config.quiet = true;
            continue;
        }
        let value = rest
            .next()
            .with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |what: &str| format!("{flag} {value:?}: {what}");
        match flag.as_str() {
            "--url" => config.url = value.trim_end_matches('/').to_owned(),
            "--users" => config.users = positive(value).with_context(|| bad("a count > 0"))?,
            "--notes" => config.notes_per_user = value.parse().with_context(|| bad("a count"))?,
            "--mix" => config.mix = value.parse().with_context(|| bad("a mix"))?,
            "--concurrency" => {
                concurrency = Some(positive(value).with_context(|| bad("a count > 0"))?)
            }
            "--rate" => rate = Some(positive(value).with_context(|| bad("requests/s > 0"))?),
            "--duration" => config.duration = duration(value).with_context(|| bad("a duration"))?,
            "--warmup" => {
                config.warmup =
                    humantime::parse_duration(value).with_context(|| bad("a duration"))?
            }
            "--timeout" => config.timeout = duration(value).with_context(|| bad("a duration"))?,
            "--label" => config.label.clone_from(value),
            "--out" => config.out = Some(value.into()),
            _ => bail!("unknown option {flag}\n{USAGE}"),
        }
    }
    config.pacing = match (rate, concurrency) {
        (Some(_), Some(_)) => {
            bail!("--rate (open-loop) and --concurrency (closed-loop) exclude each other")
        }
        (Some(rate), None) => Pacing::Open { rate },
        (None, Some(concurrency)) => Pacing::Closed { concurrency },
        (None, None) => config.pacing,
    };
    if config.mix.needs_notes() && config.notes_per_user == 0 {
        bail!("the mix updates or reads notes by id: --notes must be at least 1");
    }
    Ok(config)
}

fn positive(value: &str) -> anyhow::Result<u32> {
    match value.parse::<u32>()? {
        0 => bail!("must be > 0"),
        n => Ok(n),
    }
}

fn duration(value: &str) -> anyhow::Result<Duration> {
    let parsed = humantime::parse_duration(value)?;
    if parsed.is_zero() {
        bail!("must be > 0");
    }
    Ok(parsed)
}
