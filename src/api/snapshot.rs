//! Streams that start with a table's current rows (`?snapshot=true`): the rows and the point of the log
//! they stand at are read in one repeatable-read transaction, so the stream goes on from there exactly.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use deadpool_postgres::Object;
use futures_util::{pin_mut, TryStreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::stream::Feed;
use crate::filter::ChannelFilters;
use crate::limits::LimitError;
use crate::pg::error::StoreError;
use crate::pg::store::Store;
use crate::refusal::{Refusal, Refuse};
use crate::sse;
use tokio_postgres::error::SqlState;

/// Snapshot rows are sent in chunks of about this size: small enough that a client that does not read
/// pins little, large enough that a big snapshot is not a write per row.
const CHUNK_BYTES: usize = 32 * 1024;

/// Snapshots of at most this many rows, and this many bytes once encoded, are read whole and shared by
/// identical requests arriving together; a larger one is streamed to each as it is read.
const SHARED_ROWS: i64 = 1000;
const SHARED_BYTES: usize = 256 * 1024;

/// A streamed snapshot's client must take each chunk within this long, or lose the stream: the snapshot
/// holds a pooled connection (and an open transaction) until it is read.
const TAKE_BOUND: Duration = Duration::from_secs(5);

mod shared;
pub use shared::{Begun, Shared, Taken};

/// The query parameters that shape a snapshot; reserved, so never row filters.
pub const RESERVED: [&str; 3] = ["snapshot", "order", "limit"];

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("invalid snapshot {0:?}: use snapshot=true or snapshot=false")]
    InvalidFlag(String),
    #[error("invalid order {0:?}: use column.asc or column.desc, several separated by commas")]
    InvalidOrder(String),
    #[error("invalid limit {0:?}: use a whole number from 1 to {1} (--snapshot-max-rows)")]
    InvalidLimit(String, usize),
    #[error("{0} is given more than once")]
    Repeated(&'static str),
    #[error("order and limit shape a snapshot: add snapshot=true")]
    WithoutSnapshot,
    #[error(
        "the snapshot of channel {0:?} has more than {1} rows: add a limit (limit=100, say) or filters, \
         or raise --snapshot-max-rows"
    )]
    TooLarge(String, usize),
    /// The database refused the request's shape (an unknown column, a value of the wrong type, a channel
    /// without a table); the message names it.
    #[error("{0}")]
    Refused(String),
    /// The gateway's role may not read the table's published columns; the message names the GRANT.
    #[error("{0}")]
    Forbidden(String),
    #[error("the snapshot query took longer than {0:?} (--db-timeout): narrow it with filters or a limit")]
    TimedOut(Duration),
    /// Too many snapshots are being read (in all, or for this client).
    #[error(transparent)]
    Busy(#[from] LimitError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SnapshotError {
    /// Errors of the database's own making stay `Store` (and 503); those of the request's, with the
    /// server's hint where it gave one.
    fn from_db(err: tokio_postgres::Error, bound: Duration) -> Self {
        let Some(db) = err.as_db_error() else { return StoreError::Query(err).into() };
        let code = db.code();
        if *code == SqlState::QUERY_CANCELED {
            return SnapshotError::TimedOut(bound);
        }
        if *code == SqlState::INSUFFICIENT_PRIVILEGE {
            let message = db.message().strip_prefix("pgsse: ").unwrap_or(db.message());
            return SnapshotError::Forbidden(match db.hint() {
                Some(hint) => format!("{message}: {hint}"),
                None => message.to_string(),
            });
        }
        if *code == SqlState::UNDEFINED_COLUMN || code.code().starts_with("22") {
            let message = match db.message().strip_prefix("pgsse: ") {
                Some(ours) => ours.to_string(),
                None => format!("invalid value in a filter: {}", db.message()),
            };
            return SnapshotError::Refused(match db.hint() {
                Some(hint) => format!("{message} ({hint})"),
                None => message.to_string(),
            });
        }
        StoreError::Query(err).into()
    }

    /// An error of the query that reads the table's rows. The table's owner may have written the code that
    /// raised it (a domain's CHECK, a policy, a cast), so its words never reach the client, only its kind.
    fn from_table(err: tokio_postgres::Error, bound: Duration, channel: &str) -> Self {
        let code = err.code().cloned().unwrap_or(SqlState::INTERNAL_ERROR);
        // Classes 22 and 23: data exceptions and integrity violations.
        let class = &code.code()[..2];
        let refused = if code == SqlState::QUERY_CANCELED {
            return SnapshotError::TimedOut(bound);
        } else if class == "22" || class == "23" || code == SqlState::UNDEFINED_FUNCTION {
            SnapshotError::Refused(format!(
                "a filter's value on channel {channel:?} was refused by its table's own checks (a domain or function)"
            ))
        } else if code == SqlState::INSUFFICIENT_PRIVILEGE {
            SnapshotError::Forbidden(format!(
                "the table of channel {channel:?} refused the gateway's read (its row security or a function of it)"
            ))
        } else {
            return StoreError::Query(err).into();
        };
        tracing::warn!(channel, cause = %crate::pg::error::describe(&err), "snapshot refused by the table's own code");
        refused
    }
}

