//! `easy-note`: the whole suite in one process on the embedded defaults
//! (SQLite under `./data/`, static discovery) — `cargo run --release` — or
//! any one service: `easy-note user-service|note-service|api-gateway`.

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use easynote_shared::app::{self, ServiceCommand};

/// Easy-Note: a note-taking backend of three services, in one process or one at a time.
#[derive(Debug, Parser)]
#[command(name = "easy-note", version, after_help = app::SETTINGS_HELP)]
struct Cli {
    /// What to run when no subcommand is given (containers set this, so
    /// that the run and `easy-note healthcheck` agree on the role).
    #[arg(long, value_enum, env = "EASYNOTE_SERVICE", default_value_t = Role::All)]
    service: Role,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The three services in one process, wired to each other.
    All {
        #[command(subcommand)]
        check: Option<ServiceCommand>,
    },
    /// Only user-service (same as the user-service binary).
    UserService {
        #[command(subcommand)]
        check: Option<ServiceCommand>,
    },
    /// Only note-service (same as the note-service binary).
    NoteService {
        #[command(subcommand)]
        check: Option<ServiceCommand>,
    },
    /// Only the gateway (same as the api-gateway binary).
    ApiGateway {
        #[command(subcommand)]
        check: Option<ServiceCommand>,
    },
    /// Probe the server this environment configures on this host: exit 0
    /// when it is healthy (for container health checks).
    Healthcheck {
        /// Which role to probe; by default `--service` / `EASYNOTE_SERVICE`.
        #[arg(value_enum)]
        role: Option<Role>,
    },
}

/// The roles one `easy-note` process can play.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    /// The three services in one process.
    All,
    /// user-service.
    UserService,
    /// note-service.
    NoteService,
    /// api-gateway.
    ApiGateway,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (role, check) = match cli.command {
        None => (cli.service, None),
        Some(Command::All { check }) => (Role::All, check),
        Some(Command::UserService { check }) => (Role::UserService, check),
        Some(Command::NoteService { check }) => (Role::NoteService, check),
        Some(Command::ApiGateway { check }) => (Role::ApiGateway, check),
        Some(Command::Healthcheck { role }) => (
            role.unwrap_or(cli.service),
            Some(ServiceCommand::Healthcheck),
        ),
    };
    match role {
        Role::All => app::run("easy-note", easy_note::PROBE, check, easy_note::run_all),
        Role::UserService => app::run(
            user_service::SERVICE,
            user_service::PROBE,
            check,
            user_service::serve,
        ),
        Role::NoteService => app::run(
            note_service::SERVICE,
            note_service::PROBE,
            check,
            note_service::serve,
        ),
        Role::ApiGateway => app::run(
            api_gateway::SERVICE,
            api_gateway::PROBE,
            check,
            api_gateway::serve,
        ),
    }
}
