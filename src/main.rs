//! `easy-note`: the whole suite in one process on the embedded defaults
//! (SQLite under `./data/`, static discovery) — `cargo run --release` — or
//! any one service: `easy-note user-service|note-service|api-gateway`.

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use easy_note::Role;
use easynote_shared::{
    app::{self, ServiceCommand},
    config::Env,
};

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
    /// when it is ready to serve (readiness checks), or with `--live` when
    /// it is alive (liveness checks).
    Healthcheck {
        /// Which role to probe; by default `--service` / `EASYNOTE_SERVICE`.
        #[arg(value_enum)]
        role: Option<Role>,
        /// Only ask whether the process answers, not whether its database
        /// or downstream services do.
        #[arg(long)]
        live: bool,
    },
    /// Print, as JSON, what a deployment of this role must agree with:
    /// its identity, who may call it, and the bounded waits of its start
    /// and stop as this environment sets them (deploy/check-manifests.py).
    DeployFacts {
        /// Every role's, with this environment, keyed by role.
        #[arg(long)]
        every_role: bool,
    },
    /// Check a governance rules document before publishing it, or say what
    /// publishing it would change.
    Rules {
        #[command(subcommand)]
        command: RulesCommand,
    },
    /// Write a development CA and a certificate per service (and, with
    /// `--all-in-one`, one for the all-in-one process), to turn mutual TLS
    /// on locally. Not for production.
    DevCerts {
        /// Where to write them.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Replace an existing set.
        #[arg(long, conflicts_with = "if_missing")]
        force: bool,
        /// Do nothing when a set is already there (for a container's first start).
        #[arg(long)]
        if_missing: bool,
        /// Also write `easy-note.pem`/`.key`, one certificate with every
        /// service's name, for the all-in-one process (it can pass for any
        /// service, so it is left out unless asked for).
        #[arg(long)]
        all_in_one: bool,
        /// Put each certificate (with the CA) in a directory of its own,
        /// `OUT/<registry name>/`, and the JWT key in the gateway's: one
        /// directory (one volume) per service, holding only its own key.
        #[arg(long)]
        split: bool,
        /// Also write a random JWT key to `jwt-secret` (for
        /// `EASYNOTE_JWT_SECRET_FILE`).
        #[arg(long)]
        jwt_secret: bool,
        /// Also write a random secret (48 bytes as hex) to the file NAME in
        /// `--secrets-out`, unless it is there already (or with `--force`);
        /// repeatable. NAME may be in one directory (`db/mysql-password`),
        /// to keep secrets with the same holders together. For per-install
        /// passwords and keys, e.g. compose's Nacos and MySQL ones.
        #[arg(long = "secret", value_name = "NAME", value_parser = secret_name)]
        secrets: Vec<String>,
        /// Where `--secret` files go (by default `--out`).
        #[arg(long, value_name = "DIR")]
        secrets_out: Option<PathBuf>,
    },
}

