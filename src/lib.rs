//! pgsse turns PostgreSQL changes into Server-Sent Events streams.
//!
//! The folders are the layers (docs/design.md draws them): `server` binds, accepts and drains; `http`
//! serves a connection; `app` builds the state and gives each `api` handler its narrow handle; below them
//! `pg`, `fanout`, [`sse`], [`auth`] and `limits`; at the bottom small leaves ([`filter`], [`cursor`],
//! `shared_read`, `memory`, and `refusal`, the kinds of refusal each error chooses and HTTP looks up).

mod api;
mod app;
pub mod auth;
mod channel;
pub mod config;
pub mod cursor;
pub mod demo;
mod fanout;
pub mod filter;
mod http;
mod limits;
pub mod logging;
mod memory;
pub(crate) mod mercure;
mod parse;
mod pg;
mod refusal;
mod server;
mod shared_read;
pub mod sse;
pub mod tls;
mod topic;

pub use http::access::TARGET as ACCESS_LOG_TARGET;
pub use pg::migrate::{migrate, migrate_within, MigrateError, FUNCTIONS, LOCK_TIMEOUT, MIGRATIONS, SCHEMA_VERSION};
pub use pg::preflight::{credentials, CredentialError};
/// For tests that read the log the way the gateway does.
pub use pg::store::{Store, PAGE_BYTES};
pub use server::{run, BindError, ServerError, Sockets};
#[cfg(any(test, feature = "testing"))]
pub mod testing;
