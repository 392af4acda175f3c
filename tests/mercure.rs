//! The Mercure hub over real HTTP: a real Mercure publisher (Symfony's) on one gateway and subscribers on
//! another, private and public updates, resume by publisher id, hub id and `earliest`, and a table's rows
//! (inserted by psql) as updates. Refusals and 0.x are in `mercure_protocol.rs`.

mod common;

use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use common::mercure::*;
use common::{get, SseStream, TestDb};
use serde_json::{json, Value};

/// Whether Symfony's Mercure component can run here. Under CI its absence is a failure: `.ci/run`
/// installs it; elsewhere `cargo test` says what to install and goes on, as for the browser tests.
fn symfony_available() -> bool {
    const AUTOLOAD: &str = "/usr/share/php/Symfony/Component/Mercure/autoload.php";
    let php = std::process::Command::new("php").arg("--version").output().is_ok_and(|o| o.status.success());
    let found = php && std::path::Path::new(AUTOLOAD).exists();
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "the Symfony publisher test cannot run under CI: no php or {AUTOLOAD}"
        );
        eprintln!("SKIPPED Symfony publisher test: apt-get install php-cli php-symfony-mercure (.ci/run does)");
    }
    found
}

/// Publishes with Symfony's Mercure component, as a PHP application would; returns the id it was told.
async fn symfony_publish(
    addr: SocketAddr,
    token: &str,
    topic: &str,
    data: &str,
    private: bool,
    id: Option<&str>,
) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/mercure/publish.php");
    let url = format!("http://{addr}{HUB}");
    let visibility = if private { "private" } else { "public" };
    let mut args = vec![script, &url, token, topic, data, visibility];
    args.extend(id);
    let run = tokio::process::Command::new("php").args(&args).output();
    let out = tokio::time::timeout(common::TIMEOUT, run)
        .await
        .expect("php in time")
        .expect("php runs (apt-get install php-cli)");
    assert!(out.status.success(), "symfony/mercure failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn a_symfony_publisher_reaches_subscribers_on_another_gateway() {
    if !symfony_available() {
        return;
    }
    let TestDb { url, .. } = TestDb::new().await;
    let (a, b) =
        (gateway(&url, |m| m.mercure_anonymous = true).await, gateway(&url, |m| m.mercure_anonymous = true).await);
    let topic = "https://example.com/books/1";
    let path = format!("{HUB}?match={}", "https%3A%2F%2Fexample.com%2Fbooks%2F1");
    let mut anonymous = SseStream::ok(b.addr, &path, &[]).await;
    assert_eq!(anonymous.headers["content-type"], "text/event-stream");
    let reader =
        bearer(&token(&["subscribe"], json!([{"match": "https://example.com/books/:id", "match_type": "urlpattern"}])));
    let mut authorized = SseStream::ok(b.addr, &path, &[("authorization", &reader)]).await;

    let data = "data for\n\n        a book";
    assert_eq!(
        symfony_publish(a.addr, &everything(), topic, data, true, Some("urn:book:1:private")).await,
        "urn:book:1:private"
    );
    let public_id = symfony_publish(a.addr, &everything(), topic, data, false, None).await;
    assert!(public_id.starts_with('#'), "a hub-made id: {public_id}");

    let got = authorized.take(2).await;
    assert_eq!(got[0].id.as_deref(), Some("urn:book:1:private"));
    assert_eq!((got[0].event.as_str(), got[0].data.as_str()), ("message", data), "no event: line, data kept whole");
    assert_eq!(got[1].id.as_deref(), Some(public_id.as_str()));
    let got = anonymous.expect().await;
    assert_eq!(
        got.id.as_deref(),
        Some(public_id.as_str()),
        "the private update never reached the anonymous subscriber"
    );
}

/// Mercure's streams open as native ones do: with the gateway's `--retry`, then a comment.
#[tokio::test]
async fn streams_open_with_the_gateways_retry() {
    let TestDb { url, .. } = TestDb::new().await;
    let gw = gateway_configured(&url, |c| {
        c.mercure.mercure_anonymous = true;
        c.streams.retry = std::time::Duration::from_millis(1234);
    })
    .await;
    let mut s = SseStream::ok(gw.addr, &format!("{HUB}?match=t"), &[]).await;
    publish(gw.addr, &everything(), "topic=t&data=1").await;
    s.take(1).await;
    assert!(s.raw.starts_with(b"retry: 1234\n: pgsse\n\n"), "{:?}", String::from_utf8_lossy(&s.raw));
}

