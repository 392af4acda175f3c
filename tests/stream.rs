//! End-to-end: real PostgreSQL, real HTTP, the gateway as `server::run` serves it.

mod common;

use common::{connect, Fixture, Gateway, SseStream, TestDb};
use serde_json::json;

#[tokio::test]
async fn insert_from_another_connection_arrives_with_stream_headers() {
    let Fixture { app, gw, .. } = Fixture::messages("").await;

    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    assert_eq!(stream.headers["content-type"], "text/event-stream");
    assert_eq!(stream.headers["cache-control"], "no-cache, no-transform");
    assert_eq!(stream.headers["x-accel-buffering"], "no");

    app.execute("INSERT INTO messages (body) VALUES ('hello from psql')", &[]).await.unwrap();
    let ev = stream.expect().await;
    assert_eq!(ev.event, "insert");
    assert_eq!(ev.json()["body"], "hello from psql");
    assert_eq!(ev.json()["id"], 1);
    assert!(stream.raw.starts_with(b"retry: 3000\n: pgsse\n\n"), "prelude first");
    assert!(ev.id() > 0);
}

#[tokio::test]
async fn streams_share_one_http2_connection_by_prior_knowledge() {
    let Fixture { app, gw, .. } = Fixture::messages("").await;

    let mut streams = SseStream::h2_streams(gw.addr, &["/messages/events"; 3]).await;
    app.execute("INSERT INTO messages (body) VALUES ('multiplexed')", &[]).await.unwrap();
    for stream in &mut streams {
        assert_eq!(stream.expect().await.json()["body"], "multiplexed");
    }
    let took = gw.shutdown().await;
    assert!(took < std::time::Duration::from_secs(3), "run returned after {took:?}");
    for stream in &mut streams {
        assert!(stream.next().await.is_none(), "shutdown ends every stream on the connection");
    }
}

#[tokio::test]
async fn an_http1_stream_is_raw_sse_after_its_head_and_frees_its_place_when_the_client_leaves() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Fixture { app, gw, .. } = Fixture::messages("").await;
    let streams_open = || common::metric(gw.addr, "pgsse_streams_open{channel=\"messages\"}");

    // An ordinary request first: the stream takes over a connection that hyper has already served on.
    let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    /// Reads until `raw` holds `end`.
    async fn read_until(conn: &mut tokio::net::TcpStream, raw: &mut Vec<u8>, end: &[u8]) {
        let mut buf = [0u8; 4096];
        while !raw.windows(end.len()).any(|w| w == end) {
            let n = tokio::time::timeout(common::TIMEOUT, conn.read(&mut buf)).await.unwrap().unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(raw));
            raw.extend_from_slice(&buf[..n]);
        }
    }
    let mut raw = Vec::new();
    let health_end = format!("\"version\":\"{}\"}}", env!("CARGO_PKG_VERSION"));
    read_until(&mut conn, &mut raw, health_end.as_bytes()).await;
    assert!(raw.starts_with(b"HTTP/1.1 200 OK\r\n"), "{}", String::from_utf8_lossy(&raw));

    raw.clear();
    conn.write_all(b"GET /messages/events HTTP/1.1\r\nhost: x\r\n\r\n").await.unwrap();
    read_until(&mut conn, &mut raw, b": pgsse\n\n").await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    // A body that the connection's close delimits: no length and no chunk framing, SSE bytes as they are.
    assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    assert!(!head.contains("transfer-encoding") && !head.contains("content-length"), "{head}");
    assert_eq!(body, "retry: 3000\n: pgsse\n\n");

    raw.clear();
    app.execute("INSERT INTO messages (body) VALUES ('raw')", &[]).await.unwrap();
    read_until(&mut conn, &mut raw, b"}\n\n").await;
    let event = String::from_utf8(raw).unwrap();
    assert!(event.starts_with("id: ") && event.contains("\nevent: insert\ndata: {"), "{event:?}");
    assert!(event.contains("\"body\": \"raw\""), "{event:?}");

    assert_eq!(streams_open().await, 1);
    drop(conn);
    common::wait_for("the stream's place is given back once its client has gone", || async {
        streams_open().await == 0
    })
    .await;
}

