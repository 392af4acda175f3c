//! The row filter parser and evaluator: any query string, tested against any JSON document.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgsse::filter::Filter;

fuzz_target!(|input: &[u8]| {
    let (query, document) = match input.iter().position(|b| *b == 0) {
        Some(i) => (&input[..i], &input[i + 1..]),
        None => (input, &b"{}"[..]),
    };
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query).into_owned().collect();
    if let Ok(filter) = Filter::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))) {
        let _ = filter.matches_text(document);
    }
});
