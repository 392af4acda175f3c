//! Where the store reads the log: the primary's pool, or a hot standby's (`--replica-database-url`), and
//! the wait that lets a read on the standby see what the primary committed before it.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Client, Pool};
use tokio_postgres::error::SqlState;

use super::Store;
use crate::pg::error::StoreError;
use crate::pg::replica::{self, ReplicaError, ReplicaStatus, PRIMARY_LSN, REPLAYED};

/// The standby's pool, how long a read waits for it, and what the waits saw.
pub(super) struct Reads {
    pub(super) pool: Pool,
    max_lag: Duration,
    status: Arc<ReplicaStatus>,
}

/// Runs `work` on a connection of `pool`, waiting at most `bound` for the connection and as long again
/// for the work. A connection that did not answer in time is taken out of the pool rather than handed to
/// the next request (it may be half-open), and so is one that lost its prepared statements (a table's
/// trigger may DEALLOCATE them, or PREPARE a name the gateway's cache uses).
pub(super) async fn on<T>(
    pool: &Pool,
    bound: Duration,
    work: impl AsyncFnOnce(&Client) -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    let client = tokio::time::timeout(bound, pool.get()).await.map_err(|_| StoreError::Timeout(bound))??;
    match tokio::time::timeout(bound, work(&client)).await {
        Ok(Err(StoreError::Query(err)))
            if err.code().is_some_and(|c| {
                [SqlState::INVALID_SQL_STATEMENT_NAME, SqlState::DUPLICATE_PSTATEMENT].contains(c)
            }) =>
        {
            drop(deadpool_postgres::Object::take(client));
            Err(StoreError::Query(err))
        }
        Ok(outcome) => outcome,
        Err(_) => {
            drop(deadpool_postgres::Object::take(client));
            Err(StoreError::Timeout(bound))
        }
    }
}

impl Store {
    /// Reads the log from the standby at `url` (a pool as large as the primary's), waiting at most
    /// `max_lag` for it to replay what a read must see.
    pub fn reading_from(
        mut self,
        url: &str,
        pool_size: usize,
        max_lag: Duration,
        status: Arc<ReplicaStatus>,
    ) -> Result<Self, StoreError> {
        self.reads = Some(Reads { pool: Self::pool(url, pool_size, self.bound)?, max_lag, status });
        Ok(self)
    }

    /// A pooled connection of its own, for work longer than one bounded query (a snapshot's transaction):
    /// the standby's, where there is one.
    pub async fn session(&self) -> Result<(deadpool_postgres::Object, Duration), StoreError> {
        let pool = self.reads.as_ref().map_or(&self.pool, |reads| &reads.pool);
        let client =
            tokio::time::timeout(self.bound, pool.get()).await.map_err(|_| StoreError::Timeout(self.bound))??;
        Ok((client, self.bound))
    }

    /// [`Store::with`] on the standby where there is one: the log's reads.
    pub(super) async fn with_reads<T>(
        &self,
        work: impl AsyncFnOnce(&Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        match &self.reads {
            Some(reads) => on(&reads.pool, self.bound, work).await,
            None => on(&self.pool, self.bound, work).await,
        }
    }

    /// Waits until the standby, where there is one, holds everything the primary committed before this
    /// call (within `--replica-max-lag`; past it, what the standby has is read, and `/readyz` says so).
    pub async fn reads_caught_up(&self) -> Result<(), StoreError> {
        let Some(reads) = &self.reads else { return Ok(()) };
        let lsn: String = self
            .with(async |client| {
                let stmt = client.prepare_cached(PRIMARY_LSN).await?;
                Ok(client.query_one(&stmt, &[]).await?.try_get(0)?)
            })
            .await?;
        // Each look takes a connection and gives it back: a wait holds none, so requests waiting out a lag
        // leave the pool to everything else. The wait ends before the request's own bound.
        let look = || async {
            on(&reads.pool, self.bound, async |client| {
                let stmt = client.prepare_cached(REPLAYED).await?;
                Ok(replica::look(client, &stmt, &lsn).await)
            })
            .await
            .unwrap_or_else(|err| Err(ReplicaError::Unavailable(err.to_string())))
        };
        match replica::wait(look, reads.max_lag.min(self.bound / 2), &reads.status).await {
            // Promoted, it holds what it holds as a primary does: there is nothing to wait for.
            Ok(_) | Err(ReplicaError::NotStandby) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}
