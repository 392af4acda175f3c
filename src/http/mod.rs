//! One HTTP connection: TLS, HTTP/1 or HTTP/2, routing to the API, CORS, and the demo pages.

pub mod access;
pub mod conn;
pub mod cors;
mod idle;
mod mercure;
mod parked;
pub mod routes;
mod socket;
pub mod web;
mod writing;

use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper_util::rt::TokioExecutor;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::warn;

use crate::api::commands::Commands;
use crate::api::events::Events;
use crate::api::health::Health;
use crate::app::metrics::Metrics;
use crate::app::App;
use crate::auth::{Auth, Denials};
use crate::limits::Limits;
use cors::Cors;

/// What every connection shares: the handles its requests reach, and HTTP's own parts and settings.
pub struct Site {
    pub events: Arc<Events>,
    pub commands: Arc<Commands>,
    pub health: Arc<Health>,
    pub metrics: Arc<Metrics>,
    /// The Mercure hub, under `--mercure`.
    pub mercure: Option<Arc<crate::mercure::Mercure>>,
    pub auth: Arc<Auth>,
    pub limits: Arc<Limits>,
    pub denials: Arc<Denials>,
    /// Cancelled on shutdown: every connection starts closing.
    pub shutdown: CancellationToken,
    pub settings: Settings,
    pub cors: Cors,
    pub builders: Builders,
    /// Whether `/metrics` has a listener of its own, and so is not served here.
    pub metrics_apart: bool,
    /// Keeps quiet HTTP/1 streams without a task each, under `--park-idle-streams`.
    lot: Option<parked::Lot>,
}

/// The configuration HTTP reads, taken once.
pub struct Settings {
    pub max_connections: usize,
    pub max_url_length: usize,
    pub header_read_timeout: Duration,
    /// Streams' heartbeat: a client that takes no byte for a few of them loses its connection.
    pub heartbeat: Duration,
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    /// `--demo`: the demo's pages are served.
    pub demo: bool,
    /// `--access-log`.
    pub access_log: bool,
}

/// hyper's builders for the two protocols, configured once by the server.
pub struct Builders {
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
}

impl Site {
    /// Must be called within the runtime, which parked streams are served on again. `connections` is the
    /// server's: a parked stream keeps its place among them.
    pub fn new(app: &App, builders: Builders, metrics_apart: bool, connections: &TaskTracker) -> Self {
        let config = &app.config;
        let lot = config.server.park_idle_streams.then(|| {
            parked::Lot::start(parked::Serving {
                runtime: Handle::current(),
                connections: connections.clone(),
                shutdown: app.shutdown.clone(),
                stall: config.streams.heartbeat * conn::STALLED_HEARTBEATS,
                sent: app.events.sent_counter(),
            })
        });
        let lot = lot.and_then(|started| {
            started
                .inspect_err(|err| warn!(cause = %err, "could not start parking idle streams; each keeps a task"))
                .ok()
        });
        Self {
            events: app.events.clone(),
            commands: app.commands.clone(),
            health: app.health.clone(),
            metrics: app.metrics.clone(),
            mercure: app.mercure.clone(),
            auth: config.auth.clone(),
            limits: app.limits.clone(),
            denials: app.denials.clone(),
            shutdown: app.shutdown.clone(),
            settings: Settings {
                max_connections: config.server.max_connections,
                max_url_length: config.server.max_url_length,
                header_read_timeout: config.server.header_read_timeout,
                heartbeat: config.streams.heartbeat,
                tls: config.tls.clone(),
                demo: config.server.demo,
                access_log: config.server.access_log,
            },
            cors: Cors::new(&config.server.cors_origins),
            builders,
            metrics_apart,
            lot,
        }
    }
}