#[tokio::test]
async fn resumes_from_a_publisher_id_a_hub_id_and_earliest() {
    let TestDb { url, admin, .. } = TestDb::new().await;
    let gw = gateway(&url, |m| m.mercure_anonymous = true).await;
    let t = everything();
    assert_eq!(publish(gw.addr, &t, "topic=t&data=1&id=first").await.body, "first");
    let second = publish(gw.addr, &t, "topic=t&data=2").await.body;
    publish(gw.addr, &t, "topic=other&data=x").await;
    assert_eq!(publish(gw.addr, &t, "topic=t&data=3&id=third&type=book&retry=500").await.body, "third");

    let ids = |events: &[common::Event]| events.iter().map(|e| e.id.clone().unwrap()).collect::<Vec<_>>();
    let mut s = SseStream::ok(gw.addr, &format!("{HUB}?match=t&last_event_id=first"), &[]).await;
    assert_eq!(s.headers["mercure-last-event-id"], "first");
    let events = s.take(2).await;
    assert_eq!(ids(&events), [second.as_str(), "third"]);
    assert_eq!(events[1].event, "book");
    assert!(String::from_utf8_lossy(&s.raw).contains("retry: 500\nid: third\n"));

    let mut s = SseStream::ok(gw.addr, &format!("{HUB}?match=t"), &[("last-event-id", &second)]).await;
    assert_eq!(s.headers["mercure-last-event-id"], second);
    assert_eq!(ids(&s.take(1).await), ["third"]);

    let mut s = SseStream::ok(gw.addr, &format!("{HUB}?match=t&last_event_id=earliest"), &[]).await;
    assert_eq!(s.headers["mercure-last-event-id"], "earliest");
    assert_eq!(ids(&s.take(3).await), ["first", second.as_str(), "third"]);

    // An id the log does not hold: the specification's answer, `earliest`, and the stream holds every
    // update retention kept (the head's id, which may be an update this subscriber would not get, is not
    // told).
    let mut s = SseStream::ok(gw.addr, &format!("{HUB}?match=t&last_event_id=never-published"), &[]).await;
    assert_eq!(s.headers["mercure-last-event-id"], "earliest");
    assert_eq!(ids(&s.take(3).await), ["first", second.as_str(), "third"]);
    let fourth = publish(gw.addr, &t, "topic=t&data=4").await.body;
    assert_eq!(ids(&s.take(1).await), [fourth.as_str()]);
    // Another publisher reusing an id elsewhere, more times than a resume reads at once, moves nobody's place; a private update's id is confirmed to
    // no one it would not reach, nor is the update sent.
    let elsewhere = token(&["publish"], json!([{"match": "evil"}]));
    for _ in 0..40 {
        assert_eq!(publish(gw.addr, &elsewhere, "topic=evil&data=x&id=first").await.status, 200);
    }
    let s = SseStream::ok(gw.addr, &format!("{HUB}?match=t&last_event_id=first"), &[]).await;
    assert_eq!(s.headers["mercure-last-event-id"], "first");
    assert_eq!(publish(gw.addr, &t, "topic=t&data=p&id=secret-id&private=on").await.status, 200);
    let fifth = publish(gw.addr, &t, "topic=t&data=5").await.body;
    let mut s = SseStream::ok(gw.addr, &format!("{HUB}?match=t&last_event_id=secret-id"), &[]).await;
    assert_eq!(s.headers["mercure-last-event-id"], "earliest", "unknown to an anonymous subscriber");
    assert_eq!(ids(&s.take(5).await), ["first", second.as_str(), "third", fourth.as_str(), fifth.as_str()]);
    let s = SseStream::ok(gw.addr, &format!("{HUB}?match=t&last_event_id=%23999999"), &[]).await;
    assert_eq!(s.headers["mercure-last-event-id"], "earliest", "an id never issued");

    // Retention takes the update a publisher's id named: what followed it is still replayed.
    admin.batch_execute("UPDATE pgsse.meta SET min_age = '0'").await.unwrap();
    let pruned = admin.query_one("CALL pgsse.retain(now() + interval '1 hour', NULL, 1)", &[]).await.unwrap();
    assert_eq!(pruned.get::<_, i64>(0), 1, "the oldest update, `first`");
    let mut s = SseStream::ok(gw.addr, &format!("{HUB}?match=t&last_event_id=first"), &[]).await;
    assert_eq!(s.headers["mercure-last-event-id"], "earliest");
    assert_eq!(ids(&s.take(4).await), [second.as_str(), "third", fourth.as_str(), fifth.as_str()]);
}

