//! The hostile matrix in SQL: neither the app's role nor the gateway's can forge an event, hold pgsse's
//! locks, or make pgsse's functions run its own through `search_path`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{call, connect, db_error, users_table, Gateway, SseStream, TestDb, GATEWAY_ROLE, WRITER_ROLE};
use serde_json::json;

#[tokio::test]
async fn nobody_forges_an_event() {
    let TestDb { url, admin: db, app } = TestDb::messages("").await;
    db.batch_execute(&format!("GRANT CREATE ON SCHEMA public TO {WRITER_ROLE}")).await.unwrap();
    let gateway = connect(&common::as_role(&url, GATEWAY_ROLE)).await;
    for (who, client) in [("writer", &app), ("gateway", &gateway)] {
        for sql in [
            "INSERT INTO pgsse.events (id, channel, event, payload) VALUES (9000000000000000000, 'messages', 'x', '{}')",
            "INSERT INTO pgsse.staged (seq, txid, channel, event, payload) \
             VALUES (1, pg_current_xact_id(), 'messages', 'x', '{}')",
            "UPDATE pgsse.staged SET committed = 0",
            "INSERT INTO pgsse.clearing VALUES (pg_current_xact_id(), 'messages')",
            "SELECT setval('pgsse.bell', 2)",
            "UPDATE pgsse.channels SET source_table = NULL",
            "UPDATE pgsse.doorbell SET armed = false",
            "UPDATE pgsse.staged_floor SET floor_xid = '9000000000000000000'",
            "SELECT pgsse.stage('messages', 'x', '{}')",
            "SELECT pgsse.sequence_batch()",
        ] {
            let err = db_error(client.batch_execute(sql).await);
            assert!(err.contains("permission denied"), "{who}: {sql}: {err}");
        }
    }
    for sql in [
        "SELECT pgsse.publish('messages', 'x', '{}')",
        "SELECT pgsse.sequence(10, true)",
        "CALL pgsse.sequence_step(true)",
        "CALL pgsse.retain('infinity', NULL, 1)",
    ] {
        let err = db_error(app.batch_execute(sql).await);
        assert!(err.contains("permission denied"), "writer: {sql}: {err}");
    }
    let err = db_error(
        app.batch_execute(
            "CREATE TABLE mine (id int, body text);
             CREATE CONSTRAINT TRIGGER t AFTER INSERT ON mine DEFERRABLE INITIALLY DEFERRED
                 FOR EACH ROW EXECUTE FUNCTION pgsse.capture_stage('messages')",
        )
        .await,
    );
    assert!(err.contains("permission denied"), "own trigger with pgsse's capture: {err}");

    // Even a trigger that someone privileged copies onto another table, arguments and all, records nothing
    // for the channel.
    db.batch_execute(
        "CREATE TABLE other (id int, body text);
         CREATE CONSTRAINT TRIGGER t AFTER INSERT ON other DEFERRABLE INITIALLY DEFERRED
             FOR EACH ROW EXECUTE FUNCTION pgsse.capture_stage('messages');
         CREATE TRIGGER tt AFTER TRUNCATE ON other FOR EACH STATEMENT EXECUTE FUNCTION pgsse.capture_truncate('messages');
         INSERT INTO other VALUES (1, 'forged');
         CREATE TABLE copied (id int, body text);
         CREATE TRIGGER s AFTER INSERT ON copied FOR EACH ROW EXECUTE FUNCTION pgsse.capture_row();
         DO $$ BEGIN EXECUTE format('CREATE TRIGGER t AFTER INSERT ON copied
                                     FOR EACH ROW EXECUTE FUNCTION pgsse.capture_stage(%s)',
             (SELECT string_agg(quote_literal(a), ', ' ORDER BY i) FROM pgsse.channels c,
                     unnest(pgsse.capture_args(c)) WITH ORDINALITY AS u(a, i) WHERE c.name = 'messages')); END $$;
         INSERT INTO copied VALUES (1, 'forged with the very arguments');",
    )
    .await
    .unwrap();
    db.batch_execute("TRUNCATE other").await.unwrap();
    let recorded =
        "SELECT count(*) FROM (SELECT channel FROM pgsse.events UNION ALL SELECT channel FROM pgsse.staged) e \
                    WHERE channel = $1";
    let count: i64 = db.query_one(recorded, &[&"messages"]).await.unwrap().get(0);
    assert_eq!(count, 0, "a copied trigger recorded an event");

    // A role granted pgsse_publisher may publish.
    db.batch_execute(&format!("GRANT pgsse_publisher TO {WRITER_ROLE}")).await.unwrap();
    app.batch_execute("SELECT pgsse.publish('news', 'hello', '{\"ok\": true}')").await.unwrap();
    db.batch_execute(&format!("REVOKE pgsse_publisher FROM {WRITER_ROLE}")).await.unwrap();
    let count: i64 = db.query_one(recorded, &[&"news"]).await.unwrap().get(0);
    assert_eq!(count, 1);
}