#[tokio::test]
async fn an_http1_stream_over_tls_is_written_through_it() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let TestDb { url, app, .. } = TestDb::messages("").await;
    let dir = std::env::temp_dir().join(format!("pgsse-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = common::self_signed(&dir);
    let mut config = common::gateway_config(&url);
    config.tls = Some(pgsse::tls::server_config(&cert, &key).unwrap());
    let gw = Gateway::spawn(config).await;

    // curl as the HTTP/1.1 client (ALPN http/1.1), printing the response head before the body.
    let mut curl = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--no-buffer", "--http1.1", "--dump-header", "-", "--cacert"])
        .arg(&cert)
        .arg(format!("https://{}/messages/events", gw.addr))
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("curl");
    let mut lines = BufReader::new(curl.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    let mut read_until = async |want: &str| {
        while !seen.last().is_some_and(|l: &String| l.contains(want)) {
            let line = tokio::time::timeout(common::TIMEOUT, lines.next_line()).await.unwrap().unwrap();
            seen.push(line.unwrap_or_else(|| panic!("curl stopped after {seen:?}")));
        }
        seen.clone()
    };
    let head = read_until(": pgsse").await;
    assert_eq!(head[0], "HTTP/1.0 200 OK", "{head:?}");
    app.execute("INSERT INTO messages (body) VALUES ('over tls')", &[]).await.unwrap();
    let all = read_until("over tls").await;
    assert!(all[all.len() - 2] == "event: insert" && all.last().unwrap().starts_with("data: {"), "{all:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn one_stream_carries_several_channels_in_id_order() {
    let TestDb { url, admin, .. } = TestDb::messages("").await;
    admin
        .batch_execute("SELECT pgsse.create_channel('alerts', true); SELECT pgsse.create_channel('other');")
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;

    let mut both = SseStream::ok(gw.addr, "/events?channel=messages&channel=alerts", &[]).await;
    let mut alerts = SseStream::ok(gw.addr, "/alerts/events", &[]).await;
    let publisher = common::connect(&common::as_role(&url, common::PUBLISHER_ROLE)).await;
    publisher
        .batch_execute(
            "INSERT INTO messages (body) VALUES ('m1');
         SELECT pgsse.publish('other', 'message', '{\"skip\": true}');
         SELECT pgsse.publish('alerts', 'message', '{\"level\": \"high\"}');
         INSERT INTO messages (body) VALUES ('m2');",
        )
        .await
        .unwrap();
    let got = both.take(3).await;
    let names = |events: &[common::Event]| events.iter().map(|e| e.event.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), ["messages/insert", "alerts/message", "messages/insert"], "each names its channel");
    assert_eq!(got[1].json(), json!({"level": "high"}));
    assert!(got.windows(2).all(|w| w[0].id() < w[1].id()), "ids strictly increase");
    let a = alerts.expect().await;
    assert_eq!((a.event.as_str(), a.id(), a.json()), ("message", got[1].id(), json!({"level": "high"})));

    // Replay names channels as live does; one channel through /events is a single-channel stream.
    let from = got[0].id().to_string();
    let mut resumed =
        SseStream::ok(gw.addr, "/events?channel=alerts&channel=messages", &[("last-event-id", &from)]).await;
    assert_eq!(names(&resumed.take(2).await), ["alerts/message", "messages/insert"]);
    let mut one = SseStream::ok(gw.addr, "/events?channel=alerts&channel=alerts", &[("last-event-id", &from)]).await;
    assert_eq!(names(&one.take(1).await), ["message"]);
    admin.batch_execute("SELECT pgsse.clear_channel('alerts')").await.unwrap();
    assert_eq!(names(&resumed.take(1).await), ["alerts/clear"]);
}

#[tokio::test]
async fn resume_replays_exactly_what_was_missed_then_goes_live() {
    let Fixture { app, gw, .. } = Fixture::messages("").await;

    let mut first = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    for i in 1..=3 {
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("b{i}")]).await.unwrap();
    }
    let seen = first.take(3).await;
    drop(first);
    for i in 4..=2600 {
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("b{i}")]).await.unwrap();
    }
    let last = seen[1].id().to_string();
    let mut resumed = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", &last)]).await;
    let replayed = resumed.take(2598).await;
    let bodies: Vec<String> = replayed.iter().map(|e| e.json()["body"].as_str().unwrap().to_string()).collect();
    let expected: Vec<String> = (3..=2600).map(|i| format!("b{i}")).collect();
    assert_eq!(bodies[..], expected[..], "every event after the resume point, once, in order");
    app.execute("INSERT INTO messages (body) VALUES ('live')", &[]).await.unwrap();
    assert_eq!(resumed.expect().await.json()["body"], "live");

    // The query parameter is the page's first-connect form; the header wins when both are present.
    let mut by_query =
        SseStream::ok(gw.addr, &format!("/messages/events?last_event_id={}", replayed[2596].id()), &[]).await;
    assert_eq!(by_query.expect().await.json()["body"], "b2600");
    let both = "/messages/events?last_event_id=0";
    let mut header_wins = SseStream::ok(gw.addr, both, &[("last-event-id", &replayed[2597].id().to_string())]).await;
    assert_eq!(header_wins.expect().await.json()["body"], "live");
}