impl Refuse for SnapshotError {
    fn refusal(&self) -> Refusal {
        match self {
            SnapshotError::InvalidFlag(_)
            | SnapshotError::InvalidOrder(_)
            | SnapshotError::InvalidLimit(..)
            | SnapshotError::Repeated(_)
            | SnapshotError::WithoutSnapshot
            | SnapshotError::TooLarge(..)
            | SnapshotError::Refused(_) => Refusal::Invalid,
            SnapshotError::Forbidden(_) => Refusal::Forbidden,
            SnapshotError::TimedOut(_) => Refusal::Unavailable,
            SnapshotError::Busy(err) => err.refusal(),
            SnapshotError::Store(err) => err.refusal(),
        }
    }

    fn told(&self) -> String {
        match self {
            SnapshotError::Store(err) => err.told(),
            err => err.to_string(),
        }
    }
}

/// What the client asked the snapshot to be, besides its filters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shape {
    /// Published column names (as events carry them), descending when `true`.
    order: Vec<(String, bool)>,
    limit: Option<i64>,
    /// `--snapshot-max-rows`: a snapshot without a limit may not have more.
    max_rows: usize,
}

impl Shape {
    /// From the reserved parameters; `None` when the stream does not start with a snapshot.
    pub fn parse(
        snapshot: Option<&str>,
        order: Option<&str>,
        limit: Option<&str>,
        max_rows: usize,
    ) -> Result<Option<Self>, SnapshotError> {
        let wanted = match snapshot {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(SnapshotError::InvalidFlag(crate::parse::clip(other))),
        };
        if !wanted {
            return match order.or(limit) {
                Some(_) => Err(SnapshotError::WithoutSnapshot),
                None => Ok(None),
            };
        }
        let order = match order {
            None => Vec::new(),
            Some(text) => text
                .split(',')
                .map(order_term)
                .collect::<Option<_>>()
                .ok_or_else(|| SnapshotError::InvalidOrder(crate::parse::clip(text)))?,
        };
        let limit = match limit {
            None => None,
            Some(text) => match text.parse::<i64>() {
                Ok(n) if n >= 1 && n as u64 <= max_rows as u64 => Some(n),
                _ => return Err(SnapshotError::InvalidLimit(crate::parse::clip(text), max_rows)),
            },
        };
        Ok(Some(Self { order, limit, max_rows }))
    }
}

/// `created_at.desc`, `id.asc` or `id`.
fn order_term(term: &str) -> Option<(String, bool)> {
    let (column, desc) = match term.rsplit_once('.') {
        Some((column, "desc")) => (column, true),
        Some((column, "asc")) => (column, false),
        _ => (term, false),
    };
    (!column.is_empty() && !column.contains('.') && column.len() <= 128).then(|| (column.to_string(), desc))
}

/// One channel's part of a snapshot.
struct Part {
    channel: String,
    insert_event: String,
    filters: Value,
    /// The stream's filter, tested on every row as on every event: the SQL reads a superset.
    check: Option<Arc<crate::filter::Filter>>,
}

/// A snapshot whose transaction is open: its shape has been checked and its size bounded, so the
/// stream may begin; [`Snapshot::send`] then streams the rows.
pub struct Snapshot {
    /// Always `Some` until dropped: see the `Drop` impl.
    client: Option<Object>,
    /// Whether the transaction is still open.
    open: bool,
    bound: Duration,
    parts: Vec<Part>,
    order: Value,
    limit: Option<i64>,
    /// `--snapshot-max-rows`: what SQL reads at most for a limited snapshot that the gateway filters.
    max_rows: i64,
    /// The newest event in the log as the snapshot sees it: the stream goes on after it.
    pub head: i64,
    /// Transactions whose changes the snapshot holds but whose events come after `head`: skipped.
    pub pending: Vec<i64>,
    /// At most this many rows will come: the limit, or the count.
    rows: i64,
}