#[tokio::test]
async fn a_tables_rows_are_updates_on_its_topic() {
    let db = TestDb::new().await;
    db.admin
        .batch_execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL, secret text);
             GRANT INSERT ON orders TO pgsse_test_writer; GRANT USAGE ON SEQUENCE orders_id_seq TO pgsse_test_writer;
             SELECT pgsse.publish_table('orders', exclude_columns => ARRAY['secret'],
                                        mercure_topic => 'https://shop.example/orders/{id}');
             CREATE TABLE news (id serial PRIMARY KEY, title text);
             GRANT INSERT ON news TO pgsse_test_writer; GRANT USAGE ON SEQUENCE news_id_seq TO pgsse_test_writer;
             SELECT pgsse.publish_table('news', mercure_topic => 'https://shop.example/news/{id}', mercure_public => true);",
        )
        .await
        .unwrap();
    let refused = db.admin.batch_execute("SELECT pgsse.publish_table('orders', exclude_columns => ARRAY['secret'], mercure_topic => 'https://shop.example/{secret}')").await;
    assert!(common::db_error(refused).contains("does not publish"), "a topic cannot name an unpublished column");
    let refused = db
        .admin
        .batch_execute("SELECT pgsse.publish_table('news', mercure_topic => 'https://shop.example/{+title}')")
        .await;
    assert!(common::db_error(refused).contains("{+...}"), "a row's values may not choose a topic's path");
    let refused = db
        .admin
        .batch_execute("SELECT pgsse.mercure_publish(ARRAY['https://x/.well-known/mercure/subscriptions/1'])")
        .await;
    assert!(common::db_error(refused).contains("own namespace"), "reserved from SQL as over HTTP");
    let gw = gateway(&db.url, |m| m.mercure_anonymous = true).await;
    let own = bearer(&token(&["subscribe"], json!([{"match": "https://shop.example/orders/1"}])));
    let pattern = "match_urlpattern=https%3A%2F%2Fshop.example%2F*";
    let mut mine = SseStream::ok(gw.addr, &format!("{HUB}?{pattern}"), &[("authorization", &own)]).await;
    let mut anonymous = SseStream::ok(gw.addr, &format!("{HUB}?{pattern}"), &[]).await;
    // A token that also carries pgsse's own grant: its row filter holds here as on a native stream.
    let grant = json!({"subscribe": ["orders", "news"], "filter": {"orders": "customer=eq.bob"}});
    let filtered = token_with(&["subscribe"], json!([{"match": "*"}]), in_an_hour(), Some(grant));
    let mut bobs = SseStream::ok(gw.addr, &format!("{HUB}?{pattern}"), &[("authorization", &bearer(&filtered))]).await;

    db.app.batch_execute("INSERT INTO orders (customer, secret) VALUES ('ann', 's1'), ('bob', 's2')").await.unwrap();
    // As anyone's writes reach a Mercure subscriber: psql itself, as the application's role.
    let writer = pgsse::testing::as_role(&db.url, pgsse::testing::WRITER_ROLE);
    let psql = std::process::Command::new("psql")
        .args([writer.as_str(), "-v", "ON_ERROR_STOP=1", "-c", "INSERT INTO news (title) VALUES ('open')"])
        .output()
        .expect("psql, PostgreSQL's client");
    assert!(psql.status.success(), "{}", String::from_utf8_lossy(&psql.stderr));
    let got = mine.take(2).await;
    assert_eq!((got[0].event.as_str(), got[0].json()), ("insert", json!({"id": 1, "customer": "ann"})));
    assert!(got[0].id.as_deref().unwrap().starts_with('#'));
    assert_eq!(got[1].json(), json!({"id": 1, "title": "open"}), "order 2 is outside this token's grant");
    assert_eq!(anonymous.expect().await.json(), json!({"id": 1, "title": "open"}), "rows are private unless public");
    let bob = bobs.take(2).await;
    assert_eq!(bob[0].json(), json!({"id": 2, "customer": "bob"}), "the grant's filter keeps ann's order out");
    assert_eq!(bob[1].json(), json!({"id": 1, "title": "open"}));
    let resumed =
        SseStream::ok(gw.addr, &format!("{HUB}?{pattern}&last_event_id=earliest"), &[("authorization", &own)])
            .await
            .take(2)
            .await;
    assert_eq!(resumed, got, "replayed as they were sent live");
}

#[tokio::test]
async fn a_subscription_ends_when_its_token_expires() {
    let TestDb { url, .. } = TestDb::new().await;
    let gw = gateway(&url, |_| {}).await;
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 2;
    let short = token_with(&["subscribe"], json!([{"match": "*"}]), exp, None);
    let mut s = SseStream::ok(gw.addr, &format!("{HUB}?match=t"), &[("authorization", &bearer(&short))]).await;
    assert_eq!(publish(gw.addr, &everything(), "topic=t&data=x&private=on").await.status, 200);
    assert_eq!(s.expect().await.data, "x");
    assert!(s.next().await.is_none(), "the hub ended the stream at exp");
}

