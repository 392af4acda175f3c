//! Test support, by concern: a real browser (`browser`), databases (`db`, and `legacy` with production's roles), gateways (`gateway`),
//! an HTTP client (`http`), SSE clients (`sse`), waiting on conditions (`wait`), certificates (`tls`), and
//! a fault-injecting TCP proxy (`proxy`), and failing shadows of built-in functions (`shadows`).
#![allow(dead_code, unused_imports)]

pub mod browser;
pub mod db;
pub mod gateway;
pub mod http;
pub mod legacy;
pub mod mercure;
pub mod proxy;
pub mod shadows;
pub mod sse;
pub mod tls;
pub mod wait;

pub use browser::{artifact_dir, Browser};
pub use db::*;
pub use gateway::*;
pub use http::{call, get, h2_sender, request, Response, JSON};
pub use legacy::{legacy, Legacy};
pub use shadows::plant_shadows;
pub use sse::*;
pub use tls::*;
pub use wait::*;
