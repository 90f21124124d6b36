//! End-to-end tests: the three real servers on port 0, wired by static
//! discovery, driven over HTTP like a client would, with the database
//! checked directly afterwards.

mod bad_input;
mod edge;
mod helpers;
mod idempotency;
mod login_throttle;
mod logout;
mod paging;
mod resilience;
mod security;
mod tls;
mod user_story;
mod web_app;
