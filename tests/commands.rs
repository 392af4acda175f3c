//! Commands over plain HTTP: POST (its id from the listener, committed never told to retry), GET history,
//! DELETE clear, CORS, the demo's wire shape, and bad input.

mod common;

use bytes::Bytes;
use common::{call, function_calls, get, track_functions, Fixture, Gateway, Response, SseStream, TestDb, JSON};
use serde_json::{json, Value};

async fn post(gw: &Gateway, path: &str, body: &str) -> Response {
    call(gw.addr, "POST", path, &[JSON], Bytes::from(body.to_string())).await.unwrap()
}

#[tokio::test]
async fn post_to_a_table_channel_inserts_the_row_and_the_trigger_broadcasts_it() {
    let Fixture { admin, gw, .. } = Fixture::messages(", writable => true").await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;

    let resp = post(&gw, "/messages", r#"{"body": "from http"}"#).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let row = resp.json();
    assert_eq!((row["id"].clone(), row["body"].clone()), (json!(1), json!("from http")));
    assert!(row["created_at"].is_string(), "the committed row, with its defaults: {row}");
    let event_id: i64 = resp.headers["pgsse-event-id"].parse().unwrap();

    let ev = stream.expect().await;
    assert_eq!((ev.id(), ev.event.as_str()), (event_id, "insert"));
    assert_eq!(ev.json(), row, "the event carries exactly the row the POST returned");
    let stored: i64 = admin.query_one("SELECT count(*) FROM messages", &[]).await.unwrap().get(0);
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn post_to_any_other_channel_publishes_an_event() {
    let url = common::fresh_db().await;
    let gw = Gateway::start(&url).await;
    let unknown = post(&gw, "/alerts", r#"{"level": "low"}"#).await;
    assert_eq!(unknown.status, 404, "POST creates no channel unless the gateway is told to: {}", unknown.body);
    assert!(unknown.error().contains("--post-creates-channels"));
    drop(gw);
    let gw = Gateway::start_configured(&url, |c| {
        c.commands.post_creates_channels = true;
    })
    .await;
    let first = post(&gw, "/alerts", r#"{"level": "low"}"#).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.json()["event"], "message", "default event name");

    let mut stream = SseStream::ok(gw.addr, "/alerts/events", &[]).await;
    let resp = post(&gw, "/alerts?event=alarm", r#"{"level": "high", "nested": {"a": [1, 2]}}"#).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let body = resp.json();
    assert_eq!(body["channel"], "alerts");
    assert_eq!(body["event"], "alarm");
    assert_eq!(body["data"], json!({"level": "high", "nested": {"a": [1, 2]}}));
    let ev = stream.expect().await;
    assert_eq!((ev.id(), ev.event.as_str(), ev.json()), (body["id"].as_i64().unwrap(), "alarm", body["data"].clone()));
}

/// A table takes writes through the gateway only when published `writable`, and then only its
/// `writable_columns` when given; a column named twice on a camel_case channel is refused, not guessed.
#[tokio::test]
async fn a_table_channel_takes_post_only_when_writable() {
    let TestDb { url, admin, .. } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE notes (id serial PRIMARY KEY, user_name text, body text, is_admin boolean DEFAULT false);
             SELECT pgsse.publish_table('notes', operations => array['update']);",
        )
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    let refused = post(&gw, "/notes", r#"{"body": "invisible"}"#).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.error().contains("writable => true"), "{}", refused.body);

    admin
        .batch_execute(
            "SELECT pgsse.publish_table('notes', camel_case => true, writable => true,
                                        writable_columns => array['user_name', 'body']);",
        )
        .await
        .unwrap();
    assert_eq!(post(&gw, "/notes", r#"{"userName": "ann", "body": "hi"}"#).await.status, 201);
    let escalate = post(&gw, "/notes", r#"{"body": "x", "isAdmin": true}"#).await;
    assert_eq!(escalate.status, 403, "{}", escalate.body);
    assert!(escalate.error().contains("is_admin"), "{}", escalate.body);
    let twice = post(&gw, "/notes", r#"{"userName": "a", "user_name": "b"}"#).await;
    assert_eq!(twice.status, 400, "{}", twice.body);
    assert!(twice.error().contains("user_name given twice"), "{}", twice.body);
    let rows: i64 = admin.query_one("SELECT count(*) FROM notes", &[]).await.unwrap().get(0);
    assert_eq!(rows, 1);

    // Two columns that camelCase to one name: events would carry one, snapshots and POST could use the other.
    admin.batch_execute(r#"CREATE TABLE docs (id int, owner_id int, "ownerId" int, note text)"#).await.unwrap();
    let err = admin.batch_execute("SELECT pgsse.publish_table('docs', camel_case => true)").await.unwrap_err();
    let err = err.as_db_error().unwrap().message().to_string();
    assert!(
        err.contains(r#"columns "ownerId" and owner_id of table public.docs would publish under one name"#),
        "{err}"
    );
    admin
        .batch_execute("SELECT pgsse.publish_table('docs', camel_case => true, exclude_columns => array['ownerId'])")
        .await
        .unwrap();
}

#[tokio::test]
async fn clear_is_off_unless_enabled_and_then_empties_the_channel() {
    let TestDb { url, admin, app } = TestDb::messages(", operations => array['insert', 'delete']").await;
    admin.batch_execute("SELECT pgsse.create_channel('board')").await.unwrap();
    let gw = Gateway::start(&url).await;
    app.batch_execute("INSERT INTO messages (body) VALUES ('a'), ('b')").await.unwrap();

    let refused = call(gw.addr, "DELETE", "/messages", &[], Bytes::new()).await.unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.error().contains("not enabled"));
    assert!(refused.error().contains("publish table public.messages again with allow_clear => true"));
    let refused = call(gw.addr, "DELETE", "/board", &[], Bytes::new()).await.unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.error().contains("SELECT pgsse.create_channel('board', true);"), "{}", refused.body);
    let unknown = call(gw.addr, "DELETE", "/nosuch", &[], Bytes::new()).await.unwrap();
    assert_eq!(unknown.status, 404, "{}", unknown.body);

    admin
        .batch_execute(
            "SELECT pgsse.publish_table('messages', operations => array['insert', 'delete'], allow_clear => true)",
        )
        .await
        .unwrap();
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    let cleared = call(gw.addr, "DELETE", "/messages", &[], Bytes::new()).await.unwrap();
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    let ev = stream.expect().await;
    assert_eq!(ev.event, "clear", "one clear event, no delete event per row");
    assert!(ev.json()["clearedAt"].is_string());
    assert_eq!(ev.id(), cleared.json()["id"].as_i64().unwrap());
    let rows: i64 = admin.query_one("SELECT count(*) FROM messages", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0);
    let history = get(gw.addr, "/messages", &[]).await.unwrap().json();
    assert_eq!(history.as_array().unwrap().len(), 1, "only the clear event is left: {history}");

    admin.batch_execute("SELECT pgsse.create_channel('board', true)").await.unwrap();
    let board = call(gw.addr, "DELETE", "/board", &[], Bytes::new()).await.unwrap();
    assert_eq!(board.status, 200, "create_channel's allow_clear enables it: {}", board.body);
}

#[tokio::test]
async fn bad_writes_get_clear_errors_write_nothing_and_the_gateway_keeps_serving() {
    let TestDb { url, admin, .. } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL CHECK (name <> ''), qty int DEFAULT 1);
         SELECT pgsse.publish_table('items', writable => true); SELECT pgsse.create_channel('other');",
        )
        .await
        .unwrap();
    let gw = Gateway::start_configured(&url, |c| {
        c.commands.body_limit = 1024;
    })
    .await;
    let mut stream = SseStream::ok(gw.addr, "/items/events", &[]).await;
    assert_eq!(post(&gw, "/items", r#"{"id": 1, "name": "first"}"#).await.status, 201);

    let big = format!(r#"{{"id": 9, "name": "{}"}}"#, "x".repeat(2000));
    let deep = format!("{}1{}", "[".repeat(500), "]".repeat(500));
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, u16, &'a str);
    let cases: Vec<Case> = vec![
        ("/items", vec![JSON], "not json".into(), 400, "not valid JSON"),
        ("/items", vec![JSON], "".into(), 400, "not valid JSON"),
        ("/items", vec![JSON], "[1, 2]".into(), 400, "JSON object"),
        ("/items", vec![JSON], "\"text\"".into(), 400, "JSON object"),
        ("/items", vec![JSON], deep, 400, "not valid JSON"),
        ("/items", vec![("content-type", "text/plain")], r#"{"id": 2, "name": "x"}"#.into(), 415, "application/json"),
        ("/items", vec![], r#"{"id": 2, "name": "x"}"#.into(), 415, "application/json"),
        ("/items", vec![JSON], big, 413, "larger than 1024"),
        (
            "/items",
            vec![JSON],
            r#"{"id": 2, "name": "x", "colour": "red", "size": 3}"#.into(),
            400,
            "unknown columns: colour, size",
        ),
        (
            "/items",
            vec![JSON],
            r#"{"id": "two", "name": "x"}"#.into(),
            400,
            "column \"id\": not a value of its type, integer",
        ),
        ("/items", vec![JSON], r#"{"id": 99999999999, "name": "x"}"#.into(), 400, "not a value of its type, integer"),
        ("/items", vec![JSON], r#"{"id": 2}"#.into(), 422, "\"name\" must not be null"),
        ("/items", vec![JSON], r#"{"id": 2, "name": ""}"#.into(), 422, "check constraint"),
        ("/items", vec![JSON], r#"{"id": 1, "name": "again"}"#.into(), 409, "already exists"),
        ("/items?event=x", vec![JSON], r#"{"id": 3, "name": "x"}"#.into(), 400, "event="),
        ("/other?event=bad%0Aname", vec![JSON], "{}".into(), 400, "invalid event name"),
        ("/bad%20channel", vec![JSON], "{}".into(), 400, "invalid channel"),
    ];
    for (path, headers, body, status, text) in &cases {
        let resp = call(gw.addr, "POST", path, headers, Bytes::from(body.clone())).await.unwrap();
        assert_eq!(resp.status, *status, "POST {path} {:.60}: {}", body, resp.body);
        let msg = resp.error();
        assert!(msg.contains(text), "POST {path} {:.60}: {msg:?} should mention {text:?}", body);
        // Constraint names are part of the answer (they say which rule failed); SQL and call sites are not.
        for internal in ["INSERT", "SELECT", "jsonb", "pgsse.", "PL/pgSQL", "relation"] {
            assert!(!msg.contains(internal), "{msg:?} leaks {internal:?}");
        }
    }
    let put = call(gw.addr, "PUT", "/items", &[JSON], Bytes::from("{}")).await.unwrap();
    assert_eq!(put.status, 405);

    let rows: i64 = admin.query_one("SELECT count(*) FROM items", &[]).await.unwrap().get(0);
    let events: i64 = admin.query_one("SELECT count(*) FROM pgsse.events", &[]).await.unwrap().get(0);
    assert_eq!((rows, events), (1, 1), "nothing half-written");
    assert_eq!(stream.expect().await.json()["name"], "first");
    assert_eq!(post(&gw, "/items", r#"{"id": 2, "name": "second"}"#).await.status, 201);
    assert_eq!(stream.expect().await.json()["name"], "second", "still serving");
}

#[tokio::test]
async fn the_demo_speaks_the_articles_wire_shape_and_serves_its_pages() {
    let TestDb { url, app, .. } = TestDb::new().await;
    pgsse::demo::install(&url).await.unwrap();
    let gw = Gateway::start_configured(&url, |c| {
        c.server.demo = true;
    })
    .await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;

    let resp = post(&gw, "/messages", r#"{"body": "Hello from SSE"}"#).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let row = resp.json();
    let keys: Vec<&String> = row.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["body", "createdAt", "id"], "{row}");
    let ev = stream.expect().await;
    assert_eq!((ev.event.as_str(), ev.json()), ("message", row));

    let cleared = call(gw.addr, "DELETE", "/messages", &[], Bytes::new()).await.unwrap();
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    let ev = stream.expect().await;
    assert_eq!(ev.event, "clear");
    assert!(ev.json()["clearedAt"].as_str().is_some_and(|t| t.starts_with("20")));
    // The app's own TRUNCATE reaches the page the same way.
    app.execute("TRUNCATE messages", &[]).await.unwrap();
    let ev = stream.expect().await;
    assert_eq!(ev.event, "clear");
    assert!(ev.json()["truncatedAt"].as_str().is_some_and(|t| t.starts_with("20")), "{}", ev.data);

    for (path, kind, text) in [
        ("/", "text/html", "import { live } from \"/pgsse.js\""),
        ("/send", "text/html", "fetch(\"/messages\""),
        ("/demo.css", "text/css", "--accent"),
    ] {
        let page = get(gw.addr, path, &[]).await.unwrap();
        assert_eq!(page.status, 200, "{path}");
        assert!(page.headers["content-type"].starts_with(kind), "{path}");
        assert!(page.body.contains(text), "{path}");
        assert!(!page.body.contains("http://") && !page.body.contains("https://"), "{path}: nothing from elsewhere");
    }
}

#[tokio::test]
async fn cors_allows_exactly_the_configured_origins() {
    let TestDb { url, .. } = TestDb::messages(", writable => true").await;
    let gw = Gateway::start_configured(&url, |c| {
        c.server.cors_origins = vec!["http://localhost:3000".into()];
    })
    .await;

    let preflight = [
        ("origin", "http://localhost:3000"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "content-type"),
    ];
    let resp = call(gw.addr, "OPTIONS", "/messages", &preflight, Bytes::new()).await.unwrap();
    assert_eq!(resp.status, 204);
    assert_eq!(resp.headers["access-control-allow-origin"], "http://localhost:3000");
    assert_eq!(resp.headers["access-control-allow-credentials"], "true");
    let allowed = resp.headers["access-control-allow-headers"].to_ascii_lowercase();
    assert!(["content-type", "last-event-id", "idempotency-key"].iter().all(|h| allowed.contains(h)), "{allowed}");
    assert!(resp.headers["access-control-allow-methods"].contains("POST"));

    let evil = call(gw.addr, "OPTIONS", "/messages", &[("origin", "http://evil.test")], Bytes::new()).await.unwrap();
    assert!(!evil.headers.keys().any(|k| k.starts_with("access-control-")), "{:?}", evil.headers);

    let stream = SseStream::ok(gw.addr, "/messages/events", &[("origin", "http://localhost:3000")]).await;
    assert_eq!(stream.headers["access-control-allow-origin"], "http://localhost:3000");
    let created = call(
        gw.addr,
        "POST",
        "/messages",
        &[JSON, ("origin", "http://localhost:3000")],
        Bytes::from(r#"{"body":"x"}"#),
    )
    .await
    .unwrap();
    assert_eq!(created.status, 201);
    assert_eq!(created.headers["access-control-allow-origin"], "http://localhost:3000");
    assert!(created.headers["access-control-expose-headers"].to_ascii_lowercase().contains("pgsse-event-id"));
    let _: Value = created.json();
}

/// A POST whose row committed never answers "try again", even while sequencing is held up: it answers 202
/// without the id, and the event follows once sequencing resumes.
#[tokio::test]
async fn a_committed_post_is_never_told_to_retry() {
    let TestDb { url, admin, .. } = TestDb::messages(", writable => true").await;
    let gw = Gateway::start_configured(&url, |c| {
        c.pool.db_timeout = std::time::Duration::from_secs(3);
    })
    .await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    let mut holder = common::connect(&url).await;
    let held = holder.transaction().await.unwrap();
    held.batch_execute("LOCK TABLE pgsse.commit_order IN EXCLUSIVE MODE").await.unwrap();
    let posted = call(gw.addr, "POST", "/messages", &[JSON], Bytes::from(r#"{"body": "while held"}"#)).await.unwrap();
    assert_eq!(posted.status, 202, "{}", posted.body);
    assert_eq!((posted.json()["committed"].clone(), posted.json()["id"].clone()), (json!(true), json!(null)));
    let rows: i64 = admin.query_one("SELECT count(*) FROM messages", &[]).await.unwrap().get(0);
    assert_eq!(rows, 1, "written once");
    held.rollback().await.unwrap();
    assert_eq!(stream.expect().await.json()["body"], "while held");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_learns_its_events_id_from_the_listener_without_a_query_of_its_own() {
    let TestDb { url, admin, .. } = TestDb::messages(", writable => true").await;
    // Counts each call of pgsse.sequenced: the lookup a write makes when it asks the database for its event.
    track_functions(&admin).await;
    let gw = Gateway::start(&url).await;
    const POSTS: i64 = 20;
    for n in 0..POSTS {
        let body = bytes::Bytes::from(format!("{{\"body\": \"post {n}\"}}"));
        let posted = call(gw.addr, "POST", "/messages", &[JSON], body);
        let posted = posted.await.unwrap();
        assert_eq!(posted.status, 201, "{}", posted.body);
        let id: i64 = posted.headers["pgsse-event-id"].parse().unwrap();
        let logged: String =
            admin.query_one("SELECT payload->>'body' FROM pgsse.events WHERE id = $1", &[&id]).await.unwrap().get(0);
        assert_eq!(logged, format!("post {n}"), "the id answered is the write's event");
    }
    let looked_up = function_calls(&admin, gw, &["sequenced"]).await;
    assert!(looked_up < POSTS / 2, "{looked_up} of {POSTS} writes asked the database for their event");
}

/// With sequencing held and more POSTs than pooled connections, a POST that committed waits its turn for
/// a connection after its write, and is still never told to retry: every answer but 503 wrote one row,
/// and every 503 none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_posts_queued_for_the_pool_are_never_told_to_retry() {
    let TestDb { url, admin, .. } = TestDb::messages(", writable => true").await;
    let gw = Gateway::start_configured(&url, |c| {
        c.pool.pool_size = 2;
        c.pool.db_timeout = std::time::Duration::from_secs(2);
    })
    .await;
    let mut holder = common::connect(&url).await;
    let held = holder.transaction().await.unwrap();
    held.batch_execute("LOCK TABLE pgsse.commit_order IN EXCLUSIVE MODE").await.unwrap();
    let posts = (0..8).map(|n| {
        let body = Bytes::from(format!(r#"{{"body": "post {n}"}}"#));
        tokio::spawn(async move { call(gw.addr, "POST", "/messages", &[JSON], body).await.unwrap() })
    });
    let mut answered = Vec::new();
    for post in posts.collect::<Vec<_>>() {
        answered.push(post.await.unwrap());
    }
    held.rollback().await.unwrap();
    for posted in &answered {
        assert!([202, 503].contains(&posted.status), "{} {}", posted.status, posted.body);
    }
    let committed = answered.iter().filter(|p| p.status == 202).count() as i64;
    let rows: i64 = admin.query_one("SELECT count(*) FROM messages", &[]).await.unwrap().get(0);
    assert_eq!(rows, committed, "a 503 wrote nothing, and every other answer said what was written");
}

/// A POST that the gateway answers 503 has written nothing: the server gives its statement up (a third of
/// --db-timeout) before the gateway gives up the connection, so a write held by another writer's lock does
/// not commit after its client was told to retry.
#[tokio::test]
async fn a_post_answered_503_has_written_nothing() {
    let TestDb { url, admin, app } = TestDb::messages(", writable => true").await;
    let gw = Gateway::start_configured(&url, |c| {
        c.pool.db_timeout = std::time::Duration::from_secs(3);
    })
    .await;
    let mut app = app;
    let holding = app.transaction().await.unwrap();
    holding.batch_execute("INSERT INTO messages (id, body) VALUES (1000, 'held')").await.unwrap();
    let body = Bytes::from(r#"{"id": 1000, "body": "posted"}"#);
    let posted = call(gw.addr, "POST", "/messages", &[JSON], body).await.unwrap();
    assert_eq!(posted.status, 503, "{}", posted.body);
    holding.rollback().await.unwrap();
    let rows: i64 = admin.query_one("SELECT count(*) FROM messages", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0, "the POST that was told to retry wrote nothing");
}

/// A POST sent again with its `Idempotency-Key` answers as the first did (status, event id, body) and
/// writes nothing, on another gateway, concurrently, or after a restart; the key with another request is 422.
#[tokio::test]
async fn an_idempotency_key_makes_a_retried_post_write_once() {
    let TestDb { url, admin, .. } = TestDb::messages(", writable => true").await;
    admin.batch_execute("SELECT pgsse.create_channel('alerts')").await.unwrap();
    let (gw, other) = (Gateway::start(&url).await, Gateway::start(&url).await);
    let keyed = [JSON, ("idempotency-key", "\"8e03978e-40d5-43e8-bc93-6894a57f9324\"")];
    let send = |addr, path: &'static str, body: &'static str| async move {
        call(addr, "POST", path, &keyed, Bytes::from(body)).await.unwrap()
    };
    let answer = |r: &Response| (r.status, r.headers.get("pgsse-event-id").cloned(), r.body.clone());
    let first = send(gw.addr, "/messages", r#"{"body": "once"}"#).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = send(other.addr, "/messages", r#"{"body": "once"}"#).await;
    assert_eq!(answer(&again), answer(&first), "another gateway answers as the first did");
    let together = futures_util::future::join_all((0..4).map(|_| send(gw.addr, "/messages", r#"{"body": "once"}"#)));
    for repeat in together.await {
        assert_eq!(answer(&repeat), answer(&first));
    }
    let rows: i64 = admin.query_one("SELECT count(*) FROM messages", &[]).await.unwrap().get(0);
    assert_eq!(rows, 1, "written once");
    let other_body = send(gw.addr, "/messages", r#"{"body": "twice"}"#).await;
    assert_eq!(other_body.status, 422, "{}", other_body.body);
    assert!(other_body.body.contains("Idempotency-Key was first sent with another request"), "{}", other_body.body);

    // Ad-hoc events too, and across a restart; the key is the same, the request another (its channel).
    let published = [JSON, ("idempotency-key", "alert-1")];
    let publish = || call(gw.addr, "POST", "/alerts?event=note", &published, Bytes::from(r#"{"n": 1}"#));
    let first = publish().await.unwrap();
    assert_eq!(first.status, 201, "{}", first.body);
    other.shutdown().await;
    let restarted = Gateway::start(&url).await;
    let again =
        call(restarted.addr, "POST", "/alerts?event=note", &published, Bytes::from(r#"{"n": 1}"#)).await.unwrap();
    assert_eq!(answer(&again), answer(&first));
    let events: i64 =
        admin.query_one("SELECT count(*) FROM pgsse.events WHERE channel = 'alerts'", &[]).await.unwrap().get(0);
    assert_eq!(events, 1);
    // A first request still being written (a session holding its key) is waited for a second, then 409.
    let mut holder = common::connect(&url).await;
    let holding = holder.transaction().await.unwrap();
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&"alerts", &"note", &json!({"n": 2}), &"", &"held", &"alerts\nnote\n{\"n\":2}"];
    holding.query("SELECT * FROM pgsse.publish_json_once($1, $2, $3, $4, $5, $6)", &params).await.unwrap();
    let in_flight = [JSON, ("idempotency-key", "held")];
    let conflict = call(gw.addr, "POST", "/alerts?event=note", &in_flight, Bytes::from(r#"{"n": 2}"#)).await.unwrap();
    assert_eq!(conflict.status, 409, "{}", conflict.body);
    holding.rollback().await.unwrap();
    let long = "x".repeat(256);
    for bad in ["", "\"\"", "with space", long.as_str()] {
        let refused =
            call(gw.addr, "POST", "/alerts", &[JSON, ("idempotency-key", bad)], Bytes::from("{}")).await.unwrap();
        assert_eq!(refused.status, 400, "{bad:?}: {}", refused.body);
    }
}
