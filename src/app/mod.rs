//! The shared state every request reaches, and its construction.

pub mod metrics;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::api::snapshot::Shared;
use crate::config::Config;
use crate::fanout::hub::Hub;
use crate::http::cors::Cors;
use crate::limits::Limits;
use crate::pg::listener::ListenerStatus;
use crate::pg::published::Published;
use crate::pg::store::Store;
use metrics::Metrics;

/// Shared by every request.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub hub: Arc<Hub>,
    pub listener: Arc<ListenerStatus>,
    pub cors: Cors,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    pub snapshots: Shared,
    pub published: Published,
    /// Cancelled on shutdown: ends every stream body and the listener.
    pub shutdown: CancellationToken,
}
