//! The body of every binary's `main`: read the environment, set up
//! telemetry, run the server until Ctrl-C/SIGTERM, flush telemetry, and
//! report a failure with its whole cause chain and a non-zero exit code.
//!
//! Every binary also answers `<binary> healthcheck`: it probes the server
//! configured by the same environment on this host and exits 0 when it is
//! ready (a gRPC server reports SERVING, which needs its database; the
//! gateway's `/readyz`), and `<binary> healthcheck --live` exits 0 when the
//! process answers at all (liveness: never the database or downstream
//! services, so a database failover does not get every replica killed).
//! Container images need no shell or curl for health checks.
//! `--help` and `--version` come from clap.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    config::{Env, Environment},
    shutdown::{self, Shutdown},
    telemetry::{self, TelemetryConfig},
    tls::{Tls, TlsSettings},
};

/// How `healthcheck` probes the server of a binary.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// A gRPC server: `grpc.health.v1.Health/Check` must answer SERVING
    /// (for the server as a whole, or [`LIVENESS`](crate::grpc::LIVENESS)).
    Grpc {
        /// The variable holding the listen address.
        addr_var: &'static str,
        /// Its default.
        default_addr: &'static str,
    },
    /// An HTTP server: `GET /readyz` (or `/healthz` for liveness) must
    /// answer 200.
    Http {
        /// The variable holding the listen address.
        addr_var: &'static str,
        /// Its default.
        default_addr: &'static str,
    },
}

/// The command line of a one-service binary: run it, or probe it.
#[derive(Debug, clap::Parser)]
#[command(version)]
pub(crate) struct ServiceCli {
    /// What to do; serving is the default.
    #[command(subcommand)]
    pub(crate) command: Option<ServiceCommand>,
}

/// The subcommands every service binary has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum ServiceCommand {
    /// Probe the server this environment configures on this host: exit 0
    /// when it is ready to serve (for readiness checks), or with `--live`
    /// when it is alive (for liveness checks).
    Healthcheck {
        /// Only ask whether the process answers, not whether its database
        /// or downstream services do.
        #[arg(long)]
        live: bool,
    },
}

/// The whole `main` of a one-service binary (`user-service`, …): parses
/// the command line (`--help`, `--version`, `healthcheck`) and [`run`]s.
pub fn main<F, Fut>(service: &'static str, about: &'static str, probe: Probe, serve: F) -> ExitCode
where
    F: FnOnce(Env, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    use clap::{CommandFactory as _, FromArgMatches as _};
    let command = ServiceCli::command()
        .name(binary_name())
        .about(about)
        .after_help(SETTINGS_HELP);
    let cli = ServiceCli::from_arg_matches(&command.get_matches()).unwrap_or_else(|err| err.exit());
    run(service, probe, cli.command, serve)
}

/// How long `healthcheck` waits for the server before it fails: a probe's
/// timeout must be longer (checked by deploy/check-manifests.py through
/// `easy-note deploy-facts`).
pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// Shown under every binary's `--help`.
pub const SETTINGS_HELP: &str = "Settings are read from the environment (EASYNOTE_*, NACOS_*, OTEL_*): see docs/configuration.md.";

