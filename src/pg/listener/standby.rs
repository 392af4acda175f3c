//! The listener's reads of the log on a hot standby (`--replica-database-url`): a connection of its own
//! there, and the barrier before each read: the primary's WAL position after the sequencing step, which
//! the standby must have replayed for the read to see that step's events.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls, Statement};

use super::ListenerError;
use crate::pg::replica::{self, ReplicaStatus, REPLAYED};

pub struct Standby {
    pg: tokio_postgres::Config,
    pub(super) max_lag: Duration,
    pub(super) status: Arc<ReplicaStatus>,
}

/// One listener session's connection to the standby. Dropping it ends the connection.
pub(super) struct StandbySession {
    pub(super) client: Client,
    pub(super) replayed: Statement,
    /// Whether the standby holds an id yet ([`replica::holds`]).
    pub(super) holds: Statement,
    /// The replica is not in recovery: promoted (a failover), it is read as the primary it now is, with
    /// no barrier to wait for.
    pub(super) promoted: bool,
    task: JoinHandle<()>,
}

impl Drop for StandbySession {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Standby {
    pub(super) fn new(pg: tokio_postgres::Config, max_lag: Duration, status: Arc<ReplicaStatus>) -> Self {
        Self { pg, max_lag, status }
    }

    pub(super) async fn connect(&self) -> Result<StandbySession, ListenerError> {
        let target = crate::pg::error::target_of(&self.pg);
        let (client, connection) =
            self.pg.connect(NoTls).await.map_err(|source| ListenerError::Connect { target, source })?;
        // Its answers come to queries the listener awaits; nothing arrives unasked on a standby.
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        let replayed = client.prepare(REPLAYED).await?;
        let holds = client.prepare(&replica::holds()).await?;
        let promoted = !client.query_one("SELECT pg_is_in_recovery()", &[]).await?.try_get::<_, bool>(0)?;
        if promoted {
            tracing::warn!("--replica-database-url is not a standby (promoted?): reading it as the primary it now is");
        }
        Ok(StandbySession { client, replayed, holds, promoted, task })
    }
}
