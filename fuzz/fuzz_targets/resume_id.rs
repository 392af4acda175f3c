//! Resume ids from the Last-Event-ID header (raw bytes) and the query: parsed or refused, never a panic,
//! and an accepted id is always a non-negative integer that prints back to the same digits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgsse::cursor;

fuzz_target!(|input: &[u8]| {
    if let Ok(Some(id)) = cursor::resolve(Some(input), None) {
        assert!(id >= 0);
        let text = std::str::from_utf8(input).unwrap().trim_matches([' ', '\t']);
        assert_eq!(text.trim_start_matches('0').parse::<i64>().unwrap_or(0), id);
    }
    if let Ok(text) = std::str::from_utf8(input) {
        let _ = cursor::resolve(None, Some(text));
    }
});