impl Snapshot {
    pub async fn begin(
        store: &Store,
        channels: &[String],
        filters: &ChannelFilters,
        shape: &Shape,
    ) -> Result<Self, SnapshotError> {
        let (client, bound) = store.session().await?;
        let order: Value = shape.order.iter().map(|(key, desc)| json!({ "key": key, "desc": desc })).collect();
        let mut snapshot = Snapshot {
            client: Some(client),
            open: false,
            bound,
            parts: Vec::new(),
            order,
            limit: shape.limit,
            max_rows: shape.max_rows as i64,
            head: 0,
            pending: Vec::new(),
            rows: 0,
        };
        match snapshot.prepare(channels, filters, shape).await {
            Ok(()) => Ok(snapshot),
            Err(err) => {
                // A refused shape is the client's mistake, not a reason to drop a connection.
                if snapshot.bounded(snapshot.client().batch_execute("ROLLBACK")).await.is_ok() {
                    snapshot.open = false;
                }
                Err(err)
            }
        }
    }

    async fn prepare(
        &mut self,
        channels: &[String],
        filters_of: &ChannelFilters,
        shape: &Shape,
    ) -> Result<(), SnapshotError> {
        let max_rows = shape.max_rows;
        let setup = format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET LOCAL statement_timeout = {}",
            self.bound.as_millis().max(1)
        );
        self.open = true;
        self.bounded(self.client().batch_execute(&setup)).await?;
        let seam = "SELECT head, pending FROM pgsse.snapshot_seam($1)";
        let seam = self.bounded(self.client().query_one(seam, &[&channels])).await?;
        (self.head, self.pending) = (seam.get(0), seam.get(1));
        for channel in channels {
            let filters = filters_of.get(channel).map_or(json!([]), |f| f.to_sql_json());
            let info = "SELECT insert_event FROM pgsse.channels WHERE name = $1";
            let insert_event: String = self.bounded(self.client().query_one(info, &[channel])).await?.get(0);
            // The shape against the table, by pgsse's code alone: its refusals name column and type.
            let check = "SELECT pgsse.snapshot_check($1, $2, $3)";
            self.bounded(self.client().execute(check, &[channel, &filters, &self.order])).await?;
            // Counts when unbounded (a `limit` of 0 reads no row).
            let cap = if shape.limit.is_some() { 0 } else { max_rows as i64 + 1 };
            let count = "SELECT pgsse.snapshot_count($1, $2, $3, $4)";
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] = [channel, &filters, &self.order, &cap];
            let counted = self.client().query_one(count, &params);
            let rows: i64 =
                self.bounded_as(counted, |e| SnapshotError::from_table(e, self.bound, channel)).await?.get(0);
            if rows > max_rows as i64 {
                return Err(SnapshotError::TooLarge(channel.clone(), max_rows));
            }
            self.rows += shape.limit.unwrap_or(rows);
            let check = filters_of.get(channel).cloned();
            let insert_event =
                if channels.len() > 1 { sse::channel_event(channel, &insert_event) } else { insert_event };
            self.parts.push(Part { channel: channel.clone(), insert_event, filters, check });
        }
        Ok(())
    }

    /// Sends every row as its channel's insert event without an id, then `snapshot-end` carrying the
    /// head as its id, and ends the transaction. `Ok(false)`: the client went away, or did not take a
    /// chunk within [`TAKE_BOUND`].
    pub async fn send(mut self, tx: &mpsc::Sender<Feed>) -> Result<bool, SnapshotError> {
        self.read(&mut Sink::Channel(tx)).await
    }

    /// Reads the whole snapshot into memory, for identical requests to share; `None` (and the transaction
    /// ended) once it passes [`SHARED_BYTES`].
    async fn take(mut self) -> Result<Option<Taken>, SnapshotError> {
        let (head, pending) = (self.head, self.pending.clone());
        let mut sink = Sink::Buffer { chunks: Vec::new(), bytes: 0 };
        if !self.read(&mut sink).await? {
            if self.bounded(self.client().batch_execute("ROLLBACK")).await.is_ok() {
                self.open = false;
            }
            return Ok(None);
        }
        let Sink::Buffer { chunks, .. } = sink else { unreachable!("a buffer stays one") };
        Ok(Some(Taken { chunks, head, pending }))
    }

    /// Hands the encoded snapshot to `sink` chunk by chunk, as rows are read; stops when it says no.
    async fn read(&mut self, sink: &mut Sink<'_>) -> Result<bool, SnapshotError> {
        let mut chunk = BytesMut::new();
        let mut sent: u64 = 0;
        for part in &self.parts {
            let query = "SELECT s::text FROM pgsse.snapshot($1, $2, $3, $4) AS s";
            // The limit counts rows that pass the stream's filter: SQL reads a superset, up to the most a
            // snapshot may read.
            let read_limit = self.limit.map(|limit| if part.check.is_some() { self.max_rows } else { limit });
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                [&part.channel, &part.filters, &self.order, &read_limit];
            let mut taken = 0;
            let from_table = |e| SnapshotError::from_table(e, self.bound, &part.channel);
            let rows = self.bounded_as(self.client().query_raw(query, params), from_table).await?;
            pin_mut!(rows);
            while let Some(row) = rows.try_next().await.map_err(from_table)? {
                let data: &str = row.get(0);
                if part.check.as_ref().is_some_and(|f| !f.matches_text(data.as_bytes())) {
                    continue;
                }
                if sse::encode_into(&mut chunk, None, &part.insert_event, data).is_err() {
                    tracing::error!(channel = part.channel, "skipping snapshot row: its event name cannot be encoded");
                    continue;
                }
                sent += 1;
                taken += 1;
                if chunk.len() >= CHUNK_BYTES && !sink.put(chunk.split().freeze()).await {
                    return Ok(false);
                }
                if self.limit == Some(taken) {
                    break;
                }
            }
        }
        self.bounded(self.client().batch_execute("COMMIT")).await?;
        self.open = false;
        let end = json!({ "rows": sent, "through": self.head }).to_string();
        sse::encode_into(&mut chunk, Some(self.head), "snapshot-end", &end).expect("a constant event name");
        Ok(sink.put(chunk.freeze()).await)
    }

    fn client(&self) -> &Object {
        self.client.as_ref().expect("the connection is taken only on drop")
    }

    /// A query on the snapshot's connection, bounded as every query is (`--db-timeout`).
    async fn bounded<T>(
        &self,
        query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, SnapshotError> {
        self.bounded_as(query, |e| SnapshotError::from_db(e, self.bound)).await
    }

    /// Like [`Self::bounded`], with the query's errors told by `refused`.
    async fn bounded_as<T>(
        &self,
        query: impl std::future::Future<Output = Result<T, tokio_postgres::Error>>,
        refused: impl FnOnce(tokio_postgres::Error) -> SnapshotError,
    ) -> Result<T, SnapshotError> {
        match tokio::time::timeout(self.bound, query).await {
            Ok(outcome) => outcome.map_err(refused),
            Err(_) => Err(SnapshotError::TimedOut(self.bound)),
        }
    }
}

