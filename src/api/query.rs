//! The query strings requests carry, each parsed once into its own type: a stream's, a history page's and a
//! write's. Every other parameter of a stream or a page is a row filter; a name one letter off a known one
//! is refused saying which was meant, rather than taken as a filter that matches nothing.

use crate::api::snapshot::{SnapshotError, RESERVED};
use crate::auth::ACCESS_TOKEN;
use crate::cursor;
use crate::filter::{Filter, FilterError};
use crate::refusal::{Refusal, Refuse};

pub const DEFAULT_HISTORY: i64 = 50;
pub const MAX_HISTORY: i64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0} given more than once")]
    Repeated(String),
    #[error("unknown parameter {key:?}: did you mean {meant}?")]
    Meant { key: String, meant: &'static str },
    #[error("unknown query parameter {0:?}")]
    Unknown(String),
    #[error("{0} must be a whole number")]
    NotANumber(String),
    #[error("limit must be at least 1")]
    ZeroLimit,
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    #[error(transparent)]
    Filter(#[from] FilterError),
}

impl Refuse for QueryError {
    fn refusal(&self) -> Refusal {
        match self {
            QueryError::Repeated(_)
            | QueryError::Meant { .. }
            | QueryError::Unknown(_)
            | QueryError::NotANumber(_)
            | QueryError::ZeroLimit => Refusal::Invalid,
            QueryError::Snapshot(err) => err.refusal(),
            QueryError::Filter(err) => err.refusal(),
        }
    }
}

/// `GET /{channel}/events` and `GET /events`.
#[derive(Debug, Default)]
pub struct StreamQuery {
    pub channels: Vec<String>,
    pub last_event_id: Option<String>,
    pub access_token: Option<String>,
    pub filter: Option<Filter>,
    /// `snapshot`, `order` and `limit`, as given.
    pub shape: [Option<String>; 3],
}

impl StreamQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, QueryError> {
        let mut q = StreamQuery::default();
        let mut filters = Vec::new();
        for (key, value) in pairs(raw) {
            match key.as_str() {
                "channel" => q.channels.push(value),
                "last_event_id" if q.last_event_id.is_none() => q.last_event_id = Some(value),
                "last_event_id" => return Err(QueryError::Repeated(key)),
                ACCESS_TOKEN => q.access_token = Some(value),
                name if RESERVED.contains(&name) => {
                    let i = RESERVED.iter().position(|r| *r == name).unwrap_or_default();
                    if q.shape[i].replace(value).is_some() {
                        return Err(SnapshotError::Repeated(RESERVED[i]).into());
                    }
                }
                _ => filters.push((key, value)),
            }
        }
        q.filter =
            filter(&filters, &["channel", "last_event_id", ACCESS_TOKEN, RESERVED[0], RESERVED[1], RESERVED[2]])?;
        Ok(q)
    }
}

/// `GET /{channel}`: a history page.
#[derive(Debug)]
pub struct HistoryQuery {
    pub limit: i64,
    pub before: i64,
    pub filter: Filter,
    /// The page's own parameters but `before` and the token, for the next page's link.
    pub rest: Vec<(String, String)>,
}

impl HistoryQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, QueryError> {
        let mut q =
            HistoryQuery { limit: DEFAULT_HISTORY, before: i64::MAX, filter: Filter::default(), rest: Vec::new() };
        let (mut filters, mut seen) = (Vec::new(), Vec::new());
        for (key, value) in pairs(raw) {
            let n = || cursor::parse(&value).map_err(|_| QueryError::NotANumber(key.clone()));
            if matches!(key.as_str(), "limit" | "before") {
                if seen.contains(&key) {
                    return Err(QueryError::Repeated(key));
                }
                seen.push(key.clone());
            }
            match key.as_str() {
                ACCESS_TOKEN => continue,
                "limit" => match n()? {
                    0 => return Err(QueryError::ZeroLimit),
                    n => q.limit = n.min(MAX_HISTORY),
                },
                "before" => {
                    q.before = n()?;
                    continue;
                }
                // Every other parameter is a row filter, as on streams: "history, then stream" filters both halves alike.
                _ => filters.push((key.clone(), value.clone())),
            }
            q.rest.push((key, value));
        }
        q.filter = filter(&filters, &["limit", "before", ACCESS_TOKEN])?.unwrap_or_default();
        Ok(q)
    }

    /// The query of the page that starts at `before`: this one's own parameters, encoded again (so nothing
    /// but URL-safe ASCII reaches the header), without the token however it was spelled.
    pub fn next(&self, before: i64) -> String {
        let mut next = form_urlencoded::Serializer::new(String::new());
        for (key, value) in &self.rest {
            next.append_pair(key, value);
        }
        next.append_pair("before", &before.to_string()).finish()
    }
}

/// `POST /{channel}`: the event name of a channel without a table.
#[derive(Debug, Default)]
pub struct PostQuery {
    pub event: Option<String>,
}

impl PostQuery {
    pub fn parse(raw: Option<&str>) -> Result<Self, QueryError> {
        let (mut q, mut seen) = (PostQuery::default(), Vec::new());
        for (key, value) in pairs(raw) {
            if !matches!(key.as_str(), "event" | ACCESS_TOKEN) {
                return Err(QueryError::Unknown(crate::parse::clip(&key)));
            }
            if seen.contains(&key) {
                return Err(QueryError::Repeated(key));
            }
            if key == "event" {
                q.event = Some(value);
            }
            seen.push(key);
        }
        Ok(q)
    }
}

fn pairs(raw: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes()).into_owned()
}

/// The row filter of the other parameters; one a letter off a name in `known` is refused instead.
fn filter(filters: &[(String, String)], known: &[&'static str]) -> Result<Option<Filter>, QueryError> {
    if let Some((key, meant)) = filters.iter().find_map(|(k, v)| crate::filter::meant(k, v, known).map(|m| (k, m))) {
        return Err(QueryError::Meant { key: key.clone(), meant });
    }
    let filter = Filter::parse(filters.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    Ok((!filter.is_empty()).then_some(filter))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_keeps_the_filters_and_drops_the_token_however_spelled() {
        let query =
            HistoryQuery::parse(Some("limit=2&access%5Ftoken=secret&%62efore=9&name=eq.J%C3%BCrgen&x=in.(a,b)"));
        assert_eq!(query.unwrap().next(5), "limit=2&name=eq.J%C3%BCrgen&x=in.%28a%2Cb%29&before=5");
    }

    #[test]
    fn a_write_takes_only_its_event_and_the_token() {
        assert_eq!(PostQuery::parse(Some("event=note&access_token=t")).unwrap().event.as_deref(), Some("note"));
        assert_eq!(PostQuery::parse(Some("evnt=x")).unwrap_err().to_string(), "unknown query parameter \"evnt\"");
        assert_eq!(PostQuery::parse(Some("event=a&event=b")).unwrap_err().to_string(), "event given more than once");
    }
}
