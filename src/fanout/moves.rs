//! What a filtered stream (or filtered history) shows of an update: the update itself, or the insert or
//! delete it is for a stream whose filter the row entered or left, or nothing.

use std::sync::OnceLock;

use bytes::Bytes;

use crate::fanout::queue::Frame;
use crate::filter::Filter;
use crate::sse;

/// An update's old row (projected, JSON text), its new row where the data nests it (`old_values`:
/// `{"new", "old"}`), and its channel's insert and delete event names.
#[derive(Debug, Clone, PartialEq)]
pub struct UpdateRows {
    pub old: String,
    pub new: Option<String>,
    pub insert_event: String,
    pub delete_event: String,
}

impl UpdateRows {
    /// The event name and data shown for `shown` of the update `update_event` with `data`, as history
    /// lists it.
    pub fn shown_as<'a>(&'a self, shown: Shown, update_event: &'a str, data: &'a str) -> Option<(&'a str, &'a str)> {
        match shown {
            Shown::Update => Some((update_event, data)),
            Shown::Insert => Some((&self.insert_event, self.new_row(data))),
            Shown::Delete => Some((&self.delete_event, &self.old)),
            Shown::Hidden => None,
        }
    }

    /// The new row: nested in the update's `data`, or that data itself.
    fn new_row<'a>(&'a self, data: &'a str) -> &'a str {
        self.new.as_deref().unwrap_or(data)
    }
}

/// How a stream with a given filter sees an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// The row matches before and after: the update as it is (with its old row, where it carries one).
    Update,
    /// The row entered the filter: the channel's insert event with the new row only.
    Insert,
    /// The row left the filter: the channel's delete event with the old row.
    Delete,
    Hidden,
}

/// An update as filtered streams may need it: its rows parsed once, and the update re-encoded as its
/// channel's insert (new row) or delete (old row) event, each encoded only once a stream needs it.
pub struct UpdateFrames {
    id: i64,
    /// The update's data (JSON text): the new row, or `{"new", "old"}`.
    data: Bytes,
    moved: UpdateRows,
    old_value: OnceLock<Option<serde_json::Value>>,
    new_value: OnceLock<Option<serde_json::Value>>,
    insert: OnceLock<Option<Frame>>,
    delete: OnceLock<Option<Frame>>,
}

impl UpdateFrames {
    pub fn new(id: i64, data: Bytes, moved: UpdateRows) -> Self {
        let (old_value, new_value) = (OnceLock::new(), OnceLock::new());
        Self { id, data, moved, old_value, new_value, insert: OnceLock::new(), delete: OnceLock::new() }
    }

    /// What a stream with `filter` gets, given whether the update's data matches it. Filters test rows:
    /// the new row (nested or not) and the old one.
    pub fn shown(&self, data_matches: bool, filter: &Filter) -> Shown {
        if filter.is_empty() {
            return Shown::Update;
        }
        let new = match &self.moved.new {
            Some(text) => parsed(&self.new_value, text).is_some_and(|v| filter.matches(v)),
            None => data_matches,
        };
        let old = parsed(&self.old_value, &self.moved.old).is_some_and(|v| filter.matches(v));
        match (old, new) {
            (true, true) => Shown::Update,
            (false, true) => Shown::Insert,
            (true, false) => Shown::Delete,
            (false, false) => Shown::Hidden,
        }
    }

    /// The frame a stream with `filter` gets for this update (see [`UpdateFrames::shown`]). An event name that
    /// cannot be encoded keeps the update as it was, except that the old row never reaches a stream
    /// whose filter it did not match.
    pub fn choose<'a>(&'a self, update: &'a Frame, data_matches: bool, filter: &Filter) -> Option<(Shown, &'a Frame)> {
        let shown = self.shown(data_matches, filter);
        let frame = match shown {
            Shown::Update => Some(update),
            Shown::Insert => self.frame(&self.insert, &self.moved.insert_event, self.new_row()).or(self
                .moved
                .new
                .is_none()
                .then_some(update)),
            Shown::Delete => self.frame(&self.delete, &self.moved.delete_event, &self.moved.old),
            Shown::Hidden => None,
        };
        Some((shown, frame?))
    }

    fn new_row(&self) -> &str {
        self.moved.new_row(std::str::from_utf8(&self.data).unwrap_or_default())
    }

    fn frame<'a>(&self, cell: &'a OnceLock<Option<Frame>>, event: &str, data: &str) -> Option<&'a Frame> {
        let frame =
            cell.get_or_init(|| sse::encode(self.id, event, data).ok().map(|bytes| Frame { id: self.id, bytes }));
        frame.as_ref()
    }
}

fn parsed<'a>(cell: &'a OnceLock<Option<serde_json::Value>>, text: &str) -> Option<&'a serde_json::Value> {
    cell.get_or_init(|| serde_json::from_str(text).ok()).as_ref()
}
