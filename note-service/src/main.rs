//! `note-service`: see the crate docs and docs/configuration.md for its settings.

use std::process::ExitCode;

fn main() -> ExitCode {
    easynote_shared::app::main(
        note_service::SERVICE,
        note_service::ABOUT,
        note_service::PROBE,
        note_service::serve,
    )
}
