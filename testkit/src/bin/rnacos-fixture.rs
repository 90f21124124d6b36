//! rnacos for the scripts (the bench, the compose smoke test and the
//! screenshots), started exactly as the tests start it ([`Rnacos`]): on a
//! free pair of loopback ports (HTTP `p`, gRPC `p + 1000`, where Nacos
//! clients look for it), with a data directory of its own, a start that
//! fails retried. It prints `listening on 127.0.0.1:p` once rnacos answers
//! (and, with auth, once its admin can log in), and on SIGTERM or Ctrl-C it
//! stops rnacos and removes its data.
//!
//!   target/release/rnacos-fixture
//!   NACOS_USERNAME=… NACOS_PASSWORD=… target/release/rnacos-fixture --auth
//!   target/release/rnacos-fixture --open-console
//!
//! `--auth` puts rnacos's open API and gRPC behind a login whose admin is
//! `NACOS_USERNAME` / `NACOS_PASSWORD` (the variables the services log in
//! with; read from the environment, never from the command line, where
//! `ps` would show the password). rnacos itself is found as the tests find
//! it: `RNACOS_BIN`, else `rnacos` on `PATH`. `--open-console` serves
//! rnacos's console (`/rnacos/` on the HTTP port) without a login, for
//! screenshots.
//!
//! A binary of the test kit, so `cargo build --release --workspace` builds
//! it with the services.

use easynote_testkit::rnacos::Rnacos;
use tokio::signal::unix::{SignalKind, signal};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let (mut auth, mut open_console) = (false, false);
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--auth" => auth = true,
            "--open-console" => open_console = true,
            other => anyhow::bail!(
                "unknown argument {other:?}; usage: rnacos-fixture [--auth | --open-console] \
                 (with --auth, the admin is NACOS_USERNAME / NACOS_PASSWORD)"
            ),
        }
    }
    anyhow::ensure!(
        !(auth && open_console),
        "--auth and --open-console exclude each other"
    );
    let mut terminate = signal(SignalKind::terminate())?;
    let nacos = if auth {
        let var = |name: &str| {
            std::env::var(name)
                .map_err(|_| anyhow::anyhow!("--auth needs {name} in the environment"))
        };
        Rnacos::start_with_auth(&var("NACOS_USERNAME")?, &var("NACOS_PASSWORD")?).await
    } else if open_console {
        Rnacos::start_with_open_console().await
    } else {
        Rnacos::start().await
    };
    println!("listening on {}", nacos.addr());
    tokio::select! {
        _ = terminate.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    // Dropping it kills rnacos and removes its data directory.
    drop(nacos);
    Ok(())
}
