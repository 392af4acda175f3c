//! Hostile input, sent as raw bytes: each kind gets a clear response or a clean close, the gateway stays
//! up, and a stream that was open all along keeps receiving every event.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{connect, fresh_db, messages_table, Gateway, SseStream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What came back for one request: the status of the first response, or a close without one.
#[derive(Debug, PartialEq)]
enum Outcome {
    Status(u16),
    Closed,
}

/// Sends `bytes`, optionally half-closes, and reads until the first response head or the end.
async fn send_raw(addr: SocketAddr, bytes: &[u8], half_close: bool) -> (Outcome, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    if half_close {
        let _ = s.shutdown().await;
    }
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.windows(4).any(|w| w == b"\r\n\r\n") && !got.starts_with(b"HTTP/1.1 100") {
                break;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read).await.expect("an answer or a close, not a hang");
    let status = std::str::from_utf8(&got)
        .ok()
        .and_then(|t| t.strip_prefix("HTTP/1.").and_then(|r| r.get(2..5)))
        .and_then(|code| code.parse().ok());
    (status.map_or(Outcome::Closed, Outcome::Status), got)
}

fn req(method: &str, target: &str, headers: &str, body: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: x\r\n{headers}Content-Length: {}\r\n\r\n{body}", body.len())
        .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kind_of_bad_input_gets_an_answer_and_nothing_breaks() {
    let url = fresh_db().await;
    let db = connect(&url).await;
    messages_table(&db, "").await;
    let mut config = common::gateway_config(&url);
    config.header_read_timeout = Duration::from_secs(1);
    config.body_limit = 4096;
    let gw = Gateway::start_with(config).await;
    let mut witness = SseStream::ok(gw.addr, "/messages/events", &[]).await;

    let huge_header = format!("X-Big: {}\r\n", "a".repeat(200 * 1024));
    let many_headers: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let deep_json = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!("{{\"body\": {}1{}}}", "{\"a\":".repeat(200), "}".repeat(200));
    let json = "Content-Type: application/json\r\n";
    let many_channels: String = (0..40).map(|i| format!("channel=c{i}&")).collect();
    let bad_utf8 = [
        &b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n"[..],
        b"{\"body\": \"\xff\xfe\"}",
    ]
    .concat();
    let cases: Vec<(&str, Vec<u8>, bool, &[u16])> = vec![
        ("resume id too long", req("GET", "/messages/events?last_event_id=99999999999999999999999", "", ""), false, &[400]),
        ("negative resume id", req("GET", "/messages/events", "Last-Event-ID: -1\r\n", ""), false, &[400]),
        ("non-numeric resume id", req("GET", "/messages/events", "Last-Event-ID: abc\r\n", ""), false, &[400]),
        ("resume id with a space inside", req("GET", "/messages/events", "Last-Event-ID: 1 2\r\n", ""), false, &[400]),
        ("resume id not UTF-8", req("GET", "/messages/events", "Last-Event-ID: \u{00ff}\u{00fe}\r\n", ""), false, &[400]),
        ("resume id with an encoded line break", req("GET", "/messages/events?last_event_id=%0A5", "", ""), false, &[400]),
        ("channel not UTF-8 (percent-encoded)", req("GET", "/%FF%FE/events", "", ""), false, &[400]),
        ("raw non-ASCII bytes in the path", b"GET /\xff\xfe/events HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(), false, &[400]),
        ("NUL in the path", req("GET", "/mess%00ages/events", "", ""), false, &[400]),
        ("channel name too long", req("GET", &format!("/{}/events", "c".repeat(300)), "", ""), false, &[400]),
        ("unknown channel", req("GET", "/nope/events", "", ""), false, &[400]),
        ("malformed filter", req("GET", "/messages/events?id=between.1.5", "", ""), false, &[400]),
        ("too many channels", req("GET", &format!("/events?{many_channels}"), "", ""), false, &[400]),
        ("URL over 8 KiB", req("GET", &format!("/messages?x={}", "x".repeat(9000)), "", ""), false, &[414]),
        ("a 200 KiB header", req("GET", "/healthz", &huge_header, ""), false, &[431, 400]),
        ("500 headers", req("GET", "/healthz", &many_headers, ""), false, &[431, 400]),
        ("wrong method", req("PUT", "/messages", json, "{}"), false, &[405]),
        ("TRACE", req("TRACE", "/messages/events", "", ""), false, &[405]),
        ("body not JSON", req("POST", "/messages", json, "{not json"), false, &[400]),
        ("JSON nested 100,000 deep", req("POST", "/messages", json, &deep_json), false, &[413]),
        ("JSON object nested 200 deep", req("POST", "/messages", json, &deep_object), false, &[400]),
        ("invalid UTF-8 inside a JSON string", bad_utf8, false, &[400]),
        ("body shorter than its Content-Length", b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"body\":".to_vec(), true, &[400]),
        ("malformed chunked body", b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n".to_vec(), false, &[400]),
        ("Content-Length and chunked together", b"POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(), false, &[400]),
        ("event name with a line break", req("POST", "/other?event=a%0Ab", json, "{}"), false, &[400]),
        ("garbage instead of HTTP", b"HELLO THERE\r\n\r\n".to_vec(), false, &[400]),
        ("HTTP/1.0 stream request", b"GET /messages/events HTTP/1.0\r\n\r\n".to_vec(), false, &[200]),
        ("half-closed after the request", req("GET", "/healthz", "", ""), true, &[200]),
        ("silent: sends nothing", Vec::new(), false, &[]),
        ("stalls inside the HTTP/2 preface", b"PRI * HTTP/2.0\r\n".to_vec(), false, &[]),
        ("slowloris: headers never finished", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec(), false, &[408]),
    ];
    let mut seen = Vec::new();
    for (name, bytes, half_close, allowed) in &cases {
        let (outcome, raw) = send_raw(gw.addr, bytes, *half_close).await;
        let ok = match outcome {
            Outcome::Status(code) => allowed.contains(&code),
            Outcome::Closed => true,
        };
        assert!(ok, "{name}: {outcome:?} {}", String::from_utf8_lossy(&raw[..raw.len().min(300)]));
        if let Outcome::Status(code) = outcome {
            if code >= 400 && raw.windows(16).any(|w| w.eq_ignore_ascii_case(b"application/json")) {
                let body = &raw[raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
                assert!(body.is_empty() || body.starts_with(b"{\"error\""), "{name}: JSON error body");
            }
        }
        seen.push(format!("{name}: {outcome:?}"));
        db.execute("INSERT INTO messages (body) VALUES ($1)", &[name]).await.unwrap();
        assert_eq!(witness.expect().await.json()["body"], *name, "the open stream saw the event after {name}");
    }
    assert!(cases.len() >= 25);
    eprintln!("{}", seen.join("\n"));

    let pipelined = [req("GET", "/healthz", "", ""), req("GET", "/healthz", "", "")].concat();
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(&pipelined).await.unwrap();
    let mut got = Vec::new();
    let both = async {
        let mut buf = [0u8; 4096];
        while got.windows(15).filter(|w| w == b"HTTP/1.1 200 OK").count() < 2 {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before both pipelined answers");
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), both).await.expect("both pipelined requests answered");
}
