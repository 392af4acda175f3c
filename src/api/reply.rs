//! What every handler answers with: a whole JSON (or static) body, or an SSE stream; JSON with
//! `Cache-Control: no-store`, so no proxy keeps an answer about live data.

use std::convert::Infallible;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::{Frame, SizeHint};

use crate::api::stream::SseBody;
use crate::limits::StreamSlot;

pub type Body = Either<Reply, SseBody>;

/// A whole response body. One that took a place under the per-client limit (a history page) keeps it
/// until hyper has written the body or dropped it with its connection.
pub struct Reply {
    data: Full<Bytes>,
    _slot: Option<StreamSlot>,
}

impl Reply {
    pub fn new(data: Bytes) -> Self {
        Self { data: Full::new(data), _slot: None }
    }

    pub fn holding(self, slot: StreamSlot) -> Self {
        Self { _slot: Some(slot), ..self }
    }
}

impl hyper::body::Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        std::pin::Pin::new(&mut self.data).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.data.size_hint()
    }
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    raw_json_response(status, Bytes::from(value.to_string()))
}

/// A response whose body is already JSON text (rows as PostgreSQL rendered them).
pub fn raw_json_response(status: StatusCode, json: Bytes) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Reply::new(json)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Whether the request's `Content-Type` is `essence` (any parameters, such as a charset, aside).
pub fn content_type_is(headers: &http::HeaderMap, essence: &str) -> bool {
    let given = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(';').next());
    given.is_some_and(|e| e.trim().eq_ignore_ascii_case(essence))
}
