//! The gateway's writes (`POST`, `DELETE`) and the waits for their events' ids: a write answers once its
//! event is in the log, as the listener reads it, or else taking a sequencing step itself.

use std::time::{Duration, Instant};

use deadpool_postgres::Client;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use super::plans::Outcome;
use super::Store;
use crate::pg::error::StoreError;
use crate::pg::keyed::{self, Keyed};
use crate::pg::sightings::{Sighting, Watch};

/// How long a write waits for the listener to read its event before asking the database: the stepping
/// gateway moves it within milliseconds, or another takes over within about half a second.
const LISTENER_WAIT: Duration = Duration::from_secs(1);

/// Waits between tries of a sequencing step that another session holds: short at first (a step takes
/// milliseconds), never past `wait`.
struct Backoff {
    deadline: Instant,
    pause: Duration,
}

impl Backoff {
    fn new(wait: Duration) -> Self {
        Self { deadline: Instant::now() + wait, pause: Duration::from_micros(250) }
    }

    /// Sleeps before the next try; `false`, without sleeping, once that would pass the deadline.
    async fn pause(&mut self) -> bool {
        if Instant::now() + self.pause > self.deadline {
            return false;
        }
        tokio::time::sleep(self.pause).await;
        self.pause = (self.pause * 2).min(Duration::from_millis(20));
        true
    }
}

/// Whether a sequencing step was another's to take: the lock was held (`moved` < 0), or the step outgrew
/// the statement bound on a large backlog and was cancelled.
fn step_busy(step: Result<bool, tokio_postgres::Error>) -> Result<bool, StoreError> {
    match step {
        Ok(busy) => Ok(busy),
        Err(err) if err.code() == Some(&SqlState::QUERY_CANCELED) => Ok(true),
        Err(err) => Err(err.into()),
    }
}

/// The event that the gateway's own write (transaction `txid`, committed) recorded on `channel`, once it is
/// in the log: the answer to a POST carries its id, and a stream resumed just below that id gets it. Each
/// try takes a sequencing step (in a transaction of its own, so its lock ends with it) unless another session is
/// taking one, so this waits only while one is.
pub(super) async fn sequenced(
    client: &Client,
    txid: i64,
    after: i64,
    channel: &str,
    wait: Duration,
) -> Result<Written, StoreError> {
    let stmt = client.prepare_cached("CALL pgsse.sequence_step(NULL, $1::int8::text::xid8, $2, $3)").await?;
    let mut backoff = Backoff::new(wait);
    loop {
        let row = client.query_one(&stmt, &[&txid, &after, &channel]).await;
        if let Ok(row) = &row {
            if let (Some(id), Some(payload)) = (row.try_get("event_id")?, row.try_get("payload")?) {
                return Ok(Written { id: Some(id), payload });
            }
        }
        let busy = step_busy(row.and_then(|row| row.try_get::<_, i64>("moved")).map(|moved| moved < 0))?;
        if !busy || !backoff.pause().await {
            return Err(StoreError::NotSequenced);
        }
    }
}

/// Takes a sequencing step, or waits for the one another session is taking to end, so that every event
/// committed before the call is in the log (within `wait`; past it, what is there is read).
async fn sequenced_all(client: &Client, wait: Duration) -> Result<(), StoreError> {
    let stmt = client.prepare_cached("CALL pgsse.sequence_step(NULL)").await?;
    let mut backoff = Backoff::new(wait);
    let step = async || client.query_one(&stmt, &[]).await.and_then(|row| row.try_get::<_, i64>("moved"));
    while step_busy(step().await.map(|moved| moved < 0))? && backoff.pause().await {}
    Ok(())
}

/// An event the gateway just wrote; `payload` is JSON text.
pub struct Written {
    pub id: Option<i64>,
    pub payload: String,
}

impl Store {
    /// Inserts a row into a table channel's table and answers once its event is in the log; the id is
    /// `None` when the table does not capture inserts. Under a `key` made before, writes nothing and
    /// answers with that write's event.
    pub async fn insert_row(
        &self,
        channel: &str,
        row: &serde_json::Value,
        key: Option<&Keyed>,
    ) -> Result<Written, StoreError> {
        // Watched from before the statement is sent: the listener may read the event before it returns.
        let watch = self.watch(key);
        let (txid, after, payload): (_, _, Option<String>) = self
            .with(async |client| {
                // A statement that may commit starts only while the bound leaves it its whole statement
                // timeout: one that the gateway gave up on would commit after the client was told to retry.
                let commit_by = Instant::now() + self.statement_bound();
                if key.is_none() {
                    match self.plans.insert(client, channel, row, commit_by).await? {
                        Outcome::Inserted { txid, after } => return Ok((Some(txid), Some(after), None)),
                        Outcome::Committed => return Err(StoreError::NotSequenced),
                        Outcome::Unkept if Instant::now() > commit_by => return Err(StoreError::Timeout(self.bound)),
                        Outcome::Unkept => {}
                    }
                }
                let stmt = client
                    .prepare_cached(match key {
                        None => {
                            "SELECT txid::text::int8, after, payload::text FROM pgsse.insert_json($1, $2::text::jsonb)"
                        }
                        Some(_) => keyed::INSERT,
                    })
                    .await?;
                let object = row.to_string();
                let params = match key {
                    None => vec![&channel as &(dyn ToSql + Sync), &object],
                    Some(key) => keyed::params(&[&channel, row], key),
                };
                let row = match super::resetting(client, client.query_one(&stmt, &params)).await {
                    Ok(row) => row,
                    // A value its column cannot take: pgsse.bad_column names the column and its type.
                    Err(err) if err.code().is_some_and(|c| c.code().starts_with("22")) => {
                        // Prepared first: the session is reset right after, in the same round trip.
                        let named = client.prepare_cached("SELECT pgsse.bad_column($1, $2::text::jsonb)").await?;
                        let params: [&(dyn ToSql + Sync); 2] = [&channel, &object];
                        let column = super::resetting(client, client.query_one(&named, &params)).await;
                        let column: Option<String> = column.ok().and_then(|r| r.get(0));
                        return Err(match (StoreError::from_db(err), column) {
                            (StoreError::Rejected { kind, .. }, Some(column)) => {
                                StoreError::Rejected { kind, message: format!("column {column}") }
                            }
                            (err, _) => err,
                        });
                    }
                    Err(err) => return Err(StoreError::from_db(err)),
                };
                keyed::same_request(&row, key, 3)?;
                Ok((row.try_get::<_, Option<i64>>(0)?, row.try_get::<_, Option<i64>>(1)?, row.try_get(2)?))
            })
            .await?;
        match (txid, after, payload) {
            (Some(txid), Some(after), _) => self.sequenced(watch, txid, after, channel).await,
            (_, _, Some(payload)) => Ok(Written { id: None, payload }),
            _ => Err(StoreError::NotSequenced),
        }
    }

