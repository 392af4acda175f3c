//! Row filters on streams: live and replayed events alike, combined with AND, malformed ones refused.

mod common;

use common::{Gateway, SseStream, TestDb};

#[tokio::test]
async fn filters_select_rows_live_and_on_replay() {
    let TestDb { url, admin, app } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, user_id int, status text, amount numeric, meta jsonb);
         SELECT pgsse.publish_table('orders');",
        )
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    let insert =
        "INSERT INTO orders (user_id, status, amount, meta) VALUES ($1, $2, $3::text::numeric, $4::text::jsonb)";
    let rows: [(i32, &str, &str, &str); 4] = [
        (42, "new", "100", r#"{"region": "eu"}"#),
        (7, "paid", "500", r#"{"region": "eu"}"#),
        (42, "paid", "250", r#"{"region": "us"}"#),
        (42, "void", "999", r#"{"region": "eu"}"#),
    ];
    let first: i64 = admin.query_one("SELECT coalesce(max(id), 0) FROM pgsse.events", &[]).await.unwrap().get(0);
    let path = "/orders/events?user_id=eq.42&status=in.(new,paid)&amount=gte.100&meta.region=eq.eu";
    let mut live = SseStream::ok(gw.addr, path, &[]).await;
    for (user, status, amount, meta) in rows {
        app.execute(insert, &[&user, &status, &amount, &meta]).await.unwrap();
    }
    app.execute(insert, &[&42, &"paid", &"300", &r#"{"region": "eu"}"#]).await.unwrap();
    let got: Vec<(i64, String)> = live
        .take(2)
        .await
        .iter()
        .map(|e| (e.json()["amount"].as_f64().unwrap() as i64, e.json()["status"].as_str().unwrap().into()))
        .collect();
    assert_eq!(got, [(100, "new".to_string()), (300, "paid".to_string())], "only matching rows, in order");

    let mut replayed = SseStream::ok(gw.addr, &format!("{path}&last_event_id={first}"), &[]).await;
    let again: Vec<i64> = replayed.take(2).await.iter().map(|e| e.json()["amount"].as_f64().unwrap() as i64).collect();
    assert_eq!(again, [100, 300], "replay applies the same filter");
    app.execute(insert, &[&7, &"new", &"100", &r#"{"region": "eu"}"#]).await.unwrap();
    app.execute(insert, &[&42, &"new", &"150", &r#"{"region": "eu"}"#]).await.unwrap();
    assert_eq!(replayed.expect().await.json()["amount"].as_f64(), Some(150.0), "and so does the live part after it");

    for (query, text) in [
        ("user_id=42", "operator.value"),
        ("status=in.new", "list"),
        ("a..b=eq.1", "dots"),
        ("usr_id=eq.42", "filter \"usr_id\" names no published column of channel \"orders\" (its columns: id, user_id"),
        ("meta.region=eq.eu&nope.x=eq.1", "filter \"nope\" names no published column"),
    ] {
        let resp = common::get(gw.addr, &format!("/orders/events?{query}"), &[]).await.unwrap();
        assert_eq!(resp.status, 400, "{query}");
        assert!(resp.json()["error"].as_str().unwrap().contains(text), "{query}: {}", resp.body);
    }
    // A channel without a table carries free-form events: any key may be filtered on.
    admin.batch_execute("SELECT pgsse.create_channel('chat')").await.unwrap();
    SseStream::ok(gw.addr, "/chat/events?anything=eq.1", &[]).await;
}

/// An update that takes a row out of a stream's filter arrives as the channel's delete event with the old
/// row; one that brings a row in, as its insert event; live, on replay and in history alike. What empties
/// the channel (a TRUNCATE, a clear) reaches every filtered stream.
#[tokio::test]
async fn rows_moving_across_a_filter_arrive_as_inserts_and_deletes() {
    let TestDb { url, admin, app } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, status text, note text, secret text);
             SELECT pgsse.publish_table('orders', operations => ARRAY['insert', 'update', 'delete'],
                                        exclude_columns => ARRAY['secret'], delete_event => 'gone',
                                        truncate_event => 'emptied', allow_clear => true);",
        )
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    let first: i64 = admin.query_one("SELECT coalesce(max(id), 0) FROM pgsse.events", &[]).await.unwrap().get(0);
    let mut live = SseStream::ok(gw.addr, "/orders/events?status=eq.open", &[]).await;
    for sql in [
        "INSERT INTO orders VALUES (1, 'open', 'a', 's'), (2, 'closed', 'a', 's')",
        "UPDATE orders SET status = 'open' WHERE id = 2",
        "UPDATE orders SET status = 'closed', secret = 't' WHERE id = 1",
        "UPDATE orders SET note = 'b' WHERE id = 2",
        "UPDATE orders SET status = 'void' WHERE id = 1",
        "DELETE FROM orders WHERE id = 2",
        "TRUNCATE orders",
    ] {
        app.batch_execute(sql).await.unwrap();
    }
    let want = [
        ("insert", r#"{"id": 1, "status": "open", "note": "a"}"#),
        ("insert", r#"{"id": 2, "status": "open", "note": "a"}"#),
        ("gone", r#"{"id": 1, "status": "open", "note": "a"}"#),
        ("update", r#"{"id": 2, "status": "open", "note": "b"}"#),
        ("gone", r#"{"id": 2, "status": "open", "note": "b"}"#),
        ("emptied", r#"{}"#),
    ];
    let got = |events: Vec<common::Event>| -> Vec<(String, serde_json::Value)> {
        events.into_iter().map(|e| (e.event.clone(), e.json())).collect()
    };
    let want: Vec<(String, serde_json::Value)> =
        want.iter().map(|(e, d)| (e.to_string(), serde_json::from_str(d).unwrap())).collect();
    // A truncate's data says when; only its name matters here.
    let got = |events: Vec<common::Event>| -> Vec<(String, serde_json::Value)> {
        let mut got = got(events);
        got.iter_mut().filter(|(e, _)| e == "emptied").for_each(|(_, d)| *d = serde_json::json!({}));
        got
    };
    assert_eq!(got(live.take(6).await), want, "live");
    let mut replayed =
        SseStream::ok(gw.addr, &format!("/orders/events?status=eq.open&last_event_id={first}"), &[]).await;
    assert_eq!(got(replayed.take(6).await), want, "replayed");
    let history = common::get(gw.addr, "/orders?status=eq.open", &[]).await.unwrap();
    let mut listed: Vec<(String, serde_json::Value)> = history
        .json()
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .map(|e| (e["event"].as_str().unwrap().to_string(), e["data"].clone()))
        .collect();
    listed.iter_mut().filter(|(e, _)| e == "emptied").for_each(|(_, d)| *d = serde_json::json!({}));
    assert_eq!(listed, want, "history shows what the stream shows");
    common::call(gw.addr, "DELETE", "/orders", &[], bytes::Bytes::new()).await.unwrap();
    assert_eq!(live.expect().await.event, "clear", "a clear reaches a filtered stream");

    // What reaches every stream is what pgsse's clear and truncate staged, never a name: a table's row
    // events may not pass for them.
    for args in ["insert_event => 'clear'", "insert_event => 'created', truncate_event => 'created'"] {
        let err = admin.batch_execute(&format!("SELECT pgsse.publish_table('orders', {args})")).await.unwrap_err();
        assert!(err.as_db_error().unwrap().message().contains("are not four distinct names"), "{args}: {err:?}");
    }
}

/// With `old_values`, filters test the rows, not the `{"new", "old"}` envelope: an owner's own edit is an
/// update, a row handed to them an insert without its old image, a row taken away a delete.
#[tokio::test]
async fn filters_test_the_rows_of_old_values_updates_and_the_old_image_goes_only_where_it_matched() {
    let TestDb { url, admin, app } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE docs (id int PRIMARY KEY, owner int, body text);
             SELECT pgsse.publish_table('docs', operations => ARRAY['insert', 'update', 'delete'], old_values => true);",
        )
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    let mut mine = SseStream::ok(gw.addr, "/docs/events?owner=eq.1", &[]).await;
    for sql in [
        "INSERT INTO docs VALUES (1, 1, 'mine'), (2, 2, 'tenant 2 private text')",
        "UPDATE docs SET body = 'mine, edited' WHERE id = 1",
        "UPDATE docs SET owner = 1, body = 'handed over' WHERE id = 2",
        "UPDATE docs SET owner = 2 WHERE id = 1",
    ] {
        app.batch_execute(sql).await.unwrap();
    }
    let events: Vec<(String, serde_json::Value)> =
        mine.take(4).await.into_iter().map(|e| (e.event.clone(), e.json())).collect();
    let want = [
        ("insert", serde_json::json!({"id": 1, "owner": 1, "body": "mine"})),
        (
            "update",
            serde_json::json!({"new": {"id": 1, "owner": 1, "body": "mine, edited"},
                                       "old": {"id": 1, "owner": 1, "body": "mine"}}),
        ),
        ("insert", serde_json::json!({"id": 2, "owner": 1, "body": "handed over"})),
        ("delete", serde_json::json!({"id": 1, "owner": 1, "body": "mine, edited"})),
    ];
    let want: Vec<(String, serde_json::Value)> = want.into_iter().map(|(e, d)| (e.to_string(), d)).collect();
    assert_eq!(events, want);
    let history = common::get(gw.addr, "/docs?owner=eq.1", &[]).await.unwrap();
    assert!(!history.body.contains("tenant 2 private text"), "{}", history.body);
    assert_eq!(history.json().as_array().unwrap().len(), 4, "{}", history.body);
}

/// A filtered history page holds up to `limit` matching events, and its `Link` pages through them all,
/// however few of the log's events match.
#[tokio::test]
async fn filtered_history_fills_its_pages_and_links_to_the_next() {
    let TestDb { url, admin, app } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE customers (id int PRIMARY KEY, country text);
             SELECT pgsse.publish_table('customers');",
        )
        .await
        .unwrap();
    app.batch_execute(
        "INSERT INTO customers SELECT g, CASE WHEN g % 5000 = 0 THEN 'NZ' ELSE 'AU' END FROM generate_series(1, 25000) g",
    )
    .await
    .unwrap();
    let gw = Gateway::start(&url).await;
    let mut path = "/customers?limit=2&country=eq.NZ".to_string();
    let mut ids = Vec::new();
    let mut pages = 0;
    loop {
        let page = common::get(gw.addr, &path, &[]).await.unwrap();
        assert_eq!(page.status, 200, "{}", page.body);
        ids.extend(page.json().as_array().unwrap().iter().map(|e| e["data"]["id"].as_i64().unwrap()));
        pages += 1;
        let Some(link) = page.headers.get("link") else { break };
        let next = link.strip_prefix('<').and_then(|l| l.split_once(">; rel=\"next\"")).unwrap().0;
        assert!(next.contains("country=eq.NZ") && next.contains("limit=2"), "{next}");
        path = next.to_string();
        assert!(pages < 10, "paging ends");
    }
    assert_eq!(ids, [25000, 20000, 15000, 10000, 5000]);
    let first = common::get(gw.addr, "/customers?limit=1&country=eq.NZ", &[]).await.unwrap();
    assert_eq!(first.json()[0]["data"]["id"], 25000, "limit applies to matching events");
}

/// A history page is bounded by what its rows weigh, old rows included: an update that shrank a large row
/// carries the large row beside its small payload.
#[tokio::test]
async fn history_pages_count_the_old_rows_of_updates() {
    let TestDb { url, admin, app } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE notes (id int PRIMARY KEY, body text);
             SELECT pgsse.publish_table('notes', operations => ARRAY['insert', 'update']);",
        )
        .await
        .unwrap();
    app.batch_execute(
        "INSERT INTO notes SELECT g, repeat(md5(g::text), 6400) FROM generate_series(1, 3) g;
         UPDATE notes SET body = 'x';",
    )
    .await
    .unwrap();
    let gw = Gateway::start(&url).await;
    let page = common::get(gw.addr, "/notes?limit=10", &[]).await.unwrap();
    let events: Vec<String> =
        page.json().as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap().to_string()).collect();
    assert_eq!(events, ["update", "update"], "200 KB old rows each: two fill the 256 KB page");
    assert!(page.headers.contains_key("link"), "and the next page is linked");
}

/// One meaning for a filter: over rows of many column types, each filter selects the same rows in a
/// snapshot, on replay (the stream's own test, live alike) and in history, whatever SQL would make of it
/// (`epoch`, a uuid's case, char(n) padding, collation order, NaN).
#[tokio::test]
async fn a_filter_selects_the_same_rows_in_a_snapshot_on_replay_and_in_history() {
    let TestDb { url, admin, .. } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE props (id int PRIMARY KEY, t text, v varchar(10), c char(4), n numeric, i int,
                                 f float8, b boolean, u uuid, ts timestamptz, n2 numeric(10,2), j jsonb, d date);
             SELECT pgsse.publish_table('props');
             SET TimeZone = 'UTC';",
        )
        .await
        .unwrap();
    let texts = ["a", "B", "b", "ab", "Ab", "é", "", "10", "9"];
    let numbers = ["-1.5", "0", "1", "1.0", "2.50", "10"];
    let floats = ["-0.5", "0", "1", "1e10", "NaN", "-Infinity", "0.1"];
    let (cents, jsons, dates) =
        (["0.13", "0.14", "1.00"], ["null", "5", "\"5\"", "{\"a\": 1}"], ["2023-12-31", "2024-06-01"]);
    let uuids = ["0a6c2e4e-8f7a-4c1e-9d2b-3f5a6b7c8d9e", "f0e1d2c3-b4a5-4697-8899-aabbccddeeff"];
    let times = ["1970-01-01 00:00:00+00", "2026-12-05 10:00:00+00", "2026-12-05 10:00:00.5+00"];
    for id in 0..63usize {
        // Every value of each pool meets every other column's in turn; one row in seven has NULLs.
        let pick = |pool: &[&str], k: usize| (id % 7 != 6).then(|| pool[(id * k + id / 3) % pool.len()].to_string());
        let (t, v, c, n, f) =
            (pick(&texts, 1), pick(&texts, 2), pick(&["ab", "AB", "b"], 3), pick(&numbers, 5), pick(&floats, 7));
        let (i, b) = ((id % 7 != 6).then(|| (id % 5) as i32 - 1), (id % 7 != 6).then_some(id % 2 == 0));
        let (u, ts) = (pick(&uuids, 11), pick(&times, 13));
        let (n2, j, d) = (pick(&cents, 17), pick(&jsons, 19), pick(&dates, 23));
        admin
            .execute(
                "INSERT INTO props VALUES ($1, $2, $3, $4, $5::text::numeric, $6, $7::text::float8, $8, $9::text::uuid,
                                          $10::text::timestamptz, $11::text::numeric, $12::text::jsonb, $13::text::date)",
                &[&(id as i32), &t, &v, &c, &n, &i, &f, &b, &u, &ts, &n2, &j, &d],
            )
            .await
            .unwrap();
    }
    let mut filters = Vec::new();
    for op in ["eq", "neq", "lt", "lte", "gt", "gte"] {
        for value in ["B", "b", "ab", "é", "10"] {
            filters.push(format!("t={op}.{value}"));
            filters.push(format!("v={op}.{value}"));
        }
        for value in ["ab", "AB"] {
            filters.push(format!("c={op}.{value}"));
        }
        for value in ["1", "2.5", "-1.5"] {
            filters.push(format!("n={op}.{value}"));
        }
        for value in ["1", "-1", "3"] {
            filters.push(format!("i={op}.{value}"));
        }
        for value in ["1", "NaN", "0.1000000000000000000001", "-10"] {
            filters.push(format!("f={op}.{value}"));
        }
        for value in ["0.125", "0.134", "0.13"] {
            filters.push(format!("n2={op}.{value}"));
        }
        filters.push(format!("v={op}.aaaaaaaaaaZ"));
        filters.push(format!("j={op}.5"));
        filters.push(format!("d={op}.2024-01-01"));
        filters.push(format!("u={op}.{}", uuids[0].to_uppercase()));
        filters.push(format!("u={op}.{}", uuids[1]));
        for value in ["epoch", "2026-12-05T10:00:00+00:00", "infinity"] {
            filters.push(format!("ts={op}.{value}"));
        }
    }
    filters.extend(
        ["t=in.(a,B)", "c=in.(ab,b)", "n=in.(1,10)", "b=is.true", "b=is.false", "t=is.null", "ts=is.null", "j=is.null"]
            .map(String::from),
    );
    let gw = Gateway::start(&url).await;
    let ids = |events: Vec<common::Event>| -> Vec<i64> {
        let mut ids: Vec<i64> =
            events.iter().filter(|e| e.event == "insert").map(|e| e.json()["id"].as_i64().unwrap()).collect();
        ids.sort_unstable();
        ids
    };
    let mut snapshots = Vec::new();
    for filter in &filters {
        let query = filter.replace('+', "%2B");
        let mut snapshot = SseStream::ok(gw.addr, &format!("/props/events?snapshot=true&{query}"), &[]).await;
        let mut rows = Vec::new();
        loop {
            let event = snapshot.expect().await;
            if event.event == "snapshot-end" {
                break;
            }
            rows.push(event);
        }
        let history = common::get(gw.addr, &format!("/props?limit=1000&{query}"), &[]).await.unwrap();
        assert_eq!(history.status, 200, "{filter}: {}", history.body);
        let mut listed: Vec<i64> =
            history.json().as_array().unwrap().iter().map(|e| e["data"]["id"].as_i64().unwrap()).collect();
        listed.sort_unstable();
        let rows = ids(rows);
        assert_eq!(rows, listed, "{filter}: snapshot against history");
        snapshots.push(rows);
    }
    // A limit counts the rows the filter selects, whatever SQL could narrow.
    let mut limited = SseStream::ok(gw.addr, "/props/events?snapshot=true&limit=2&d=gt.2024-01-01&f=gt.-10", &[]).await;
    let (first, second) = (limited.expect().await, limited.expect().await);
    assert_eq!((first.event.as_str(), second.event.as_str()), ("insert", "insert"));
    assert_eq!(limited.expect().await.event, "snapshot-end");
    // A value its column cannot take is a 400 naming column and type, on each of them.
    for (filter, want) in [
        ("i=eq.2.5", "filter on i: '2.5' is not a value of its type, integer"),
        ("t=is.true", "filter on t: is.true needs a boolean column, and its type is text"),
        ("u=in.(x)", "filter on u: 'x' is not a value of its type, uuid"),
    ] {
        for path in [
            format!("/props/events?snapshot=true&{filter}"),
            format!("/props/events?{filter}"),
            format!("/props?{filter}"),
        ] {
            let refused = common::get(gw.addr, &path, &[]).await.unwrap();
            assert_eq!(refused.status, 400, "{path}: {}", refused.body);
            assert!(refused.body.contains(want), "{path}: {}", refused.body);
        }
    }
    // Replay from the start, up to a truncate (which every filtered stream gets).
    admin.batch_execute("TRUNCATE props").await.unwrap();
    for (filter, snapshot) in filters.iter().zip(snapshots) {
        let query = filter.replace('+', "%2B");
        let mut replay = SseStream::ok(gw.addr, &format!("/props/events?last_event_id=0&{query}"), &[]).await;
        let mut events = Vec::new();
        loop {
            let event = replay.expect().await;
            if event.event == "truncate" {
                break;
            }
            events.push(event);
        }
        assert_eq!(ids(events), snapshot, "{filter}: replay against snapshot");
    }
}
