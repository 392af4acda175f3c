//! One HTTP connection: TLS, HTTP/1 or HTTP/2, routing to the API, CORS, and the demo pages.

pub mod conn;
pub mod cors;
mod idle;
pub mod routes;
pub mod web;
