//! `easy-note`: the whole suite in one process on the embedded defaults
//! (SQLite under `./data/`, static discovery). `cargo run --release`.

use std::{process::ExitCode, time::Duration};

fn main() -> ExitCode {
    easynote_shared::app::main("easy-note", |env, shutdown| async move {
        let suite = easy_note::Suite::build(&env).await?;
        let (gateway, user, note) = (suite.gateway_addr(), suite.user_addr(), suite.note_addr());
        let running = tokio::spawn(suite.run(shutdown));
        easy_note::wait_until_serving(user, Duration::from_secs(10)).await?;
        easy_note::wait_until_serving(note, Duration::from_secs(10)).await?;
        tracing::info!(%user, %note, "user-service and note-service are serving");
        println!(
            "Easy-Note is ready at http://{gateway}  (try: curl http://{gateway}/ping; Ctrl-C stops)"
        );
        running.await?
    })
}