#[tokio::test]
async fn transactions_committing_out_of_insert_order_lose_nothing_on_resume() {
    let Fixture { url, app, gw, .. } = Fixture::messages("").await;
    let mut slow_tx = connect(&url).await;

    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    let tx = slow_tx.transaction().await.unwrap();
    tx.execute("INSERT INTO messages (body) VALUES ('inserted first, commits last')", &[]).await.unwrap();
    app.execute("INSERT INTO messages (body) VALUES ('inserted second, commits first')", &[]).await.unwrap();
    let early = stream.expect().await;
    assert_eq!(early.json()["body"], "inserted second, commits first");
    drop(stream);

    tx.commit().await.unwrap();
    let mut resumed = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", &early.id().to_string())]).await;
    let late = resumed.expect().await;
    assert_eq!(late.json()["body"], "inserted first, commits last");
    assert!(late.id() > early.id(), "ids follow commit order, not insert order");
}

#[tokio::test]
async fn a_long_transaction_does_not_hold_back_others() {
    let Fixture { url, app, gw, .. } = Fixture::messages("").await;
    let mut long = connect(&url).await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;

    let tx = long.transaction().await.unwrap();
    tx.execute("INSERT INTO messages (body) VALUES ('long')", &[]).await.unwrap();
    for i in 0..5 {
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("short{i}")]).await.unwrap();
    }
    let got = stream.take(5).await;
    assert!(got.iter().all(|e| e.json()["body"].as_str().unwrap().starts_with("short")));
    tx.commit().await.unwrap();
    assert_eq!(stream.expect().await.json()["body"], "long");
}

#[tokio::test]
async fn a_one_megabyte_row_arrives_intact() {
    let Fixture { app, gw, .. } = Fixture::messages("").await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;

    let big: String = (0..1024 * 1024).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    app.execute("INSERT INTO messages (body) VALUES ($1)", &[&big]).await.unwrap();
    app.execute("INSERT INTO messages (body) VALUES ('after')", &[]).await.unwrap();
    let ev = stream.expect().await;
    assert_eq!(ev.json()["body"].as_str().unwrap(), big);
    assert_eq!(stream.expect().await.json()["body"], "after");
}

#[tokio::test]
async fn payload_text_cannot_forge_sse_fields() {
    let TestDb { url, admin, app } = TestDb::messages("").await;
    admin.batch_execute("SELECT pgsse.create_channel('raw')").await.unwrap();
    let gw = Gateway::start(&url).await;
    let mut stream = SseStream::ok(gw.addr, "/events?channel=messages&channel=raw", &[]).await;

    let evil = "x\n\nevent: evil\nid: 999999\ndata: y\r\rdata: z";
    app.execute("INSERT INTO messages (body) VALUES ($1)", &[&evil]).await.unwrap();
    // A JSON string payload whose text holds raw line breaks would be the dangerous case; jsonb escapes
    // them, and the encoder splits any that reach it. Both paths must yield one intact event.
    admin.execute("SELECT pgsse.publish('raw', 'message', to_jsonb($1::text))", &[&evil]).await.unwrap();
    let a = stream.expect().await;
    assert_eq!((a.event.as_str(), a.json()["body"].as_str().unwrap()), ("messages/insert", evil));
    let b = stream.expect().await;
    assert_eq!((b.event.as_str(), b.json().as_str().unwrap()), ("raw/message", evil));
    assert!(b.id() < 999999);

    let bad_event = admin.execute("SELECT pgsse.publish('raw', E'message\\nevent: evil', '{}')", &[]).await;
    assert!(bad_event.is_err(), "event names with line breaks are refused at the source");
}

