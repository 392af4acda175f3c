//! The hostile matrix over HTTP: raw bytes of every bad kind get a clear response or a clean close while
//! an open stream keeps receiving, and no client can hoard connections, heads or bodies.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::{Fixture, Gateway, SseStream, TestDb, JSON};
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
    let TestDb { url, app, .. } = TestDb::messages(", writable => true").await;
    let gw = Gateway::start_configured(&url, |c| {
        c.server.header_read_timeout = Duration::from_secs(1);
        c.commands.body_limit = 4096;
    })
    .await;
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
        ("unknown channel", req("GET", "/nope/events", "", ""), false, &[404]),
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
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[name]).await.unwrap();
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

/// The request head is bounded where the server says (64 KiB), on both protocols' first request alike.
#[tokio::test]
async fn a_request_head_over_64_kib_gets_431() {
    let Fixture { gw, .. } = Fixture::messages("").await;
    for (size, want) in [(60 * 1024, 200), (70 * 1024, 431), (100 * 1024, 431)] {
        let header = format!("X-Pad: {}\r\n", "a".repeat(size));
        let (outcome, raw) = send_raw(gw.addr, &req("GET", "/healthz", &header, ""), false).await;
        assert_eq!(
            outcome,
            Outcome::Status(want),
            "{size} bytes: {}",
            String::from_utf8_lossy(&raw[..raw.len().min(200)])
        );
    }
}

/// Reads until the server closes the connection, returning what came; fails if it has not within `within`.
async fn until_closed(conn: &mut (impl AsyncReadExt + Unpin), within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = conn.read(&mut buf).await {
            got.extend_from_slice(&buf[..n]);
        }
    };
    tokio::time::timeout(within, read).await.expect("the server closed the connection in time");
    got
}

/// A connection from another loopback address than the test's own 127.0.0.1.
async fn connect_from(source: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    socket.connect(addr).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_slow_bodies_and_one_address_hoarding_connections_are_bounded() {
    let TestDb { url, app, .. } = TestDb::messages(", writable => true").await;
    let gw = Gateway::start_configured(&url, |c| {
        c.server.header_read_timeout = Duration::from_secs(1);
        c.commands.body_read_timeout = Duration::from_secs(1);
        c.limits.max_connections_per_client = 3;
    })
    .await;
    let mut witness = SseStream::ok(gw.addr, "/messages/events", &[]).await;

    // HTTP/2 by prior knowledge: the preface and an empty SETTINGS frame, then no request at all.
    let mut idle = TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").await.unwrap();
    let frames = until_closed(&mut idle, Duration::from_secs(10)).await;
    assert!(frames.windows(2).any(|w| w == [0x07, 0x00]), "closed with a GOAWAY frame: {frames:?}");

    // A body that trickles in a byte at a time is refused once its time is up.
    let slow = TcpStream::connect(gw.addr).await.unwrap();
    let (mut answer, mut body) = slow.into_split();
    let head = "POST /messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\n\r\n{";
    body.write_all(head.as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        for byte in b"\"body\": \"one byte at a time\"" {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if body.write_all(&[*byte]).await.is_err() {
                break;
            }
        }
    });
    let refused = until_closed(&mut answer, Duration::from_secs(5)).await;
    assert!(refused.starts_with(b"HTTP/1.1 408"), "{}", String::from_utf8_lossy(&refused));
    trickle.abort();

    // One address holds at most three connections; a fourth is closed unanswered, and others still get in.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut conn = connect_from("127.0.0.2", gw.addr).await;
        conn.write_all(b"GET /messages/events HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).await.unwrap();
        assert_eq!(&head, b"HTTP/1.0 200");
        held.push(conn);
    }
    let mut fourth = connect_from("127.0.0.2", gw.addr).await;
    let _ = fourth.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let unanswered = until_closed(&mut fourth, Duration::from_secs(5)).await;
    assert!(unanswered.is_empty(), "{}", String::from_utf8_lossy(&unanswered));
    assert_eq!(common::get(gw.addr, "/healthz", &[]).await.unwrap().status, 200, "other addresses get in");
    drop(held);

    app.execute("INSERT INTO messages (body) VALUES ('still serving')", &[]).await.unwrap();
    assert_eq!(witness.expect().await.json()["body"], "still serving");
}

/// A POST whose client resets its stream while the table's code runs leaves its pooled session to be
/// dropped: whatever that code did to the session (here, its own statements under the gateway's names),
/// the next request gets a new one.
#[tokio::test]
async fn a_session_whose_request_went_away_is_not_handed_out_again() {
    let TestDb { url, admin, .. } = TestDb::messages(", writable => true").await;
    let gw = Gateway::start_configured(&url, |c| c.pool.pool_size = 1).await;
    common::plant_statement_taker(&admin).await;
    admin
        .batch_execute(
            "CREATE FUNCTION hijack() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.body = 'hijack' THEN
                     PERFORM public.take_statements();
                     PERFORM pg_sleep(2);
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER hijack BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION hijack();",
        )
        .await
        .unwrap();
    let post = |body: &'static str| common::call(gw.addr, "POST", "/messages", &[JSON], Bytes::from(body));
    assert_eq!(post(r#"{"body": "first"}"#).await.unwrap().status, 201);

    let mut sender = common::h2_sender(gw.addr).await;
    let hijack = Bytes::from(r#"{"body": "hijack"}"#);
    let answer = sender.send_request(common::request("POST", &format!("http://{}/messages", gw.addr), &[JSON], hijack));
    let sleeping = "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' AND query LIKE 'WITH inserted%'";
    let asleep = async {
        common::wait_for("the trigger to run", || async {
            admin.query_one(sleeping, &[]).await.unwrap().get::<_, i64>(0) == 1
        })
        .await
    };
    tokio::select! {
        _ = answer => panic!("the POST was answered while its trigger slept"),
        () = asleep => {}
    }
    // The request is gone (its stream reset) while the statement runs on; it commits after.
    common::wait_for("the hijacking row", || async {
        admin.query_one("SELECT count(*) FROM messages WHERE body = 'hijack'", &[]).await.unwrap().get::<_, i64>(0) == 1
    })
    .await;
    // A read first: it runs the gateway's own statements on the session, with no reset after them.
    for _ in 0..4 {
        let history = common::get(gw.addr, "/messages", &[]).await.unwrap();
        assert_eq!(history.status, 200, "{}", history.body);
        let after = post(r#"{"body": "after"}"#).await.unwrap();
        assert_eq!(after.status, 201, "{}", after.body);
    }
}
