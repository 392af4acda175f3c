//! Mercure updates as the hub routes them: an event of the log seen as an update (its topics, whether it
//! is private, its frame), and what one Mercure subscriber wants of them.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::fanout::moves::UpdateRows;
use crate::fanout::queue::Frame;
use crate::filter::Filter;
use crate::sse;
use crate::topic::Selector;

/// The channel that holds the updates published to the Mercure hub. No native name may start with `.`,
/// so no stream, `pgsse.publish` or table can reach it but through the hub.
pub const CHANNEL: &str = ".mercure";

/// The id the hub gives an update its publisher named none (and every table row's): `#` and the log id.
/// Mercure keeps ids of this form for hubs, so it is never a publisher's.
pub fn hub_id(id: i64) -> String {
    format!("#{id}")
}

/// The log id in a hub id, if `id` is one.
pub fn parse_hub_id(id: &str) -> Option<i64> {
    let digits = id.strip_prefix('#')?;
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

pub struct Update {
    pub topics: Vec<String>,
    pub private: bool,
    /// For a table's row: its channel and the row (the new one of an update), for grants' row filters.
    pub row: Option<Box<(String, String)>>,
    /// The update as its subscribers get it, whatever their selectors; its id is the log's.
    pub frame: Frame,
    /// For an update of a table's row: the row as it was, and what a subscriber gets that sees it only
    /// as it was (a delete) or only as it is (an insert).
    pub moved: Option<Box<Moved>>,
}

pub struct Moved {
    pub topics: Vec<String>,
    pub old: String,
    pub insert: Frame,
    pub delete: Frame,
}

/// An update published to the hub, as `pgsse.mercure_publish` stored it in the log.
#[derive(Deserialize)]
struct Published {
    topics: Vec<String>,
    #[serde(default)]
    data: String,
    #[serde(default)]
    private: bool,
    id: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    retry: Option<u64>,
}

/// How a table channel's row events are Mercure updates: its topic template and whether they are public.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableTopic {
    pub template: String,
    pub public: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("not an update as pgsse.mercure_publish stores one: {0}")]
    Malformed(String),
    #[error("the row's topic cannot be made: {0}")]
    Topic(#[from] crate::topic::TemplateError),
    #[error(transparent)]
    Encode(#[from] sse::EncodeError),
}

impl Update {
    /// Event `id` of the log as an update: one the hub published (`payload` as stored), or a row event of
    /// a table whose channel has a topic (`payload` the row's JSON, which the topic's variables name;
    /// `moved` an update's old row, and its new one where the payload nests both).
    pub fn from_log(
        id: i64,
        channel: &str,
        event: &str,
        payload: &str,
        moved: Option<&UpdateRows>,
        table: Option<&TableTopic>,
    ) -> Result<Option<Self>, UpdateError> {
        if channel == CHANNEL {
            let p: Published = serde_json::from_str(payload).map_err(|e| UpdateError::Malformed(e.to_string()))?;
            let shown = p.id.unwrap_or_else(|| hub_id(id));
            let bytes = sse::encode_update(&shown, p.kind.as_deref(), p.retry, &p.data)?;
            let frame = Frame { id, bytes };
            return Ok(Some(Self { topics: p.topics, private: p.private, row: None, frame, moved: None }));
        }
        let Some(table) = table else { return Ok(None) };
        let new = moved.and_then(|m| m.new.as_deref()).unwrap_or(payload);
        let topic = row_topic(&table.template, new)?;
        let frame = Frame { id, bytes: sse::encode_update(&hub_id(id), Some(event), None, payload)? };
        let moved = match moved {
            None => None,
            Some(rows) => Some(Box::new(Moved {
                topics: vec![row_topic(&table.template, &rows.old)?],
                old: rows.old.clone(),
                insert: Frame { id, bytes: sse::encode_update(&hub_id(id), Some(&rows.insert_event), None, new)? },
                delete: Frame {
                    id,
                    bytes: sse::encode_update(&hub_id(id), Some(&rows.delete_event), None, &rows.old)?,
                },
            })),
        };
        let row = Some(Box::new((channel.to_string(), new.to_string())));
        Ok(Some(Self { topics: vec![topic], private: !table.public, row, frame, moved }))
    }
}

impl Update {
    /// An update known only by where it goes (a resume's candidate): enough for [`Interest::wants`].
    pub fn routed(id: i64, topics: Vec<String>, private: bool) -> Self {
        Self { topics, private, row: None, frame: Frame { id, bytes: Default::default() }, moved: None }
    }
}

/// The topic `template` names for `row` (a row's JSON object).
fn row_topic(template: &str, row: &str) -> Result<String, UpdateError> {
    let values: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(row).map_err(|e| UpdateError::Malformed(e.to_string()))?;
    // A writer chooses the values: `.` and `..` would move the topic elsewhere once read as a URL.
    let dots = std::cell::Cell::new(false);
    let value = |name: &str| match values.get(name)? {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => {
            dots.set(dots.get() || s == "." || s == "..");
            Some(s.clone())
        }
        other => Some(other.to_string()),
    };
    let topic = crate::topic::expand(template, value)?;
    if dots.get() {
        return Err(UpdateError::Malformed("a value its topic names is . or ..".into()));
    }
    if topic.len() > crate::topic::MAX_LEN {
        return Err(UpdateError::Malformed(format!("its topic is longer than {} bytes", crate::topic::MAX_LEN)));
    }
    Ok(topic)
}

/// What one Mercure subscriber gets: updates with a topic its selectors match, and of the private ones
/// only those with a topic its token grants; and of a table's rows, where its token also carries pgsse's
/// own grant, only rows its filter for that channel matches. An update of a row is judged as it was and
/// as it is, as a native filtered stream judges it: a row that came into view arrives as an insert, one
/// that left it as a delete of the row as it was.
pub struct Interest {
    pub selectors: Vec<Selector>,
    pub grants: Vec<Selector>,
    /// Each table channel's filter (`None`: unfiltered), where the token carries a pgsse grant; a
    /// channel missing here (outside the grant, or published after the stream began) gets no row.
    pub filters: Option<HashMap<String, Option<Arc<Filter>>>>,
}

impl Interest {
    /// The frame of `update` this subscriber gets, if any.
    pub fn choose<'a>(&self, update: &'a Update) -> Option<&'a Frame> {
        let channel = update.row.as_deref().map(|(channel, _)| channel.as_str());
        let new =
            self.sees(&update.topics, update.private, channel, update.row.as_deref().map(|(_, row)| row.as_str()));
        let Some(moved) = &update.moved else { return new.then_some(&update.frame) };
        match (self.sees(&moved.topics, update.private, channel, Some(&moved.old)), new) {
            (true, true) => Some(&update.frame),
            (false, true) => Some(&moved.insert),
            (true, false) => Some(&moved.delete),
            (false, false) => None,
        }
    }

    pub fn wants(&self, update: &Update) -> bool {
        self.choose(update).is_some()
    }

    fn sees(&self, topics: &[String], private: bool, channel: Option<&str>, row: Option<&str>) -> bool {
        let selected = Selector::any(&self.selectors, topics) && (!private || Selector::any(&self.grants, topics));
        match (&self.filters, channel, row) {
            (Some(filters), Some(channel), Some(row)) if selected => match filters.get(channel) {
                Some(Some(filter)) => filter.matches_text(row.as_bytes()),
                Some(None) => true,
                None => false,
            },
            _ => selected,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(update: &Update) -> String {
        String::from_utf8(update.frame.bytes.to_vec()).unwrap()
    }

    #[test]
    fn hub_ids_round_trip_and_reject_lookalikes() {
        assert_eq!(parse_hub_id(&hub_id(42)), Some(42));
        for not in ["42", "#", "#-1", "#4x", "# 4", "#99999999999999999999", "urn:uuid:1"] {
            assert_eq!(parse_hub_id(not), None, "{not}");
        }
    }

    #[test]
    fn a_published_update_keeps_its_publisher_id_or_gets_the_hubs() {
        let stored = r#"{"topics":["https://a/1","https://b"],"data":"x\ny","private":true,"id":"urn:p:1"}"#;
        let u = Update::from_log(7, CHANNEL, "mercure", stored, None, None).unwrap().unwrap();
        assert_eq!((u.topics.len(), u.private), (2, true));
        assert_eq!(text(&u), "id: urn:p:1\ndata: x\ndata: y\n\n");
        let stored = r#"{"topics":["t"],"type":"book","retry":100}"#;
        let u = Update::from_log(7, CHANNEL, "mercure", stored, None, None).unwrap().unwrap();
        assert_eq!(text(&u), "event: book\nretry: 100\nid: #7\ndata: \n\n");
        assert!(Update::from_log(7, CHANNEL, "mercure", r#"{"data":"no topics"}"#, None, None).is_err());
        assert!(Update::from_log(7, CHANNEL, "mercure", r#"{"topics":["t"],"id":"a\nb"}"#, None, None).is_err());
    }

    #[test]
    fn a_row_event_is_an_update_on_its_tables_topic() {
        let table = TableTopic { template: "https://shop.example/orders/{id}".into(), public: false };
        let row = r#"{"id":42,"status":"new"}"#;
        let u = Update::from_log(9, "orders", "insert", row, None, Some(&table)).unwrap().unwrap();
        assert_eq!(u.topics, ["https://shop.example/orders/42"]);
        assert!(u.private);
        assert_eq!(text(&u), format!("event: insert\nid: #9\ndata: {row}\n\n"));
        let nested = r#"{"new":{"id":43},"old":{"id":42}}"#;
        let moved = UpdateRows {
            old: r#"{"id":42}"#.into(),
            new: Some(r#"{"id":43}"#.into()),
            insert_event: "insert".into(),
            delete_event: "delete".into(),
        };
        let u = Update::from_log(10, "orders", "update", nested, Some(&moved), Some(&table)).unwrap().unwrap();
        assert_eq!(u.topics, ["https://shop.example/orders/43"], "an update's topic is its new row's");
        let exact = |t: &str| Selector::exact(t, true).unwrap();
        let sees = |topic: &str| Interest { selectors: vec![exact("*")], grants: vec![exact(topic)], filters: None };
        let frame = |f: Option<&Frame>| f.map(|f| String::from_utf8(f.bytes.to_vec()).unwrap());
        let both = Interest { selectors: vec![exact("*")], grants: vec![exact("*")], filters: None };
        assert_eq!(frame(both.choose(&u)), Some(format!("event: update\nid: #10\ndata: {nested}\n\n")));
        let new = sees("https://shop.example/orders/43");
        assert_eq!(
            frame(new.choose(&u)),
            Some("event: insert\nid: #10\ndata: {\"id\":43}\n\n".into()),
            "came into view"
        );
        let old = sees("https://shop.example/orders/42");
        assert_eq!(
            frame(old.choose(&u)),
            Some("event: delete\nid: #10\ndata: {\"id\":42}\n\n".into()),
            "left its view"
        );
        assert_eq!(frame(sees("https://shop.example/orders/44").choose(&u)), None);
        assert!(Update::from_log(9, "orders", "insert", row, None, None).unwrap().is_none());
        let dots = r#"{"id":"..","status":".."}"#;
        assert!(
            Update::from_log(11, "orders", "insert", dots, None, Some(&table)).is_err(),
            "no topic out of its place"
        );
        let unnamed = r#"{"id":1,"status":".."}"#;
        assert!(Update::from_log(12, "orders", "insert", unnamed, None, Some(&table)).is_ok());
    }

    #[test]
    fn private_updates_need_a_grant_on_one_of_their_topics() {
        let update = |private| Update {
            topics: vec!["a".into(), "b".into()],
            private,
            row: None,
            frame: Frame { id: 1, bytes: Default::default() },
            moved: None,
        };
        let exact = |t: &str| Selector::exact(t, true).unwrap();
        let anonymous = Interest { selectors: vec![exact("b")], grants: vec![], filters: None };
        assert!(anonymous.wants(&update(false)) && !anonymous.wants(&update(true)));
        let granted = Interest { selectors: vec![exact("a")], grants: vec![exact("b")], filters: None };
        assert!(granted.wants(&update(true)), "selected by one topic, granted by the other");
        let elsewhere = Interest { selectors: vec![exact("c")], grants: vec![exact("*")], filters: None };
        assert!(!elsewhere.wants(&update(false)) && !elsewhere.wants(&update(true)));
    }

    #[test]
    fn a_pgsse_grant_filters_a_tables_rows() {
        let table = TableTopic { template: "o/{id}".into(), public: true };
        let row = |id: i64, user: i64| {
            let json = format!(r#"{{"id":{id},"user_id":{user}}}"#);
            Update::from_log(id, "orders", "insert", &json, None, Some(&table)).unwrap().unwrap()
        };
        let mine = Arc::new(Filter::parse([("user_id", "eq.7")]).unwrap());
        let all = || vec![Selector::exact("*", true).unwrap()];
        let filters = Some(HashMap::from([("orders".to_string(), Some(mine))]));
        let filtered = Interest { selectors: all(), grants: vec![], filters };
        assert!(filtered.wants(&row(1, 7)) && !filtered.wants(&row(2, 8)));
        let unknown = Interest { selectors: all(), grants: vec![], filters: Some(HashMap::new()) };
        assert!(!unknown.wants(&row(1, 7)), "a channel the grant was not read for lets nothing through");
        let hub = Update::from_log(3, CHANNEL, "mercure", r#"{"topics":["t"]}"#, None, None).unwrap().unwrap();
        assert!(unknown.wants(&hub), "updates published to the hub are not rows");
    }
}
