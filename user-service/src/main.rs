//! `user-service`: see the crate docs and docs/configuration.md for its settings.

use std::process::ExitCode;

fn main() -> ExitCode {
    easynote_shared::app::main(
        user_service::SERVICE,
        user_service::ABOUT,
        user_service::PROBE,
        user_service::serve,
    )
}
