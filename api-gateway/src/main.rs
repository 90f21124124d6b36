//! `api-gateway`: see the crate docs and the README for its settings.

use std::process::ExitCode;

fn main() -> ExitCode {
    easynote_shared::app::main(
        api_gateway::SERVICE,
        api_gateway::PROBE,
        |env, shutdown| async move {
            let gateway = api_gateway::Gateway::build(api_gateway::Config::from_env(&env)?).await?;
            gateway.run(shutdown).await
        },
    )
}
