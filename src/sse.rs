//! The SSE wire format: one event encoded into a shareable `Bytes` frame, data split on every line break
//! and line breaks refused in the event name, so payload text can never forge a field.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EncodeError {
    #[error("event name must not contain CR or LF")]
    EventNameLineBreak,
    #[error("event id must not contain CR, LF or NUL")]
    IdLineBreak,
}

/// Encodes one event. `data` may hold line breaks of any style: each line becomes its own `data:` field,
/// which is what makes payload text unable to forge fields or end the event early.
pub fn encode(id: i64, event: &str, data: &str) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::with_capacity(data.len() + event.len() + 40);
    encode_into(&mut buf, Some(id), event, data)?;
    Ok(buf.freeze())
}

/// Appends one event to `buf`; without `id`, the client's last event id stays what it was.
pub(crate) fn encode_into(buf: &mut BytesMut, id: Option<i64>, event: &str, data: &str) -> Result<(), EncodeError> {
    if event.contains(['\r', '\n']) {
        return Err(EncodeError::EventNameLineBreak);
    }
    if let Some(id) = id {
        buf.put_slice(b"id: ");
        buf.put_slice(id.to_string().as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_slice(b"event: ");
    buf.put_slice(event.as_bytes());
    buf.put_u8(b'\n');
    put_data(buf, data);
    Ok(())
}

/// Appends `data` as one `data:` field per line, and the blank line that ends the event.
fn put_data(buf: &mut BytesMut, data: &str) {
    for line in split_lines(data) {
        buf.put_slice(b"data: ");
        buf.put_slice(line.as_bytes());
        buf.put_u8(b'\n');
    }
    buf.put_u8(b'\n');
}

/// Encodes a Mercure update as its hub sends it: `event:` only for a type, `retry:` only when not 0, the
/// id as given (a publisher's or the hub's own), then the data split into lines like every event's.
pub fn encode_update(id: &str, event: Option<&str>, retry: Option<u64>, data: &str) -> Result<Bytes, EncodeError> {
    if id.contains(['\r', '\n', '\0']) {
        return Err(EncodeError::IdLineBreak);
    }
    let mut buf = BytesMut::with_capacity(data.len() + id.len() + 64);
    if let Some(event) = event.filter(|e| !e.is_empty()) {
        if event.contains(['\r', '\n']) {
            return Err(EncodeError::EventNameLineBreak);
        }
        buf.put_slice(b"event: ");
        buf.put_slice(event.as_bytes());
        buf.put_u8(b'\n');
    }
    if let Some(retry) = retry.filter(|r| *r > 0) {
        buf.put_slice(format!("retry: {retry}\n").as_bytes());
    }
    buf.put_slice(b"id: ");
    buf.put_slice(id.as_bytes());
    buf.put_u8(b'\n');
    put_data(&mut buf, data);
    Ok(buf.freeze())
}

/// The event name a stream of several channels shows: `orders/insert`. Neither a channel nor an event name
/// may hold `/`, so the name splits back at it unambiguously.
pub fn channel_event(channel: &str, event: &str) -> String {
    format!("{channel}/{event}")
}

/// `frame` (one event as [`encode`] made it) with its channel put in front of its event name.
pub(crate) fn with_channel(frame: &[u8], channel: &str) -> Bytes {
    let mut buf = BytesMut::with_capacity(frame.len() + channel.len() + 1);
    put_with_channel(&mut buf, frame, channel);
    buf.freeze()
}

/// Appends [`with_channel`] of `frame` to `buf`.
pub(crate) fn put_with_channel(buf: &mut BytesMut, frame: &[u8], channel: &str) {
    let at = if frame.starts_with(b"event: ") {
        7
    } else {
        frame.windows(8).position(|w| w == b"\nevent: ").map_or(frame.len(), |i| i + 8)
    };
    buf.put_slice(&frame[..at]);
    buf.put_slice(channel.as_bytes());
    buf.put_u8(b'/');
    buf.put_slice(&frame[at..]);
}

/// Splits on CRLF, CR and LF alike, as an SSE parser does; an empty input is one empty line.
fn split_lines(data: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let s = rest?;
        match s.find(['\r', '\n']) {
            None => {
                rest = None;
                Some(s)
            }
            Some(i) => {
                let skip = if s[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = Some(&s[i + skip..]);
                Some(&s[..i])
            }
        }
    })
}

/// The first bytes of every stream: the reconnect delay and a comment, so headers and a body chunk
/// reach the client at once (some proxies and clients wait for the first chunk).
pub(crate) fn prelude(retry: Duration) -> Bytes {
    Bytes::from(format!("retry: {}\n: pgsse\n\n", retry.as_millis()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(id: i64, event: &str, data: &str) -> String {
        String::from_utf8(encode(id, event, data).unwrap().to_vec()).unwrap()
    }

    #[test]
    fn encodes_single_line() {
        assert_eq!(enc(7, "insert", r#"{"a":1}"#), "id: 7\nevent: insert\ndata: {\"a\":1}\n\n");
    }

    #[test]
    fn splits_every_line_break_style() {
        assert_eq!(enc(1, "m", "a\nb\r\nc\rd"), "id: 1\nevent: m\ndata: a\ndata: b\ndata: c\ndata: d\n\n");
    }

    #[test]
    fn keeps_empty_lines_and_trailing_break() {
        assert_eq!(enc(1, "m", ""), "id: 1\nevent: m\ndata: \n\n");
        assert_eq!(enc(1, "m", "a\n"), "id: 1\nevent: m\ndata: a\ndata: \n\n");
        assert_eq!(enc(1, "m", "\n\n"), "id: 1\nevent: m\ndata: \ndata: \ndata: \n\n");
    }

    #[test]
    fn payload_cannot_forge_fields() {
        let out = enc(3, "m", "x\n\nevent: evil\nid: 99\ndata: y");
        assert_eq!(out, "id: 3\nevent: m\ndata: x\ndata: \ndata: event: evil\ndata: id: 99\ndata: data: y\n\n");
        assert_eq!(out.matches("\n\n").count(), 1, "exactly one event terminator");
    }

    #[test]
    fn encodes_without_id() {
        let mut buf = BytesMut::from(&b"x"[..]);
        encode_into(&mut buf, None, "insert", "a\nb").unwrap();
        assert_eq!(&buf[..], b"xevent: insert\ndata: a\ndata: b\n\n");
        assert_eq!(encode_into(&mut buf, None, "a\nb", "x"), Err(EncodeError::EventNameLineBreak));
    }

    #[test]
    fn encodes_mercure_updates() {
        let text = |b: Bytes| String::from_utf8(b.to_vec()).unwrap();
        let plain = encode_update("urn:x", None, None, "a\n\nb").unwrap();
        assert_eq!(text(plain), "id: urn:x\ndata: a\ndata: \ndata: b\n\n", "no event line: browsers see a message");
        let full = encode_update("#7", Some("book"), Some(500), "").unwrap();
        assert_eq!(text(full), "event: book\nretry: 500\nid: #7\ndata: \n\n");
        assert_eq!(text(encode_update("i", Some(""), Some(0), "x").unwrap()), "id: i\ndata: x\n\n");
        assert_eq!(encode_update("a\nid: b", None, None, "x"), Err(EncodeError::IdLineBreak));
        assert_eq!(encode_update("a", Some("t\r"), None, "x"), Err(EncodeError::EventNameLineBreak));
    }

    #[test]
    fn rejects_line_breaks_in_event_name() {
        assert_eq!(encode(1, "a\nb", "x"), Err(EncodeError::EventNameLineBreak));
        assert_eq!(encode(1, "a\rb", "x"), Err(EncodeError::EventNameLineBreak));
    }

    #[test]
    fn names_the_channel_in_the_event_name() {
        let framed = |frame: Bytes| String::from_utf8(with_channel(&frame, "orders.eu").to_vec()).unwrap();
        assert_eq!(
            framed(encode(7, "insert", "event: x").unwrap()),
            "id: 7\nevent: orders.eu/insert\ndata: event: x\n\n"
        );
        let mut buf = BytesMut::new();
        encode_into(&mut buf, None, "clear", "{}").unwrap();
        assert_eq!(framed(buf.freeze()), "event: orders.eu/clear\ndata: {}\n\n");
        assert_eq!(channel_event("a:1", "insert"), "a:1/insert");
    }

    #[test]
    fn prelude_sets_retry() {
        assert_eq!(&prelude(Duration::from_millis(2500))[..], b"retry: 2500\n: pgsse\n\n");
    }
}
