//! pgsse turns PostgreSQL changes into Server-Sent Events streams.
//!
//! The folders are the layers, each importing only those below it (docs/design.md draws them):
//! [`server`] accepts and drains; `http` serves one connection and routes it; `app` builds the shared
//! state and hands each handler of `api` the narrow handle it needs; below them `auth`, `sse` (wire
//! encoding and the stream body), `fanout` (hub and queues) and `pg` (the LISTEN connection, the pool,
//! migrations); at the bottom small leaves ([`filter`], [`cursor`], `channel`, `limits`, `tls`).

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
mod parse;
mod pg;
mod server;
pub mod sse;
pub mod tls;

pub use pg::migrate::{migrate, MigrateError, MIGRATIONS, SCHEMA_VERSION};
/// For tests that read the log the way the gateway does.
pub use pg::store::{Store, PAGE_BYTES};
pub use server::{bind, run, BindError, Listeners, ServerError};
#[cfg(any(test, feature = "testing"))]
pub mod testing;