/// `easy-note rules …`.
#[derive(Debug, Subcommand)]
enum RulesCommand {
    /// Validate FILE as every process would, print the effective rules per
    /// route, service and method, and the conflicts between rules (exit 1
    /// when there is one, 2 when the document is refused).
    Check {
        /// The document (`easy-note-governance.json`).
        file: PathBuf,
        /// Also check lanes against the instances registered now, in the
        /// registry this environment configures (`EASYNOTE_REGISTRY`,
        /// `NACOS_*`, as the services read them).
        #[arg(long)]
        registry: bool,
    },
    /// What would change in effect from OLD to NEW, setting by setting.
    Diff {
        /// The document in force.
        old: PathBuf,
        /// The document to publish.
        new: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (role, check) = match cli.command {
        Some(Command::DevCerts {
            out,
            force,
            if_missing,
            all_in_one,
            split,
            jwt_secret,
            secrets,
            secrets_out,
        }) => {
            let mut set = easynote_shared::tls::devcert::Set::services();
            if all_in_one {
                set = set.with_all_in_one();
            }
            if split {
                set = set.split();
            }
            let mut files: Vec<PathBuf> = secrets
                .iter()
                .map(|name| secrets_out.as_ref().unwrap_or(&out).join(name))
                .collect();
            if jwt_secret {
                files.push(set.jwt_secret_file(&out));
            }
            return dev_certs(&out, set, force, if_missing, &files);
        }
        Some(Command::Rules { command }) => return rules(command),
        Some(Command::DeployFacts { every_role }) => return deploy_facts(cli.service, every_role),
        None => (cli.service, None),
        Some(Command::All { check }) => (Role::All, check),
        Some(Command::UserService { check }) => (Role::UserService, check),
        Some(Command::NoteService { check }) => (Role::NoteService, check),
        Some(Command::ApiGateway { check }) => (Role::ApiGateway, check),
        Some(Command::Healthcheck { role, live }) => (
            role.unwrap_or(cli.service),
            Some(ServiceCommand::Healthcheck { live }),
        ),
    };
    let (name, probe) = (role.identity(), role.probe());
    match role {
        Role::All => app::run(name, probe, check, easy_note::run_all),
        Role::UserService => app::run(name, probe, check, user_service::serve),
        Role::NoteService => app::run(name, probe, check, note_service::serve),
        Role::ApiGateway => app::run(name, probe, check, api_gateway::serve),
    }
}

/// `easy-note deploy-facts`: the facts of `role`, or of every role, with
/// the process environment; exit 2 for a setting the service would refuse.
fn deploy_facts(role: Role, every_role: bool) -> ExitCode {
    let env = Env::from_process();
    let facts = if every_role {
        easy_note::deploy_facts::every_role(&env)
    } else {
        easy_note::deploy_facts::deploy_facts(role, &env)
    };
    match facts {
        Ok(facts) => {
            println!("{facts:#}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("easy-note deploy-facts: {err}");
            ExitCode::from(2)
        }
    }
}

/// `easy-note rules check|diff`: exit 0 when fine, 1 for conflicts, 2 for a
/// refused document.
fn rules(command: RulesCommand) -> ExitCode {
    let report = match command {
        RulesCommand::Check { file, registry } => {
            let loaded = match easy_note::rules::load(&file) {
                Ok(loaded) => loaded,
                Err(err) => {
                    eprintln!("easy-note rules: {err:#}");
                    return ExitCode::from(2);
                }
            };
            let instances = if registry {
                let found = tokio::runtime::Runtime::new()
                    .map_err(anyhow::Error::from)
                    .and_then(|runtime| {
                        runtime.block_on(easy_note::rules::registered_instances(
                            &loaded.0,
                            std::time::Duration::from_secs(3),
                        ))
                    });
                match found {
                    Ok(instances) => Some(instances),
                    Err(err) => {
                        eprintln!("easy-note rules check: {err:#}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                None
            };
            Ok(easy_note::rules::check(&file, &loaded, instances.as_ref()))
        }
        RulesCommand::Diff { old, new } => easy_note::rules::diff(&old, &new),
    };
    match report {
        Ok(report) => {
            print!("{}", report.text);
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(err) => {
            eprintln!("easy-note rules: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// `--secret NAME`: a file name, not a path.
fn secret_name(name: &str) -> Result<String, String> {
    if easynote_shared::tls::devcert::valid_secret_name(name) {
        Ok(name.to_owned())
    } else {
        Err(
            "a file name of letters, digits, '.', '_' and '-', optionally in one directory \
             named the same way (db/mysql-password)"
                .to_owned(),
        )
    }
}

/// `easy-note dev-certs`: writes the set (unless `--if-missing` finds one)
/// and each secret file not there yet (every one with `--force`), and says
/// how to use them.
fn dev_certs(
    out: &std::path::Path,
    set: easynote_shared::tls::devcert::Set,
    force: bool,
    if_missing: bool,
    secrets: &[PathBuf],
) -> ExitCode {
    use easynote_shared::tls::devcert;
    // The CA is written last: its presence marks a complete set.
    let have_set = !force && set.is_complete(out);
    if have_set && !if_missing {
        eprintln!(
            "easy-note dev-certs: a set exists in {}; pass --force to replace it",
            out.display()
        );
        return ExitCode::FAILURE;
    }
    let written = (|| {
        let mut written = Vec::new();
        for file in secrets {
            if force || !file.exists() {
                devcert::write_secret(file)?;
                written.push(file.clone());
            }
        }
        if have_set {
            println!("{}: a certificate set is already there", out.display());
        } else {
            written.extend(devcert::write(out, set, true)?);
        }
        anyhow::Ok(written)
    })();
    match written {
        Ok(written) => {
            for file in &written {
                println!("wrote {}", file.display());
            }
            let all = devcert::files(out, devcert::ALL_IN_ONE);
            if all.cert.exists() {
                println!(
                    "\nMutual TLS for the all-in-one process:\n  \
                     EASYNOTE_TLS_CA={} EASYNOTE_TLS_CERT={} EASYNOTE_TLS_KEY={} cargo run --release",
                    all.ca.display(),
                    all.cert.display(),
                    all.key.display(),
                );
            }
            println!(
                "Each service takes its own pair ({}/<registry name>.pem and .key) and the CA {}.",
                out.display(),
                all.ca.display(),
            );
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("easy-note dev-certs: {err:#}");
            ExitCode::FAILURE
        }
    }
}