#[tokio::test]
async fn a_role_that_may_only_connect_cannot_hold_pgsses_locks() {
    let TestDb { url, admin, app } = TestDb::messages("").await;
    let name: String = admin.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    let stranger = format!("{name}_stranger");
    admin.batch_execute(&format!("CREATE ROLE {stranger} LOGIN")).await.unwrap();
    let mut strange = connect(&common::as_role(&url, &stranger)).await;
    // The keys pgsse's ordering and retention used, held in an open transaction.
    let holding = strange.transaction().await.unwrap();
    holding.batch_execute("SELECT pg_advisory_xact_lock(7083711517), pg_advisory_xact_lock(7083711518)").await.unwrap();
    for sql in [
        "LOCK TABLE pgsse.commit_order IN EXCLUSIVE MODE",
        "SELECT 1 FROM pgsse.meta FOR UPDATE",
        "SELECT 1 FROM pgsse.doorbell FOR UPDATE",
        "LOCK TABLE pgsse.staged IN ACCESS EXCLUSIVE MODE",
    ] {
        let err = db_error(holding.batch_execute(&format!("SAVEPOINT s; {sql}")).await);
        assert!(err.contains("permission denied"), "{sql}: {err}");
        holding.batch_execute("ROLLBACK TO SAVEPOINT s").await.unwrap();
    }

    let gw = Gateway::start(&url).await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    let insert = app.execute("INSERT INTO messages (body) VALUES ('not held back')", &[]);
    tokio::time::timeout(Duration::from_secs(5), insert).await.expect("the insert is not held back").unwrap();
    assert_eq!(stream.expect().await.json()["body"], "not held back");
    admin.batch_execute("UPDATE pgsse.meta SET min_age = '0'").await.unwrap();
    let pruned = admin.query_one("CALL pgsse.retain(now() + interval '1 hour', NULL, 10)", &[]).await.unwrap();
    assert_eq!(pruned.get::<_, i64>(0), 1, "retention is not held back either");
    holding.rollback().await.unwrap();
}

