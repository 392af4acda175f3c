//! A snapshot's reads: one repeatable-read, read-only transaction on a pooled connection of its own, in
//! which the rows, the log's head and the transactions not yet sequenced are one moment. Its errors say
//! whose they are: the request's shape, the table's own code (whose words never reach a client), or the
//! database's.

use std::time::Duration;

use deadpool_postgres::Object;
use futures_util::{Stream, TryStreamExt};
use serde_json::Value;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::pg::error::StoreError;
use crate::pg::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("the snapshot query took longer than {0:?} (--db-timeout): narrow it with filters or a limit")]
    TimedOut(Duration),
    /// The request's shape, or a filter's value, refused; the message names what (pgsse's words).
    #[error("{message}")]
    Refused { message: String },
    /// The gateway's role may not read what the snapshot needs; the message names the GRANT.
    #[error("{message}")]
    Forbidden { message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An open snapshot transaction.
pub struct SnapshotRead {
    /// Always `Some` until dropped: see the `Drop` impl.
    client: Option<Object>,
    /// Whether the transaction is still open.
    open: bool,
    bound: Duration,
}

impl SnapshotRead {
    /// Takes a connection and begins the transaction; every statement in it is bounded by `--db-timeout`.
    pub async fn begin(store: &Store) -> Result<Self, ReadError> {
        let (client, bound) = store.session().await?;
        let read = Self { client: Some(client), open: true, bound };
        let setup = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = {}",
            bound.as_millis().max(1)
        );
        read.ours(read.client().batch_execute(&setup)).await?;
        Ok(read)
    }

    /// The log's head as this snapshot sees it, and the transactions whose changes it holds though their
    /// events come after that head.
    pub async fn seam(&self, channels: &[String]) -> Result<(i64, Vec<i64>), ReadError> {
        let query = "SELECT head, pending FROM pgsse.snapshot_seam($1)";
        let row = self.ours(self.client().query_one(query, &[&channels])).await?;
        Ok((row.get(0), row.get(1)))
    }

    pub async fn insert_event(&self, channel: &str) -> Result<String, ReadError> {
        let query = "SELECT insert_event FROM pgsse.channels WHERE name = $1";
        Ok(self.ours(self.client().query_one(query, &[&channel])).await?.get(0))
    }

    /// Refuses the shape against the table by pgsse's code alone: its refusals name column and type.
    pub async fn check(&self, channel: &str, filters: &Value, order: &Value) -> Result<(), ReadError> {
        let query = "SELECT pgsse.snapshot_check($1, $2, $3)";
        self.ours(self.client().execute(query, &[&channel, filters, order])).await.map(drop)
    }

    /// The rows a snapshot would read, counted no further than `cap`.
    pub async fn count(&self, channel: &str, filters: &Value, order: &Value, cap: i64) -> Result<i64, ReadError> {
        let query = "SELECT pgsse.snapshot_count($1, $2, $3, $4)";
        Ok(self.theirs(self.client().query_one(query, &[&channel, filters, order, &cap]), channel).await?.get(0))
    }

    /// The rows, each the JSON text its event carries, as the database sends them.
    pub async fn rows<'a>(
        &'a self,
        channel: &'a str,
        filters: &'a Value,
        order: &'a Value,
        limit: Option<i64>,
    ) -> Result<impl Stream<Item = Result<String, ReadError>> + 'a, ReadError> {
        let query = "SELECT s::text FROM pgsse.snapshot($1, $2, $3, $4) AS s";
        let params: [&(dyn ToSql + Sync); 4] = [&channel, filters, order, &limit];
        let rows = self.theirs(self.client().query_raw(query, params), channel).await?;
        let bound = self.bound;
        Ok(rows.map_ok(|row| row.get::<_, String>(0)).map_err(move |err| from_table(err, bound, channel)))
    }

    pub async fn commit(&mut self) -> Result<(), ReadError> {
        self.end("COMMIT").await?;
        self.open = false;
        Ok(())
    }

    /// Ends the transaction and keeps the connection pooled; one that cannot end is dropped with it.
    pub async fn rollback(&mut self) {
        if self.end("ROLLBACK").await.is_ok() {
            self.open = false;
        }
    }

    /// Ends the transaction with `end`, then resets the session in the same round trip: the table's
    /// policies and casts ran in it (see `Store`'s RESETS).
    async fn end(&self, end: &str) -> Result<(), ReadError> {
        let client = self.client();
        self.ours(crate::pg::store::resetting(client, client.batch_execute(end))).await
    }

    fn client(&self) -> &Object {
        self.client.as_ref().expect("the connection is taken only on drop")
    }

    /// A statement of pgsse's own: its refusals are the request's, in pgsse's words.
    async fn ours<T>(
        &self,
        query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, ReadError> {
        match tokio::time::timeout(self.bound, query).await {
            Ok(outcome) => outcome.map_err(|err| from_db(err, self.bound)),
            Err(_) => Err(ReadError::TimedOut(self.bound)),
        }
    }

    /// A statement that reads the table, where its owner's code runs: see [`from_table`].
    async fn theirs<T>(
        &self,
        query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
        channel: &str,
    ) -> Result<T, ReadError> {
        match tokio::time::timeout(self.bound, query).await {
            Ok(outcome) => outcome.map_err(|err| from_table(err, self.bound, channel)),
            Err(_) => Err(ReadError::TimedOut(self.bound)),
        }
    }
}

