//! `/healthz` (the gateway can reach the database and its LISTEN connection is up) and `/readyz` (the
//! schema matches this binary and the listener has caught up), each answered within a bound.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{Response, StatusCode};
use serde_json::json;

use crate::api::reply::{json_response, Body};
use crate::fanout::hub::Hub;
use crate::pg::migrate::SCHEMA_VERSION;
use crate::pg::replica::ReplicaStatus;
use crate::pg::status::ListenerStatus;
use crate::pg::store::{Readiness, Store};

/// Staged events this old mean a backlog rather than the usual moment between commit and sequencing.
const BACKLOG_AGE: f64 = 1.0;

/// What health checks read: the pool, the hub's position, and the listener's state.
pub struct Health {
    store: Arc<Store>,
    hub: Arc<Hub>,
    listener: Arc<ListenerStatus>,
    /// How the hot standby keeps up, under `--replica-database-url`.
    replica: Option<Arc<ReplicaStatus>>,
}

impl Health {
    pub fn new(
        store: Arc<Store>,
        hub: Arc<Hub>,
        listener: Arc<ListenerStatus>,
        replica: Option<Arc<ReplicaStatus>>,
    ) -> Self {
        Self { store, hub, listener, replica }
    }

    /// Ready to serve streams: the schema is migrated to this version and the listener has caught up.
    pub async fn ready(&self) -> Response<Body> {
        let mut reasons = Vec::new();
        let readiness = self.store.readiness().await;
        match &readiness {
            Ok(Readiness { version: Some(v), .. }) if *v >= SCHEMA_VERSION => {}
            Ok(Readiness { version: Some(v), .. }) => {
                reasons.push(format!("schema version {v}, expected {}: run pgsse migrate", SCHEMA_VERSION))
            }
            Ok(Readiness { version: None, .. }) => {
                reasons.push("schema pgsse not installed: run pgsse migrate".to_string())
            }
            Err(err) => reasons.push(format!("pool: {err}")),
        }
        if !self.listener.is_up() {
            reasons.push(format!("listener: {}", self.listener.last_error().unwrap_or_else(|| "connecting".into())));
        }
        // Streams are still served from what the standby has; a balancer should send new ones elsewhere.
        if let Some(replica) = self.replica.as_ref().filter(|r| r.behind.load(Ordering::Relaxed)) {
            reasons.push(format!(
                "replica: the standby has not replayed what the primary committed {:.1} s ago ({} bytes of WAL \
                 behind), over --replica-max-lag",
                replica.lag_seconds(),
                replica.lag_bytes.load(Ordering::Relaxed)
            ));
        }
        if let (true, Ok(Readiness { backlog: Some((pending, oldest)), version, .. })) = (reasons.is_empty(), readiness)
        {
            // Streams are served while a backlog (events committed when no gateway ran) is worked off.
            let status = if pending > 0 && oldest >= BACKLOG_AGE { "catching up" } else { "ready" };
            return json_response(
                StatusCode::OK,
                &json!({ "status": status, "last_event_id": self.hub.last_id(), "schema_version": version,
                     "pending_events": pending, "oldest_pending_seconds": oldest }),
            );
        }
        unready(reasons)
    }

    pub async fn health(&self) -> Response<Body> {
        let listener_up = self.listener.is_up();
        let db = self.store.ping().await;
        let last_event_id = self.hub.last_id();
        if listener_up && db.is_ok() {
            return json_response(
                StatusCode::OK,
                &json!({ "status": "ok", "last_event_id": last_event_id, "version": env!("CARGO_PKG_VERSION") }),
            );
        }
        let mut reasons = Vec::new();
        if !listener_up {
            let why = self.listener.last_error().unwrap_or_else(|| "connecting".into());
            reasons.push(format!("listener: {why}"));
        }
        if let Err(err) = db {
            reasons.push(format!("pool: {err}"));
        }
        json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "unavailable", "error": reasons.join("; "), "last_event_id": last_event_id }),
        )
    }
}

fn unready(reasons: Vec<String>) -> Response<Body> {
    json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({ "status": "not ready", "error": reasons.join("; ") }))
}
