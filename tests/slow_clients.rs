//! Slow clients: one that never reads, and one that stops, are cut off (and give their places back)
//! without holding up the gateway or any other stream; and an HTTP/1 stream ends, giving its places back,
//! when its client sends anything or closes, or the gateway shuts down.

mod common;

use std::time::{Duration, Instant};

use common::{get, wait_for, Gateway, SseStream, TestDb, TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Asks for a stream on a connection whose client will read nothing, with a small receive buffer so the
/// gateway's writes back up soon.
async fn stalled_stream(addr: std::net::SocketAddr) -> TcpStream {
    raw_stream(addr, Some(4096)).await
}

/// Inserts 64 KB rows until a client that reads nothing has fallen a queue behind and is cut from the
/// hub, as `metrics` (the address serving /metrics) counts it.
async fn insert_until_cut(app: &tokio_postgres::Client, metrics: std::net::SocketAddr, what: &str) {
    let cut = || common::metric(metrics, "pgsse_subscribers_cut_total");
    let row = "x".repeat(64 * 1024);
    for _ in 0..1000 {
        if cut().await > 0 {
            break;
        }
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&row]).await.unwrap();
    }
    assert!(cut().await > 0, "{what}");
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_without_hurting_others() {
    let TestDb { url, app, .. } = TestDb::messages("").await;
    let mut config = common::gateway_config(&url);
    // Small, so the stalled client is cut within the 300 events; roomy enough that this reader (a debug
    // build of hyper's client, which takes a body delimited by the connection's close in 8 KiB frames)
    // keeps within it while commits come flat out and the other tests share the cores.
    config.streams.queue_capacity = 128;
    let gw = Gateway::start_with(config).await;

    let mut stalled = stalled_stream(gw.addr).await;
    let mut reader = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    // Registration of the raw client is confirmed by it receiving the first event below.
    app.execute("INSERT INTO messages (body) VALUES ('warmup')", &[]).await.unwrap();
    assert_eq!(reader.expect().await.json()["body"], "warmup");

    let chunk = "x".repeat(64 * 1024);
    let total = 300;
    let writer = {
        let url = url.clone();
        tokio::spawn(async move {
            let app = common::writer(&url).await;
            for i in 0..total {
                app.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("{i}:{chunk}")]).await.unwrap();
            }
        })
    };
    for i in 0..total {
        let ev = reader.expect().await;
        assert!(ev.json()["body"].as_str().unwrap().starts_with(&format!("{i}:")), "reader got every event in order");
    }
    writer.await.unwrap();

    // Now drain the stalled client: the server ended its stream (the close that delimits an HTTP/1.0
    // stream's body) after an unbroken prefix of the events, short of the last.
    let mut raw = Vec::new();
    tokio::time::timeout(common::TIMEOUT, stalled.read_to_end(&mut raw))
        .await
        .expect("stalled stream was ended")
        .unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let bodies: Vec<String> = raw
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .map(|data| serde_json::from_str::<serde_json::Value>(data).unwrap()["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(bodies.first().map(String::as_str), Some("warmup"));
    for (i, body) in bodies[1..].iter().enumerate() {
        assert!(body.starts_with(&format!("{i}:")), "event {i} of the prefix is {:.8}", body);
    }
    assert!(bodies.len() < 1 + total, "cut off before the last event, yet it got all {} events", bodies.len());
    assert_eq!(common::metric(gw.addr, "pgsse_subscribers_cut_total").await, 1, "exactly the stalled stream was cut");
}

#[tokio::test]
async fn a_client_that_stops_reading_gives_its_place_back_after_four_heartbeats() {
    let TestDb { url, app, .. } = TestDb::messages("").await;
    let gw = Gateway::start_configured(&url, |c| {
        c.streams.heartbeat = std::time::Duration::from_millis(250);
        c.streams.queue_capacity = 4;
        c.limits.max_streams_per_client = 1;
    })
    .await;
    let metric = |sample| common::metric(gw.addr, sample);

    let stalled = stalled_stream(gw.addr).await;
    common::wait_for("the stream is open", || async { metric("pgsse_streams_open{channel=\"messages\"}").await == 1 })
        .await;
    assert_eq!(SseStream::open(gw.addr, "/messages/events", &[]).await.status, 429, "one stream per client");

    insert_until_cut(&app, gw.addr, "the stalled client was cut").await;
    // Its write is still blocked; only giving up on it frees the connection and the client's place.
    common::wait_for("the stalled client's place is given back", || async {
        SseStream::open(gw.addr, "/messages/events", &[]).await.status == 200
    })
    .await;
    drop(stalled);
}

/// Asks for a stream on a new connection (with the given receive buffer).
async fn raw_stream(addr: std::net::SocketAddr, recv_buf: Option<u32>) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(n) = recv_buf {
        socket.set_recv_buffer_size(n).unwrap();
    }
    let mut s = socket.connect(addr).await.unwrap();
    s.write_all(b"GET /messages/events HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    s
}

/// Reads until `end` has arrived.
async fn read_until(conn: &mut TcpStream, raw: &mut Vec<u8>, end: &[u8]) {
    let mut buf = [0u8; 4096];
    while !raw.windows(end.len()).any(|w| w == end) {
        let n = tokio::time::timeout(TIMEOUT, conn.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(raw));
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Waits for the gateway to close the connection.
async fn closed_by_server(conn: &mut TcpStream) {
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "server closed the connection");
}

/// Pipelined bytes and a half-close after the stream started each end it, and give back both the
/// per-address connection slot and the max-connections permit.
#[tokio::test]
async fn pipelined_bytes_or_half_close_end_the_stream_and_free_the_slots() {
    let TestDb { url, .. } = TestDb::messages("").await;
    let (gw, metrics) = Gateway::start_with_metrics({
        let mut c = common::gateway_config(&url);
        c.limits.max_connections_per_client = 1;
        c.server.max_connections = 1;
        c
    })
    .await;
    let open = || common::metric(metrics, "pgsse_streams_open{channel=\"messages\"}");
    for how in ["pipelined", "half-close", "pipelined", "half-close"] {
        let mut conn = raw_stream(gw.addr, None).await;
        let mut raw = Vec::new();
        read_until(&mut conn, &mut raw, b": pgsse\n\n").await;
        assert_eq!(open().await, 1);
        match how {
            "pipelined" => conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap(),
            _ => conn.shutdown().await.unwrap(),
        }
        closed_by_server(&mut conn).await;
        wait_for("stream place back", || async { open().await == 0 }).await;
    }
    // Both slots free: an ordinary request is served at once.
    let t = Instant::now();
    assert_eq!(get(gw.addr, "/healthz", &[]).await.unwrap().status, 200);
    assert!(t.elapsed() < Duration::from_secs(2));
}

/// Shutdown ends a stream whose write is blocked (client never reads, heartbeat far off so Stalling
/// does not cut it) and an idle one, long before --shutdown-timeout.
#[tokio::test]
async fn shutdown_ends_blocked_and_idle_http1_streams_promptly() {
    let TestDb { url, app, .. } = TestDb::messages("").await;
    let (gw, metrics) = Gateway::start_with_metrics({
        let mut c = common::gateway_config(&url);
        c.streams.heartbeat = Duration::from_secs(60);
        c.streams.queue_capacity = 4;
        c.server.shutdown_timeout = Duration::from_secs(15);
        c
    })
    .await;
    let metric = |s| common::metric(metrics, s);
    let mut idle = raw_stream(gw.addr, None).await;
    let mut raw = Vec::new();
    read_until(&mut idle, &mut raw, b": pgsse\n\n").await;
    let mut stalled = raw_stream(gw.addr, Some(4096)).await;
    wait_for("both open", || async { metric("pgsse_streams_open{channel=\"messages\"}").await == 2 }).await;
    insert_until_cut(&app, metrics, "the stalled write is blocked").await;
    // drain the idle one so its socket is not full
    let drain = tokio::spawn(async move {
        let mut v = Vec::new();
        let _ = idle.read_to_end(&mut v).await;
    });
    let took = gw.shutdown().await;
    assert!(took < Duration::from_secs(3), "run returned after {took:?}");
    tokio::time::timeout(Duration::from_secs(2), drain).await.expect("idle stream closed").unwrap();
    let mut rest = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut rest)).await;
    assert!(r.is_ok(), "stalled stream closed");
}