/// Every pg_catalog function that pgsse's SQL calls by name, and every variant of every operator it
/// spells, gets a shadow in `public` with the same signature that fails when it runs, and the types its
/// per-row code names get a failing domain of the same name (in `pg_temp` too, which PostgreSQL searches
/// first for types, whatever the path says). The app's role and the gateway's then work
/// with `public` first in their paths: no shadow may run, and the events are right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_shadow_of_any_function_or_operator_pgsse_uses_ever_runs() {
    let TestDb { url, admin, app } = TestDb::new().await;
    users_table(
        &admin,
        ", operations => array['insert', 'update', 'delete'], columns => array['id', 'name'], old_values => true, \
         writable => true",
    )
    .await;
    let database: String = admin.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    admin
        .batch_execute(&format!(
            "GRANT CREATE ON SCHEMA public TO {WRITER_ROLE}, {GATEWAY_ROLE}; GRANT SELECT ON users TO {GATEWAY_ROLE};
             ALTER ROLE {GATEWAY_ROLE} IN DATABASE {database} SET search_path = public, pg_catalog;"
        ))
        .await
        .unwrap();
    let sql: String = pgsse::FUNCTIONS.iter().map(|(_, text)| *text).collect();
    common::plant_shadows(&app, &sql).await;
    let planted: i64 = admin
        .query_one("SELECT count(*) FROM pg_proc WHERE pronamespace = 'public'::regnamespace", &[])
        .await
        .unwrap()
        .get(0);
    assert!(planted > 500, "planted {planted} shadows");

    // Shadows more specific than pg_catalog's own (so even a path with pg_catalog first would pick them),
    // in public and in pg_temp. No operator in the app's own statements: with public first, its own WHERE
    // would meet a shadow.
    app.batch_execute(
        "CREATE FUNCTION public.to_jsonb(users) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{\"trojan\": true}'::jsonb $$;
         CREATE FUNCTION public.jsonb_populate_record(users, jsonb) RETURNS users LANGUAGE sql
             AS $$ SELECT 1::bigint, 'trojan', 'x' $$;
         CREATE FUNCTION public.has_table_privilege(regclass, text) RETURNS boolean LANGUAGE sql AS $$ SELECT true $$;
         CREATE FUNCTION pg_temp.to_jsonb(users) RETURNS jsonb LANGUAGE sql AS $$ SELECT '{\"trojan\": true}'::jsonb $$;
         CREATE FUNCTION public.shadow_type_ran() RETURNS boolean LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'a shadow of a type ran'; END $$;
         CREATE DOMAIN public.jsonb AS pg_catalog.jsonb CHECK (public.shadow_type_ran());
         CREATE DOMAIN public.text AS pg_catalog.text CHECK (public.shadow_type_ran());
         CREATE DOMAIN public.oid AS pg_catalog.oid CHECK (public.shadow_type_ran());
         CREATE DOMAIN public.regclass AS pg_catalog.regclass CHECK (public.shadow_type_ran());
         CREATE DOMAIN public.xid8 AS pg_catalog.xid8 CHECK (public.shadow_type_ran());
         CREATE DOMAIN pg_temp.jsonb AS pg_catalog.jsonb CHECK (public.shadow_type_ran());
         CREATE DOMAIN pg_temp.text AS pg_catalog.text CHECK (public.shadow_type_ran());
         SET search_path = public, pg_catalog;
         INSERT INTO users (name) VALUES ('by the app');
         UPDATE users SET name = 'renamed';",
    )
    .await
    .unwrap();
    let gw = Gateway::start(&url).await;
    let resp =
        call(gw.addr, "POST", "/users", &[("content-type", "application/json")], Bytes::from(r#"{"name": "by post"}"#))
            .await
            .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.body);
    app.batch_execute("SET search_path = public, pg_catalog").await.unwrap();
    app.batch_execute("DELETE FROM users").await.unwrap();
    app.batch_execute("TRUNCATE users").await.unwrap();
    let mut stream = SseStream::ok(gw.addr, "/users/events", &[("last-event-id", "0")]).await;
    let events = stream.take(6).await;
    let kinds: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["insert", "update", "insert", "delete", "delete", "truncate"]);
    assert_eq!(events[1].json(), json!({"new": {"id": 1, "name": "renamed"}, "old": {"id": 1, "name": "by the app"}}));
    let history = common::get(gw.addr, "/users?limit=10", &[]).await.unwrap();
    assert_eq!(history.status, 200, "{}", history.body);
    assert_eq!(
        (events[0].json(), events[2].json()),
        (json!({"id": 1, "name": "by the app"}), json!({"id": 2, "name": "by post"}))
    );
    assert!(events.iter().all(|e| !e.data.contains("trojan") && !e.data.contains("password")), "{events:?}");
}
