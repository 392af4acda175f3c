//! The plain HTTP side of a channel: `POST` writes a row or an ad-hoc event, `GET` reads recent history,
//! `DELETE` clears. Writes only touch PostgreSQL: their broadcast comes from the log after commit, exactly
//! as for a row written with psql.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderValue, CONTENT_LENGTH};
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde_json::Value;

use crate::api::query::PostQuery;
use crate::api::reply::{json_response, raw_json_response, Body};
use crate::auth::{Access, AuthError};
use crate::channel::ChannelError;
use crate::filter::FilterError;
use crate::pg::error::StoreError;
use crate::pg::keyed::Keyed;
use crate::pg::published::{ColumnsError, Published};
use crate::pg::store::{Store, Written};
use crate::refusal::{Refusal, Refuse};

pub type Response = http::Response<Body>;

pub const EVENT_ID_HEADER: &str = "pgsse-event-id";
const IDEMPOTENCY_KEY: &str = "idempotency-key";
const DEFAULT_EVENT: &str = "message";

const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
const DEFAULT_BODY_READ_TIMEOUT: &str = "30s";

/// Writes through `POST` and `DELETE` on a channel.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Writes")]
pub struct CommandArgs {
    /// A POST body must arrive whole within this long (else 408).
    #[arg(long, env = "PGSSE_BODY_READ_TIMEOUT", default_value = DEFAULT_BODY_READ_TIMEOUT, value_parser = crate::parse::duration)]
    pub body_read_timeout: Duration,

    /// Largest request body accepted by POST, in bytes.
    #[arg(long, env = "PGSSE_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT, value_parser = crate::parse::positive)]
    pub body_limit: usize,

    /// Let `POST /{channel}` create a channel that does not exist yet; without it such a POST is 404, and
    /// channels come from `pgsse.create_channel` or `pgsse.publish_table`.
    #[arg(long, env = "PGSSE_POST_CREATES_CHANNELS")]
    pub post_creates_channels: bool,
}

/// What the channel commands need: the pool, the published columns, and the writes' settings.
pub struct Commands {
    store: Arc<Store>,
    published: Arc<Published>,
    args: CommandArgs,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("request body larger than {0} bytes")]
    TooLarge(usize),
    #[error("content type must be application/json")]
    NotJsonContentType,
    #[error("request body is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("request body must be a JSON object")]
    NotAnObject,
    #[error("could not read the request body")]
    Body,
    #[error("request body not received within {0:?}")]
    BodyTimeout(std::time::Duration),
    #[error(transparent)]
    Channel(#[from] ChannelError),
    #[error("invalid event name {0:?}: use letters, digits, _ . : - (at most 64, not starting with . : -)")]
    InvalidEvent(String),
    #[error("Idempotency-Key needs a token with a `sub` claim: keys are kept per subject")]
    KeyWithoutSubject,
    #[error("Idempotency-Key must be one quoted string of 1 to 255 visible ASCII characters")]
    BadIdempotencyKey,
    #[error("event= is for channels without a table; the table names its events")]
    EventOnTable,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Columns(#[from] ColumnsError),
}

impl Refuse for CommandError {
    fn refusal(&self) -> Refusal {
        match self {
            CommandError::TooLarge(_) => Refusal::BodyTooLarge,
            CommandError::NotJsonContentType => Refusal::UnsupportedMediaType,
            CommandError::BodyTimeout(_) => Refusal::BodyTimeout,
            CommandError::InvalidJson(_)
            | CommandError::NotAnObject
            | CommandError::Body
            | CommandError::InvalidEvent(_)
            | CommandError::KeyWithoutSubject
            | CommandError::BadIdempotencyKey
            | CommandError::EventOnTable => Refusal::Invalid,
            CommandError::Channel(err) => err.refusal(),
            CommandError::Store(err) => err.refusal(),
            CommandError::Auth(err) => err.refusal(),
            CommandError::Filter(err) => err.refusal(),
            CommandError::Columns(err) => err.refusal(),
        }
    }

    fn told(&self) -> String {
        match self {
            CommandError::Channel(err) => err.told(),
            CommandError::Store(err) => err.told(),
            CommandError::Auth(err) => err.told(),
            CommandError::Filter(err) => err.told(),
            CommandError::Columns(err) => err.told(),
            err => err.to_string(),
        }
    }
}

impl Commands {
    pub fn new(store: Arc<Store>, published: Arc<Published>, args: CommandArgs) -> Self {
        Self { store, published, args }
    }

    /// Reads a JSON object body of at most `--body-limit` bytes within `--body-read-timeout`, refusing other
    /// content types before reading: a body that trickles in must not hold its connection and buffer forever.
    pub async fn read_object(&self, headers: &HeaderMap, body: Incoming) -> Result<Value, CommandError> {
        if !crate::api::reply::content_type_is(headers, "application/json") {
            return Err(CommandError::NotJsonContentType);
        }
        let bytes = self.read_body(headers, body).await?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| CommandError::InvalidJson(e.to_string()))?;
        if !value.is_object() {
            return Err(CommandError::NotAnObject);
        }
        Ok(value)
    }

    /// Reads a body of at most `--body-limit` bytes within `--body-read-timeout`.
    pub async fn read_body(&self, headers: &HeaderMap, body: Incoming) -> Result<Bytes, CommandError> {
        let (limit, deadline) = (self.args.body_limit, self.args.body_read_timeout);
        let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
        if declared.is_some_and(|n| n > limit) {
            return Err(CommandError::TooLarge(limit));
        }
        let collected = tokio::time::timeout(deadline, Limited::new(body, limit).collect())
            .await
            .map_err(|_| CommandError::BodyTimeout(deadline))?;
        match collected {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(CommandError::TooLarge(limit)),
            Err(_) => Err(CommandError::Body),
        }
    }

    /// `POST /{channel}`: a table channel gets a row built from the object's keys, any other channel an event.
    /// A repeat of an `Idempotency-Key` with the same request answers as the first did, writing nothing.
    pub async fn post(
        &self,
        access: &Access,
        channel: &str,
        query: &PostQuery,
        headers: &HeaderMap,
        body: Value,
    ) -> Result<Response, CommandError> {
        check_name(channel)?;
        access.may_publish(channel)?;
        // A token limited to some rows may write only such rows: the object must match its filter as written.
        if access.filter_for(channel, None)?.is_some_and(|filter| !filter.matches(&body)) {
            return Err(AuthError::OutsideGrant(channel.to_string()).into());
        }
        let event = query.event.clone();
        if let Some(bad) = event.as_deref().filter(|e| !valid_event(e)) {
            return Err(CommandError::InvalidEvent(crate::parse::clip(bad)));
        }
        let key = match idempotency_key(headers)? {
            None => None,
            Some(key) => Some(Keyed {
                scope: access.key_scope().ok_or(CommandError::KeyWithoutSubject)?.to_string(),
                key,
                request: format!("{channel}\n{}\n{body}", event.as_deref().unwrap_or("")),
            }),
        };
        // A row whose insert the gateway keeps goes to a table channel without asking which kind it is
        // (the kept insert checks as it runs); unless the channel turns out to have lost its table since.
        if key.is_none() && event.is_none() && self.store.keeps_insert(channel, &body) {
            match self.store.insert_row(channel, &body, None).await {
                Err(StoreError::Rejected { kind: Refusal::NotFound, .. }) => {}
                written => return row_written(channel, written),
            }
        }
        let info = self.store.channel(channel).await?;
        if info.is_none() && !self.args.post_creates_channels {
            return Err(ChannelError::Unknown(channel.to_string()).into());
        }
        if info.is_some_and(|c| c.has_table) {
            if event.is_some() {
                return Err(CommandError::EventOnTable);
            }
            return row_written(channel, self.store.insert_row(channel, &body, key.as_ref()).await);
        }
        let event = event.unwrap_or_else(|| DEFAULT_EVENT.to_string());
        let id = match self.store.publish(channel, &event, &body, key.as_ref()).await {
            Err(StoreError::NotSequenced) => return Ok(committed_without_id(channel)),
            id => id?,
        };
        let mut resp = json_response(
            StatusCode::CREATED,
            &serde_json::json!({ "id": id, "channel": channel, "event": event, "data": body }),
        );
        resp.headers_mut().insert(EVENT_ID_HEADER, HeaderValue::from(id));
        Ok(resp)
    }

    /// `DELETE /{channel}`: removes the channel's rows and events and broadcasts a `clear` event.
    pub async fn clear(&self, access: &Access, channel: &str) -> Result<Response, CommandError> {
        check_name(channel)?;
        access.may_publish(channel)?;
        if access.filter_for(channel, None)?.is_some() {
            return Err(AuthError::FilteredClear(channel.to_string()).into());
        }
        let Written { id, payload } = self.store.clear(channel).await?;
        let body = format!("{{\"id\":{},\"event\":\"clear\",\"data\":{payload}}}", id.unwrap_or_default());
        let mut resp = raw_json_response(StatusCode::OK, Bytes::from(body));
        if let Some(id) = id {
            resp.headers_mut().insert(EVENT_ID_HEADER, HeaderValue::from(id));
        }
        Ok(resp)
    }
}

