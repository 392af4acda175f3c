//! What clients can make the gateway hold: replay batches and history pages are bounded in bytes, a history
//! request holds a place under the per-client limit until it is written, a connection whose client takes
//! no bytes is cut whatever it was being sent, and what a storm of connections freed is given back.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{get, metric, wait_for, Gateway, SseStream, TestDb};
use pgsse::{Store, PAGE_BYTES};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// Rows of `messages` whose bodies are 10 KB each, numbered in the body's first characters.
async fn backlog(app: &tokio_postgres::Client, rows: i32) {
    app.execute(
        "INSERT INTO messages (body) SELECT lpad(n::text, 6, '0') || repeat('x', 10000) FROM generate_series(1, $1) n",
        &[&rows],
    )
    .await
    .unwrap();
}

/// A client connection with a tiny receive buffer that sends `request`, reads the head of the first
/// response (so its request was admitted before the test goes on), and then reads nothing more.
async fn never_reading(addr: SocketAddr, request: &[u8]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    let head = head_of(&mut conn, request).await;
    assert!(head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"), "{head}");
    conn
}

/// Sends `request` on `conn` and reads the head of its answer, byte by byte (nothing of the body).
async fn head_of(conn: &mut TcpStream, request: &[u8]) -> String {
    conn.write_all(request).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0];
        let n = tokio::time::timeout(common::TIMEOUT, conn.read(&mut byte)).await.unwrap().unwrap();
        assert_eq!(n, 1, "closed before a response head");
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Waits until the client's one place (`--max-streams-per-client 1`) is taken by a hoarder, then until
/// the hoarder's stalled connection is cut and the place given back.
async fn held_then_given_back(addr: SocketAddr) {
    let history_answers =
        |status: u16| async move { get(addr, "/messages?limit=1", &[]).await.is_ok_and(|r| r.status == status) };
    wait_for("the hoarder holds the client's one place", || history_answers(429)).await;
    wait_for("the stalled connection is cut and its place given back", || history_answers(200)).await;
}

#[tokio::test]
async fn replay_batches_and_history_pages_are_bounded_in_bytes_and_lose_nothing() {
    let TestDb { url, app, admin } = TestDb::messages("").await;
    backlog(&app, 120).await;
    common::sequence_staged(&admin).await;
    let store =
        Store::new(&common::as_role(&url, common::GATEWAY_ROLE), 1, std::time::Duration::from_secs(15)).unwrap();
    let batch = store.replay(0, None, &["messages".to_string()], 1000).await.unwrap();
    let bytes: usize = batch.rows.iter().map(|r| r.payload.len()).sum();
    let largest = batch.rows.iter().map(|r| r.payload.len()).max().unwrap();
    assert!(bytes < PAGE_BYTES as usize + largest, "one batch holds {bytes} bytes");
    assert!(batch.rows.len() < 120 && batch.more, "the budget cut the batch, and says more follow");

    let gw = Gateway::start(&url).await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", "0")]).await;
    let ids: Vec<i64> = stream.take(120).await.iter().map(|e| e.id()).collect();
    assert_eq!(ids, (1..=120).collect::<Vec<_>>(), "every event once, in order, across the batches");

    let mut pages = Vec::new();
    let mut before = i64::MAX;
    loop {
        let page = get(gw.addr, &format!("/messages?limit=1000&before={before}"), &[]).await.unwrap();
        assert_eq!(page.status, 200, "{}", page.body);
        assert!(page.body.len() < PAGE_BYTES as usize + 11_000, "a page of {} bytes", page.body.len());
        let got: Vec<i64> = page.json().as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
        let Some(&last) = got.last() else { break };
        assert!(got.len() < 120, "the budget cut the page");
        pages.extend(got);
        before = last;
    }
    assert_eq!(pages, (1..=120).rev().collect::<Vec<_>>(), "paging backwards sees every event once");
}

#[tokio::test]
async fn a_history_request_takes_a_place_under_the_per_client_limit() {
    let TestDb { url, .. } = TestDb::messages("").await;
    let gw = Gateway::start_configured(&url, |c| {
        c.limits.max_streams_per_client = 1;
    })
    .await;
    let stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    let refused = get(gw.addr, "/messages", &[]).await.unwrap();
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert!(refused.json()["error"].as_str().unwrap().contains("history requests from this client"));
    drop(stream);
    wait_for("the stream's place is free for a history request", || async {
        get(gw.addr, "/messages", &[]).await.is_ok_and(|r| r.status == 200)
    })
    .await;
}

#[tokio::test]
async fn a_client_that_asks_for_pages_and_never_reads_them_is_cut() {
    let TestDb { url, app, .. } = TestDb::messages("").await;
    backlog(&app, 60).await;
    let mut config = common::gateway_config(&url);
    config.limits.max_streams_per_client = 1;
    // Four heartbeats without a byte taken end a connection: 4 s here.
    config.streams.heartbeat = Duration::from_secs(1);
    let gw = Gateway::start_with(config).await;

    // 40 pipelined pages of about 256 KB: far more than the kernel's buffers take for a client that
    // does not read, so the gateway's write stalls on one of them, holding its place.
    let pipelined = "GET /messages?limit=1000 HTTP/1.1\r\nhost: x\r\n\r\n".repeat(40);
    let _hoarder = never_reading(gw.addr, pipelined.as_bytes()).await;
    held_then_given_back(gw.addr).await;
}

#[tokio::test]
async fn a_replaying_stream_whose_client_never_reads_holds_a_few_batches_not_the_backlog() {
    let TestDb { url, app, .. } = TestDb::messages("").await;
    // 10 MB: more than the kernel takes for a client that does not read (its send buffer grows to 4 MB).
    backlog(&app, 1000).await;
    let gw = Gateway::start_configured(&url, |c| {
        c.limits.max_streams_per_client = 1;
        c.streams.heartbeat = Duration::from_secs(1);
    })
    .await;

    let request = b"GET /messages/events HTTP/1.1\r\nhost: x\r\nlast-event-id: 0\r\n\r\n";
    let mut _hoarder = never_reading(gw.addr, request).await;
    // The write stalls, the connection is cut, and the replay stops: what it read by then is final.
    held_then_given_back(gw.addr).await;
    // At most the kernel's 4 MB (about 400 events) and three batches of 256 KB (about 80): before the byte
    // budget, the replay read the whole backlog ahead of a client that took none of it.
    let replayed = common::metric(gw.addr, "pgsse_events_replayed_total").await;
    assert!(replayed < 650, "read {replayed} of the 1,000 backlogged events for a client that took none");
}

/// The status line of the answer to a raw `request`, read without reading its body.
async fn status_of(addr: SocketAddr, request: &str) -> (u16, TcpStream) {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let head = head_of(&mut conn, request.as_bytes()).await;
    if head.contains(" 429 ") {
        assert!(head.to_ascii_lowercase().contains("retry-after: "), "{head}");
    }
    (head[9..12].parse().unwrap(), conn)
}

/// A snapshot holds a pooled connection only while its client takes its rows: snapshots being read are
/// capped in all (half the pool at most) and per client address, with 429 and Retry-After beyond; one
/// whose client takes nothing loses its stream within seconds; meanwhile other clients' POST and history
/// answer at once.
#[tokio::test]
async fn snapshots_whose_clients_never_read_cannot_hold_the_pool() {
    let TestDb { url, app, .. } = TestDb::messages(", writable => true").await;
    // 20 MB: more than the kernel buffers for a client that does not read.
    backlog(&app, 2000).await;
    let gw = Gateway::start_configured(&url, |c| {
        c.limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        c.limits.max_snapshots_per_client = 1;
        c.pool.pool_size = 4;
    })
    .await;
    let snapshot = |from: &str| {
        format!("GET /messages/events?snapshot=true HTTP/1.1\r\nhost: x\r\nx-forwarded-for: {from}\r\n\r\n")
    };
    let _first = never_reading(gw.addr, snapshot("10.0.0.1").as_bytes()).await;
    assert_eq!(status_of(gw.addr, &snapshot("10.0.0.1")).await.0, 429, "one per client address");
    let _second = never_reading(gw.addr, snapshot("10.0.0.2").as_bytes()).await;
    assert_eq!(status_of(gw.addr, &snapshot("10.0.0.3")).await.0, 429, "two (half of the pool of 4) in all");

    let started = std::time::Instant::now();
    let json = [("content-type", "application/json")];
    let posted = common::call(gw.addr, "POST", "/messages", &json, r#"{"body": "meanwhile"}"#.into()).await.unwrap();
    assert_eq!(posted.status, 201, "{}", posted.body);
    assert_eq!(get(gw.addr, "/messages?limit=1", &[]).await.unwrap().status, 200);
    assert!(started.elapsed() < Duration::from_secs(1), "POST and history took {:?}", started.elapsed());

    // The unread snapshots lose their streams, and their places go back.
    wait_for("an unread snapshot gives its place back", || async {
        status_of(gw.addr, &snapshot("10.0.0.3")).await.0 == 200
    })
    .await;
}

/// A storm of connections (600 requests, each on a connection of its own: 1,200 places under the limits
/// taken and given back) is followed by a trim of the heaps once it calms; `--trim-heaps false` keeps the
/// memory. The gateway that keeps it has its storm first, so it has had longer to trim by the time the
/// other has.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn a_storm_of_connections_is_followed_by_a_trim_of_the_heaps_unless_turned_off() {
    let TestDb { url, .. } = TestDb::messages("").await;
    let kept = Gateway::start_configured(&url, |c| c.server.trim_heaps = false).await;
    let trimmed = Gateway::start(&url).await;
    for gw in [&kept, &trimmed] {
        for _ in 0..600 {
            assert_eq!(get(gw.addr, "/healthz", &[]).await.unwrap().status, 200);
        }
    }
    let trims = |addr| async move { metric(addr, "pgsse_heap_trims_total").await };
    wait_for("a trim once the storm has calmed", || async { trims(trimmed.addr).await >= 1 }).await;
    assert_eq!(trims(kept.addr).await, 0, "--trim-heaps false: no trim");
}