/// Runs `serve` on a multi-threaded runtime with the process environment and
/// a shutdown fired by Ctrl-C or SIGTERM; `service` names the process in
/// telemetry (`service.name`) and messages. [`ServiceCommand::Healthcheck`]
/// runs `probe` instead.
pub fn run<F, Fut>(
    service: &'static str,
    probe: Probe,
    command: Option<ServiceCommand>,
    serve: F,
) -> ExitCode
where
    F: FnOnce(Env, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("{service}: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let env = Env::from_process();
    if let Some(ServiceCommand::Healthcheck { live }) = command {
        return match runtime.block_on(run_probe(service, probe, &env, live)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("{service} is not healthy: {err:#}");
                ExitCode::FAILURE
            }
        };
    }
    let result = runtime.block_on(async {
        let telemetry = telemetry::init(&TelemetryConfig::from_env(&env)?, service)?;
        let served = serve(env, shutdown::on_signal()).await;
        telemetry.shutdown().await;
        served
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(
                error = format!("{err:#}"),
                "{service} stopped with an error"
            );
            eprintln!("{service}: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn binary_name() -> String {
    std::env::args()
        .next()
        .and_then(|path| {
            std::path::Path::new(&path)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .unwrap_or_else(|| "easy-note".to_owned())
}

/// `EASYNOTE_ADDR_FILE`: where a process reports the addresses it bound,
/// as one JSON object (`{"http": "127.0.0.1:41234"}`; keys `http`,
/// `user_grpc`, `note_grpc`). Written once the listeners are bound, whole
/// (a temporary file renamed into place), so that whoever started the
/// process with port 0 learns the real ports without guessing. Nothing
/// is written when the variable is unset.
pub fn report_addrs(env: &Env, addrs: &[(&str, SocketAddr)]) -> anyhow::Result<()> {
    let Some(path) = env.get("EASYNOTE_ADDR_FILE") else {
        return Ok(());
    };
    let json: serde_json::Map<String, serde_json::Value> = addrs
        .iter()
        .map(|(key, addr)| ((*key).to_owned(), addr.to_string().into()))
        .collect();
    let partial = format!("{path}.partial");
    std::fs::write(&partial, serde_json::Value::Object(json).to_string())
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("writing EASYNOTE_ADDR_FILE {path}"))
}

/// Probes the local server of `service` described by `probe` and `env`
/// (over mutual TLS as `service` itself when the environment sets it up):
/// its readiness, or its liveness with `live`.
pub(crate) async fn run_probe(
    service: &'static str,
    probe: Probe,
    env: &Env,
    live: bool,
) -> anyhow::Result<()> {
    let (var, default, grpc) = match probe {
        Probe::Grpc {
            addr_var,
            default_addr,
        } => (addr_var, default_addr, true),
        Probe::Http {
            addr_var,
            default_addr,
        } => (addr_var, default_addr, false),
    };
    let addr = local_target(env.socket_addr(var, default)?);
    let tls = if grpc {
        let settings = TlsSettings::from_env(env, Environment::from_env(env)?)?;
        settings
            .files
            .map(|files| Tls::load(&files, service))
            .transpose()?
    } else {
        None
    };
    let check = async {
        if grpc {
            let name = if live { crate::grpc::LIVENESS } else { "" };
            probe_grpc(addr, tls.as_ref(), service, name).await
        } else {
            probe_http(addr, if live { "/healthz" } else { "/readyz" }).await
        }
    };
    tokio::time::timeout(HEALTHCHECK_TIMEOUT, check)
        .await
        .map_err(|_| anyhow::anyhow!("{addr} did not answer within {HEALTHCHECK_TIMEOUT:?}"))?
}

/// A listen address as a local client reaches it (`0.0.0.0` → loopback).
fn local_target(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => {
            SocketAddr::from(([127, 0, 0, 1], v4.port()))
        }
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, v6.port()))
        }
        other => other,
    }
}

async fn probe_grpc(
    addr: SocketAddr,
    tls: Option<&Tls>,
    service: &str,
    name: &str,
) -> anyhow::Result<()> {
    let channel = crate::tls::health_channel(addr, tls, service).await?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: name.to_owned(),
        })
        .await?;
    match reply.get_ref().status() {
        ServingStatus::Serving => Ok(()),
        other => anyhow::bail!("{addr} reports {other:?}"),
    }
}

async fn probe_http(addr: SocketAddr, path: &str) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut head = vec![0; 64];
    let n = stream.read(&mut head).await?;
    let status_line = String::from_utf8_lossy(&head[..n]);
    if status_line.starts_with("HTTP/1.1 200") {
        Ok(())
    } else {
        anyhow::bail!(
            "{addr} answered {:?}",
            status_line.lines().next().unwrap_or_default()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_files_hold_every_bound_address_as_json() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("addrs.json");
        let env = Env::from_pairs([("EASYNOTE_ADDR_FILE", path.display().to_string())]);
        let (http, grpc) = ("127.0.0.1:41234", "[::1]:5");
        report_addrs(
            &env,
            &[
                ("http", http.parse().expect("addr")),
                ("user_grpc", grpc.parse().expect("addr")),
            ],
        )
        .expect("written");
        let written: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("a file")).expect("JSON");
        assert_eq!(
            written,
            serde_json::json!({"http": http, "user_grpc": grpc})
        );
        report_addrs(&Env::default(), &[("http", http.parse().expect("addr"))])
            .expect("nothing to do without the variable");
    }

    #[test]
    fn unspecified_listen_addresses_are_probed_on_loopback() {
        assert_eq!(
            local_target("0.0.0.0:8080".parse().expect("addr")),
            "127.0.0.1:8080".parse().expect("addr")
        );
        assert_eq!(
            local_target("[::]:8888".parse().expect("addr")),
            "[::1]:8888".parse().expect("addr")
        );
        assert_eq!(
            local_target("10.0.0.7:1".parse().expect("addr")),
            "10.0.0.7:1".parse().expect("addr")
        );
    }

    #[tokio::test]
    async fn probes_fail_clearly_when_nothing_listens() {
        // Bound but not listening: connections are refused, and nobody
        // else can take the port while the socket lives.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(([127, 0, 0, 1], 0).into()).expect("bind");
        let addr = socket.local_addr().expect("addr").to_string();
        let env = Env::from_pairs([("ADDR", addr.as_str())]);
        for probe in [
            Probe::Http {
                addr_var: "ADDR",
                default_addr: "127.0.0.1:1",
            },
            Probe::Grpc {
                addr_var: "ADDR",
                default_addr: "127.0.0.1:1",
            },
        ] {
            for live in [false, true] {
                assert!(
                    run_probe("easy-note-user", probe, &env, live)
                        .await
                        .is_err(),
                    "{probe:?}"
                );
            }
        }
    }
}
