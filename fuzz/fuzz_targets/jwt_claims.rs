//! JWT claim mapping: any token, from any header, is accepted or refused without a panic; any grant JSON
//! either maps to channel checks and filters or is refused.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::fuzz_target;
use pgsse::auth::{Access, Grant, Jwt, DEFAULT_COOKIE};

fuzz_target!(|input: &[u8]| {
    let jwt = Jwt::hs256(b"fuzzing secret", DEFAULT_COOKIE);
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(input) {
        headers.insert(http::header::AUTHORIZATION, value.clone());
        headers.insert(http::header::COOKIE, value);
    }
    let _ = jwt.check(&headers, std::str::from_utf8(input).ok());
    if let Ok(grant) = serde_json::from_slice::<Grant>(input) {
        let access = Access::Granted { grant, expires: None, subject: None };
        for channel in ["orders", "orders.eu", "a", ""] {
            let _ = access.may_subscribe(channel);
            let _ = access.may_publish(channel);
            let _ = access.filter_for(channel, None);
        }
    }
});
