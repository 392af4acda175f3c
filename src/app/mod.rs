//! The application behind HTTP: built once from the configuration, it hands each API handler its narrow
//! handle and runs the background tasks (the LISTEN connection, retention) that feed and tend them.

pub mod metrics;

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::commands::Commands;
use crate::api::events::Events;
use crate::api::health::Health;
use crate::auth::Denials;
use crate::config::Config;
use crate::fanout::hub::Hub;
use crate::limits::Limits;
use crate::memory;
use crate::mercure::Mercure;
use crate::pg::error::StoreError;
use crate::pg::listener::{Listener, ListenerError};
use crate::pg::published::Published;
use crate::pg::replica::ReplicaStatus;
use crate::pg::retention;
use crate::pg::sightings::Sightings;
use crate::pg::status::ListenerStatus;
use crate::pg::store::Store;
use metrics::Metrics;

pub struct App {
    /// Read by the HTTP layer: its own settings, and the access control.
    pub config: Config,
    pub events: Arc<Events>,
    pub commands: Arc<Commands>,
    pub health: Arc<Health>,
    pub limits: Arc<Limits>,
    pub denials: Arc<Denials>,
    pub metrics: Arc<Metrics>,
    /// The Mercure hub, under `--mercure`.
    pub mercure: Option<Arc<Mercure>>,
    hub: Arc<Hub>,
    /// Cancelled on shutdown: ends every stream body, the listener and the retention job.
    pub shutdown: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Listener(#[from] ListenerError),
}

impl App {
    /// Builds the state and starts the background tasks on `tasks`; they end with [`App::shut_down`].
    pub fn start(config: Config, tasks: &TaskTracker) -> Result<Arc<Self>, AppError> {
        let shutdown = CancellationToken::new();
        let hub = Arc::new(Hub::new(config.streams.queue_capacity));
        let status = Arc::new(ListenerStatus::default());
        let listen_url = config.listener.listen_database_url.as_deref().unwrap_or(&config.database_url);
        let mut listener = Listener::new(listen_url, hub.clone(), status.clone(), config.listener.probe_interval)?;
        if config.mercure.mercure {
            listener = listener.with_updates();
        }
        let mut store = Store::new(&config.database_url, config.pool.pool_size, config.pool.db_timeout)?;
        let replica = Arc::new(ReplicaStatus::default());
        if let Some(url) = config.replica.url() {
            let max_lag = config.replica.replica_max_lag;
            listener = listener.reading_from(url, max_lag, replica.clone())?;
            store = store.reading_from(url, config.pool.pool_size, max_lag, replica.clone())?;
        } else {
            // A listener on a standby reads a write's event only once the standby has it: a write there
            // learns its id on the primary, at once.
            let sightings = Arc::new(Sightings::default());
            listener = listener.reporting_to(sightings.clone());
            store = store.with_sightings(sightings);
        }
        let store = Arc::new(store);
        let replica = config.replica.url().is_some().then_some(replica);
        let published = Arc::new(Published::default());
        let events = Events::new(
            store.clone(),
            hub.clone(),
            published.clone(),
            config.streams.clone(),
            config.pool.db_timeout,
            shutdown.clone(),
        );
        // Snapshots being read hold connections: half the pool at most stays for everything else.
        let mut limit_args = config.limits.clone();
        limit_args.max_snapshots = limit_args.max_snapshots.min((config.pool.pool_size / 2).max(1));
        // One address may not take every place.
        limit_args.max_snapshots_per_client =
            limit_args.max_snapshots_per_client.min((limit_args.max_snapshots / 2).max(1));
        if (limit_args.max_snapshots, limit_args.max_snapshots_per_client)
            != (config.limits.max_snapshots, config.limits.max_snapshots_per_client)
        {
            tracing::warn!(
                max_snapshots = limit_args.max_snapshots,
                max_snapshots_per_client = limit_args.max_snapshots_per_client,
                "snapshot limits lowered: at most half of --pool-size, and per client at most half of that"
            );
        }
        let limits = Arc::new(Limits::new(&limit_args));
        let denials = Arc::new(Denials::default());
        let metrics = Metrics::new(
            hub.clone(),
            status.clone(),
            limits.clone(),
            events.clone(),
            denials.clone(),
            (config.server.metrics_channel_labels, replica.clone()),
        );
        let mercure = config.mercure.mercure.then(|| {
            let parts = (store.clone(), published.clone(), hub.clone(), config.auth.clone());
            Mercure::new(parts, config.mercure.clone(), (events.cadence(), events.sent_counter()), shutdown.clone())
        });
        tasks.spawn(listener.run(shutdown.clone()));
        if let Some(trim) = memory::TRIM.filter(|_| config.server.trim_heaps) {
            tasks.spawn(limits.scavenger.clone().run(trim, shutdown.clone().cancelled_owned()));
        }
        let (args, token) = (config.retention.clone(), shutdown.clone());
        let pruned = store.clone();
        tasks.spawn(async move { retention::run(&pruned, &args, token).await });
        Ok(Arc::new(App {
            events,
            commands: Arc::new(Commands::new(store.clone(), published, config.commands.clone())),
            health: Arc::new(Health::new(store, hub.clone(), status, replica)),
            limits,
            denials,
            metrics,
            mercure,
            hub,
            shutdown,
            config,
        }))
    }

    /// Ends every stream body, the listener and the retention job.
    pub fn shut_down(&self) {
        self.shutdown.cancel();
        self.hub.close();
    }
}
