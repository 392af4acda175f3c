//! Resume points: the `Last-Event-ID` header (what a browser sends on reconnect) or `?last_event_id=`
//! (a page's first connect). The header wins, because it is newer than the URL the page was opened with.

use crate::refusal::{Refusal, Refuse};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CursorError {
    #[error("invalid resume id {0:?}: expected a non-negative integer event id")]
    Invalid(String),
}

/// Longest accepted id text; ids are positive `bigint`s, so 19 digits always suffice.
const MAX_DIGITS: usize = 19;

pub(crate) fn parse(text: &str) -> Result<i64, CursorError> {
    let invalid = || CursorError::Invalid(crate::parse::clip(text));
    let t = text.trim_matches([' ', '\t']);
    if t.is_empty() || t.len() > MAX_DIGITS || !t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    t.parse::<i64>().map_err(|_| invalid())
}

/// Picks the resume point from the raw header bytes and the query value. An empty header counts as
/// absent, as a browser sends none before its first event.
pub fn resolve(header: Option<&[u8]>, query: Option<&str>) -> Result<Option<i64>, CursorError> {
    match header {
        Some(raw) if !raw.is_empty() => {
            let text =
                std::str::from_utf8(raw).map_err(|_| CursorError::Invalid(String::from_utf8_lossy(raw).into()))?;
            parse(text).map(Some)
        }
        _ => query.map(parse).transpose(),
    }
}

impl Refuse for CursorError {
    fn refusal(&self) -> Refusal {
        match self {
            CursorError::Invalid(_) => Refusal::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_ids() {
        assert_eq!(parse("0"), Ok(0));
        assert_eq!(parse(" 42 "), Ok(42));
        assert_eq!(parse("9223372036854775807"), Ok(i64::MAX));
    }

    #[test]
    fn rejects_everything_else() {
        for bad in
            ["", "-1", "+1", "1.5", "abc", "1e3", "0x10", "9223372036854775808", "99999999999999999999", "1 2", "١"]
        {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn header_wins_over_query_and_empty_header_is_absent() {
        assert_eq!(resolve(Some(b"7"), Some("3")), Ok(Some(7)));
        assert_eq!(resolve(Some(b""), Some("3")), Ok(Some(3)));
        assert_eq!(resolve(None, None), Ok(None));
        assert!(resolve(Some(b"\xff"), None).is_err());
        assert!(resolve(None, Some("x")).is_err());
    }
}
