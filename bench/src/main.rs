//! easy-note-bench: load generator and no-RPC baseline for Easy-Note.
//!
//! `easy-note-bench --help` lists the options (clap).
//!
//! `run` prepares its own data through the public API (N fresh users with M
//! notes each), then drives the mix closed-loop at a concurrency or
//! open-loop at a fixed rate, prints progress each second and a summary at
//! the end, and writes the result as JSON. `baseline` serves the same routes
//! in one process with no RPC, for comparison. `scale` times queries of one
//! owner holding many notes, loaded straight into the database.

mod baseline;
mod load;
mod mix;
mod report;
mod scale;

use std::{process::ExitCode, time::Duration};

use anyhow::bail;
use clap::{Args, Parser, Subcommand};

use crate::{
    load::{LoadConfig, Pacing},
    mix::Mix,
};

/// Load generator and no-RPC baseline for Easy-Note.
#[derive(Debug, Parser)]
#[command(name = "easy-note-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Prepare data through the API, then drive a weighted mix closed-loop
    /// (at a concurrency) or open-loop (at a rate); report percentiles.
    Run(RunArgs),
    /// Serve the same routes with no RPC: JWT check and the same SQL in one
    /// process. Reads EASYNOTE_HTTP_ADDR (default 127.0.0.1:8090),
    /// EASYNOTE_DATABASE_URL (default sqlite://data/baseline.db) and
    /// EASYNOTE_JWT_SECRET.
    Baseline,
    /// One owner with many notes, loaded straight into the suite's note
    /// database: first page, deep page by offset and by cursor, a rare and
    /// a common search, and a create, as medians, at each size.
    Scale(ScaleArgs),
}

#[derive(Debug, Args)]
struct ScaleArgs {
    /// The gateway of the suite to measure.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The note database of that suite (sqlite://… or mysql://…).
    #[arg(long)]
    database_url: String,
    /// The owner's note counts to measure at, ascending (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
    sizes: Vec<u64>,
    /// Other owners (without accounts) to load first.
    #[arg(long, default_value_t = 0)]
    other_users: u64,
    /// Notes of each other owner.
    #[arg(long, default_value_t = 100)]
    notes_each: u64,
    /// Timed requests per measurement (the median is reported).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    repeat: u32,
    /// A name for the run in the output.
    #[arg(long, default_value = "scale")]
    label: String,
    /// Where to write the rows as JSON.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The gateway (or baseline) to drive.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Fresh users to create.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    users: u32,
    /// Notes per user.
    #[arg(long = "notes", default_value_t = 20)]
    notes_per_user: u32,
    /// Weights per kind (query, search, get, create, update, login).
    #[arg(long, default_value = "query=80,create=10,update=5,login=5")]
    mix: Mix,
    /// Closed loop: requests in flight at once (default 32).
    #[arg(long, conflicts_with = "rate", value_parser = clap::value_parser!(u32).range(1..))]
    concurrency: Option<u32>,
    /// Open loop: requests started per second, whatever the answers do.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    rate: Option<u32>,
    /// How long to measure, e.g. 20s or 2m.
    #[arg(long, default_value = "20s", value_parser = positive_duration)]
    duration: Duration,
    /// How long to run before measuring.
    #[arg(long, default_value = "3s", value_parser = any_duration)]
    warmup: Duration,
    /// Per-request timeout.
    #[arg(long, default_value = "10s", value_parser = positive_duration)]
    timeout: Duration,
    /// A name for the run in reports.
    #[arg(long, default_value = "run")]
    label: String,
    /// Where to write the result as JSON.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let outcome = match cli.command {
        Command::Run(args) => {
            load_config(args).and_then(|config| runtime.block_on(load::run(config)))
        }
        Command::Baseline => runtime.block_on(baseline::serve()),
        Command::Scale(args) => runtime.block_on(scale::run(scale::ScaleConfig {
            url: args.url.trim_end_matches('/').to_owned(),
            database_url: args.database_url,
            sizes: args.sizes,
            other_users: args.other_users,
            notes_each: args.notes_each,
            repeat: args.repeat as usize,
            label: args.label,
            out: args.out,
        })),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("easy-note-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: RunArgs) -> anyhow::Result<LoadConfig> {
    let pacing = match (args.rate, args.concurrency) {
        (Some(rate), _) => Pacing::Open { rate },
        (None, concurrency) => Pacing::Closed {
            concurrency: concurrency.unwrap_or(32),
        },
    };
    if args.mix.needs_notes() && args.notes_per_user == 0 {
        bail!("the mix updates or reads notes by id: --notes must be at least 1");
    }
    Ok(LoadConfig {
        url: args.url.trim_end_matches('/').to_owned(),
        users: args.users,
        notes_per_user: args.notes_per_user,
        mix: args.mix,
        pacing,
        duration: args.duration,
        warmup: args.warmup,
        timeout: args.timeout,
        label: args.label,
        out: args.out,
        quiet: args.quiet,
    })
}

fn any_duration(value: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(value)
}

fn positive_duration(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value) {
        Ok(parsed) if parsed.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(parsed) => Ok(parsed),
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::*;

    fn parse(args: &[&str]) -> Result<LoadConfig, String> {
        let cli = Cli::try_parse_from(["easy-note-bench", "run"].iter().chain(args))
            .map_err(|err| err.to_string())?;
        let Command::Run(args) = cli.command else {
            unreachable!("run was given")
        };
        load_config(args).map_err(|err| err.to_string())
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn rate_and_concurrency_exclude_each_other() {
        let err = parse(&["--rate", "100", "--concurrency", "8"]).expect_err("both");
        assert!(err.contains("cannot be used with"), "{err}");
        assert!(matches!(
            parse(&["--rate", "100"]).unwrap().pacing,
            Pacing::Open { rate: 100 }
        ));
        assert!(matches!(
            parse(&[]).unwrap().pacing,
            Pacing::Closed { concurrency: 32 }
        ));
    }

    #[test]
    fn durations_and_counts_are_checked() {
        assert_eq!(
            parse(&["--duration", "1m"]).unwrap().duration,
            Duration::from_secs(60)
        );
        assert_eq!(parse(&["--warmup", "0s"]).unwrap().warmup, Duration::ZERO);
        for bad in [
            &["--duration", "0s"][..],
            &["--duration", "soon"],
            &["--users", "0"],
            &["--mix", "query=80,nap=20"],
            &["--notes", "0", "--mix", "get=1"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
