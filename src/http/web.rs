//! The demo's two pages from the article (`/` live feed, `/send` form) and the `pgsse.js` client module,
//! compiled into the binary: plain HTML, CSS and JS with no build step and nothing fetched from elsewhere.

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::Response;
use http_body_util::Either;

use crate::api::reply::{Body, Reply};

const FEED: &str = include_str!("web/feed.html");
const SEND: &str = include_str!("web/send.html");
const CSS: &str = include_str!("web/demo.css");
const MODULE: &str = include_str!("web/pgsse.js");
const TYPES: &str = include_str!("web/pgsse.d.ts");

/// `/pgsse.js` and its types, served in every mode: pages of any origin may import them.
pub fn module(path: &str) -> Option<Response<Body>> {
    match path {
        "/pgsse.js" => Some(file(MODULE, "text/javascript; charset=utf-8")),
        "/pgsse.d.ts" => Some(file(TYPES, "application/typescript; charset=utf-8")),
        _ => None,
    }
}

/// The page served at `path`, if the demo has one there.
pub fn page(path: &str) -> Option<Response<Body>> {
    let (body, content_type) = match path {
        "/" => (FEED, "text/html; charset=utf-8"),
        "/send" => (SEND, "text/html; charset=utf-8"),
        "/demo.css" => (CSS, "text/css; charset=utf-8"),
        _ => return None,
    };
    Some(file(body, content_type))
}

fn file(body: &'static str, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Reply::new(Bytes::from_static(body.as_bytes()))));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}