#[tokio::test]
async fn update_and_delete_capture_with_custom_names_and_channel() {
    let TestDb { url, admin, app } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, status text);
         SELECT pgsse.publish_table('orders', channel => 'shop.orders', operations => ARRAY['insert','update','delete'],
                                    insert_event => 'created', update_event => 'changed', delete_event => 'removed');",
        )
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    let mut stream = SseStream::ok(gw.addr, "/shop.orders/events", &[]).await;
    app.batch_execute("INSERT INTO orders VALUES (1, 'new'); UPDATE orders SET status = 'paid'; DELETE FROM orders;")
        .await
        .unwrap();
    let got = stream.take(3).await;
    let seen: Vec<(String, String)> =
        got.iter().map(|e| (e.event.clone(), e.json()["status"].as_str().unwrap().to_string())).collect();
    assert_eq!(
        seen,
        [("created".into(), "new".into()), ("changed".into(), "paid".into()), ("removed".into(), "paid".into())]
    );

    admin
        .batch_execute("SELECT pgsse.unpublish_table('orders'); INSERT INTO orders VALUES (2, 'quiet');")
        .await
        .unwrap();
    let unknown = common::get(gw.addr, "/unknown.channel/events", &[]).await.unwrap();
    assert_eq!(unknown.status, 404);
    let count: i64 = admin
        .query_one("SELECT (SELECT count(*) FROM pgsse.events) + (SELECT count(*) FROM pgsse.staged)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 3, "unpublished table no longer captured");
}

#[tokio::test]
async fn pruned_or_unknown_resume_ids_get_a_reset_event() {
    let Fixture { admin, app, gw, .. } = Fixture::messages("").await;
    for i in 1..=5 {
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("b{i}")]).await.unwrap();
    }
    common::sequence_staged(&admin).await;
    let ids: Vec<i64> =
        admin.query("SELECT id FROM pgsse.events ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    admin.execute("DELETE FROM pgsse.events WHERE id <= $1", &[&ids[2]]).await.unwrap();
    admin.execute("UPDATE pgsse.meta SET pruned_through = $1", &[&ids[2]]).await.unwrap();

    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", &ids[0].to_string())]).await;
    let reset = stream.expect().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.json(), json!({"from": ids[2], "reason": "pruned"}));
    assert_eq!(reset.id(), ids[2]);
    let rest = stream.take(2).await;
    assert_eq!((rest[0].json()["body"].clone(), rest[1].json()["body"].clone()), (json!("b4"), json!("b5")));

    let mut ahead = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", "999999")]).await;
    let reset = ahead.expect().await;
    assert_eq!(reset.json(), json!({"from": ids[4], "reason": "unknown_id"}));
    app.execute("INSERT INTO messages (body) VALUES ('next')", &[]).await.unwrap();
    assert_eq!(ahead.expect().await.json()["body"], "next");
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let Fixture { gw, .. } = Fixture::messages("").await;
    type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], u16, &'a str);
    let cases: &[Case] = &[
        ("GET", "/", &[], 404, "not found"),
        ("GET", "/nope", &[], 404, "unknown channel"),
        ("GET", "/a/b/c", &[], 404, "not found"),
        ("GET", "/missing/events", &[], 404, "unknown channel"),
        ("GET", "/bad%20name/events", &[], 400, "invalid channel"),
        ("GET", "/events", &[], 400, "no channel"),
        ("GET", "/events?channel=messages&channel=..", &[], 400, "invalid channel"),
        ("GET", "/messages/events", &[("last-event-id", "abc")], 400, "invalid resume id"),
        ("GET", "/messages/events", &[("last-event-id", "-5")], 400, "invalid resume id"),
        ("GET", "/messages/events?last_event_id=1e9", &[], 400, "invalid resume id"),
        ("GET", "/messages/events?last_event_id=99999999999999999999999", &[], 400, "invalid resume id"),
        ("GET", "/messages/events?bogus=1", &[], 400, "invalid filter \"bogus\""),
        ("GET", "/messages/events?body=like.x", &[], 400, "unknown operator"),
        ("DELETE", "/messages/events", &[], 405, "not allowed"),
        ("POST", "/healthz", &[], 405, "not allowed"),
    ];
    for (method, path, headers, status, text) in cases {
        let resp = common::call(gw.addr, method, path, headers, bytes::Bytes::new()).await.unwrap();
        assert_eq!(resp.status, *status, "{method} {path}: {}", resp.body);
        assert_eq!(resp.headers["content-type"], "application/json", "{method} {path}");
        let msg = resp.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(text), "{method} {path}: {msg:?} should mention {text:?}");
    }
    let too_many: String = (0..40).map(|i| format!("channel=c{i}&")).collect();
    let resp = common::get(gw.addr, &format!("/events?{too_many}"), &[]).await.unwrap();
    assert_eq!(resp.status, 400);
    assert!(resp.json()["error"].as_str().unwrap().contains("too many channels"));
}
