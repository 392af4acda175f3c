//! pgsse's SQL runs with no more rights than its job, with the roles production has: an admin that owns
//! the database and migrates it but is no superuser, an application role that owns its tables (and their
//! types, casts and domains), a writer, and the gateway's login.
mod common;

use bytes::Bytes;
use common::{as_role, call, connect, db_error, legacy, Gateway, Legacy, SseStream, GATEWAY_ROLE, JSON, WRITER_ROLE};
use serde_json::json;
use tokio_postgres::Client;

/// The roles that ran the table owner's code, as its functions recorded them.
async fn ran_as(app: &Client) -> Vec<(String, String)> {
    let rows = app.query("SELECT DISTINCT who, what FROM app.seen ORDER BY 1, 2", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

#[tokio::test]
async fn a_table_owners_casts_and_domain_checks_run_only_as_the_writer_or_the_gateway() {
    let Legacy { url, admin, app, admin_role, app_role } = legacy().await;
    // Code that the table's owner chose: a cast to json for its enum (to_jsonb calls it for every captured
    // row) and a domain's CHECK (a snapshot filter's value is cast to the domain). Each records who ran it
    // (where the transaction may write) and, if that role could, would make the owner a superuser; the
    // CHECK fails for any role but the writer and the gateway.
    app.batch_execute(&format!(
        "CREATE TABLE app.seen (who text, what text);
         GRANT INSERT ON app.seen TO PUBLIC;
         CREATE FUNCTION app.escalate(what text) RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
             IF current_setting('transaction_read_only') = 'off' THEN
                 INSERT INTO app.seen VALUES (current_user, what);
             END IF;
             IF (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
                 EXECUTE 'ALTER ROLE {app_role} SUPERUSER';
             END IF;
         END $$;
         CREATE TYPE app.mood AS ENUM ('ok', 'sad');
         CREATE FUNCTION app.mood_json(m app.mood) RETURNS json LANGUAGE plpgsql AS $$
         BEGIN PERFORM app.escalate('cast'); RETURN to_json(m::text || '!'); END $$;
         CREATE CAST (app.mood AS json) WITH FUNCTION app.mood_json(app.mood);
         CREATE FUNCTION app.chk(t text) RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN
             PERFORM app.escalate('check');
             RETURN current_user::text IN ('{WRITER_ROLE}', '{GATEWAY_ROLE}');
         END $$;
         CREATE DOMAIN app.tag AS text CHECK (app.chk(VALUE));
         CREATE TABLE app.docs (id bigserial PRIMARY KEY, body text, mood app.mood, tag app.tag);
         GRANT SELECT, INSERT, UPDATE, DELETE ON app.docs TO {WRITER_ROLE};
         GRANT INSERT ON app.docs TO {GATEWAY_ROLE};
         GRANT USAGE ON SEQUENCE app.docs_id_seq TO {WRITER_ROLE}, {GATEWAY_ROLE};"
    ))
    .await
    .unwrap();

    // The admin may not add triggers to the app's table, nor give the gateway its columns: each refusal
    // names the statement the table's owner runs.
    let publish = "SELECT pgsse.publish_table('app.docs', operations => array['insert', 'update'], writable => true)";
    let refused = admin.batch_execute(publish).await.unwrap_err();
    let hint = refused.as_db_error().unwrap().hint().unwrap().to_string();
    assert_eq!(
        hint,
        format!("have the table's owner (role {app_role}) run: GRANT TRIGGER ON app.docs TO {admin_role};")
    );
    app.batch_execute(&format!("GRANT TRIGGER ON app.docs TO {admin_role}")).await.unwrap();
    let refused = admin.batch_execute(publish).await.unwrap_err();
    let hint = refused.as_db_error().unwrap().hint().unwrap_or_else(|| panic!("{refused:?}")).to_string();
    let grant = "GRANT SELECT (id, body, mood, tag) ON app.docs TO pgsse_gateway;";
    assert_eq!(hint, format!("have the table's owner (role {app_role}) run: {grant} then publish again"));
    app.batch_execute(grant).await.unwrap();
    admin.batch_execute(publish).await.unwrap();

    let gw = Gateway::start(&url).await;
    let mut stream = SseStream::ok(gw.addr, "/docs/events", &[]).await;
    common::writer(&url)
        .await
        .batch_execute("INSERT INTO app.docs (body, mood, tag) VALUES ('w', 'ok', 'x')")
        .await
        .unwrap();
    assert_eq!(stream.expect().await.json(), json!({"id": 1, "body": "w", "mood": "ok!", "tag": "x"}));
    let posted = call(gw.addr, "POST", "/docs", &[JSON], Bytes::from(r#"{"body": "p", "mood": "sad", "tag": "y"}"#))
        .await
        .unwrap();
    assert_eq!(posted.status, 201, "{}", posted.body);
    assert_eq!(stream.expect().await.json()["mood"], "sad!");
    let mut snapshot = SseStream::ok(gw.addr, "/docs/events?snapshot=true&tag=eq.x&limit=1", &[]).await;
    assert_eq!(snapshot.expect().await.json()["mood"], "ok!");

    let seen = ran_as(&app).await;
    let who: std::collections::BTreeSet<&str> = seen.iter().map(|(who, _)| who.as_str()).collect();
    assert_eq!(who, [GATEWAY_ROLE, WRITER_ROLE].into(), "only the writer and the gateway ran it: {seen:?}");
    assert!(seen.contains(&(GATEWAY_ROLE.to_string(), "check".to_string())), "the POST's row: {seen:?}");
    let superuser: bool =
        admin.query_one("SELECT rolsuper FROM pg_roles WHERE rolname = $1", &[&app_role]).await.unwrap().get(0);
    assert!(!superuser);

    // pgsse's definer functions run as pgsse_owner, which is nothing but the owner of pgsse's objects.
    let owner = admin
        .query_one(
            "SELECT (SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgsse'::regnamespace AND prosecdef
                       AND proowner <> 'pgsse_owner'::regrole),
                    (SELECT rolsuper OR rolcanlogin OR rolcreaterole OR rolbypassrls FROM pg_roles WHERE rolname = 'pgsse_owner'),
                    (SELECT count(*) FROM pg_auth_members WHERE member = 'pgsse_owner'::regrole)",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((owner.get::<_, i64>(0), owner.get::<_, bool>(1), owner.get::<_, i64>(2)), (0, false, 0));
}

#[tokio::test]
async fn a_schema_8_install_made_by_a_superuser_moves_to_pgsse_owner_and_streams_resume_exactly() {
    let url = common::empty_db().await;
    let su = connect(&url).await;
    common::fresh_db().await;
    // Schema 8 as its release installed it, in parts (one session, so its transactions span them).
    for part in [
        include_str!("fixtures/schema8/1.sql"),
        include_str!("fixtures/schema8/2.sql"),
        include_str!("fixtures/schema8/3.sql"),
    ] {
        su.batch_execute(part).await.unwrap();
    }
    su.batch_execute(&format!(
        "CREATE TABLE messages (id bigserial PRIMARY KEY, body text NOT NULL);
         GRANT SELECT, INSERT ON messages TO {WRITER_ROLE}; GRANT USAGE ON SEQUENCE messages_id_seq TO {WRITER_ROLE};
         SELECT pgsse.publish_table('messages');"
    ))
    .await
    .unwrap();
    let app = common::writer(&url).await;
    app.batch_execute("INSERT INTO messages (body) VALUES ('one'), ('two')").await.unwrap();
    su.batch_execute(
        "BEGIN; LOCK TABLE pgsse.commit_order IN EXCLUSIVE MODE; SELECT pgsse.sequence_batch(1000); COMMIT;",
    )
    .await
    .unwrap();
    // Committed under schema 8 and still staged when the upgrade runs.
    app.batch_execute("INSERT INTO messages (body) VALUES ('three')").await.unwrap();

    pgsse::migrate(&url).await.unwrap();
    // The files schema 8 recorded by their old names (001-006) are known by their schema numbers now.
    let names =
        "SELECT string_agg(name, ',' ORDER BY name), (SELECT schema_version FROM pgsse.meta) FROM pgsse.migrations";
    let row = su.query_one(names, &[]).await.unwrap();
    let listed: Vec<&str> = pgsse::MIGRATIONS.iter().map(|(name, _)| *name).collect();
    assert_eq!((row.get::<_, String>(0), row.get::<_, i32>(1)), (listed.join(","), pgsse::SCHEMA_VERSION));
    let owners: i64 = su
        .query_one(
            "SELECT (SELECT count(*) FROM pg_class WHERE relnamespace = 'pgsse'::regnamespace AND relowner <> 'pgsse_owner'::regrole)
                  + (SELECT count(*) FROM pg_proc WHERE pronamespace = 'pgsse'::regnamespace AND proowner <> 'pgsse_owner'::regrole)
                  + (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgsse' AND nspowner <> 'pgsse_owner'::regrole)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(owners, 0, "everything of pgsse's belongs to pgsse_owner");

    let gw = Gateway::start(&url).await;
    let mut resumed = SseStream::ok(gw.addr, "/messages/events?last_event_id=1", &[]).await;
    app.batch_execute("INSERT INTO messages (body) VALUES ('four')").await.unwrap();
    let got: Vec<(i64, String)> =
        resumed.take(3).await.iter().map(|e| (e.id(), e.json()["body"].as_str().unwrap().to_string())).collect();
    assert_eq!(got, [(2, "two".into()), (3, "three".into()), (4, "four".into())]);
}

#[tokio::test]
async fn nothing_a_writer_sets_changes_what_is_logged_or_in_what_order() {
    let Legacy { url, admin, app, admin_role, .. } = legacy().await;
    app.batch_execute(&format!(
        "CREATE TABLE app.counters (id int PRIMARY KEY, n int NOT NULL);
         INSERT INTO app.counters VALUES (1, 0);
         GRANT SELECT, INSERT, UPDATE ON app.counters TO {WRITER_ROLE};
         GRANT TRIGGER ON app.counters TO {admin_role};
         GRANT SELECT ON app.counters TO pgsse_gateway;"
    ))
    .await
    .unwrap();
    admin
        .batch_execute("SELECT pgsse.publish_table('app.counters', operations => array['insert', 'update'])")
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    let mut stream = SseStream::ok(gw.addr, "/counters/events", &[]).await;
    let mut first = common::writer(&url).await;
    let second = common::writer(&url).await;

    // Every setting pgsse reads or ever read, set by the writer to what would have stranded its event below
    // the floor, hidden it, forged its payload or kept it from waking the gateways.
    let t1 = first.transaction().await.unwrap();
    t1.batch_execute(
        "SELECT set_config('pgsse.staging', pg_current_xact_id() || ':-5', true),
                set_config('pgsse.suppress_capture', 'on', true),
                set_config('pgsse.rang', 'y', true);
         SET CONSTRAINTS ALL IMMEDIATE;
         UPDATE app.counters SET n = 1 WHERE id = 1;
         SELECT set_config('pgsse.captured', '{\"id\": 1, \"n\": 99}', true);",
    )
    .await
    .unwrap();
    // While t1 is open, nothing it did holds a lock that a gateway or another writer needs...
    let locked = admin
        .query_one(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
              WHERE c.relnamespace = 'pgsse'::regnamespace AND l.granted AND l.mode NOT IN ('RowExclusiveLock', 'AccessShareLock')",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert_eq!(locked, 0, "the writer holds no lock on pgsse's tables beyond writing its own staged rows");
    // ...so another writer's event reaches the stream meanwhile.
    second.batch_execute("INSERT INTO app.counters VALUES (2, 0)").await.unwrap();
    assert_eq!(stream.expect().await.json(), json!({"id": 2, "n": 0}));
    t1.commit().await.unwrap();
    // The same row changed again after t1 committed: the log keeps the commits' order.
    second.batch_execute("UPDATE app.counters SET n = 2 WHERE id = 1").await.unwrap();
    let got: Vec<serde_json::Value> = stream.take(2).await.iter().map(|e| e.json()).collect();
    assert_eq!(got, [json!({"id": 1, "n": 1}), json!({"id": 1, "n": 2})]);
    common::wait_sequenced(&admin).await;
    let left: i64 = admin.query_one("SELECT count(*) FROM pgsse.staged", &[]).await.unwrap().get(0);
    assert_eq!(left, 0, "nothing stranded");
}

#[tokio::test]
async fn the_gateways_login_and_a_publisher_do_their_job_and_no_more() {
    let Legacy { url, admin, app, admin_role, .. } = legacy().await;
    app.batch_execute(&format!(
        "CREATE TABLE app.big (id bigserial PRIMARY KEY, body text);
         GRANT TRIGGER ON app.big TO {admin_role}; GRANT SELECT ON app.big TO pgsse_gateway;"
    ))
    .await
    .unwrap();
    admin
        .batch_execute(
            "SELECT pgsse.publish_table('app.big');
             SELECT pgsse.create_channel('feed');
             SELECT pgsse.publish('feed', 'note', '{\"n\": 1}');",
        )
        .await
        .unwrap();
    common::sequence_staged(&admin).await;
    let gateway = connect(&as_role(&url, GATEWAY_ROLE)).await;
    for (sql, want) in [
        ("SELECT pgsse.publish_json('big', 'insert', '{\"id\": 666}')", "channel 'big' publishes a table"),
        ("SELECT pgsse.publish_json('feed', 'reset', '{}')", "event 'reset' is pgsse's own"),
        ("SELECT pgsse.begin_clear('feed')", "clearing is not enabled for channel feed"),
        ("SELECT pgsse.begin_clear('nosuch')", "unknown channel 'nosuch'"),
        ("SELECT pgsse.clear_channel('feed')", "clearing is not enabled for channel feed"),
        ("SELECT * FROM pgsse.remember('dave', 'order-42', 'x')", "remembered only by the gateway's own writes"),
    ] {
        assert!(db_error(gateway.batch_execute(sql).await).contains(want), "{sql}: want {want}");
    }
    // Retention prunes no event younger than the database's floor, whatever the gateway's login asks.
    let pruned: i64 = gateway.query_one("CALL pgsse.retain('infinity', NULL, 100000000)", &[]).await.unwrap().get(0);
    let kept: i64 = gateway.query_one("CALL pgsse.retain(NULL, 0, 100000000)", &[]).await.unwrap().get(0);
    assert_eq!((pruned, kept), (0, 0));
    // The Mercure hub's own channel, `.mercure`, is there from the start.
    let channels = "SELECT count(*) FROM pgsse.channels WHERE name <> '.mercure'";
    let channels: i64 = admin.query_one(channels, &[]).await.unwrap().get(0);
    assert_eq!(channels, 2, "no channel made on the way");

    // Where clearing is allowed, its quiet deletes come after the clear event, and hide nothing else.
    app.batch_execute(&format!(
        "CREATE TABLE app.board (id bigserial PRIMARY KEY, body text);
         GRANT TRIGGER ON app.board TO {admin_role}; GRANT SELECT ON app.board TO pgsse_gateway;
         GRANT INSERT, DELETE ON app.board TO {GATEWAY_ROLE}; GRANT USAGE ON SEQUENCE app.board_id_seq TO {GATEWAY_ROLE};
         INSERT INTO app.board (body) VALUES ('before')"
    ))
    .await
    .unwrap();
    admin
        .batch_execute(
            "SELECT pgsse.publish_table('app.board', operations => array['insert', 'delete'], allow_clear => true)",
        )
        .await
        .unwrap();
    gateway
        .batch_execute(
            "BEGIN; SELECT pgsse.begin_clear('board'); SET LOCAL pgsse.suppress_capture = 'on';
             DELETE FROM app.board WHERE body = 'before';
             INSERT INTO app.board (body) VALUES ('hidden?'); DELETE FROM app.board WHERE body = 'hidden?'; COMMIT;",
        )
        .await
        .unwrap();
    common::sequence_staged(&admin).await;
    let log: Vec<String> = admin
        .query("SELECT event || ' ' || payload::text FROM pgsse.events WHERE channel = 'board' ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(log[0].starts_with("clear ") && log[1] == r#"insert {"id": 2, "body": "hidden?"}"#, "{log:?}");
    assert_eq!(log[2], r#"delete {"id": 2, "body": "hidden?"}"#, "a row clients saw is not deleted quietly");

    // A publisher publishes its own events, not the ones pgsse gives meaning to.
    let publisher = connect(&as_role(&url, common::PUBLISHER_ROLE)).await;
    for (channel, event) in
        [("feed", "reset"), ("feed", "snapshot-end"), ("feed", "clear"), ("feed", "truncate"), ("big", "insert")]
    {
        let sql = format!("SELECT pgsse.publish('{channel}', '{event}', '{{}}')");
        let err = db_error(publisher.batch_execute(&sql).await);
        assert!(err.starts_with(&format!("pgsse: event '{event}'")), "{sql}: {err}");
    }
    publisher.batch_execute("SELECT pgsse.publish('big', 'typing', '{}')").await.unwrap();
    // Nor does it seed row events for a table published later under the channel's name.
    publisher.batch_execute("SELECT pgsse.publish('later', 'insert', '{\"id\": 1}')").await.unwrap();
    app.batch_execute(&format!("CREATE TABLE app.later (id int); GRANT TRIGGER ON app.later TO {admin_role}"))
        .await
        .unwrap();
    let err = db_error(admin.batch_execute("SELECT pgsse.publish_table('app.later')").await);
    assert!(err.contains("channel 'later' already carries events published with pgsse.publish"), "{err}");
    // Not even from a transaction still open when the table is published.
    let mut racing = connect(&as_role(&url, common::PUBLISHER_ROLE)).await;
    let open = racing.transaction().await.unwrap();
    open.batch_execute("SELECT pgsse.publish('race', 'insert', '{\"id\": 666}')").await.unwrap();
    app.batch_execute(&format!("CREATE TABLE app.race (id int); GRANT TRIGGER ON app.race TO {admin_role}"))
        .await
        .unwrap();
    let admin_url = as_role(&url, &admin_role);
    let publishing = tokio::spawn(async move {
        let admin = connect(&admin_url).await;
        db_error(admin.batch_execute("SELECT pgsse.publish_table('app.race')").await)
    });
    open.commit().await.unwrap();
    let err = publishing.await.unwrap();
    assert!(err.contains("channel 'race' already carries events published with pgsse.publish"), "{err}");

    // Over HTTP too: a publish grant does not reach pgsse's own events.
    let gw = Gateway::start(&url).await;
    let reset = call(gw.addr, "POST", "/feed?event=reset", &[JSON], Bytes::from("{}")).await.unwrap();
    assert_eq!(reset.status, 403, "{}", reset.body);
    assert!(reset.json()["error"].as_str().unwrap().contains("event 'reset' is pgsse's own"), "{}", reset.body);
}

/// The locks that every gateway's delivery and retention wait on are taken only inside pgsse's own
/// procedures, which commit before and after: a leaked gateway login cannot keep one in a transaction.
#[tokio::test]
async fn a_gateway_login_cannot_hold_the_sequencing_step_or_retention_in_an_open_transaction() {
    let Legacy { url, admin, app, admin_role, .. } = legacy().await;
    app.batch_execute(&format!(
        "CREATE TABLE app.feed (id bigserial PRIMARY KEY, body text);
         GRANT TRIGGER ON app.feed TO {admin_role}; GRANT SELECT ON app.feed TO pgsse_gateway;
         GRANT INSERT ON app.feed TO {WRITER_ROLE}; GRANT USAGE ON SEQUENCE app.feed_id_seq TO {WRITER_ROLE};"
    ))
    .await
    .unwrap();
    admin.batch_execute("SELECT pgsse.publish_table('app.feed')").await.unwrap();
    let leaked = connect(&as_role(&url, GATEWAY_ROLE)).await;
    let pid: i32 = leaked.query_one("SELECT pg_backend_pid()", &[]).await.unwrap().get(0);
    let step = leaked.query_one("CALL pgsse.sequence_step(true)", &[]).await.unwrap();
    assert!(step.get::<_, i64>("moved") >= 0, "a CALL of its own takes the step");
    let writer = connect(&as_role(&url, WRITER_ROLE)).await;
    let gw = Gateway::start(&url).await;
    let mut stream = SseStream::ok(gw.addr, "/feed/events", &[]).await;
    for (n, (sql, want)) in [
        ("BEGIN; SELECT pgsse.sequence(0, true)", "runs only as a statement of its own: CALL pgsse.sequence_step"),
        ("BEGIN; CALL pgsse.sequence_step(true)", "invalid transaction termination"),
        ("CALL pgsse.sequence_step(true); SELECT 1", "invalid transaction termination"),
        ("DO $$ BEGIN COMMIT; PERFORM pgsse.sequence(0, true); END $$", "CALL pgsse.sequence_step"),
        ("CALL pgsse.sequence_step((pgsse.sequence(0, true)).in_flight)", "CALL pgsse.sequence_step"),
        ("BEGIN; SELECT pgsse.prune('infinity', 1)", "runs only as a statement of its own: CALL pgsse.retain"),
        ("BEGIN; SELECT pgsse.prune_channels(0, 1)", "CALL pgsse.retain"),
        ("BEGIN; CALL pgsse.retain('infinity', NULL, 1)", "invalid transaction termination"),
    ]
    .into_iter()
    .enumerate()
    {
        let err = db_error(leaked.batch_execute(sql).await);
        assert!(err.contains(want), "{sql}: {err}");
        // The refused session stays in its transaction; whatever it took, delivery and retention go on.
        let locks: i64 = admin
            .query_one(
                "SELECT count(*) FROM pg_locks WHERE pid = $1 AND mode <> 'AccessShareLock' \
                 AND locktype IN ('relation', 'tuple', 'transactionid')",
                &[&pid],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(locks, 0, "{sql}: the refused session holds no lock");
        writer.execute("INSERT INTO app.feed (body) VALUES ($1)", &[&format!("row {n}")]).await.unwrap();
        assert_eq!(stream.expect().await.json()["body"], format!("row {n}"), "{sql}");
        leaked.batch_execute("ROLLBACK").await.unwrap();
    }
    admin.batch_execute("UPDATE pgsse.meta SET min_age = '0', min_events = 0").await.unwrap();
    let pruned: i64 = leaked.query_one("CALL pgsse.retain('infinity', NULL, 1)", &[]).await.unwrap().get(0);
    assert_eq!(pruned, 1, "retention was not held back");
}

/// The transaction that holds the step's lock sends its session nothing but an error, whatever that
/// session asked for: a login that stops reading its socket cannot keep the server (and the lock) waiting
/// on a send. At debug5 PostgreSQL reports every transaction's start and commit: only the one that took the
/// lock (the only one with a transaction id, as it writes) goes unreported.
#[tokio::test]
async fn the_step_sends_nothing_while_it_holds_its_lock() {
    let Legacy { url, .. } = legacy().await;
    let (client, mut connection) =
        tokio_postgres::connect(&as_role(&url, GATEWAY_ROLE), tokio_postgres::NoTls).await.unwrap();
    let notices = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let heard = notices.clone();
    tokio::spawn(async move {
        while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let Ok(tokio_postgres::AsyncMessage::Notice(notice)) = message {
                heard.lock().unwrap().push(notice.message().to_string());
            }
        }
    });
    client.batch_execute("SET client_min_messages = debug5; SET debug_print_plan = on").await.unwrap();
    client.query_one("CALL pgsse.sequence_step(true)", &[]).await.unwrap();
    client.query_one("CALL pgsse.retain('infinity', NULL, 1)", &[]).await.unwrap();
    let notices = notices.lock().unwrap().clone();
    let commits = notices.iter().filter(|n| n.starts_with("CommitTransaction")).count();
    assert!(commits >= 4 && notices.iter().any(|n| n.starts_with("plan:")), "the session hears its debug output");
    let writing: Vec<&String> =
        notices.iter().filter(|n| n.contains("xid/subid/cid: ") && !n.contains("cid: 0/")).collect();
    assert!(writing.is_empty(), "the locking transactions sent {writing:?}");
}
