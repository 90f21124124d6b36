//! The body of every binary's `main`: read the environment, set up
//! telemetry, run the server until Ctrl-C/SIGTERM, flush telemetry, and
//! report a failure with its whole cause chain and a non-zero exit code.
//!
//! Every binary also answers `<binary> healthcheck`: it probes the server
//! configured by the same environment on this host and exits 0 when it is
//! healthy, so container images need no shell or curl for health checks.

use std::{net::SocketAddr, process::ExitCode, time::Duration};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::{
    config::Env,
    shutdown::{self, Shutdown},
    telemetry::{self, TelemetryConfig},
};

/// How `healthcheck` probes the server of a binary.
#[derive(Debug, Clone, Copy)]
pub enum Probe {
    /// A gRPC server: `grpc.health.v1.Health/Check` must answer SERVING.
    Grpc {
        /// The variable holding the listen address.
        addr_var: &'static str,
        /// Its default.
        default_addr: &'static str,
    },
    /// An HTTP server: `GET /healthz` must answer 200.
    Http {
        /// The variable holding the listen address.
        addr_var: &'static str,
        /// Its default.
        default_addr: &'static str,
    },
}

/// Runs `serve` on a multi-threaded runtime with the process environment and
/// a shutdown fired by Ctrl-C or SIGTERM; `service` names the process in
/// telemetry (`service.name`) and messages. `healthcheck` as the only
/// argument runs `probe` instead.
pub fn main<F, Fut>(service: &'static str, probe: Probe, serve: F) -> ExitCode
where
    F: FnOnce(Env, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let args: Vec<String> = std::env::args().skip(1).collect();
    main_with_args(service, probe, &args, serve)
}

/// [`main`] with the arguments given (after the binary and any subcommand).
pub fn main_with_args<F, Fut>(
    service: &'static str,
    probe: Probe,
    args: &[String],
    serve: F,
) -> ExitCode
where
    F: FnOnce(Env, Shutdown) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let healthcheck = match args {
        [] => false,
        [arg] if arg == "healthcheck" => true,
        _ => {
            eprintln!(
                "usage: {} [healthcheck]\nsettings are read from the environment (see README)",
                binary_name()
            );
            return ExitCode::from(2);
        }
    };
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
    if healthcheck {
        return match runtime.block_on(run_probe(probe, &env)) {
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

/// Probes the local server described by `probe` and `env`.
pub async fn run_probe(probe: Probe, env: &Env) -> anyhow::Result<()> {
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
    let check = async {
        if grpc {
            probe_grpc(addr).await
        } else {
            probe_http(addr).await
        }
    };
    tokio::time::timeout(Duration::from_secs(3), check)
        .await
        .map_err(|_| anyhow::anyhow!("{addr} did not answer within 3s"))?
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

async fn probe_grpc(addr: SocketAddr) -> anyhow::Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await?;
    match reply.get_ref().status() {
        ServingStatus::Serving => Ok(()),
        other => anyhow::bail!("{addr} reports {other:?}"),
    }
}

async fn probe_http(addr: SocketAddr) -> anyhow::Result<()> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        drop(listener);
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
            assert!(run_probe(probe, &env).await.is_err(), "{probe:?}");
        }
    }
}
