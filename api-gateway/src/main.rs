//! `api-gateway`: see the crate docs and docs/configuration.md for its settings.

use std::process::ExitCode;

fn main() -> ExitCode {
    easynote_shared::app::main(
        api_gateway::SERVICE,
        api_gateway::ABOUT,
        api_gateway::PROBE,
        api_gateway::serve,
    )
}
