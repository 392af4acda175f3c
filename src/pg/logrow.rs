//! One row of the event log as the gateway reads it (`EventRow`), the SQL that reads it, and its SSE
//! encoding: the frame every stream shares, and an update's frames for streams whose filter it crosses.

use bytes::Bytes;
use tokio_postgres::Row;

use crate::fanout::hub::Moved;
use crate::fanout::queue::Frame;
use crate::sse;

/// One row of `pgsse.events` as the gateway reads it (payload as JSON text, never re-serialized).
pub struct EventRow {
    pub id: i64,
    pub channel: String,
    pub event: String,
    pub payload: String,
    /// The writing transaction, where the read asked for it (replay does, for a snapshot's seam).
    pub txid: Option<i64>,
    /// For an update, where the read asked for it: what a filtered stream needs to send it as an
    /// insert or a delete when the row entered or left its filter.
    pub moved: Option<Moved>,
}

/// An update's old row and event names as [`EventRow::with_moved`] reads them, for a read whose rows
/// come from `table` (a name or alias of `pgsse.events` rows).
pub fn moved_columns(table: &str) -> String {
    format!(
        "{} AS old, CASE WHEN {table}.old IS NOT NULL THEN \
           (SELECT ARRAY[c.insert_event, c.delete_event] FROM pgsse.channels c WHERE c.name = {table}.channel) END AS moves",
        payload_bytes(&format!("{table}.old"))
    )
}

/// The highest id the sequence has handed out, committed or not, as a scalar subquery. Every read of the
/// log stops there: a row with a higher id was not written by pgsse (whoever may write the log may get it
/// wrong), and followed it would stall every stream until it was deleted and the gateway restarted.
pub const ISSUED_HEAD: &str =
    "(SELECT CASE WHEN s.is_called THEN s.last_value ELSE s.last_value - 1 END FROM pgsse.event_id_seq s)";

/// The payload `column` as bytes, so that the gateway checks it is UTF-8 itself: read as text, one row that
/// is not (possible only in a `SQL_ASCII` database) fails the server's conversion and with it the whole
/// read. Elsewhere PostgreSQL converts to UTF-8 as it would for text.
pub(crate) fn payload_bytes(column: &str) -> String {
    format!("convert_to({column}::text, CASE getdatabaseencoding() WHEN 'SQL_ASCII' THEN 'SQL_ASCII' ELSE 'UTF8' END)")
}

/// A row whose payload is not UTF-8: it cannot be sent as SSE or JSON, so it is skipped.
#[derive(Debug, thiserror::Error)]
#[error("event {id}'s payload is not valid UTF-8")]
pub struct Undecodable {
    pub id: i64,
}

impl EventRow {
    /// `id, channel, event, payload`, the payload as [`EventRow::from_row`] expects it.
    pub fn columns() -> String {
        format!("id, channel, event, {} AS payload", payload_bytes("payload"))
    }

    /// The row, or (inside `Ok`) [`Undecodable`] with its id when its payload is not UTF-8.
    pub fn from_row(row: &Row) -> Result<Result<Self, Undecodable>, tokio_postgres::Error> {
        let id = row.try_get(0)?;
        let Ok(payload) = String::from_utf8(row.try_get::<_, Vec<u8>>(3)?) else {
            return Ok(Err(Undecodable { id }));
        };
        Ok(Ok(Self { id, channel: row.try_get(1)?, event: row.try_get(2)?, payload, txid: None, moved: None }))
    }

    /// Adds the old row and event names read by [`moved_columns`] at `at` and `at + 1`; an old row that
    /// is not UTF-8 is left out (the update then reaches filtered streams as an update).
    pub fn with_moved(mut self, row: &Row, at: usize) -> Result<Self, tokio_postgres::Error> {
        let old = row.try_get::<_, Option<Vec<u8>>>(at)?.and_then(|b| String::from_utf8(b).ok());
        let names = row.try_get::<_, Option<Vec<String>>>(at + 1)?;
        if let (Some(old), Some([insert_event, delete_event])) = (old, names.as_deref()) {
            let (insert_event, delete_event) = (insert_event.clone(), delete_event.clone());
            self.moved = Some(Moved { old, insert_event, delete_event });
        }
        Ok(self)
    }

    /// Encodes the row once. The schema's CHECKs keep event names valid, but rows are untrusted input:
    /// an unencodable one is logged and skipped rather than allowed to break the stream.
    /// Also returns the event's JSON data for filters: usually a slice of the frame, copied only when
    /// the payload holds line breaks (never for jsonb's own text).
    pub fn encode(&self) -> Option<(Frame, Bytes)> {
        match sse::encode(self.id, &self.event, &self.payload) {
            Ok(bytes) => {
                // jsonb's text never holds a raw line break, so the data is the frame's one `data:` line.
                let end = bytes.len().saturating_sub(2);
                let data = match end.checked_sub(self.payload.len()) {
                    Some(start) if bytes[start..end] == *self.payload.as_bytes() => bytes.slice(start..end),
                    _ => Bytes::from(self.payload.clone()),
                };
                Some((Frame { id: self.id, bytes }, data))
            }
            Err(err) => {
                tracing::error!(id = self.id, cause = %err, "skipping event that cannot be encoded");
                None
            }
        }
    }
}
