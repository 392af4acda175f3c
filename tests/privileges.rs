//! Production roles: an application's role writes published tables with no grant on pgsse, the gateway
//! needs only `pgsse_gateway`, and private columns never reach the log (forging attempts: `hostile.rs`).
mod common;

use bytes::Bytes;
use common::{
    call, connect, db_error, fresh_db, get, users_table, writer, Gateway, SseStream, TestDb, GATEWAY_ROLE, JSON,
    WRITER_ROLE,
};
use serde_json::json;

#[tokio::test]
async fn an_applications_role_keeps_writing_at_every_isolation_level_without_a_grant() {
    let url = fresh_db().await;
    let db = connect(&url).await;
    common::messages_table(&db, "").await;
    let gw = Gateway::start(&url).await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    let app = writer(&url).await;
    for level in ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"] {
        app.batch_execute(&format!(
            "BEGIN ISOLATION LEVEL {level}; INSERT INTO messages (body) VALUES ('{level}'); COMMIT;"
        ))
        .await
        .unwrap_or_else(|e| panic!("{level}: {e:?}"));
    }
    for level in ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"] {
        assert_eq!(stream.expect().await.json()["body"], level);
    }
    // The writer still sees nothing of pgsse itself.
    assert!(db_error(app.query("SELECT * FROM pgsse.events", &[]).await).contains("permission denied for schema pgsse"));
}

