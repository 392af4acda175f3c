//! One HTTP connection: TLS, HTTP/1 or HTTP/2, routing to the API, CORS, and the demo pages.

pub mod access;
pub mod conn;
pub mod cors;
mod idle;
pub mod routes;
pub mod web;

use std::sync::Arc;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;

use crate::app::App;
use cors::Cors;

/// What every connection shares: the application, and HTTP's own parts.
pub struct Site {
    pub app: Arc<App>,
    pub cors: Cors,
    pub builders: Builders,
    /// Whether `/metrics` has a listener of its own, and so is not served here.
    pub metrics_apart: bool,
    /// `--access-log`.
    pub access_log: bool,
}

/// hyper's builders for the two protocols, configured once by the server.
pub struct Builders {
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
}