/// Where [`Snapshot::read`] puts the encoded snapshot.
enum Sink<'a> {
    Channel(&'a mpsc::Sender<Feed>),
    Buffer { chunks: Vec<Bytes>, bytes: usize },
}

impl Sink<'_> {
    /// `false` once the stream's client has gone or not taken the last chunk within [`TAKE_BOUND`], or
    /// the buffer passed [`SHARED_BYTES`].
    async fn put(&mut self, chunk: Bytes) -> bool {
        match self {
            Sink::Channel(tx) => {
                matches!(tokio::time::timeout(TAKE_BOUND, tx.send(Feed::Chunk(chunk))).await, Ok(Ok(())))
            }
            Sink::Buffer { chunks, bytes } => {
                *bytes += chunk.len();
                chunks.push(chunk);
                *bytes <= SHARED_BYTES
            }
        }
    }
}

/// A snapshot dropped with its transaction open (its client went away, a query failed) takes its
/// connection out of the pool: closing it ends the transaction, and no request gets it half-used.
impl Drop for Snapshot {
    fn drop(&mut self) {
        if let (true, Some(client)) = (self.open, self.client.take()) {
            drop(Object::take(client));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(snapshot: Option<&str>, order: Option<&str>, limit: Option<&str>) -> Result<Option<Shape>, String> {
        Shape::parse(snapshot, order, limit, 100).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_order_and_limit() {
        let s = shape(Some("true"), Some("created_at.desc,id.asc,name"), Some("50")).unwrap().unwrap();
        let order = [("created_at", true), ("id", false), ("name", false)].map(|(c, d)| (c.to_string(), d));
        assert_eq!(s, Shape { order: order.to_vec(), limit: Some(50), max_rows: 100 });
        assert_eq!(shape(None, None, None), Ok(None));
        assert_eq!(shape(Some("false"), None, None), Ok(None));
    }

    #[test]
    fn refuses_bad_shapes_by_name() {
        for (snapshot, order, limit, want) in [
            (Some("yes"), None, None, "snapshot=true or snapshot=false"),
            (Some("true"), Some("a.b.desc"), None, "column.asc or column.desc"),
            (Some("true"), Some(".desc"), None, "column.asc or column.desc"),
            (Some("true"), Some("a,"), None, "column.asc or column.desc"),
            (Some("true"), None, Some("0"), "from 1 to 100"),
            (Some("true"), None, Some("101"), "--snapshot-max-rows"),
            (Some("true"), None, Some("ten"), "whole number"),
            (None, Some("id.desc"), None, "add snapshot=true"),
            (Some("false"), None, Some("5"), "add snapshot=true"),
        ] {
            let err = shape(snapshot, order, limit).unwrap_err();
            assert!(err.contains(want), "{snapshot:?} {order:?} {limit:?}: {err}");
        }
    }
}