#[tokio::test]
async fn the_gateways_post_and_delete_need_the_tables_own_grants() {
    let url = fresh_db().await;
    let db = connect(&url).await;
    users_table(&db, ", allow_clear => true, writable => true").await;
    db.batch_execute(&format!("REVOKE INSERT, DELETE ON users FROM {GATEWAY_ROLE}")).await.unwrap();
    let gw = Gateway::start(&url).await;
    let resp = call(gw.addr, "POST", "/users", &[JSON], Bytes::from(r#"{"name": "x"}"#)).await.unwrap();
    assert_eq!(resp.status, 403, "{}", resp.body);
    let msg = resp.json()["error"].as_str().unwrap().to_string();
    assert!(msg.ends_with(&format!("GRANT INSERT ON public.users TO {GATEWAY_ROLE};")), "{msg}");
    let resp = call(gw.addr, "DELETE", "/users", &[], Bytes::new()).await.unwrap();
    assert_eq!(resp.status, 403, "{}", resp.body);
    let want = format!("have the table's owner run: GRANT DELETE ON public.users TO {GATEWAY_ROLE};");
    assert!(resp.json()["error"].as_str().unwrap().contains(&want), "{}", resp.body);

    db.batch_execute(&format!(
        "GRANT INSERT, DELETE ON users TO {GATEWAY_ROLE}; REVOKE USAGE ON SEQUENCE users_id_seq FROM {GATEWAY_ROLE}"
    ))
    .await
    .unwrap();
    let resp = call(gw.addr, "POST", "/users", &[JSON], Bytes::from(r#"{"name": "x"}"#)).await.unwrap();
    assert_eq!(resp.status, 403, "{}", resp.body);
    let want = format!("GRANT USAGE ON SEQUENCE public.users_id_seq TO {GATEWAY_ROLE};");
    assert!(resp.json()["error"].as_str().unwrap().ends_with(&want), "{}", resp.body);

    db.batch_execute(&format!("GRANT USAGE ON SEQUENCE users_id_seq TO {GATEWAY_ROLE}")).await.unwrap();
    let resp = call(gw.addr, "POST", "/users", &[JSON], Bytes::from(r#"{"name": "x"}"#)).await.unwrap();
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(resp.json(), json!({"id": 1, "name": "x", "password_hash": "x"}));
    let resp = call(gw.addr, "DELETE", "/users", &[], Bytes::new()).await.unwrap();
    assert_eq!(resp.status, 200, "{}", resp.body);
}

#[tokio::test]
async fn private_columns_never_enter_the_log() {
    let url = fresh_db().await;
    let db = connect(&url).await;
    users_table(
        &db,
        ", operations => array['insert', 'update'], exclude_columns => array['password_hash'], writable => true",
    )
    .await;
    db.batch_execute(
        "CREATE TABLE notes (id bigserial PRIMARY KEY, body text, internal text);
         SELECT pgsse.publish_table('notes', columns => array['id', 'body'], writable => true);",
    )
    .await
    .unwrap();
    let err = db_error(db.batch_execute("SELECT pgsse.publish_table('notes', columns => array['id', 'nope'])").await);
    assert_eq!(err, "pgsse: table public.notes has no column nope");
    let err = db_error(db.batch_execute("SELECT pgsse.publish_table('notes', exclude_columns => array['nop'])").await);
    assert_eq!(err, "pgsse: table public.notes has no column nop");

    let gw = Gateway::start(&url).await;
    let mut users = SseStream::ok(gw.addr, "/users/events", &[]).await;
    let mut notes = SseStream::ok(gw.addr, "/notes/events", &[]).await;
    let app = writer(&url).await;
    app.batch_execute(
        "INSERT INTO users (name, password_hash) VALUES ('ann', 'secret-1');
         UPDATE users SET password_hash = 'secret-2';
         UPDATE users SET name = 'anne';
         INSERT INTO notes (body, internal) VALUES ('hi', 'secret-3');",
    )
    .await
    .unwrap();
    let resp = call(gw.addr, "POST", "/notes", &[JSON], Bytes::from(r#"{"body": "b", "internal": "secret-4"}"#))
        .await
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(resp.json(), json!({"id": 2, "body": "b"}));

    // The password-only update records nothing.
    let got = users.take(2).await;
    assert_eq!((got[0].event.as_str(), got[0].json()), ("insert", json!({"id": 1, "name": "ann"})));
    assert_eq!((got[1].event.as_str(), got[1].json()), ("update", json!({"id": 1, "name": "anne"})));
    assert_eq!(notes.expect().await.json(), json!({"id": 1, "body": "hi"}));
    assert_eq!(notes.expect().await.json(), json!({"id": 2, "body": "b"}));

    // A column added later: published under exclude_columns, not under columns.
    db.batch_execute("ALTER TABLE users ADD COLUMN nick text; ALTER TABLE notes ADD COLUMN tag text").await.unwrap();
    app.batch_execute(
        "INSERT INTO users (name, nick) VALUES ('bo', 'b'); INSERT INTO notes (body, tag) VALUES ('t', 'x')",
    )
    .await
    .unwrap();
    assert_eq!(users.expect().await.json(), json!({"id": 2, "name": "bo", "nick": "b"}));
    assert_eq!(notes.expect().await.json(), json!({"id": 3, "body": "t"}));

    let log: String =
        db.query_one("SELECT string_agg(payload::text, ' ') FROM pgsse.events", &[]).await.unwrap().get(0);
    assert!(!log.contains("secret") && !log.contains("password"), "{log}");
    let history = get(gw.addr, "/notes", &[]).await.unwrap();
    assert!(!history.body.contains("secret") && !history.body.contains("internal"), "{}", history.body);
}

#[tokio::test]
async fn old_values_and_truncate() {
    let url = fresh_db().await;
    let db = connect(&url).await;
    users_table(
        &db,
        ", operations => array['insert', 'update', 'delete'], old_values => true, \
         exclude_columns => array['password_hash'], truncate_event => 'reset-all'",
    )
    .await;
    let gw = Gateway::start(&url).await;
    let mut stream = SseStream::ok(gw.addr, "/users/events", &[]).await;
    let app = writer(&url).await;
    app.batch_execute("INSERT INTO users (name) VALUES ('a'); UPDATE users SET name = 'b'; DELETE FROM users;")
        .await
        .unwrap();
    app.batch_execute("INSERT INTO users (name) VALUES ('c')").await.unwrap();
    app.batch_execute("TRUNCATE users").await.unwrap();
    let got = stream.take(5).await;
    assert_eq!(got[1].event, "update");
    assert_eq!(got[1].json(), json!({"new": {"id": 1, "name": "b"}, "old": {"id": 1, "name": "a"}}));
    assert_eq!((got[2].event.as_str(), got[2].json()), ("delete", json!({"id": 1, "name": "b"})));
    assert_eq!(got[4].event, "reset-all");
    assert!(got[4].json()["truncatedAt"].is_string(), "{:?}", got[4]);
}

#[tokio::test]
async fn a_schema_3_install_upgrades_in_place() {
    let url = common::empty_db().await;
    let db = connect(&url).await;
    db.batch_execute(include_str!("fixtures/schema3.sql")).await.unwrap();
    db.batch_execute(
        "CREATE TABLE messages (id bigserial PRIMARY KEY, body text NOT NULL, created_at timestamptz DEFAULT now());
         SELECT pgsse.publish_table('messages', operations => array['insert', 'delete'], insert_event => 'message',
                                    camel_case => true);
         INSERT INTO messages (body) VALUES ('one'), ('two'); DELETE FROM messages WHERE body = 'one';",
    )
    .await
    .unwrap();
    let log = "SELECT string_agg(id || ' ' || event || ' ' || payload::text, ', ' ORDER BY id) FROM pgsse.events";
    let before: String = db.query_one(log, &[]).await.unwrap().get(0);

    pgsse::migrate(&url).await.unwrap();
    pgsse::migrate(&url).await.unwrap();
    assert_eq!(db.query_one(log, &[]).await.unwrap().get::<_, String>(0), before, "no event lost or renumbered");
    let triggers: String = db
        .query_one(
            "SELECT string_agg(tgname || '/' || tgnargs, ' ' ORDER BY tgname) FROM pg_trigger WHERE tgrelid = 'messages'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(triggers, "pgsse_capture/0 pgsse_capture_stage/9 pgsse_truncate/1");
    let writable: bool =
        db.query_one("SELECT writable FROM pgsse.channels WHERE name = 'messages'", &[]).await.unwrap().get(0);
    assert!(writable, "a table that took POST before the upgrade still does");

    let writer_grants = format!(
        "GRANT SELECT, INSERT, DELETE ON messages TO {WRITER_ROLE}; GRANT USAGE ON SEQUENCE messages_id_seq TO {WRITER_ROLE}"
    );
    common::fresh_db().await; // creates the test roles on this cluster
    db.batch_execute(&writer_grants).await.unwrap();
    writer(&url)
        .await
        .batch_execute("INSERT INTO messages (body) VALUES ('three'); DELETE FROM messages WHERE body = 'two';")
        .await
        .unwrap();
    common::sequence_staged(&db).await;
    let rows = db
        .query("SELECT id, event, payload->>'body', payload ? 'createdAt' FROM pgsse.events ORDER BY id", &[])
        .await
        .unwrap();
    let got: Vec<(i64, String, String, bool)> = rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3))).collect();
    let want = [
        (1, "message", "one"),
        (2, "message", "two"),
        (3, "delete", "one"),
        (4, "message", "three"),
        (5, "delete", "two"),
    ];
    let want: Vec<_> = want.iter().map(|(id, e, b)| (*id, e.to_string(), b.to_string(), true)).collect();
    assert_eq!(got, want, "options kept, ids continue");
}

#[tokio::test]
async fn a_capture_trigger_restored_onto_a_new_table_is_reinstalled_by_migrate() {
    let TestDb { url, admin, app } = TestDb::messages("").await;
    // What pg_restore makes: the trigger's arguments name the table's oid in the dumped database.
    admin
        .batch_execute(
            "DROP TRIGGER pgsse_capture_stage ON messages;
             DO $$ BEGIN EXECUTE format('CREATE TRIGGER pgsse_capture_stage AFTER INSERT ON messages
                     FOR EACH ROW EXECUTE FUNCTION pgsse.capture_stage(%s)',
                 (SELECT string_agg(quote_literal(CASE WHEN i = 2 THEN '1' ELSE a END), ', ' ORDER BY i)
                    FROM pgsse.channels c, unnest(pgsse.capture_args(c)) WITH ORDINALITY AS u(a, i)
                   WHERE c.name = 'messages')); END $$;",
        )
        .await
        .unwrap();
    app.batch_execute("INSERT INTO messages (body) VALUES ('lost')").await.unwrap();
    let staged = "SELECT count(*) FROM pgsse.staged";
    assert_eq!(admin.query_one(staged, &[]).await.unwrap().get::<_, i64>(0), 0);

    pgsse::migrate(&url).await.unwrap();
    app.batch_execute("INSERT INTO messages (body) VALUES ('kept')").await.unwrap();
    let bodies: Vec<String> =
        admin.query("SELECT payload->>'body' FROM pgsse.staged", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    assert_eq!(bodies, ["kept"]);
}

#[tokio::test]
async fn migrate_without_createrole_prints_the_sql_to_run() {
    let cluster = common::private_cluster();
    let admin = cluster.url("postgres");
    let su = connect(&admin).await;
    su.batch_execute("CREATE ROLE app_owner LOGIN").await.unwrap();
    su.batch_execute("CREATE DATABASE owned OWNER app_owner").await.unwrap();
    let owner_url = common::as_role(&cluster.url("owned"), "app_owner");
    let err = pgsse::migrate(&owner_url).await.unwrap_err().to_string();
    assert!(err.contains("lacks CREATEROLE"), "{err}");
    let sql =
        "CREATE ROLE pgsse_gateway NOLOGIN; CREATE ROLE pgsse_owner NOLOGIN; CREATE ROLE pgsse_publisher NOLOGIN; \
               GRANT pgsse_owner TO app_owner;";
    assert!(err.contains(sql), "{err}");
    let owned = connect(&cluster.url("owned")).await;
    let installed = "SELECT to_regnamespace('pgsse') IS NOT NULL";
    assert!(!owned.query_one(installed, &[]).await.unwrap().get::<_, bool>(0), "refused before any file applied");
    su.batch_execute(sql).await.unwrap();
    pgsse::migrate(&owner_url).await.expect("migrate once the operator made the roles");
    drop((su, owned));
    cluster.stop("fast").unwrap();
}

#[tokio::test]
async fn publish_table_names_the_privilege_its_caller_lacks() {
    let url = fresh_db().await;
    let db = connect(&url).await;
    db.batch_execute("CREATE TABLE secret_stuff (id int)").await.unwrap();
    let app = writer(&url).await;
    let err = db_error(app.batch_execute("SELECT pgsse.publish_table('secret_stuff')").await);
    assert_eq!(err, "permission denied for schema pgsse");
    // Even given the function, a role that may not add triggers to the table is told so.
    db.batch_execute(&format!(
        "GRANT USAGE ON SCHEMA pgsse TO {WRITER_ROLE};
         GRANT EXECUTE ON FUNCTION pgsse.publish_table(regclass, text, text[], text, text, text, boolean, boolean,
                                                       text[], text[], boolean, text, boolean, text[], text, boolean)
                           TO {WRITER_ROLE}"
    ))
    .await
    .unwrap();
    let err = db_error(app.batch_execute("SELECT pgsse.publish_table('secret_stuff')").await);
    assert_eq!(err, format!("pgsse: role {WRITER_ROLE} lacks the TRIGGER privilege on table public.secret_stuff"));
}

#[tokio::test]
async fn migrate_names_the_privilege_its_role_lacks() {
    let url = common::empty_db().await;
    let db = connect(&url).await;
    let name: String = db.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    let outsider = format!("{name}_outsider");
    db.batch_execute(&format!("CREATE ROLE {outsider} LOGIN; REVOKE CREATE ON DATABASE {name} FROM PUBLIC"))
        .await
        .unwrap();
    let as_outsider = common::as_role(&url, &outsider);
    let err = pgsse::migrate(&as_outsider).await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "role {outsider} lacks the CREATE privilege on database {name}, which installing schema pgsse needs: run \
             migrate as the database's owner, or have it run: GRANT CREATE ON DATABASE {name} TO {outsider};"
        )
    );
    pgsse::migrate(&url).await.unwrap();
    let err = pgsse::migrate(&as_outsider).await.unwrap_err().to_string();
    assert!(err.starts_with("schema pgsse belongs to role "), "{err}");
    assert!(err.contains(&format!("role {outsider} is not a member of it")), "{err}");
}
