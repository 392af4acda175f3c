//! Quiet HTTP/1 streams parked without a task: events and heartbeats still reach them, and their client's
//! bytes, its close and shutdown still end them. Real PostgreSQL, raw HTTP/1.1 over TCP.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Gateway, TestDb};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEARTBEAT: &[u8] = b": keep-alive\n\n";

async fn gateway(url: &str, heartbeat: Duration, parking: bool) -> Gateway {
    Gateway::start_configured(url, |c| {
        c.streams.heartbeat = heartbeat;
        c.server.park_idle_streams = parking;
    })
    .await
}

async fn parked(gw: &Gateway) -> u64 {
    common::metric(gw.addr, "pgsse_streams_parked").await
}

async fn open(addr: SocketAddr) -> (TcpStream, Vec<u8>) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /messages/events HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    let mut raw = Vec::new();
    read_until(&mut conn, &mut raw, b": pgsse\n\n", 1).await;
    (conn, raw)
}

/// Reads until `raw` holds `times` of `end`.
async fn read_until(conn: &mut TcpStream, raw: &mut Vec<u8>, end: &[u8], times: usize) {
    let mut buf = [0u8; 4096];
    while raw.windows(end.len()).filter(|w| w == &end).count() < times {
        let n = tokio::time::timeout(common::TIMEOUT, conn.read(&mut buf)).await.unwrap().unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(raw));
        raw.extend_from_slice(&buf[..n]);
    }
}

/// Reads until the gateway closes the connection.
async fn read_to_close(conn: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    while tokio::time::timeout(common::TIMEOUT, conn.read(&mut buf)).await.unwrap().is_ok_and(|n| n > 0) {}
}

async fn wait_parked(gw: &Gateway, n: u64) {
    common::wait_for(&format!("{n} streams parked"), || async { parked(gw).await == n }).await;
}

/// Waits until the stream's place is given back: no longer open, nor parked.
async fn wait_given_back(gw: &Gateway) {
    common::wait_for("the stream's place is given back", || async {
        common::metric(gw.addr, "pgsse_streams_open{channel=\"messages\"}").await == 0 && parked(gw).await == 0
    })
    .await;
}

#[tokio::test]
async fn a_quiet_stream_is_parked_and_events_heartbeats_and_its_clients_bytes_still_reach_it() {
    let TestDb { url, app, .. } = TestDb::messages("").await;
    let gw = gateway(&url, Duration::from_millis(300), true).await;
    let (mut conn, mut raw) = open(gw.addr).await;
    wait_parked(&gw, 1).await;

    for body in ["first", "second"] {
        raw.clear();
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&body]).await.unwrap();
        read_until(&mut conn, &mut raw, format!("\"body\": \"{body}\"").as_bytes(), 1).await;
        // Busy, it keeps its task until a heartbeat's time passes without an event; then it parks again,
        // and its heartbeats go on.
        read_until(&mut conn, &mut raw, HEARTBEAT, 3).await;
        wait_parked(&gw, 1).await;
        read_until(&mut conn, &mut raw, HEARTBEAT, 5).await;
        let text = String::from_utf8_lossy(&raw);
        assert_eq!(text.matches("event: insert").count(), 1, "one event, then only heartbeats: {text}");
    }

    // A parked stream's client sends a byte: it has nothing more to send on this connection, so it ends.
    wait_parked(&gw, 1).await;
    conn.write_all(b"x").await.unwrap();
    read_to_close(&mut conn).await;
    wait_given_back(&gw).await;
}

#[tokio::test]
async fn a_parked_streams_client_leaving_frees_its_place_long_before_a_heartbeat() {
    let TestDb { url, .. } = TestDb::messages("").await;
    let gw = gateway(&url, Duration::from_secs(600), true).await;
    let (conn, _) = open(gw.addr).await;
    wait_parked(&gw, 1).await;
    drop(conn);
    wait_given_back(&gw).await;
}

#[tokio::test]
async fn parked_streams_end_at_shutdown() {
    let TestDb { url, .. } = TestDb::messages("").await;
    let gw = gateway(&url, Duration::from_secs(600), true).await;
    let mut conns = Vec::new();
    for _ in 0..3 {
        conns.push(open(gw.addr).await.0);
    }
    wait_parked(&gw, 3).await;
    let took = gw.shutdown().await;
    assert!(took < Duration::from_secs(3), "run returned after {took:?}");
    for conn in &mut conns {
        read_to_close(conn).await;
    }
}

#[tokio::test]
async fn with_parking_off_a_stream_keeps_its_task() {
    let TestDb { url, app, .. } = TestDb::messages("").await;
    let gw = gateway(&url, Duration::from_millis(300), false).await;
    let (mut conn, mut raw) = open(gw.addr).await;
    read_until(&mut conn, &mut raw, HEARTBEAT, 2).await;
    assert_eq!(parked(&gw).await, 0);
    app.execute("INSERT INTO messages (body) VALUES ('kept')", &[]).await.unwrap();
    read_until(&mut conn, &mut raw, b"\"body\": \"kept\"", 1).await;
    read_until(&mut conn, &mut raw, HEARTBEAT, 4).await;
    assert_eq!(parked(&gw).await, 0);
}
