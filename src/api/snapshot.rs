//! Streams that start with a table's current rows (`?snapshot=true`): the rows and the point of the log
//! they stand at are read in one repeatable-read transaction, so the stream goes on from there exactly.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{pin_mut, TryStreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::api::stream::Feed;
use crate::filter::ChannelFilters;
use crate::limits::LimitError;
use crate::pg::snapshot::{ReadError, SnapshotRead};
use crate::pg::store::Store;
use crate::refusal::{Refusal, Refuse};
use crate::sse;

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
    /// Too many snapshots are being read (in all, or for this client).
    #[error(transparent)]
    Busy(#[from] LimitError),
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl Refuse for SnapshotError {
    fn refusal(&self) -> Refusal {
        match self {
            SnapshotError::InvalidFlag(_)
            | SnapshotError::InvalidOrder(_)
            | SnapshotError::InvalidLimit(..)
            | SnapshotError::Repeated(_)
            | SnapshotError::WithoutSnapshot
            | SnapshotError::TooLarge(..) => Refusal::Invalid,
            SnapshotError::Busy(err) => err.refusal(),
            SnapshotError::Read(ReadError::Refused { .. }) => Refusal::Invalid,
            SnapshotError::Read(ReadError::Forbidden { .. }) => Refusal::Forbidden,
            SnapshotError::Read(ReadError::TimedOut(_)) => Refusal::Unavailable,
            SnapshotError::Read(ReadError::Store(err)) => err.refusal(),
        }
    }

    fn told(&self) -> String {
        match self {
            SnapshotError::Read(ReadError::Store(err)) => err.told(),
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
    read: SnapshotRead,
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
        let order: Value = shape.order.iter().map(|(key, desc)| json!({ "key": key, "desc": desc })).collect();
        let mut snapshot = Snapshot {
            read: SnapshotRead::begin(store).await?,
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
                snapshot.read.rollback().await;
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
        (self.head, self.pending) = self.read.seam(channels).await?;
        for channel in channels {
            let filters = filters_of.get(channel).map_or(json!([]), |f| f.to_sql_json());
            let insert_event = self.read.insert_event(channel).await?;
            self.read.check(channel, &filters, &self.order).await?;
            // Counts when unbounded (a `limit` of 0 reads no row).
            let cap = if shape.limit.is_some() { 0 } else { max_rows as i64 + 1 };
            let rows = self.read.count(channel, &filters, &self.order, cap).await?;
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
            self.read.rollback().await;
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
            // The limit counts rows that pass the stream's filter: SQL reads a superset, up to the most a
            // snapshot may read.
            let read_limit = self.limit.map(|limit| if part.check.is_some() { self.max_rows } else { limit });
            let mut taken = 0;
            let rows = self.read.rows(&part.channel, &part.filters, &self.order, read_limit).await?;
            pin_mut!(rows);
            while let Some(row) = rows.try_next().await? {
                let data: &str = &row;
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
        self.read.commit().await?;
        let end = json!({ "rows": sent, "through": self.head }).to_string();
        sse::encode_into(&mut chunk, Some(self.head), "snapshot-end", &end).expect("a constant event name");
        Ok(sink.put(chunk.freeze()).await)
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
