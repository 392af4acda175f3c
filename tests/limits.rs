//! Limits over real HTTP: streams per client and in total (X-Forwarded-For only from trusted proxies),
//! URL length, and a connection that never finishes its headers.

mod common;

use common::{get, wait_for, Gateway, SseStream, TestDb, TIMEOUT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn streams_are_limited_per_client_and_in_total() {
    let TestDb { url, .. } = TestDb::messages("").await;
    let gw = Gateway::start_configured(&url, |c| {
        c.limits.max_streams = 3;
        c.limits.max_streams_per_client = 2;
        c.limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];

    let a1 = SseStream::ok(gw.addr, "/messages/events", &from("203.0.113.1")).await;
    let _a2 = SseStream::ok(gw.addr, "/messages/events", &from("198.51.100.9, 203.0.113.1")).await;
    let refused = get(gw.addr, "/messages/events", &from("203.0.113.1")).await.unwrap();
    assert_eq!(refused.status, 429, "{}", refused.body);
    assert_eq!(refused.headers["retry-after"], "5");
    assert!(refused.json()["error"].as_str().unwrap().contains("from this client"));

    let _b1 = SseStream::ok(gw.addr, "/messages/events", &from("203.0.113.2")).await;
    let full = get(gw.addr, "/messages/events", &from("203.0.113.3")).await.unwrap();
    assert_eq!(full.status, 429);
    assert!(full.json()["error"].as_str().unwrap().contains("on this gateway"));

    drop(a1);
    wait_for("a closed stream gives its place back", || async {
        get(gw.addr, "/healthz", &[]).await.is_ok()
            && SseStream::open(gw.addr, "/messages/events", &from("203.0.113.3")).await.status == 200
    })
    .await;
}

#[tokio::test]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let TestDb { url, .. } = TestDb::messages("").await;
    let gw = Gateway::start_configured(&url, |c| {
        c.limits.max_streams_per_client = 1;
    })
    .await;
    let _one = SseStream::ok(gw.addr, "/messages/events", &[("x-forwarded-for", "203.0.113.1")]).await;
    let claimed = get(gw.addr, "/messages/events", &[("x-forwarded-for", "203.0.113.2")]).await.unwrap();
    assert_eq!(claimed.status, 429, "both count as 127.0.0.1");
}

#[tokio::test]
async fn long_urls_and_slow_headers_are_refused() {
    let TestDb { url, .. } = TestDb::new().await;
    let gw = Gateway::start_configured(&url, |c| {
        c.server.max_url_length = 256;
        c.server.header_read_timeout = std::time::Duration::from_millis(500);
    })
    .await;
    let long = format!("/events?channel={}", "a".repeat(300));
    let resp = get(gw.addr, &long, &[]).await.unwrap();
    assert_eq!(resp.status, 414);
    assert!(resp.json()["error"].as_str().unwrap().contains("longer than 256"));

    for (what, first_bytes) in [
        ("never finished its headers", &b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Dribble: "[..]),
        ("sent nothing at all", b""),
        ("stalled inside the HTTP/2 preface", b"PRI * HTTP/2.0\r\n"),
    ] {
        let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        slow.write_all(first_bytes).await.unwrap();
        let mut buf = Vec::new();
        let closed = tokio::time::timeout(TIMEOUT, slow.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "the server closed a connection that {what}");
    }
    assert_eq!(get(gw.addr, "/healthz", &[]).await.unwrap().status, 200, "and keeps serving");
}