/// A row that moves into a subscriber's view (its topic or its grant's filter) arrives as an insert, and
/// one that leaves as a delete of the row as it was, as on a native filtered stream; no old row reaches a
/// subscriber that may not see it.
#[tokio::test]
async fn a_row_that_moves_arrives_as_an_insert_and_leaves_as_a_delete() {
    let db = TestDb::new().await;
    db.admin
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, secret text);
             GRANT INSERT, UPDATE, SELECT ON orders TO pgsse_test_writer;
             SELECT pgsse.publish_table('orders', operations => ARRAY['insert', 'update', 'delete'], old_values => true,
                                        exclude_columns => ARRAY['secret'],
                                        mercure_topic => 'https://shop.example/customers/{customer}/orders/{id}');
             CREATE TABLE news (id serial PRIMARY KEY, title text);
             GRANT INSERT ON news TO pgsse_test_writer; GRANT USAGE ON SEQUENCE news_id_seq TO pgsse_test_writer;
             SELECT pgsse.publish_table('news', mercure_topic => 'https://shop.example/news/{id}');",
        )
        .await
        .unwrap();
    let gw = gateway(&db.url, |_| {}).await;
    let subscriber =
        |topics: Value, grant: Option<Value>| bearer(&token_with(&["subscribe"], topics, in_an_hour(), grant));
    let all = "match_urlpattern=https%3A%2F%2Fshop.example%2F*";
    let by_topic =
        subscriber(json!([{"match": "https://shop.example/customers/bob/orders/*", "match_type": "urlpattern"}]), None);
    let by_filter = subscriber(
        json!([{"match": "*"}]),
        Some(json!({"subscribe": ["orders"], "filter": {"orders": "customer=eq.bob"}})),
    );
    let mut topic_stream = SseStream::ok(gw.addr, &format!("{HUB}?{all}"), &[("authorization", &by_topic)]).await;
    let mut filter_stream = SseStream::ok(gw.addr, &format!("{HUB}?{all}"), &[("authorization", &by_filter)]).await;

    for sql in [
        "INSERT INTO orders VALUES (1, 'ann', 's')",
        "UPDATE orders SET customer = 'bob' WHERE id = 1",
        "UPDATE orders SET customer = 'carl' WHERE id = 1",
        "INSERT INTO news (title) VALUES ('end')",
    ] {
        db.app.batch_execute(sql).await.unwrap();
    }
    let came = (String::from("insert"), json!({"id": 1, "customer": "bob"}));
    let left = (String::from("delete"), json!({"id": 1, "customer": "bob"}));
    let shown =
        |events: Vec<common::Event>| events.into_iter().map(|e| (e.event.clone(), e.json())).collect::<Vec<_>>();
    assert_eq!(shown(topic_stream.take(2).await), [came.clone(), left.clone()], "by its topic's grant");
    assert_eq!(shown(filter_stream.take(2).await), [came, left], "by pgsse's grant filter");

    // The pgsse grant's own channels hold: news is not in it, so none of its rows pass.
    let resumed =
        SseStream::ok(gw.addr, &format!("{HUB}?{all}&last_event_id=earliest"), &[("authorization", &by_filter)])
            .await
            .take(2)
            .await;
    assert!(resumed.iter().all(|e| e.json()["customer"] == "bob"), "replayed as sent live: {resumed:?}");
    // A grant filter no row can match (an unpublished column) is refused, as on a native stream.
    let blind = subscriber(
        json!([{"match": "*"}]),
        Some(json!({"subscribe": ["orders"], "filter": {"orders": "secret=is.null"}})),
    );
    let r = get(gw.addr, &format!("{HUB}?{all}"), &[("authorization", &blind)]).await.unwrap();
    assert!(r.status >= 400 && r.error().contains("the grant must change"), "{} {}", r.status, r.body);
}

#[tokio::test]
async fn a_subscription_cannot_make_the_gateway_compile_much() {
    let TestDb { url, .. } = TestDb::new().await;
    let gw = gateway(&url, |m| m.mercure_anonymous = true).await;
    let started = std::time::Instant::now();
    let costly = "match_urlpattern=https://x/:a(%5Cw%7B100%7D)".to_string();
    let many = vec![costly.as_str(); 100].join("&");
    let r = get(gw.addr, &format!("{HUB}?{many}"), &[]).await.unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let r = get(gw.addr, &format!("{HUB}?{costly}"), &[]).await.unwrap();
    assert!(r.status == 400 && r.error().contains("URL pattern"), "{}", r.body);
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "refused without compiling megabytes");
    let seventeen = vec!["match_urlpattern=https%3A%2F%2Fx%2F%3Aa"; 17].join("&");
    let r = get(gw.addr, &format!("{HUB}?{seventeen}"), &[]).await.unwrap();
    assert!(r.status == 400 && r.error().contains("at most 16"), "{}", r.body);
}
