//! One row of the event log as the gateway reads it (`EventRow`), the SQL that reads it, and its SSE
//! encoding: the frame every stream shares, and an update's frames for streams whose filter it crosses.

use bytes::Bytes;
use tokio_postgres::Row;

use crate::fanout::hub::UpdateRows;
use crate::fanout::queue::Frame;
use crate::fanout::update::{TableTopic, Update, CHANNEL as MERCURE};
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
    pub moved: Option<UpdateRows>,
    /// The event empties the channel: every stream gets it, whatever its filter (where the read asked).
    pub wide: bool,
    /// The Mercure topic of its channel's rows, where the read asked and the channel has one.
    pub topic: Option<TableTopic>,
}

/// What filtered streams need of a row, as [`EventRow::with_filter_columns`] reads them, for a read whose
/// rows come from `table` (a name or alias of `pgsse.events` rows): an update's old row, its new row where
/// the data nests it (`{"new", "old"}`, whatever the channel says now), its channel's insert and delete
/// event names; and whether the event empties the channel (a clear or a truncate, as pgsse staged it).
pub fn filter_columns(table: &str) -> String {
    let t = table;
    format!(
        "{old} AS old, CASE WHEN {t}.old IS NOT NULL THEN \
           (SELECT ARRAY[c.insert_event, c.delete_event] FROM pgsse.channels c WHERE c.name = {t}.channel) END AS moves, \
         CASE WHEN {t}.old IS NOT NULL AND {t}.payload ? 'new' AND {t}.payload - 'new' = jsonb_build_object('old', {t}.old) \
           THEN {new} END AS nested_new, \
         {t}.wide AS wide",
        old = payload_bytes(&format!("{t}.old")),
        new = payload_bytes(&format!("({t}.payload -> 'new')")),
    )
}

/// The Mercure topic of the channel of `table`'s row (a name or alias of `pgsse.events` rows), as
/// [`EventRow::with_topic`] reads it: NULL unless the channel is a table's with `mercure_topic`.
pub fn topic_column(table: &str) -> String {
    format!(
        "(SELECT ARRAY[c.mercure_topic, c.mercure_public::text] FROM pgsse.channels c \
          WHERE c.name = {table}.channel AND c.mercure_topic IS NOT NULL) AS topic"
    )
}

/// What a row read with [`filter_columns`] weighs, in bytes, as columns of `table` (a row alias, or `""`
/// for the enclosing query's own columns): its payload and the old and new rows beside it, which an update
/// that shrank a large row makes heavier than the payload.
pub fn row_bytes(table: &str) -> String {
    let t = if table.is_empty() { String::new() } else { format!("{table}.") };
    format!("(octet_length({t}payload) + coalesce(octet_length({t}old), 0) + coalesce(octet_length({t}nested_new), 0))")
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
        Ok(Ok(Self {
            id,
            channel: row.try_get(1)?,
            event: row.try_get(2)?,
            payload,
            txid: None,
            moved: None,
            wide: false,
            topic: None,
        }))
    }

    /// Adds what [`filter_columns`] read at `at` and on; an old or new row that is not UTF-8 is left out
    /// (the update then reaches filtered streams as an update, judged by its data).
    pub fn with_filter_columns(mut self, row: &Row, at: usize) -> Result<Self, tokio_postgres::Error> {
        let text = |at| {
            Ok::<_, tokio_postgres::Error>(
                row.try_get::<_, Option<Vec<u8>>>(at)?.and_then(|b| String::from_utf8(b).ok()),
            )
        };
        let (old, new) = (text(at)?, text(at + 2)?);
        let names = row.try_get::<_, Option<Vec<String>>>(at + 1)?;
        if let (Some(old), Some([insert_event, delete_event])) = (old, names.as_deref()) {
            let (insert_event, delete_event) = (insert_event.clone(), delete_event.clone());
            self.moved = Some(UpdateRows { old, new, insert_event, delete_event });
        }
        self.wide = row.try_get::<_, Option<bool>>(at + 3)?.unwrap_or(false);
        Ok(self)
    }

    /// Adds what [`topic_column`] read at `at`.
    pub fn with_topic(mut self, row: &Row, at: usize) -> Result<Self, tokio_postgres::Error> {
        if let Some([template, public]) = row.try_get::<_, Option<Vec<String>>>(at)?.as_deref() {
            self.topic = Some(TableTopic { template: template.clone(), public: public == "true" });
        }
        Ok(self)
    }

    /// The event as a Mercure update, where it is one: published to the hub, or a row event of a table
    /// channel with a topic (a clear or truncate is not: it names no row). One that cannot be made (the
    /// log is untrusted input) is logged and left out of Mercure streams.
    pub fn update(&self) -> Option<Box<Update>> {
        if self.channel != MERCURE && (self.topic.is_none() || self.wide) {
            return None;
        }
        match Update::from_log(
            self.id,
            &self.channel,
            &self.event,
            &self.payload,
            self.moved.as_ref(),
            self.topic.as_ref(),
        ) {
            Ok(update) => update.map(Box::new),
            Err(err) => {
                tracing::error!(id = self.id, cause = %err, "event is not a Mercure update it should be; Mercure streams skip it");
                None
            }
        }
    }

    /// Bytes the row holds: its payload and, for an update, the rows beside it (see [`row_bytes`]).
    pub fn weight(&self) -> usize {
        self.payload.len() + self.moved.as_ref().map_or(0, |m| m.old.len() + m.new.as_ref().map_or(0, String::len))
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
