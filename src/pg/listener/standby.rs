//! The listener's reads of the log on a hot standby (`--replica-database-url`): a connection of its own
//! there, and the barrier before each read: the primary's WAL position after the sequencing step (or the
//! last id of the batches another gateway announced), which the standby must hold for the read to see them.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_postgres::{Client, NoTls, Statement};

use super::conn::ListenConnection;
use super::ListenerError;
use crate::pg::replica::{self, ReplicaError, ReplicaStatus, REPLAYED};

/// How long a follower on a standby waits for an announced id there before asking the primary's position.
const HEAD_WAIT: Duration = Duration::from_millis(20);

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

/// What a read on the standby waits for: the primary's WAL position (`lsn`, on the primary) replayed
/// (`replayed`, on the standby), or an announced id there (`holds`).
pub(super) struct Barrier<'a> {
    pub(super) lsn: &'a Statement,
    pub(super) replayed: &'a Statement,
    pub(super) holds: &'a Statement,
    pub(super) max_lag: Duration,
    pub(super) status: Arc<ReplicaStatus>,
}

impl Barrier<'_> {
    /// Waits before a read of the batches other sessions announced, the last of them ending at id `head`
    /// (0 when none said): a standby that holds that id holds every batch before it. Otherwise (no id
    /// said, a standby further behind, or an announcement that was not a batch's), the batches announced
    /// have committed on the primary (`primary`): its position now is past them.
    pub(super) async fn announced(
        &self,
        primary: &Client,
        reads: &Client,
        conn: &mut ListenConnection,
        head: i64,
    ) -> Result<(), ListenerError> {
        let holds = || async {
            let row = reads.query_one(self.holds, &[&head]).await?;
            Ok::<_, ReplicaError>(replica::Look { caught_up: row.try_get(0)?, short_bytes: 0.0 })
        };
        if head > 0 && conn.bounded(replica::poll(holds, HEAD_WAIT)).await?.0 {
            return Ok(());
        }
        let lsn: String = conn.bounded(primary.query_one(self.lsn, &[])).await?.try_get(0)?;
        self.wait(reads, conn, &lsn).await
    }

    /// Waits until the standby (`reads`) has replayed the primary's WAL through `lsn`, or for `max_lag`.
    pub(super) async fn wait(
        &self,
        reads: &Client,
        conn: &mut ListenConnection,
        lsn: &str,
    ) -> Result<(), ListenerError> {
        let wait = self.max_lag + conn.bound;
        let replayed = replica::wait(|| replica::look(reads, self.replayed, lsn), self.max_lag, &self.status);
        timeout(wait, conn.run(replayed)).await.map_err(|_| ListenerError::QueryTimeout(wait))??;
        Ok(())
    }
}
