//! `GET /{channel}`: history pages, filtered as the channel's streams are: a page holds up to `limit`
//! events the stream would show, read from a bounded stretch of the log, and says where the next starts.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{HeaderValue, LINK};
use http::StatusCode;

use super::{check_name, CommandError, Commands, Response};
use crate::api::query::HistoryQuery;
use crate::api::reply::raw_json_response;
use crate::auth::{Access, AuthError};
use crate::channel::ChannelError;
use crate::fanout::moves::UpdateFrames;
use crate::filter::Filter;
use crate::pg::logrow::EventRow;
use crate::pg::published::ColumnsError;
use crate::pg::store::PAGE_BYTES;

/// Log events one request reads at most, through filters that may match few of them: past this the page
/// ends with what it found and its `Link` continues from where the reading stopped.
pub const MAX_SCAN: usize = 10_000;
/// Events per read of the log behind a filtered page.
const SCAN_BATCH: i64 = 1000;

impl Commands {
    /// `GET /{channel}`: recent events, newest first; `?limit=` and `?before=<id>` page backwards, and the
    /// `Link` header's `rel="next"` gives the next page while the log may hold more.
    pub async fn history(
        &self,
        access: &Access,
        channel: &str,
        query: &HistoryQuery,
    ) -> Result<Response, CommandError> {
        check_name(channel)?;
        access.may_subscribe(channel)?;
        let (limit, before, asked) = (query.limit, query.before, &query.filter);
        if self.store.channel(channel).await?.is_none() {
            return Err(ChannelError::Unknown(channel.to_string()).into());
        }
        self.published.check(&self.store, channel, asked).await?;
        if let Some(grant) = access.filter_for(channel, None)? {
            self.published.check(&self.store, channel, &grant).await.map_err(|err| match err {
                ColumnsError::Unknown { .. } | ColumnsError::Type(_) => {
                    CommandError::Auth(AuthError::GrantFilter { channel: channel.to_string(), cause: err.to_string() })
                }
                err => CommandError::Columns(err),
            })?;
        }
        let granted = access.filter_for(channel, (!asked.is_empty()).then_some(asked))?;
        self.store.settle().await?;
        // Read on a standby, the page holds what the primary had committed by now.
        self.store.reads_caught_up().await?;
        let page = self.page(channel, before, limit, granted.as_deref()).await?;
        let mut resp = raw_json_response(StatusCode::OK, page.body);
        if let Some(next) = page.next {
            let link = format!("</{channel}?{}>; rel=\"next\"", query.next(next));
            if let Ok(value) = HeaderValue::from_str(&link) {
                resp.headers_mut().insert(LINK, value);
            }
        }
        Ok(resp)
    }

    /// Reads the log back from `before` until `limit` events are shown, their data passes [`PAGE_BYTES`],
    /// [`MAX_SCAN`] events were read or the log ends; `next` is where reading stopped, unless it ended.
    async fn page(
        &self,
        channel: &str,
        before: i64,
        limit: i64,
        filter: Option<&Filter>,
    ) -> Result<Page, CommandError> {
        let mut out = BytesMut::from(&b"["[..]);
        let (mut shown, mut scanned, mut cursor, mut bytes) = (0, 0, before, 0);
        let batch = if filter.is_some() { SCAN_BATCH } else { limit };
        loop {
            let rows = self.store.history(channel, cursor, batch).await?;
            if rows.is_empty() {
                out.put_u8(b']');
                return Ok(Page { body: out.freeze(), next: None });
            }
            for row in rows {
                scanned += 1;
                let row = match row {
                    Ok(row) => row,
                    Err(poison) => {
                        cursor = poison.id;
                        continue;
                    }
                };
                cursor = row.id;
                if let Some((event, data)) = shows(&row, filter) {
                    if shown > 0 {
                        out.put_u8(b',');
                    }
                    let event = serde_json::to_string(&event).unwrap_or_else(|_| "\"\"".into());
                    out.put_slice(format!("{{\"id\":{},\"event\":{event},\"data\":", row.id).as_bytes());
                    // The payload is jsonb's own text output: valid JSON, used as is rather than parsed again.
                    out.put_slice(data.as_bytes());
                    out.put_u8(b'}');
                    shown += 1;
                }
                bytes += row.weight() as i64;
                if shown == limit || bytes >= PAGE_BYTES || scanned >= MAX_SCAN {
                    out.put_u8(b']');
                    return Ok(Page { body: out.freeze(), next: Some(cursor) });
                }
            }
            if filter.is_none() {
                // One read is the page (cut short only by its bytes).
                out.put_u8(b']');
                return Ok(Page { body: out.freeze(), next: Some(cursor) });
            }
        }
    }
}

struct Page {
    body: Bytes,
    next: Option<i64>,
}

/// The event name and data a stream with `filter` shows for `row`, as the listener chooses them: an
/// update that moved the row into or out of the filter is its insert or delete, and what empties the
/// channel is shown whatever the filter.
fn shows<'a>(row: &'a EventRow, filter: Option<&Filter>) -> Option<(&'a str, &'a str)> {
    let Some(filter) = filter else { return Some((&row.event, &row.payload)) };
    let matches = filter.matches_text(row.payload.as_bytes());
    match &row.moved {
        Some(moved) => {
            // The data is not needed to decide: only the old and new rows beside it.
            let shown = UpdateFrames::new(row.id, Bytes::new(), moved.clone()).shown(matches, filter);
            moved.shown_as(shown, &row.event, &row.payload)
        }
        None => (matches || row.wide).then_some((&row.event, &row.payload)),
    }
}
