//! CORS for browsers on other origins: exact origins get credentials, `*` gets none, and an origin that is
//! not allowed gets no CORS headers at all (the browser then blocks the response itself).

use http::header::{
    HeaderMap, HeaderValue, ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS,
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ORIGIN, VARY,
};

pub const ALLOWED_METHODS: &str = "GET, POST, DELETE, OPTIONS";
pub const ALLOWED_HEADERS: &str = "Content-Type, Last-Event-ID, Authorization, Idempotency-Key, X-Request-Id";
/// Headers of our responses that scripts on another origin may read.
pub const EXPOSED_HEADERS: &str =
    "Pgsse-Event-Id, Retry-After, X-Request-Id, Link, Mercure-Last-Event-ID, Last-Event-ID";
const PREFLIGHT_MAX_AGE: &str = "600";

pub struct Cors {
    any: bool,
    origins: Vec<String>,
}

impl Cors {
    pub fn new(origins: &[String]) -> Self {
        Self { any: origins.iter().any(|o| o == "*"), origins: origins.iter().filter(|o| *o != "*").cloned().collect() }
    }

    /// Adds the CORS headers a response to `request` should carry. `preflight` adds the answers to an
    /// `OPTIONS` request's questions.
    pub fn apply(&self, request: &HeaderMap, response: &mut HeaderMap, preflight: bool) {
        if !self.origins.is_empty() {
            // The answer depends on the Origin header, so shared caches must key on it.
            response.append(VARY, HeaderValue::from_static("Origin"));
        }
        let Some(origin) = request.get(ORIGIN) else { return };
        if let Some(exact) = self.origins.iter().find(|o| o.as_bytes() == origin.as_bytes()) {
            if let Ok(value) = HeaderValue::from_str(exact) {
                response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, value);
                response.insert(ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
            }
        } else if self.any {
            response.insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else {
            return;
        }
        if preflight {
            response.insert(ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static(ALLOWED_METHODS));
            response.insert(ACCESS_CONTROL_ALLOW_HEADERS, HeaderValue::from_static(ALLOWED_HEADERS));
            response.insert(ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static(PREFLIGHT_MAX_AGE));
        } else {
            response.insert(ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static(EXPOSED_HEADERS));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(cors: &Cors, origin: Option<&'static str>, preflight: bool) -> HeaderMap {
        let mut req = HeaderMap::new();
        if let Some(origin) = origin {
            req.insert(ORIGIN, HeaderValue::from_static(origin));
        }
        let mut resp = HeaderMap::new();
        cors.apply(&req, &mut resp, preflight);
        resp
    }

    #[test]
    fn exact_origin_gets_itself_and_credentials() {
        let cors = Cors::new(&["http://localhost:3000".into()]);
        let h = answer(&cors, Some("http://localhost:3000"), true);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "http://localhost:3000");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(h[ACCESS_CONTROL_ALLOW_HEADERS], ALLOWED_HEADERS);
        assert_eq!(h[VARY], "Origin");
    }

    #[test]
    fn other_origins_get_nothing_but_vary() {
        let cors = Cors::new(&["http://localhost:3000".into()]);
        for origin in [Some("http://evil.test"), Some("http://localhost:3000.evil.test"), None] {
            let h = answer(&cors, origin, true);
            assert_eq!(h.len(), 1, "{origin:?}: {h:?}");
            assert_eq!(h[VARY], "Origin");
        }
        assert!(answer(&Cors::new(&[]), Some("http://a.test"), false).is_empty());
    }

    #[test]
    fn wildcard_never_comes_with_credentials() {
        let cors = Cors::new(&["*".into(), "https://app.test".into()]);
        let h = answer(&cors, Some("http://any.test"), false);
        assert_eq!(h[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        assert!(h.get(ACCESS_CONTROL_ALLOW_CREDENTIALS).is_none());
        assert_eq!(h[ACCESS_CONTROL_EXPOSE_HEADERS], EXPOSED_HEADERS);
        assert_eq!(answer(&cors, Some("https://app.test"), false)[ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
    }
}
