//! The access log (`--access-log`): one line per request, written when its response body is done, so a
//! stream's line comes when it ends and says how long it lasted, what it sent and how many events.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::HeaderValue;
use http::{Method, Request, Response};
use http_body_util::Either;
use hyper::body::{Body, Frame, SizeHint};

use crate::api::reply::Body as Routed;

/// The log target: `--access-log` turns it on at `info` whatever `PGSSE_LOG` says of the rest.
pub const TARGET: &str = "pgsse::access";
/// The header a request's id is taken from (when a proxy set one) and answered in.
const REQUEST_ID: &str = "x-request-id";
/// The most of a request's path and query a line holds.
const PATH_BYTES: usize = 512;
/// Query parameters that carry credentials: never logged.
const SECRET_PARAMS: [&str; 2] = ["access_token", "authorization"];

/// One request as the log line will tell it; written when dropped, that is when hyper is done with the body
/// (all of it written, or the client gone).
pub struct Entry {
    method: Method,
    path: String,
    client: IpAddr,
    request_id: String,
    started: Instant,
    status: u16,
    stream: bool,
    bytes: u64,
    events: u64,
    /// What a refused request was told: the operator sees it even when the client hides the body.
    refused: Option<String>,
}

/// What a refusal told its client, carried on the response for the access log.
#[derive(Clone)]
pub struct Refused(pub String);

impl Entry {
    pub fn begin<B>(req: &Request<B>, client: IpAddr) -> Box<Self> {
        let path =
            req.uri().path_and_query().map_or_else(|| req.uri().path().to_string(), |p| without_secrets(p.as_str()));
        let request_id = req
            .headers()
            .get(REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
            .map_or_else(new_request_id, str::to_string);
        Box::new(Self {
            method: req.method().clone(),
            path,
            client,
            request_id,
            started: Instant::now(),
            status: 0,
            stream: false,
            bytes: 0,
            events: 0,
            refused: None,
        })
    }

    /// Notes the response's status and kind, and answers with the request's id.
    fn respond<B>(&mut self, response: &mut Response<B>, stream: bool) {
        self.status = response.status().as_u16();
        self.stream = stream;
        self.refused = response.extensions_mut().remove::<Refused>().map(|r| r.0);
        if let Ok(value) = HeaderValue::from_str(&self.request_id) {
            response.headers_mut().insert(REQUEST_ID, value);
        }
    }

    fn count(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        // A stream's chunks are whole events, each ended by the one blank line it holds; its first bytes
        // (`retry:`) and heartbeats are comments, not events.
        if self.stream && !data.starts_with(b":") && !data.starts_with(b"retry:") {
            self.events += data.windows(2).filter(|w| w == b"\n\n").count() as u64;
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        tracing::info!(
            target: TARGET,
            method = %self.method,
            path = %self.path,
            status = self.status,
            duration_ms = self.started.elapsed().as_micros() as f64 / 1000.0,
            bytes = self.bytes,
            events = self.events,
            stream = self.stream,
            client = %self.client,
            request_id = %self.request_id,
            refused = self.refused.as_deref(),
            "request"
        );
    }
}

/// A response body that counts what it yields into its log entry, when there is one.
pub struct Logged<B> {
    body: B,
    entry: Option<Box<Entry>>,
}

impl<B> Logged<B> {
    pub fn new(body: B, entry: Option<Box<Entry>>) -> Self {
        Self { body, entry }
    }

    pub fn into_parts(self) -> (B, Option<Box<Entry>>) {
        (self.body, self.entry)
    }

    pub fn body(&self) -> &B {
        &self.body
    }

    pub fn body_mut(&mut self) -> &mut B {
        &mut self.body
    }

    /// Counts bytes sent other than through [`Body::poll_frame`].
    pub fn count(&mut self, data: &[u8]) {
        if let Some(entry) = self.entry.as_mut() {
            entry.count(data);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Logged<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(entry)) = (&polled, this.entry.as_mut()) {
            if let Some(data) = frame.data_ref() {
                entry.count(data);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The response with its body counted into `entry` (and the request's id in a header), when logging.
pub fn logged(mut response: Response<Routed>, mut entry: Option<Box<Entry>>) -> Response<Logged<Routed>> {
    if let Some(entry) = entry.as_mut() {
        let stream = matches!(response.body(), Either::Right(_));
        entry.respond(&mut response, stream);
    }
    response.map(|body| Logged::new(body, entry))
}

/// The path and query with every credential parameter left out (by its decoded name, as the router reads
/// it), cut to [`PATH_BYTES`]: a client chooses how long it is.
fn without_secrets(target: &str) -> String {
    let kept = match target.split_once('?') {
        None => target.to_string(),
        Some((path, query)) => {
            let secret = |param: &&str| {
                let name = form_urlencoded::parse(param.as_bytes()).next().map(|(name, _)| name);
                name.is_some_and(|name| SECRET_PARAMS.contains(&name.as_ref()))
            };
            let kept: Vec<&str> = query.split('&').filter(|param| !secret(param)).collect();
            if kept.is_empty() {
                path.to_string()
            } else {
                format!("{path}?{}", kept.join("&"))
            }
        }
    };
    if kept.len() <= PATH_BYTES {
        return kept;
    }
    let mut end = PATH_BYTES;
    while !kept.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &kept[..end])
}

/// Unique within this process and, by its start time, across restarts.
fn new_request_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    static BOOT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let boot = *BOOT.get_or_init(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64));
    format!("{boot:x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_never_reach_the_log() {
        assert_eq!(without_secrets("/orders/events"), "/orders/events");
        assert_eq!(without_secrets("/orders/events?access_token=abc"), "/orders/events");
        assert_eq!(
            without_secrets("/events?channel=a&access_token=abc&status=eq.open&authorization=x"),
            "/events?channel=a&status=eq.open"
        );
        assert_eq!(without_secrets("/o?access_token_x=1"), "/o?access_token_x=1");
        assert_eq!(without_secrets("/o?access%5Ftoken=abc&%61ccess_token=abc&a=1"), "/o?a=1", "names are decoded");
        let long = without_secrets(&format!("/{}", "a".repeat(5000)));
        assert_eq!((long.len(), long.ends_with("...")), (PATH_BYTES + 3, true));
    }

    #[test]
    fn counts_events_not_comments() {
        let req = Request::builder().uri("/c/events").body(()).unwrap();
        let mut entry = Entry::begin(&req, IpAddr::from([127, 0, 0, 1]));
        entry.stream = true;
        entry.count(b"retry: 3000\n: pgsse\n\n");
        entry.count(b"id: 1\nevent: m\ndata: {}\n\nid: 2\nevent: m\ndata: a\ndata: \n\n");
        entry.count(b": keep-alive\n\n");
        assert_eq!((entry.events, entry.bytes), (2, 21 + 56 + 14));
    }

    #[test]
    fn keeps_a_proxys_request_id_when_it_is_sane() {
        let with = |id: &str| Request::builder().header(REQUEST_ID, id).body(()).unwrap();
        let client = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(Entry::begin(&with("abc-123"), client).request_id, "abc-123");
        assert_ne!(Entry::begin(&with("a b"), client).request_id, "a b");
        assert_ne!(
            Entry::begin(&Request::new(()), client).request_id,
            Entry::begin(&Request::new(()), client).request_id
        );
    }
}