    /// Whether a POST of `row` to `channel` without a key has its insert kept: the channel then publishes a
    /// table, as far as the gateway knows without asking (the kept insert checks as it runs).
    pub fn keeps_insert(&self, channel: &str, row: &serde_json::Value) -> bool {
        self.plans.keeps(channel, row)
    }

    /// Records an ad-hoc event through `pgsse.publish` and returns its id once it is in the log. Under a
    /// `key` made before, writes nothing and answers with that write's event.
    pub async fn publish(
        &self,
        channel: &str,
        event: &str,
        payload: &serde_json::Value,
        key: Option<&Keyed>,
    ) -> Result<i64, StoreError> {
        let watch = self.watch(key);
        let (txid, after) = self
            .with(async |client| {
                let stmt = client
                    .prepare_cached(match key {
                        None => "SELECT txid::text::int8, after FROM pgsse.publish_json($1, $2, $3::text::jsonb)",
                        Some(_) => keyed::PUBLISH,
                    })
                    .await?;
                let text = payload.to_string();
                let params = match key {
                    None => vec![&channel as &(dyn ToSql + Sync), &event, &text],
                    Some(key) => keyed::params(&[&channel, &event, payload], key),
                };
                let row = client.query_one(&stmt, &params).await.map_err(StoreError::from_db)?;
                keyed::same_request(&row, key, 2)?;
                Ok((row.try_get(0)?, row.try_get(1)?))
            })
            .await?;
        self.sequenced(watch, txid, after, channel).await?.id.ok_or(StoreError::NotSequenced)
    }

    /// A watch for a write's event, while the listener reads; not under a `key`, whose write may have been
    /// made long before (its event then is no news to the listener).
    fn watch(&self, key: Option<&Keyed>) -> Option<Watch> {
        self.sightings.as_ref().filter(|_| key.is_none()).and_then(|s| s.watch())
    }

    /// The event of the gateway's write (transaction `txid`, committed) on `channel`: from the listener
    /// when it reads it soon (no query), otherwise as [`sequenced`] finds it.
    async fn sequenced(
        &self,
        watch: Option<Watch>,
        txid: i64,
        after: i64,
        channel: &str,
    ) -> Result<Written, StoreError> {
        let wait = self.sequenced_wait();
        if let Some(watch) = watch {
            if let Some(Sighting { id, payload }) =
                watch.wait(txid, after, channel, (wait / 2).min(LISTENER_WAIT)).await
            {
                return Ok(Written { id: Some(id), payload });
            }
        }
        // The write has committed: whatever goes wrong from here (no pooled connection in time, say), the
        // answer is that it is committed without an id, never one that asks for a retry.
        self.with(async |client| sequenced(client, txid, after, channel, wait).await).await.map_err(|err| {
            tracing::warn!(cause = %err, txid, channel, "a committed write's event id is unknown: answering without it");
            StoreError::NotSequenced
        })
    }

    /// Empties a channel whose `pgsse.channels` row allows it and records its `clear` event.
    pub async fn clear(&self, channel: &str) -> Result<Written, StoreError> {
        self.with(async |client| {
            let stmt = client.prepare_cached("SELECT txid::text::int8, after FROM pgsse.clear_channel($1)").await?;
            let params: [&(dyn ToSql + Sync); 1] = [&channel];
            let row = super::resetting(client, client.query_one(&stmt, &params)).await.map_err(StoreError::from_db)?;
            sequenced(client, row.try_get(0)?, row.try_get(1)?, channel, self.sequenced_wait()).await
        })
        .await
    }

    /// Makes sure every event committed before the call is in the log (a sequencing step, or the wait for
    /// another session's), within [`Store::sequenced_wait`]: past it, what is there is read.
    pub async fn settle(&self) -> Result<(), StoreError> {
        self.with(async |client| sequenced_all(client, self.sequenced_wait()).await).await
    }
}
