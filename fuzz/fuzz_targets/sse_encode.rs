//! The SSE encoder: whatever the event name and data, the frame is one event (a single blank-line
//! terminator, at the end) and an EventSource parsing it gets the data back with its line breaks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgsse::sse;

fuzz_target!(|input: (i64, String, String)| {
    let (id, event, data) = input;
    let Ok(frame) = sse::encode(id, &event, &data) else {
        assert!(event.contains(['\r', '\n']));
        return;
    };
    let text = std::str::from_utf8(&frame).unwrap();
    assert!(text.ends_with("\n\n"));
    assert_eq!(text.matches("\n\n").count(), 1, "exactly one event");
    let mut lines = Vec::new();
    for line in text[..text.len() - 2].split('\n') {
        if let Some(value) = line.strip_prefix("data: ") {
            lines.push(value);
        }
    }
    let expected = data.replace("\r\n", "\n").replace('\r', "\n");
    assert_eq!(lines.join("\n"), expected);
});
