//! The body of every binary's `main`: read the environment, set up logging,
//! run the server until Ctrl-C/SIGTERM, and report a failure with its whole
//! cause chain and a non-zero exit code.

use std::process::ExitCode;

use crate::{
    config::Env,
    shutdown::{self, Shutdown},
    telemetry::{self, TelemetryConfig},
};

/// Runs `serve` on a multi-threaded runtime with the process environment and
/// a shutdown fired by Ctrl-C or SIGTERM.
pub fn main<F, Fut>(name: &'static str, serve: F) -> ExitCode
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
            eprintln!("{name}: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let env = Env::from_process();
        telemetry::init(&TelemetryConfig::from_env(&env)?)?;
        serve(env, shutdown::on_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "{name} stopped with an error");
            eprintln!("{name}: {err:#}");
            ExitCode::FAILURE
        }
    }
}