/// The request's `Idempotency-Key` (the IETF httpapi draft's header: a structured-field string, quoted, or
/// a bare token as many clients send it): 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, CommandError> {
    let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
    let Some(value) = values.next() else { return Ok(None) };
    let bad = || CommandError::BadIdempotencyKey;
    if values.next().is_some() {
        return Err(bad());
    }
    let raw = value.to_str().map_err(|_| bad())?.trim();
    let key = raw.strip_prefix('"').and_then(|k| k.strip_suffix('"')).unwrap_or(raw);
    let visible = key.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b'"' && b != b'\\');
    if key.is_empty() || key.len() > 255 || !visible {
        return Err(bad());
    }
    Ok(Some(key.to_string()))
}

/// The answer to a row's POST: the row as its channel publishes it, with its event's id.
fn row_written(channel: &str, written: Result<Written, StoreError>) -> Result<Response, CommandError> {
    let written = match written {
        Err(StoreError::NotSequenced) => return Ok(committed_without_id(channel)),
        written => written?,
    };
    let mut resp = raw_json_response(StatusCode::CREATED, Bytes::from(written.payload));
    if let Some(id) = written.id {
        resp.headers_mut().insert(EVENT_ID_HEADER, HeaderValue::from(id));
    }
    Ok(resp)
}

/// A write that committed but whose event is not in the log yet (sequencing is held up, or its table's
/// capture recorded none): 202, so that nobody retries it and writes it twice.
fn committed_without_id(channel: &str) -> Response {
    json_response(
        StatusCode::ACCEPTED,
        &serde_json::json!({
            "committed": true,
            "id": null,
            "channel": channel,
            "note": "the write committed; its event is not in the log yet, so its id is not known: do not retry it",
        }),
    )
}

fn check_name(channel: &str) -> Result<(), CommandError> {
    if crate::channel::valid(channel) {
        Ok(())
    } else {
        Err(ChannelError::invalid(channel).into())
    }
}

/// Same rule as `pgsse.valid_event` in SQL.
fn valid_event(name: &str) -> bool {
    name.len() <= 64 && crate::channel::valid(name)
}

mod history;
#[cfg(test)]
mod tests;
