//! `pgsse demo`: a throwaway PostgreSQL (kept under a data dir across runs), a published `messages`
//! table, and the gateway, with the lines to try it printed on start.

use std::future::Future;

use tokio_postgres::NoTls;

mod cluster;

pub use cluster::{Cluster, ClusterError};

use crate::config::{Config, ConfigError, DemoArgs, ServeArgs};
use crate::pg::migrate::{self, MigrateError};
use crate::server::{self, BindError, ServerError, Sockets};

/// The demo table, published in the article's wire shape: `message` events with `{"id", "body",
/// "createdAt"}`, `clear` allowed, a TRUNCATE sent as `clear` too (what the article's client expects), and
/// `POST /messages` taking a `body` only.
/// `publish_table` is idempotent, so this runs on every start.
const DEMO_SQL: &str = "
CREATE TABLE IF NOT EXISTS public.messages (
    id         bigserial PRIMARY KEY,
    body       text NOT NULL CHECK (length(body) BETWEEN 1 AND 10000),
    created_at timestamptz NOT NULL DEFAULT now()
);
SELECT pgsse.publish_table('public.messages', insert_event => 'message', camel_case => true, allow_clear => true,
                           truncate_event => 'clear', writable => true, writable_columns => array['body']);
";

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("database: {}", crate::pg::error::describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("{0} (another pgsse? pass --listen with a free address)")]
    Bind(#[from] BindError),
    #[error(
        "another pgsse demo is using {} (its PostgreSQL is running): stop it first, or give this one \
         --data-dir and --pg-port of its own",
        .0.display()
    )]
    Busy(std::path::PathBuf),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Migrates and creates the published `messages` table (also for `pgsse serve --demo`).
pub async fn install(database_url: &str) -> Result<(), DemoError> {
    migrate::migrate(database_url).await?;
    let (client, connection) = tokio_postgres::connect(database_url, NoTls).await?;
    let driver = tokio::spawn(connection);
    client.batch_execute(DEMO_SQL).await?;
    drop(client);
    let _ = driver.await;
    Ok(())
}

pub async fn run(args: DemoArgs, shutdown: impl Future<Output = ()>) -> Result<(), DemoError> {
    // The HTTP port first: a demo that cannot serve starts no PostgreSQL.
    let listeners = Sockets::bind(&args.serve.server)?;
    let addr = listeners.api.local_addr().map_err(|e| BindError::new(args.serve.server.listen, e))?;
    let (database_url, cluster) = match args.serve.db.database_url.clone() {
        Some(url) => (url, None),
        None => {
            let cluster = Cluster::new(&args.data_dir, args.pg_port)?;
            // Another demo's cluster is not this one's to use, nor to stop on exit.
            if cluster.is_running() {
                return Err(DemoError::Busy(cluster.data_dir.clone()));
            }
            let cluster = tokio::task::spawn_blocking(move || -> Result<Cluster, ClusterError> {
                cluster.init(true)?;
                cluster.start()?;
                Ok(cluster)
            })
            .await??;
            (cluster.url("postgres"), Some(cluster))
        }
    };
    let result = serve(listeners, addr, args.serve, &database_url, shutdown).await;
    if let Some(cluster) = cluster {
        tokio::task::spawn_blocking(move || cluster.stop("fast")).await??;
    }
    result
}

async fn serve(
    listeners: Sockets,
    addr: std::net::SocketAddr,
    args: ServeArgs,
    database_url: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DemoError> {
    let mut config = Config::with_database_url(args, database_url.to_string())?;
    config.server.demo = true;
    install(database_url).await?;
    println!("pgsse demo is running on http://{addr}\n");
    println!("Open the live feed:\n  http://{addr}/   (and http://{addr}/send to post)\n");
    println!("Watch the stream:\n  curl -N http://{addr}/messages/events\n");
    println!("Insert a row from any other terminal:\n  psql '{database_url}' -c \"insert into messages (body) values ('hello from psql')\"\n");
    Ok(server::run(listeners, config, shutdown).await?)
}

impl DemoError {
    /// Whether the fix is in how the demo was started (exit 64, as `serve` does), not in the machine.
    pub fn is_usage(&self) -> bool {
        matches!(self, DemoError::Bind(..) | DemoError::Busy(_) | DemoError::Config(_))
    }
}
