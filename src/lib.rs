//! pgsse turns PostgreSQL changes into Server-Sent Events streams.
//!
//! Data flows one way: [`listener`] (the one LISTEN connection, its reads spaced by [`pacing`]) reads the
//! commit-ordered log and hands encoded frames to the [`hub`], which fans them out through each stream's
//! [`queue`] to its [`sse`] body.
//!
//! - [`config`]: flags and `PGSSE_*` environment.
//! - [`server`]: accept loop, shared state, graceful shutdown; [`conn`]: one connection (with [`tls`]
//!   when configured), and an HTTP/1 stream's body once hyper hands the connection back; [`routes`]:
//!   HTTP routing and JSON errors;
//!   [`cors`]: cross-origin headers; [`auth`]: grants (who may read and write which channels) from a JWT
//!   or, via [`auth_url`], a legacy backend;
//!   [`limits`]: streams per gateway and per client, and counts of refusals; [`metrics`]: `/metrics`.
//! - [`commands`]: `POST`/`GET`/`DELETE` on a channel (writes go through PostgreSQL, never to the hub).
//! - [`stream`]: opening a stream, replay from the log and the seam to live frames; [`cursor`]: resume ids;
//!   [`filter`]: row filters on event data ([`published`]: the columns they may name); [`snapshot`]: a table's current rows at the start of a stream.
//! - [`store`]: pooled reads of the log ([`logrow`]: a row of it and its encoding); [`pgerror`]: database errors in one line; [`migrate`]: installs `sql/`; [`retention`]: prunes old events.
//! - [`cluster`] and [`demo`]: a private PostgreSQL for `pgsse demo` and the tests; [`web`]: the demo pages.

pub mod auth;
pub mod auth_url;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod conn;
pub mod cors;
pub mod cursor;
pub mod demo;
pub mod filter;
pub mod hub;
pub mod limits;
pub mod listener;
pub mod logrow;
pub mod metrics;
pub mod migrate;
pub mod pacing;
pub mod pgerror;
pub mod published;
pub mod queue;
pub mod retention;
pub mod routes;
pub mod sequencer;
pub mod server;
pub mod snapshot;
pub mod sse;
pub mod store;
pub mod stream;
pub mod tls;
pub mod web;
