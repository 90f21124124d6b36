//! `user-service`: see the crate docs and the README for its settings.

use std::process::ExitCode;

fn main() -> ExitCode {
    easynote_shared::app::main(
        user_service::SERVICE,
        user_service::PROBE,
        |env, shutdown| async move {
            let server =
                user_service::UserServer::build(user_service::Config::from_env(&env)?).await?;
            server.run(shutdown).await
        },
    )
}
