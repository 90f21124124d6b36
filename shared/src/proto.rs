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
    }
}

/// `easynote.note.v1`: notes.
pub mod note {
    /// Version 1 of the note API.
    pub mod v1 {
        tonic::include_proto!("easynote.note.v1");
    }
}
