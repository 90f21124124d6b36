//! `note-service`: see the crate docs and the README for its settings.

use std::process::ExitCode;

fn main() -> ExitCode {
    easynote_shared::app::main(
        note_service::SERVICE,
        note_service::PROBE,
        |env, shutdown| async move {
            let server =
                note_service::NoteServer::build(note_service::Config::from_env(&env)?).await?;
            server.run(shutdown).await
        },
    )
}
