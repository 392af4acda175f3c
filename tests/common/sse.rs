//! SSE clients: one stream parsed as a browser's EventSource does, and a follower that reconnects with
//! `Last-Event-ID` as EventSource does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use super::http::{header_map, request, send};
use super::TIMEOUT;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl Event {
    pub fn id(&self) -> i64 {
        self.id.as_deref().expect("event has an id").parse().expect("numeric id")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data not JSON ({e}): {}", self.data))
    }
}

/// An open SSE response, parsed as a browser's EventSource does.
pub struct SseStream {
    pub status: u16,
    pub headers: HashMap<String, String>,
    body: Incoming,
    buf: Vec<u8>,
    /// Bytes at the start of `buf` already searched for an event's end: a large event arrives in many
    /// frames (8 KiB each, hyper's reads of a body that the connection's close delimits), and searching it
    /// all again for each would make this client too slow to keep up in a debug build.
    scanned: usize,
    pub raw: Vec<u8>,
    pub comments: usize,
    pub ended: bool,
}

impl SseStream {
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let req = request("GET", path, headers, Bytes::new());
        let resp = tokio::time::timeout(TIMEOUT, send(addr, req))
            .await
            .expect("stream headers in time")
            .expect("stream request");
        Self::from_response(resp)
    }

    fn from_response(resp: hyper::Response<Incoming>) -> Self {
        let status = resp.status().as_u16();
        let headers = header_map(resp.headers());
        Self {
            status,
            headers,
            body: resp.into_body(),
            buf: Vec::new(),
            scanned: 0,
            raw: Vec::new(),
            comments: 0,
            ended: false,
        }
    }

    /// Opens every path as a stream on one HTTP/2 connection (prior knowledge, no TLS) and asserts 200s.
    pub async fn h2_streams(addr: SocketAddr, paths: &[&str]) -> Vec<Self> {
        let sender = super::h2_sender(addr).await;
        let mut streams = Vec::new();
        for path in paths {
            let req = request("GET", &format!("http://{addr}{path}"), &[], Bytes::new());
            let resp = tokio::time::timeout(TIMEOUT, sender.clone().send_request(req))
                .await
                .expect("stream headers in time")
                .expect("stream request");
            assert_eq!(resp.status(), 200, "stream {path} refused");
            assert_eq!(resp.version(), hyper::Version::HTTP_2);
            streams.push(Self::from_response(resp));
        }
        streams
    }

    /// Opens and asserts a 200 event stream.
    pub async fn ok(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let s = Self::open(addr, path, headers).await;
        assert_eq!(s.status, 200, "stream {path} refused");
        s
    }

    /// The next dispatched event, or `None` if the stream ended. Heartbeats do not extend the deadline.
    pub async fn next(&mut self) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(event) = self.parse_one() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await.expect("no SSE event in time") {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.raw.extend_from_slice(&data);
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }

    /// Like `next`, without a deadline: a follower stays as long as the server keeps the stream open.
    async fn next_or_end(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.parse_one() {
                return Some(event);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn expect(&mut self) -> Event {
        self.next().await.expect("stream ended early")
    }

    pub async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.expect().await);
        }
        out
    }

    fn parse_one(&mut self) -> Option<Event> {
        loop {
            let from = self.scanned.saturating_sub(1);
            let Some(at) = memchr::memmem::find(&self.buf[from..], b"\n\n") else {
                self.scanned = self.buf.len();
                return None;
            };
            self.scanned = 0;
            let block: Vec<u8> = self.buf.drain(..from + at + 2).collect();
            let text = String::from_utf8(block).expect("stream is UTF-8");
            let mut event = Event { id: None, event: "message".into(), data: String::new() };
            let mut has_data = false;
            for line in text.split('\n').filter(|l| !l.is_empty()) {
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => event.id = Some(value.to_string()),
                    "event" => event.event = value.to_string(),
                    "data" => {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            if has_data {
                return Some(event);
            }
        }
    }
}

/// A client that behaves like a browser's EventSource: it keeps one stream open and, whenever the stream
/// ends or cannot be opened, reconnects with `Last-Event-ID` set to the last id it received.
pub struct Follower {
    events: std::sync::Arc<std::sync::Mutex<Vec<Event>>>,
    reconnects: std::sync::Arc<AtomicU32>,
    task: JoinHandle<()>,
}

impl Follower {
    pub fn start(addr: SocketAddr, path: &str) -> Self {
        Self::start_across(vec![addr], path)
    }

    /// Like `start`, behind a load balancer over `addrs`: it stays with one gateway while that one answers,
    /// and moves to the next when a connection fails.
    pub fn start_across(addrs: Vec<SocketAddr>, path: &str) -> Self {
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Event>::new()));
        let reconnects = std::sync::Arc::new(AtomicU32::new(0));
        let path = path.to_string();
        let task = {
            let (events, reconnects) = (events.clone(), reconnects.clone());
            tokio::spawn(async move {
                let mut last: Option<String> = None;
                // At most one reconnect per tick, like EventSource's retry delay.
                let mut pace = tokio::time::interval(Duration::from_millis(50));
                let mut at = 0;
                loop {
                    pace.tick().await;
                    let headers: Vec<(&str, &str)> = last.iter().map(|id| ("last-event-id", id.as_str())).collect();
                    let req = request("GET", &path, &headers, Bytes::new());
                    let answer = tokio::time::timeout(TIMEOUT, send(addrs[at], req)).await;
                    if !matches!(&answer, Ok(Ok(resp)) if resp.status() == 200) {
                        at = (at + 1) % addrs.len();
                    }
                    if let Ok(Ok(resp)) = answer {
                        if resp.status() == 200 {
                            let mut stream = SseStream::from_response(resp);
                            while let Some(event) = stream.next_or_end().await {
                                last = event.id.clone().or(last);
                                events.lock().unwrap().push(event);
                            }
                        }
                    }
                    reconnects.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        Self { events, reconnects, task }
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    pub fn last_id(&self) -> Option<i64> {
        self.events.lock().unwrap().last().map(Event::id)
    }

    pub fn reconnects(&self) -> u32 {
        self.reconnects.load(Ordering::Relaxed)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What `follower` received, as (id, body).
pub fn received(follower: &Follower) -> Vec<(i64, String)> {
    follower.events().iter().map(|e| (e.id(), e.json()["body"].as_str().unwrap_or_default().to_string())).collect()
}
