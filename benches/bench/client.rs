//! A lean SSE client for load: raw TCP from a chosen 127.0.0.x source, chunked decoding, and just enough
//! parsing to take each event's id and the `"sent"` stamp the writer put in its row.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;

/// What one stream saw.
#[derive(Default)]
pub struct Seen {
    pub ids: Vec<i64>,
    /// Microseconds from just before the INSERT to parsing the event here.
    pub latencies_us: Vec<u32>,
    pub connected: bool,
    pub error: Option<String>,
    /// Times the gateway cut this stream (too slow) and it resumed from its last id, as EventSource does.
    pub resumed: u32,
}

impl Seen {
    /// Adds what a resumed connection of the same stream saw.
    pub fn extend(&mut self, later: Seen) {
        self.ids.extend(later.ids);
        self.latencies_us.extend(later.latencies_us);
        self.connected |= later.connected;
        self.error = later.error;
    }

    pub fn cut_by_server(&self) -> bool {
        self.error.as_deref() == Some(CLOSED_BY_SERVER)
    }
}

const CLOSED_BY_SERVER: &str = "closed by server";

pub async fn connect(addr: SocketAddr, source: IpAddr, path: &str) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    let mut stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    Ok(stream)
}

/// Reads the stream until `stop` turns true, or until `until_id` has been seen; `last` follows the
/// highest id seen so far.
pub async fn follow(
    mut stream: TcpStream,
    t0: Instant,
    until_id: Option<i64>,
    mut stop: watch::Receiver<bool>,
    ready: tokio::sync::mpsc::Sender<()>,
    last: Arc<AtomicI64>,
) -> Seen {
    let mut seen = Seen::default();
    let mut raw = Vec::with_capacity(4096);
    let mut decoder = Decoder::default();
    let mut events: Vec<u8> = Vec::new();
    let mut headers_done = false;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = tokio::select! {
            r = stream.read(&mut buf) => match r {
                Ok(0) => { seen.error.get_or_insert(CLOSED_BY_SERVER.into()); break }
                Ok(n) => n,
                Err(e) => { seen.error = Some(e.to_string()); break }
            },
            _ = stop.wait_for(|s| *s) => break,
        };
        let now_us = t0.elapsed().as_micros() as i64;
        if !headers_done {
            raw.extend_from_slice(&buf[..n]);
            let Some(end) = find(&raw, b"\r\n\r\n") else { continue };
            if !(raw.starts_with(b"HTTP/1.1 200") || raw.starts_with(b"HTTP/1.0 200")) {
                seen.error = Some(String::from_utf8_lossy(&raw[..raw.len().min(200)]).into_owned());
                break;
            }
            headers_done = true;
            seen.connected = true;
            let _ = ready.send(()).await;
            let head = raw[..end].to_ascii_lowercase();
            decoder.chunked = find(&head, b"transfer-encoding: chunked").is_some();
            let rest = raw.split_off(end + 4);
            decoder.feed(&rest, &mut events);
        } else {
            decoder.feed(&buf[..n], &mut events);
        }
        let mut start = 0;
        while let Some(end) = find(&events[start..], b"\n\n") {
            parse_event(&events[start..start + end], now_us, &mut seen);
            start += end + 2;
        }
        events.drain(..start);
        if decoder.ended {
            seen.error = Some(CLOSED_BY_SERVER.into());
            break;
        }
        if let Some(id) = seen.ids.last() {
            last.fetch_max(*id, Ordering::Relaxed);
        }
        if until_id.is_some_and(|last| seen.ids.last().is_some_and(|id| *id >= last)) {
            break;
        }
    }
    seen
}

fn parse_event(block: &[u8], now_us: i64, seen: &mut Seen) {
    // A Mercure hub's own ids are `#` and the log id.
    let id = block.strip_prefix(b"id: ").map(|rest| rest.strip_prefix(b"#").unwrap_or(rest));
    let Some(id) = id.and_then(digits) else {
        return; // a comment (prelude, heartbeat)
    };
    seen.ids.push(id);
    // The row's keys come out of jsonb shortest first: "sent" is the last one, after the padding.
    if let Some(pos) = memchr::memmem::rfind(block, b"\"sent\": ") {
        if let Some(sent_us) = digits(&block[pos + 8..]) {
            if sent_us > 0 {
                seen.latencies_us.push((now_us - sent_us).clamp(0, u32::MAX as i64) as u32);
            }
        }
    }
}

/// The decimal number at the start of `text`, if any.
fn digits(text: &[u8]) -> Option<i64> {
    let len = text.iter().take_while(|b| b.is_ascii_digit()).count();
    let value = text[..len].iter().try_fold(0i64, |n, d| n.checked_mul(10)?.checked_add(i64::from(d - b'0')));
    value.filter(|_| len > 0)
}

/// SIMD substring search (memchr): the load generator shares the machine with the gateway, so its
/// parsing should cost as little as possible.
fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// An HTTP/1 response body fed in arbitrary pieces: chunked transfer decoding, or none for a body that
/// the connection's close delimits (pgsse's HTTP/1 streams).
#[derive(Default)]
struct Decoder {
    chunked: bool,
    /// Bytes of chunk data still expected, or `None` while reading a size line.
    remaining: Option<usize>,
    line: Vec<u8>,
    /// CRLF after a chunk's data still to skip.
    skip: usize,
    ended: bool,
}

impl Decoder {
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if !self.chunked {
            return out.extend_from_slice(input);
        }
        while !input.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                self.skip -= n;
                input = &input[n..];
                continue;
            }
            match self.remaining {
                Some(left) => {
                    let n = left.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if n == left {
                        self.remaining = None;
                        self.skip = 2;
                    } else {
                        self.remaining = Some(left - n);
                    }
                }
                None => {
                    let Some(nl) = memchr::memchr(b'\n', input) else {
                        self.line.extend_from_slice(input);
                        return;
                    };
                    self.line.extend_from_slice(&input[..nl]);
                    input = &input[nl + 1..];
                    let text = String::from_utf8_lossy(&self.line).trim().to_string();
                    self.line.clear();
                    let size = usize::from_str_radix(text.split(';').next().unwrap_or("0"), 16).unwrap_or(0);
                    self.remaining = (size > 0).then_some(size);
                    // The last chunk: the response is over, though the connection may stay open.
                    self.ended |= size == 0 && !text.is_empty();
                }
            }
        }
    }
}
