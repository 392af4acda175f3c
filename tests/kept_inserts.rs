//! POST's kept inserts (one statement per channel and key set, kept as text): each write after the first
//! is that one statement, and a kept one never outlives what its channel and table were when it was made.

mod common;

use bytes::Bytes;
use common::{call, function_calls, track_functions, Fixture, Gateway, Response, TestDb, JSON};

async fn post(gw: &Gateway, body: &str) -> Response {
    post_to(gw, "/messages", body).await
}

async fn post_to(gw: &Gateway, path: &str, body: &str) -> Response {
    call(gw.addr, "POST", path, &[JSON], Bytes::from(body.to_string())).await.unwrap()
}

/// Publishes `messages` again, camelCased, with `args`.
async fn publish(admin: &tokio_postgres::Client, args: &str) {
    let publish = format!("SELECT pgsse.publish_table('messages', camel_case => true{args})");
    admin.batch_execute(&publish).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_with_the_same_keys_are_one_statement_each() {
    let TestDb { url, admin, .. } = TestDb::messages(", writable => true").await;
    track_functions(&admin).await;
    let gw = Gateway::start(&url).await;
    const POSTS: usize = 20;
    for n in 0..POSTS {
        // Keys in either order are one key set.
        let body = match n % 2 {
            0 => format!(r#"{{"body": "post {n}", "created_at": "2026-01-01T00:00:00Z"}}"#),
            _ => format!(r#"{{"created_at": "2026-01-01T00:00:00Z", "body": "post {n}"}}"#),
        };
        let posted = post(&gw, &body).await;
        assert_eq!(posted.status, 201, "{}", posted.body);
        assert_eq!(posted.json()["body"], format!("post {n}"));
    }
    let rows: i64 = admin.query_one("SELECT count(*) FROM messages", &[]).await.unwrap().get(0);
    assert_eq!(rows, POSTS as i64);
    let planned = function_calls(&admin, gw, &["insert_json", "insert_plan"]).await;
    assert_eq!(planned, 1, "the first POST asks for the plan, and no POST calls pgsse.insert_json");
}

/// Every change that would make a kept insert do what `pgsse.insert_json` would not: the kept one then
/// inserts nothing (or fails), and the POST gets `pgsse.insert_json`'s answer.
#[tokio::test]
async fn a_kept_insert_follows_its_channel_and_table_as_they_change() {
    let Fixture { admin, gw, .. } = Fixture::messages(", writable => true, camel_case => true").await;
    admin.batch_execute("ALTER TABLE messages ADD COLUMN posted_by text").await.unwrap();
    let ann = post(&gw, r#"{"body": "a", "postedBy": "ann"}"#).await;
    assert_eq!((ann.status, ann.json()["postedBy"].as_str()), (201, Some("ann")), "{}", ann.body);

    // A column whose exact name is a key now takes it, as it would on a first POST.
    admin.batch_execute(r#"ALTER TABLE messages ADD COLUMN "postedBy" text"#).await.unwrap();
    let bob = post(&gw, r#"{"body": "b", "postedBy": "bob"}"#).await;
    assert_eq!(bob.status, 201, "{}", bob.body);
    let row = admin.query_one(r#"SELECT posted_by, "postedBy" FROM messages WHERE body = 'b'"#, &[]).await.unwrap();
    assert_eq!((row.get::<_, Option<String>>(0), row.get::<_, Option<String>>(1)), (None, Some("bob".into())));

    // A column gone: the kept statement fails, and the POST is answered as pgsse.insert_json answers it.
    admin.batch_execute(r#"ALTER TABLE messages DROP COLUMN "postedBy""#).await.unwrap();
    let cy = post(&gw, r#"{"body": "c", "postedBy": "cy"}"#).await;
    assert_eq!(cy.status, 201, "{}", cy.body);
    assert_eq!(cy.json()["postedBy"], "cy", "the camelCase key names posted_by again");

    let again = post(&gw, r#"{"body": "c"}"#).await;
    assert_eq!(again.status, 201, "{}", again.body);
    publish(&admin, ", writable => true, writable_columns => ARRAY['created_at']").await;
    let narrowed = post(&gw, r#"{"body": "d"}"#).await;
    assert_eq!(narrowed.status, 403, "{}", narrowed.body);
    assert!(narrowed.error().contains("writable_columns"), "{}", narrowed.body);

    publish(&admin, ", writable => true").await;
    assert_eq!(post(&gw, r#"{"body": "e"}"#).await.status, 201);
    publish(&admin, "").await;
    let read_only = post(&gw, r#"{"body": "f"}"#).await;
    assert_eq!(read_only.status, 403, "{}", read_only.body);
    assert!(read_only.error().contains("writable => true"), "{}", read_only.body);

    // Another table under the published one's name: the channel's own table takes the row.
    publish(&admin, ", writable => true").await;
    assert_eq!(post(&gw, r#"{"body": "g"}"#).await.status, 201);
    admin
        .batch_execute(
            "ALTER TABLE messages RENAME TO messages_before;
             CREATE TABLE messages (LIKE messages_before INCLUDING ALL);",
        )
        .await
        .unwrap();
    let renamed = post(&gw, r#"{"body": "h"}"#).await;
    assert_eq!(renamed.status, 201, "{}", renamed.body);
    let (published, other): (i64, i64) = {
        let row = admin
            .query_one(
                "SELECT (SELECT count(*) FROM messages_before WHERE body = 'h'), (SELECT count(*) FROM messages)",
                &[],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!((published, other), (1, 0), "the row goes to the table the channel publishes");

    assert_eq!(post(&gw, r#"{"body": "i", "postedBy": "ivy"}"#).await.status, 201);
    admin.batch_execute("ALTER TABLE messages_before DROP COLUMN posted_by").await.unwrap();
    let gone = post(&gw, r#"{"body": "k", "postedBy": "kim"}"#).await;
    assert_eq!(gone.status, 400, "{}", gone.body);
    assert!(gone.error().contains("unknown column: postedBy"), "{}", gone.body);
}

/// A value its column cannot take, or a key the table already holds, is refused in pgsse's words, and
/// the kept insert still serves the next POST.
#[tokio::test]
async fn a_refused_row_is_answered_as_before() {
    let Fixture { admin, gw, .. } = Fixture::messages(", writable => true").await;
    admin.batch_execute("ALTER TABLE messages ADD COLUMN n int UNIQUE").await.unwrap();
    assert_eq!(post(&gw, r#"{"body": "a", "n": 1}"#).await.status, 201);
    let twice = post(&gw, r#"{"body": "b", "n": 1}"#).await;
    assert_eq!(twice.status, 409, "{}", twice.body);
    let bad = post(&gw, r#"{"body": "c", "n": "many"}"#).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
    assert!(bad.error().contains("\"n\": not a value of its type, integer"), "{}", bad.body);
    assert_eq!(post(&gw, r#"{"body": "d", "n": 2}"#).await.status, 201);
}

/// A channel that no longer publishes a table but takes events under the same name: a POST with a kept
/// insert's keys publishes an event, as it would have without one.
#[tokio::test]
async fn a_channel_that_lost_its_table_takes_events_again() {
    let Fixture { admin, gw, .. } = Fixture::messages(", writable => true").await;
    assert_eq!(post(&gw, r#"{"body": "a row"}"#).await.status, 201);
    admin
        .batch_execute("SELECT pgsse.unpublish_table('messages'); SELECT pgsse.create_channel('messages')")
        .await
        .unwrap();
    let event = post(&gw, r#"{"body": "an event"}"#).await;
    assert_eq!(event.status, 201, "{}", event.body);
    assert_eq!(
        (event.json()["event"].as_str(), event.json()["data"]["body"].as_str()),
        (Some("message"), Some("an event"))
    );
    let rows: i64 = admin.query_one("SELECT count(*) FROM messages", &[]).await.unwrap().get(0);
    assert_eq!(rows, 1, "only the first POST made a row");
}

/// A row that the table's own trigger turns into an update of another (returning NULL), or that a rule
/// writes elsewhere: written once, as `pgsse.insert_json` writes it, and answered as committed.
#[tokio::test]
async fn rows_a_trigger_or_rule_rewrites_are_written_once() {
    let TestDb { url, admin, .. } = TestDb::new().await;
    admin
        .batch_execute(
            "CREATE TABLE hits (k text PRIMARY KEY, n int NOT NULL DEFAULT 1);
             CREATE FUNCTION count_hit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 UPDATE public.hits SET n = n + 1 WHERE k = NEW.k;
                 IF FOUND THEN RETURN NULL; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER a_count BEFORE INSERT ON hits FOR EACH ROW EXECUTE FUNCTION count_hit();
             GRANT SELECT, UPDATE ON hits TO pgsse_test_gateway;
             SELECT pgsse.publish_table('hits', writable => true);
             CREATE TABLE notes (x text);
             CREATE TABLE copies (x text);
             CREATE RULE twice AS ON INSERT TO notes DO INSTEAD
                 INSERT INTO public.copies SELECT NEW.x FROM generate_series(1, 2) RETURNING copies.x;
             SELECT pgsse.publish_table('notes', writable => true);",
        )
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    let first = post_to(&gw, "/hits", r#"{"k": "a"}"#).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let answers =
        [post_to(&gw, "/hits", r#"{"k": "a"}"#).await.status, post_to(&gw, "/hits", r#"{"k": "a"}"#).await.status];
    assert_eq!(answers, [202, 202], "committed, without an event: the trigger updated the row instead");
    let n: i32 = admin.query_one("SELECT n FROM hits WHERE k = 'a'", &[]).await.unwrap().get(0);
    assert_eq!(n, 3, "each POST counted once");
    for round in 1..=2i64 {
        let ruled = post_to(&gw, "/notes", r#"{"x": "v"}"#).await;
        assert_eq!(ruled.status, 202, "{}", ruled.body);
        let copies: i64 = admin.query_one("SELECT count(*) FROM copies", &[]).await.unwrap().get(0);
        assert_eq!(copies, 2 * round, "the rule's two rows, once per POST");
    }
}

/// A table republished under the name of the one a camelCase key's insert was kept for, with a column
/// of the key's exact name: the key goes to that column, as on a first POST.
#[tokio::test]
async fn a_camel_case_key_follows_a_replaced_table() {
    let Fixture { admin, gw, .. } = Fixture::messages(", writable => true, camel_case => true").await;
    admin.batch_execute("ALTER TABLE messages ADD COLUMN posted_by text").await.unwrap();
    assert_eq!(post(&gw, r#"{"body": "a", "postedBy": "ann"}"#).await.status, 201);
    admin
        .batch_execute(
            r#"SELECT pgsse.unpublish_table('messages');
               ALTER TABLE messages RENAME TO messages_before;
               CREATE TABLE messages (id bigserial PRIMARY KEY, body text NOT NULL, posted_by text, "postedBy" text);
               SELECT pgsse.publish_table('messages', writable => true, camel_case => true,
                                          exclude_columns => ARRAY['posted_by']);"#,
        )
        .await
        .unwrap();
    let bob = post(&gw, r#"{"body": "b", "postedBy": "bob"}"#).await;
    assert_eq!((bob.status, bob.json()["postedBy"].as_str()), (201, Some("bob")), "{}", bob.body);
    let hidden: Option<String> = admin.query_one("SELECT posted_by FROM messages", &[]).await.unwrap().get(0);
    assert_eq!(hidden, None, "nothing went to the column the channel does not publish");
}

/// A kept insert that fails after taking its statement's whole time leaves no time for `pgsse.insert_json`
/// within the bound: the POST is told to retry, and nothing was written (a fallback that then committed
/// would have been answered 503 too, had the bound passed during it).
#[tokio::test]
async fn no_fallback_starts_too_late_to_finish_within_the_bound() {
    let TestDb { url, admin, .. } = TestDb::messages(", writable => true").await;
    let gw = Gateway::start_configured(&url, |c| c.pool.db_timeout = std::time::Duration::from_secs(3)).await;
    assert_eq!(post(&gw, r#"{"body": "kept"}"#).await.status, 201);
    admin
        .batch_execute(
            "CREATE FUNCTION slow_when_kept() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF current_query() LIKE 'WITH inserted AS%' THEN PERFORM pg_sleep(5); END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER slow BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION slow_when_kept();",
        )
        .await
        .unwrap();
    let late = post(&gw, r#"{"body": "late"}"#).await;
    assert_eq!(late.status, 503, "{}", late.body);
    let rows: i64 = admin.query_one("SELECT count(*) FROM messages WHERE body = 'late'", &[]).await.unwrap().get(0);
    assert_eq!(rows, 0);
}

/// What a table's trigger leaves in its session stays with the POST that ran it: the pooled session is
/// reset (no statement timeout or role of the trigger's own on later requests, no temporary type that
/// shadows the gateway's casts), and a session whose prepared statements the trigger deallocated, or
/// replaced with its own under their names, loses them all and prepares its own again. The kept insert
/// is a prepared statement, so that a POST does not plan it anew.
#[tokio::test]
async fn a_tables_trigger_leaves_nothing_in_the_pooled_session() {
    let TestDb { url, admin, .. } = TestDb::messages(", writable => true").await;
    // One pooled session, so that every request after the trigger's meets what it left.
    let gw = Gateway::start_configured(&url, |c| c.pool.pool_size = 1).await;
    common::plant_statement_taker(&admin).await;
    admin
        .batch_execute(
            "CREATE TABLE sessions (n serial, body text, pid int);
             GRANT INSERT ON sessions TO pgsse_test_gateway;
             GRANT USAGE ON SEQUENCE sessions_n_seq TO pgsse_test_gateway;
             CREATE FUNCTION meddle() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO public.sessions (body, pid) VALUES (NEW.body, pg_backend_pid());
                 PERFORM set_config('application_name', 'meddled', false);
                 PERFORM set_config('statement_timeout', '0', false);
                 IF NEW.body = 'deallocate' THEN DEALLOCATE ALL; END IF;
                 IF NEW.body = 'role' THEN PERFORM set_config('role', 'pgsse_gateway', false); END IF;
                 IF NEW.body = 'shadow' THEN
                     CREATE DOMAIN pg_temp.jsonb AS pg_catalog.jsonb CHECK (false);
                     CREATE DOMAIN pg_temp.int8 AS pg_catalog.int8 CHECK (false);
                     PREPARE meddler AS SELECT 1;
                 END IF;
                 IF NEW.body = 'hijack' THEN PERFORM public.take_statements(); END IF;
                 IF NEW.body = 'kept' AND NOT EXISTS (SELECT FROM pg_prepared_statements
                                                       WHERE NOT from_sql AND statement LIKE 'WITH inserted AS%') THEN
                     RAISE EXCEPTION 'the kept insert is not a prepared statement';
                 END IF;
                 IF NEW.body = 'check' AND EXISTS (SELECT FROM pg_prepared_statements WHERE from_sql) THEN
                     RAISE EXCEPTION 'a statement the trigger prepared outlived its request';
                 END IF;
                 IF NEW.body = 'check' AND current_user <> session_user THEN
                     RAISE EXCEPTION 'a role the trigger set outlived its request';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER meddle BEFORE INSERT ON messages FOR EACH ROW EXECUTE FUNCTION meddle();",
        )
        .await
        .unwrap();
    for n in 0..4 {
        assert_eq!(post(&gw, &format!(r#"{{"body": "row {n}"}}"#)).await.status, 201);
    }
    let meddled: i64 = admin
        .query_one("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'meddled'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(meddled, 0, "every session the trigger ran in was reset");
    let bodies = ["kept", "deallocate", "role", "check", "shadow", "check", "hijack", "check", "kept"];
    for body in bodies {
        let meddling = post(&gw, &format!(r#"{{"body": "{body}"}}"#)).await;
        assert_eq!(meddling.status, 201, "{body}: {}", meddling.body);
    }
    // A session whose statements the trigger took (or replaced) is not handed out again; one whose settings
    // and role it changed is reset, and kept.
    let rows = admin.query("SELECT body, pid FROM sessions ORDER BY n DESC LIMIT 9", &[]).await.unwrap();
    let pids: Vec<(String, i32)> = rows.iter().rev().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(pids.iter().map(|(b, _)| b.as_str()).collect::<Vec<_>>(), bodies);
    let kept: Vec<bool> = pids.windows(2).map(|w| w[0].1 == w[1].1).collect();
    assert_eq!(kept, [true, false, true, true, false, true, false, true], "{pids:?}");
    for n in 0..8 {
        let history = common::get(gw.addr, "/messages", &[]).await.unwrap();
        assert_eq!(history.status, 200, "request {n} after: {}", history.body);
        assert_eq!(post(&gw, &format!(r#"{{"body": "after {n}"}}"#)).await.status, 201);
    }
}

/// A wide table's kept inserts run unnamed, whatever keys a row has: a session would hold each prepared
/// insert's plan, which grows with the table's width, and a client chooses how many key sets it sends.
#[tokio::test]
async fn a_wide_tables_kept_inserts_are_not_prepared() {
    let TestDb { url, admin, .. } = TestDb::messages("").await;
    admin
        .batch_execute(
            "DO $$ BEGIN
                 EXECUTE 'CREATE TABLE wide (' || (SELECT string_agg(format('c%s text', lpad(i::text, 3, '0')), ', ')
                                                    FROM generate_series(1, 80) i) || ')';
             END $$;
             GRANT INSERT ON wide TO pgsse_test_gateway;
             SELECT pgsse.publish_table('wide', writable => true);
             CREATE FUNCTION unprepared() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF EXISTS (SELECT FROM pg_prepared_statements WHERE statement LIKE 'WITH inserted AS (INSERT INTO public.wide %') THEN
                     RAISE EXCEPTION 'a long kept insert was prepared';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER unprepared BEFORE INSERT ON wide FOR EACH ROW EXECUTE FUNCTION unprepared();",
        )
        .await
        .unwrap();
    let gw = Gateway::start_configured(&url, |c| c.pool.pool_size = 1).await;
    let all = serde_json::Value::Object((1..=80).map(|i| (format!("c{i:03}"), "v".into())).collect()).to_string();
    for row in [r#"{"c001": "v"}"#, &all, r#"{"c001": "v"}"#, &all, r#"{"c001": "v"}"#] {
        let posted = post_to(&gw, "/wide", row).await;
        assert_eq!(posted.status, 201, "{}", posted.body);
    }
}

/// A gateway that may insert only some columns (a column grant, no table grant) is refused as
/// `pgsse.insert_json` refuses it, whether or not an insert was kept before the grant changed.
#[tokio::test]
async fn column_grants_mean_the_same_on_both_paths() {
    let Fixture { admin, gw, .. } = Fixture::messages(", writable => true").await;
    assert_eq!(post(&gw, r#"{"body": "kept"}"#).await.status, 201);
    admin
        .batch_execute(
            "REVOKE INSERT ON messages FROM pgsse_test_gateway; GRANT INSERT (body) ON messages TO pgsse_test_gateway",
        )
        .await
        .unwrap();
    let kept = post(&gw, r#"{"body": "after"}"#).await;
    let keyed =
        call(gw.addr, "POST", "/messages", &[JSON, ("idempotency-key", "k1")], Bytes::from(r#"{"body": "after"}"#))
            .await
            .unwrap();
    assert_eq!((kept.status, keyed.status), (403, 403), "{} / {}", kept.body, keyed.body);
    assert_eq!(kept.body, keyed.body);
}

/// An install made by the build whose `pgsse.insert_plan` also returned its table's width: `migrate`
/// replaces that form, which `CREATE OR REPLACE` cannot, and POST goes on; what was made on it is named.
#[tokio::test]
async fn an_insert_plan_that_returned_a_width_is_replaced_by_migrate() {
    let TestDb { url, admin, .. } = TestDb::messages(", writable => true").await;
    admin
        .batch_execute(
            "DROP FUNCTION pgsse.insert_plan(text, text[]);
             CREATE FUNCTION pgsse.insert_plan(p_channel text, p_keys text[], OUT source regclass, OUT captured boolean,
                 OUT columns text[], OUT statement text, OUT guarded text, OUT width integer)
             LANGUAGE sql AS 'SELECT NULL::regclass, false, NULL::text[], NULL::text, NULL::text, 0';
             ALTER FUNCTION pgsse.insert_plan(text, text[]) OWNER TO pgsse_owner;",
        )
        .await
        .unwrap();
    // A view made on it, even a temporary one of the gateway's login, is named, not dropped.
    let gateway = pgsse::testing::connect(&pgsse::testing::as_role(&url, pgsse::testing::GATEWAY_ROLE)).await;
    gateway.batch_execute("CREATE TEMP VIEW pin AS SELECT * FROM pgsse.insert_plan('x', '{}')").await.unwrap();
    let err = pgsse::migrate(&url).await.unwrap_err().to_string();
    assert!(err.contains("view pg_temp") && err.contains("pin") && err.contains("drop it"), "{err}");
    assert!(err.contains(&format!("owned by {}", pgsse::testing::GATEWAY_ROLE)), "{err}");
    drop(gateway);
    common::wait_for("migrate, once the view's session has ended", || async { pgsse::migrate(&url).await.is_ok() })
        .await;
    let names =
        "SELECT proargnames FROM pg_catalog.pg_proc WHERE oid = 'pgsse.insert_plan(text, text[])'::regprocedure";
    let names: Vec<String> = admin.query_one(names, &[]).await.unwrap().get(0);
    assert!(!names.contains(&"width".into()) && names.contains(&"guarded".into()), "{names:?}");
    // The present functions are left as they are: a view on them does not stop a migrate.
    let gateway = pgsse::testing::connect(&pgsse::testing::as_role(&url, pgsse::testing::GATEWAY_ROLE)).await;
    let pins = "CREATE TEMP VIEW pin AS SELECT * FROM pgsse.insert_plan('x', '{}');
                CREATE TEMP VIEW pin_sequenced AS SELECT * FROM pgsse.sequenced(NULL::xid8, 0, 'x');";
    gateway.batch_execute(pins).await.unwrap();
    pgsse::migrate(&url).await.expect("a migrate after it leaves them as they are");
    drop(gateway);
    let gw = Gateway::start(&url).await;
    let posted = post(&gw, r#"{"body": "after"}"#).await;
    assert_eq!(posted.status, 201, "{}", posted.body);
}

/// Changes of a table that its kept insert must follow and that no lookup of its channel shows: a
/// second column whose camelCase form is a key's, and a serial column whose sequence the gateway may
/// UPDATE but not USE. The kept insert answers as a first POST (`pgsse.insert_json`) does.
#[tokio::test]
async fn a_camel_case_twin_and_an_update_only_sequence_answer_as_a_first_post_would() {
    let Fixture { url, admin, gw, .. } = Fixture::messages(", writable => true, camel_case => true").await;
    admin.batch_execute("ALTER TABLE messages ADD COLUMN posted_by text").await.unwrap();
    let kept = post(&gw, r#"{"body": "a", "postedBy": "ann"}"#).await;
    assert_eq!(kept.status, 201, "{}", kept.body);
    admin.batch_execute("ALTER TABLE messages ADD COLUMN posted__by text").await.unwrap();
    let fresh = Gateway::start(&url).await;
    for gw in [&gw, &fresh] {
        let twin = post(gw, r#"{"body": "b", "postedBy": "bob"}"#).await;
        assert_eq!(twin.status, 400, "{}", twin.body);
        assert!(twin.error().contains("more than one column"), "{}", twin.body);
    }
    // With one of the twins named too, the ambiguous key is still what the refusal names.
    let named = post(&fresh, r#"{"body": "b", "postedBy": "bob", "posted__by": "bo"}"#).await;
    assert!(named.error().contains("key postedBy is the camelCase form"), "{}", named.body);

    admin
        .batch_execute(
            "ALTER TABLE messages DROP COLUMN posted__by; ALTER TABLE messages ADD COLUMN seq2 serial;
             REVOKE ALL ON SEQUENCE messages_seq2_seq FROM pgsse_test_gateway;
             GRANT UPDATE ON SEQUENCE messages_seq2_seq TO pgsse_test_gateway;",
        )
        .await
        .unwrap();
    for (gw, body) in [(&gw, "c"), (&fresh, "d")] {
        let drawn = post(gw, &format!(r#"{{"body": "{body}", "postedBy": "cy"}}"#)).await;
        assert_eq!(drawn.status, 201, "nextval takes UPDATE as it takes USAGE: {}", drawn.body);
    }
}

/// The same on a database whose default collation is not C (ICU's root locale), for a column name whose
/// letters the two collations case differently: the kept insert sees the twin as a first POST does.
#[tokio::test]
async fn a_camel_case_twin_with_letters_beyond_ascii_is_seen_whatever_the_collation() {
    let TestDb { url, admin, .. } =
        TestDb::created_with("TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'und'").await;
    common::messages_table(&admin, ", writable => true, camel_case => true").await;
    admin.batch_execute(r#"ALTER TABLE messages ADD COLUMN "Ärger_grund" text"#).await.unwrap();
    let gw = Gateway::start(&url).await;
    let kept = post(&gw, r#"{"body": "a", "ÄrgerGrund": "one"}"#).await;
    assert_eq!(kept.status, 201, "{}", kept.body);
    admin.batch_execute(r#"ALTER TABLE messages ADD COLUMN "Ärger__grund" text"#).await.unwrap();
    let fresh = Gateway::start(&url).await;
    for gw in [&gw, &fresh] {
        let twin = post(gw, r#"{"body": "b", "ÄrgerGrund": "two"}"#).await;
        assert_eq!(twin.status, 400, "{}", twin.body);
        assert!(twin.error().contains("more than one column"), "{}", twin.body);
    }
}