/// A snapshot dropped with its transaction open (its client went away, a query failed) takes its
/// connection out of the pool: closing it ends the transaction, and no request gets it half-used.
impl Drop for SnapshotRead {
    fn drop(&mut self) {
        if let (true, Some(client)) = (self.open, self.client.take()) {
            drop(Object::take(client));
        }
    }
}

/// Errors of the database's own making stay `Store` (and 503); those of the request's, with the server's
/// hint where it gave one.
fn from_db(err: tokio_postgres::Error, bound: Duration) -> ReadError {
    let Some(db) = err.as_db_error() else { return StoreError::Query(err).into() };
    let code = db.code();
    let ours = |message: &str| message.strip_prefix("pgsse: ").map(str::to_string);
    if *code == SqlState::QUERY_CANCELED {
        return ReadError::TimedOut(bound);
    }
    if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        let message = ours(db.message()).unwrap_or_else(|| db.message().to_string());
        let message = match db.hint() {
            Some(hint) => format!("{message}: {hint}"),
            None => message,
        };
        return ReadError::Forbidden { message };
    }
    // Class 22: data exceptions, a filter's value.
    if *code == SqlState::UNDEFINED_COLUMN || code.code().starts_with("22") {
        let message = ours(db.message()).unwrap_or_else(|| format!("invalid value in a filter: {}", db.message()));
        let message = match db.hint() {
            Some(hint) => format!("{message} ({hint})"),
            None => message,
        };
        return ReadError::Refused { message };
    }
    StoreError::Query(err).into()
}

/// An error of a statement that reads the table. Its owner may have written the code that raised it (a
/// domain's CHECK, a policy, a cast), so its words never reach the client, only its kind.
fn from_table(err: tokio_postgres::Error, bound: Duration, channel: &str) -> ReadError {
    let code = err.code().cloned().unwrap_or(SqlState::INTERNAL_ERROR);
    // Classes 22 and 23: data exceptions and integrity violations.
    let class = &code.code()[..2];
    let refused = if code == SqlState::QUERY_CANCELED {
        return ReadError::TimedOut(bound);
    } else if class == "22" || class == "23" || code == SqlState::UNDEFINED_FUNCTION {
        let message = format!(
            "a filter's value on channel {channel:?} was refused by its table's own checks (a domain or function)"
        );
        ReadError::Refused { message }
    } else if code == SqlState::INSUFFICIENT_PRIVILEGE {
        let message = format!(
            "the table of channel {channel:?} refused the gateway's read (its row security or a function of it)"
        );
        ReadError::Forbidden { message }
    } else {
        return StoreError::Query(err).into();
    };
    tracing::warn!(channel, cause = %crate::pg::error::describe(&err), "snapshot refused by the table's own code");
    refused
}
