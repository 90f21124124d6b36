//! Code generated from `shared/proto` (compiled once, by this crate's build script).

#![allow(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    clippy::all,
    clippy::pedantic
)]

/// `easynote.user.v1`: accounts.
pub mod user {
    /// Version 1 of the user API.
    pub mod v1 {
        tonic::include_proto!("easynote.user.v1");

        /// `Debug` that shows the username, never the password.
        macro_rules! redacted_debug {
            ($($message:ident),+) => {$(
                impl std::fmt::Debug for $message {
                    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.debug_struct(stringify!($message))
                            .field("username", &self.username)
                            .field("password", &"[redacted]")
                            .finish()
                    }
                }
            )+};
        }
        redacted_debug!(CreateUserRequest, CheckUserRequest);
    }
}

/// `easynote.note.v1`: notes.
pub mod note {
    /// Version 1 of the note API.
    pub mod v1 {
        tonic::include_proto!("easynote.note.v1");
    }
}

#[cfg(test)]
mod tests {
    use super::user::v1::{CheckUserRequest, CreateUserRequest};

    #[test]
    fn debug_output_never_shows_a_password() {
        let create = CreateUserRequest {
            username: "ada".into(),
            password: "hunter2-secret".into(),
        };
        let check = CheckUserRequest {
            username: "ada".into(),
            password: "hunter2-secret".into(),
        };
        for shown in [
            format!("{create:?}"),
            format!("{check:?}"),
            format!("{:?}", tonic::Request::new(check.clone())),
        ] {
            assert!(shown.contains("ada"), "{shown}");
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
}
