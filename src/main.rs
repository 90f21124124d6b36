//! `easy-note`: the whole suite in one process on the embedded defaults
//! (SQLite under `./data/`, static discovery) — `cargo run --release` — or
//! any one service: `easy-note user-service|note-service|api-gateway`.

use std::process::ExitCode;

use easynote_shared::app;

const USAGE: &str =
    "usage: easy-note [all | user-service | note-service | api-gateway] [healthcheck]
  all (default)  the three services in one process, wired to each other
  user-service   only user-service   (same as the user-service binary)
  note-service   only note-service   (same as the note-service binary)
  api-gateway    only the gateway    (same as the api-gateway binary)
settings are read from the environment (see README)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = match args.split_first() {
        Some((first, rest)) if !first.starts_with('-') && first != "healthcheck" => {
            (first.as_str(), rest)
        }
        _ => ("all", args.as_slice()),
    };
    match command {
        "all" => app::main_with_args("easy-note", easy_note::PROBE, rest, easy_note::run_all),
        "user-service" => app::main_with_args(
            user_service::SERVICE,
            user_service::PROBE,
            rest,
            user_service::serve,
        ),
        "note-service" => app::main_with_args(
            note_service::SERVICE,
            note_service::PROBE,
            rest,
            note_service::serve,
        ),
        "api-gateway" => app::main_with_args(
            api_gateway::SERVICE,
            api_gateway::PROBE,
            rest,
            api_gateway::serve,
        ),
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}
