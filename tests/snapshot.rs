//! Streams that start with a table's current rows (`?snapshot=true`), then its changes after an exact seam.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Gateway, SseStream, TestDb};
use serde_json::{json, Value};

const ORDERS: &str = "CREATE TABLE orders (id serial PRIMARY KEY, user_id int NOT NULL, status text NOT NULL,
                                          amount int NOT NULL DEFAULT 0, secret text);
    SELECT pgsse.publish_table('orders', operations => ARRAY['insert', 'update', 'delete'],
                               exclude_columns => ARRAY['secret'], camel_case => true);";

async fn orders() -> TestDb {
    let db = TestDb::new().await;
    db.admin.batch_execute(ORDERS).await.unwrap();
    db
}

async fn head(db: &TestDb) -> i64 {
    db.admin.query_one("SELECT coalesce(max(id), 0) FROM pgsse.events", &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn snapshot_then_live_events_after_its_head() {
    let db = orders().await;
    for (user, status) in [(1, "open"), (2, "closed"), (1, "open"), (3, "open"), (1, "closed")] {
        db.app
            .execute("INSERT INTO orders (user_id, status, secret) VALUES ($1, $2, 'hidden')", &[&user, &status])
            .await
            .unwrap();
    }
    let gw = Gateway::start(&db.url).await;
    common::wait_sequenced(&db.admin).await;
    let h = head(&db).await;

    let mut s = SseStream::ok(gw.addr, "/orders/events?snapshot=true&status=eq.open&order=id.desc&limit=2", &[]).await;
    let rows = s.take(3).await;
    assert_eq!(rows[0], common::Event { id: None, event: "insert".into(), data: rows[0].data.clone() });
    assert_eq!(rows[0].json(), json!({"id": 4, "userId": 3, "status": "open", "amount": 0}), "projected, camelCased");
    assert_eq!((rows[1].id.as_deref(), rows[1].json()["id"].as_i64()), (None, Some(3)), "in the order asked");
    assert_eq!((rows[2].event.as_str(), rows[2].id()), ("snapshot-end", h));
    assert_eq!(rows[2].json(), json!({"rows": 2, "through": h}));

    db.app.execute("INSERT INTO orders (user_id, status) VALUES (9, 'closed'), (8, 'open')", &[]).await.unwrap();
    let live = s.expect().await;
    assert_eq!((live.event.as_str(), live.json()["userId"].as_i64()), ("insert", Some(8)), "filtered live too");
    assert!(live.id() > h);

    // Filters by the published (camelCased) names, the whole table without a limit, several at once.
    let mut s = SseStream::ok(gw.addr, "/orders/events?snapshot=true&userId=in.(1,9)&order=id", &[]).await;
    let ids: Vec<i64> = s.take(4).await.iter().map(|e| e.json()["id"].as_i64().unwrap_or(-1)).collect();
    assert_eq!(ids, [1, 3, 5, 6]);
    assert_eq!(s.expect().await.event, "snapshot-end");
}

#[tokio::test]
async fn refused_snapshots_name_their_cause() {
    let db = orders().await;
    db.admin.batch_execute("SELECT pgsse.create_channel('chat')").await.unwrap();
    db.app
        .execute("INSERT INTO orders (user_id, status) SELECT g, 'open' FROM generate_series(1, 5) g", &[])
        .await
        .unwrap();
    let gw = Gateway::start_configured(&db.url, |c| {
        c.streams.snapshot_max_rows = 4;
    })
    .await;
    for (query, status, text) in [
        ("/chat/events?snapshot=true", 400, "has no table"),
        ("/orders/events?snapshot=true&secret=eq.x", 400, "filter \"secret\" names no published column"),
        ("/orders/events?snapshot=true&user_id=eq.1", 400, "its columns: id, userId, status, amount"),
        ("/orders/events?snapshot=true&order=nope.desc", 400, "'nope' is not a published column"),
        (
            "/orders/events?snapshot=true&userId=eq.abc&limit=1",
            400,
            "filter on userId: 'abc' is not a value of its type, integer",
        ),
        ("/orders/events?snapshot=yes", 400, "snapshot=true or snapshot=false"),
        ("/orders/events?snapshot=true&order=id.up.down", 400, "column.asc or column.desc"),
        ("/orders/events?order=id", 400, "add snapshot=true"),
        ("/orders/events?snapshot=true&limit=5", 400, "from 1 to 4"),
        ("/orders/events?snapshot=true&limit=1&limit=2", 400, "limit is given more than once"),
        ("/orders/events?snapshot=true", 400, "more than 4 rows: add a limit"),
    ] {
        let resp = common::get(gw.addr, query, &[]).await.unwrap();
        assert_eq!(resp.status, status, "{query}: {}", resp.body);
        assert!(resp.json()["error"].as_str().unwrap().contains(text), "{query}: {}", resp.body);
    }
    // The refusals left no pooled connection in a failed transaction.
    let mut s = SseStream::ok(gw.addr, "/orders/events?snapshot=true&limit=4&order=id", &[]).await;
    assert_eq!(s.take(5).await[4].event, "snapshot-end");
}

#[tokio::test]
async fn last_event_id_wins_over_snapshot() {
    let db = orders().await;
    db.app.execute("INSERT INTO orders (user_id, status) VALUES (1, 'open'), (2, 'open')", &[]).await.unwrap();
    let gw = Gateway::start(&db.url).await;
    common::wait_sequenced(&db.admin).await;
    let h = head(&db).await;
    let mut s =
        SseStream::ok(gw.addr, "/orders/events?snapshot=true", &[("last-event-id", &(h - 1).to_string())]).await;
    let e = s.expect().await;
    assert_eq!((e.id(), e.json()["userId"].as_i64()), (h, Some(2)), "a resumed stream replays, no snapshot");
}

/// A transaction that committed before the snapshot but whose events were still staged (the sequencing
/// lock is held here) is in the snapshot's rows: its events, which come after the snapshot's head, are
/// not sent again.
#[tokio::test]
async fn snapshot_skips_transactions_it_already_holds() {
    let db = orders().await;
    let gw = Gateway::start(&db.url).await;
    let holder = common::connect(&db.url).await;
    holder.batch_execute("BEGIN; LOCK TABLE pgsse.commit_order IN EXCLUSIVE MODE").await.unwrap();
    db.app.execute("INSERT INTO orders (user_id, status) VALUES (1, 'staged')", &[]).await.unwrap();
    let h = head(&db).await;

    let mut s = SseStream::ok(gw.addr, "/orders/events?snapshot=true", &[]).await;
    let rows = s.take(2).await;
    assert_eq!(rows[0].json()["status"], "staged", "the snapshot holds the committed row");
    assert_eq!((rows[1].event.as_str(), rows[1].id()), ("snapshot-end", h));
    holder.batch_execute("COMMIT").await.unwrap();
    common::wait_sequenced(&db.admin).await;
    db.app.execute("INSERT INTO orders (user_id, status) VALUES (2, 'after')", &[]).await.unwrap();
    let next = s.expect().await;
    assert_eq!(next.json()["status"], "after", "the staged row's insert is not sent twice");
}

/// A snapshot query that cannot finish within --db-timeout (its table is locked) is refused with 503.
#[tokio::test]
async fn a_slow_snapshot_hits_its_timeout() {
    let db = orders().await;
    let gw = Gateway::start_configured(&db.url, |c| {
        c.pool.db_timeout = Duration::from_millis(500);
    })
    .await;
    let holder = common::connect(&db.url).await;
    holder.batch_execute("BEGIN; LOCK TABLE orders IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let resp = common::get(gw.addr, "/orders/events?snapshot=true", &[]).await.unwrap();
    assert_eq!(resp.status, 503, "{}", resp.body);
    assert!(resp.json()["error"].as_str().unwrap().contains("--db-timeout"), "{}", resp.body);
    holder.batch_execute("ROLLBACK").await.unwrap();
    let mut s = SseStream::ok(gw.addr, "/orders/events?snapshot=true", &[]).await;
    assert_eq!(s.expect().await.event, "snapshot-end", "the pool recovered");
}

/// What a client rebuilds from a snapshot and the events after it: rows by id.
#[derive(Default)]
struct Replica {
    rows: BTreeMap<i64, Value>,
    ended: bool,
}

impl Replica {
    /// Applies one event; an insert of a row the replica already holds is a duplicate and fails the test.
    fn apply(&mut self, e: &common::Event, who: &str) {
        let row = e.json();
        let id = row["id"].as_i64().unwrap_or_default();
        match e.event.as_str() {
            "snapshot-end" => self.ended = true,
            "insert" => assert!(self.rows.insert(id, row).is_none(), "{who}: row {id} inserted twice"),
            "update" => {
                self.rows.insert(id, row);
            }
            "delete" => {
                self.rows.remove(&id);
            }
            other => panic!("{who}: unexpected event {other}"),
        }
    }
}

/// 20 clients snapshot and follow while writers insert, update (moving rows in and out of a filter) and
/// delete: each ends with exactly the table (or its filtered part), and never sees a row inserted twice.
#[tokio::test]
async fn snapshot_and_follow_under_concurrent_writes() {
    let db = orders().await;
    db.app
        .execute("INSERT INTO orders (user_id, status) SELECT g % 4, 'open' FROM generate_series(1, 50) g", &[])
        .await
        .unwrap();
    let gw = Gateway::start(&db.url).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..3 {
        let (client, stop) = (common::writer(&db.url).await, stop.clone());
        writers.push(tokio::spawn(async move {
            let mut n = 0i32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let sql = match n % 3 {
                    0 => "INSERT INTO orders (user_id, status) VALUES ($1 % 4, 'open')",
                    1 => {
                        "UPDATE orders SET amount = amount + 1, status = CASE status WHEN 'open' THEN 'closed' ELSE 'open' END \
                         WHERE id = (SELECT max(id) FROM orders) - $1 % 7"
                    }
                    _ => "DELETE FROM orders WHERE id = (SELECT min(id) FROM orders) + $1 % 5",
                };
                client.execute(sql, &[&(n + w)]).await.unwrap();
            }
        }));
    }
    let mut clients = Vec::new();
    for c in 0..20 {
        let path = match c % 3 {
            0 => "/orders/events?snapshot=true",
            1 => "/orders/events?snapshot=true&userId=eq.1",
            _ => "/orders/events?snapshot=true&status=eq.open",
        };
        let mut s = SseStream::ok(gw.addr, path, &[]).await;
        let mut replica = Replica::default();
        while !replica.ended {
            replica.apply(&s.expect().await, &format!("client {c}"));
        }
        clients.push((c, s, replica));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    // A last row on every client's view marks the end of the changes.
    let last: i32 = db
        .app
        .query_one("INSERT INTO orders (user_id, status) VALUES (1, 'open') RETURNING id", &[])
        .await
        .unwrap()
        .get(0);
    for (c, s, replica) in &mut clients {
        while !replica.rows.contains_key(&i64::from(last)) {
            replica.apply(&s.expect().await, &format!("client {c}"));
        }
        let filter = ["", "WHERE user_id = 1", "WHERE status = 'open'"][*c % 3];
        let table: BTreeMap<i64, Value> = db
            .admin
            .query(&format!("SELECT id, jsonb_build_object('id', id, 'userId', user_id, 'status', status, 'amount', amount) FROM orders {filter}"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| (i64::from(r.get::<_, i32>(0)), r.get(1)))
            .collect();
        assert_eq!(replica.rows, table, "client {c} rebuilt the table");
    }
}

/// The client module is served in every mode, with its types beside it.
#[tokio::test]
async fn the_client_module_is_served() {
    let db = orders().await;
    let gw = Gateway::start(&db.url).await;
    for (path, content_type, text) in [
        ("/pgsse.js", "text/javascript; charset=utf-8", "export function live(url, options)"),
        ("/pgsse.d.ts", "application/typescript; charset=utf-8", "export declare function live<"),
    ] {
        let resp = common::get(gw.addr, path, &[]).await.unwrap();
        assert_eq!((resp.status, resp.headers["content-type"].as_str()), (200, content_type), "{path}");
        assert!(resp.body.contains(text), "{path}");
    }
}

/// 200 identical snapshot requests at once share a handful of queries, and each gets the whole snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identical_snapshots_arriving_together_share_queries() {
    let db = orders().await;
    db.app
        .execute("INSERT INTO orders (user_id, status) SELECT g, 'open' FROM generate_series(1, 80) g", &[])
        .await
        .unwrap();
    let mut config = common::gateway_config(&db.url);
    (config.limits.max_streams_per_client, config.limits.max_connections_per_client) = (1000, 1000);
    let gw = Gateway::start_with(config).await;
    let path = "/orders/events?snapshot=true&order=id.desc&limit=50";
    let clients: Vec<_> = (0..200)
        .map(|_| {
            tokio::spawn(async move {
                let mut s = SseStream::ok(gw.addr, path, &[]).await;
                s.take(51).await.iter().map(|e| e.json()["id"].as_i64().unwrap_or(-1)).collect::<Vec<_>>()
            })
        })
        .collect();
    let want: Vec<i64> = (31..=80).rev().chain([-1]).collect();
    for client in clients {
        assert_eq!(client.await.unwrap(), want, "the 50 newest, then snapshot-end");
    }
    assert_eq!(common::metric(gw.addr, "pgsse_snapshots_total").await, 200);
    let queries = common::metric(gw.addr, "pgsse_snapshot_queries_total").await;
    assert!((1..=10).contains(&queries), "{queries} snapshot queries for 200 identical requests");
}

/// Several channels: each table's rows in turn (by its insert event), one `snapshot-end`; a client that
/// drops mid-snapshot and reconnects with the same URL gets the whole snapshot again.
#[tokio::test]
async fn several_channels_and_a_reconnect_mid_snapshot() {
    let db = orders().await;
    db.admin
        .batch_execute(
            "CREATE TABLE notes (id int PRIMARY KEY, body text);
             SELECT pgsse.publish_table('notes', insert_event => 'note');",
        )
        .await
        .unwrap();
    db.app
        .execute("INSERT INTO orders (user_id, status) SELECT g, 'open' FROM generate_series(1, 3) g", &[])
        .await
        .unwrap();
    db.app.execute("INSERT INTO notes VALUES (1, 'x'), (2, 'y')", &[]).await.unwrap();
    let gw = Gateway::start(&db.url).await;
    let path = "/events?channel=orders&channel=notes&snapshot=true&order=id";
    let names = |events: Vec<common::Event>| events.iter().map(|e| e.event.clone()).collect::<Vec<_>>();
    let mut first = SseStream::ok(gw.addr, path, &[]).await;
    assert_eq!(names(first.take(2).await), ["notes/note", "notes/note"], "channels in name order, each named");
    drop(first);
    let mut again = SseStream::ok(gw.addr, path, &[]).await;
    let all = ["notes/note", "notes/note", "orders/insert", "orders/insert", "orders/insert", "snapshot-end"];
    assert_eq!(names(again.take(6).await), all);
    db.app.execute("INSERT INTO notes VALUES (3, 'z')", &[]).await.unwrap();
    assert_eq!(names(again.take(1).await), ["notes/note"]);
}
