//! A legacy application's own tables, read by the gateway: what it may not read is a 403 that names the
//! GRANT, the table owner's own code never speaks to clients, and the operations guide's setup runs.
mod common;

use bytes::Bytes;
use common::{as_role, call, connect, get, legacy, Gateway, Legacy, SseStream, GATEWAY_ROLE, JSON};
use serde_json::json;

#[tokio::test]
async fn a_snapshot_the_gateway_may_not_read_is_a_403_that_names_the_grant() {
    let Legacy { url, admin, app, admin_role, app_role } = legacy().await;
    app.batch_execute(&format!(
        "CREATE TABLE app.customers (id bigserial PRIMARY KEY, name text, country text, notes text);
         GRANT TRIGGER ON app.customers TO {admin_role};
         GRANT SELECT (id, name, country) ON app.customers TO pgsse_gateway;
         INSERT INTO app.customers (name, country, notes) VALUES ('ann', 'NZ', 'private');"
    ))
    .await
    .unwrap();
    admin
        .batch_execute("SELECT pgsse.publish_table('app.customers', exclude_columns => array['notes'])")
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    let mut rows = SseStream::ok(gw.addr, "/customers/events?snapshot=true", &[]).await;
    assert_eq!(rows.expect().await.json(), json!({"id": 1, "name": "ann", "country": "NZ"}));

    // A column added later is published (exclude_columns), but the gateway may not read it yet.
    app.batch_execute("ALTER TABLE app.customers ADD COLUMN tier text").await.unwrap();
    let refused = get(gw.addr, "/customers/events?snapshot=true", &[]).await.unwrap();
    assert_eq!(refused.status, 403, "{}", refused.body);
    let want =
        format!("have the table's owner (role {app_role}) run: GRANT SELECT (tier) ON app.customers TO pgsse_gateway;");
    assert!(refused.json()["error"].as_str().unwrap().ends_with(&want), "{}", refused.body);
    assert!(refused.json()["error"].as_str().unwrap().contains(GATEWAY_ROLE), "names the role: {}", refused.body);
}

/// `word` replaced by `with` wherever it stands as a whole SQL word.
fn rename(sql: &str, word: &str, with: &str) -> String {
    let is_word = |c: char| c.is_alphanumeric() || c == '_' || c == '.';
    let mut out = String::new();
    let mut rest = sql;
    while let Some(at) = rest.find(word) {
        let before = rest[..at].chars().next_back();
        let after = rest[at + word.len()..].chars().next();
        out.push_str(&rest[..at]);
        out.push_str(if before.is_some_and(is_word) || after.is_some_and(is_word) { word } else { with });
        rest = &rest[at + word.len()..];
    }
    out + rest
}

#[tokio::test]
async fn the_legacy_setup_in_the_operations_guide_runs_as_written() {
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let block = guide.split("<!-- legacy-setup -->\n```sql\n").nth(1).unwrap().split("```").next().unwrap();
    common::fresh_db().await;
    let url = common::empty_db().await;
    let su = connect(&url).await;
    let db: String = su.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    let (admin_role, app_role, gw) = (format!("{db}_admin"), format!("{db}_app"), format!("{db}_gw"));
    su.batch_execute(&format!(
        "CREATE ROLE {admin_role} LOGIN; CREATE ROLE {app_role} LOGIN; ALTER DATABASE {db} OWNER TO {admin_role};
         CREATE SCHEMA app AUTHORIZATION {app_role};"
    ))
    .await
    .unwrap();
    let app = connect(&as_role(&url, &app_role)).await;
    app.batch_execute("CREATE TABLE app.customers (id bigserial PRIMARY KEY, name text, country text, notes text)")
        .await
        .unwrap();
    // The block's three parts, each run as the role its heading names; this test's roles have names of
    // their own, since roles are shared by every database of the test cluster.
    let mut parts: Vec<(String, String)> = Vec::new();
    for line in block.lines() {
        match line.strip_prefix("-- as ") {
            Some(who) => parts.push((who.to_string(), String::new())),
            None if !line.starts_with("--") => parts.last_mut().unwrap().1.push_str(&format!("{line}\n")),
            None => {}
        }
    }
    assert_eq!(parts.len(), 3, "{parts:?}");
    for (who, sql) in parts {
        let sql = rename(&rename(&rename(&sql, "admin", &admin_role), "gw", &gw), "app", &app_role);
        let sql = sql.replace(&format!("{app_role}.customers"), "app.customers");
        let sql = sql.replace(&format!("schema {app_role} "), "schema app ");
        if who.starts_with("an operator") {
            for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                // pgsse's three roles exist already on the test cluster (they are cluster-wide).
                if let Err(err) = su.batch_execute(statement).await {
                    assert!(statement.starts_with("create role pgsse_"), "{statement}: {err:?}");
                }
            }
        } else if who.starts_with("app") {
            app.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        } else {
            pgsse::migrate(&as_role(&url, &admin_role)).await.unwrap();
            let admin = connect(&as_role(&url, &admin_role)).await;
            admin.batch_execute(&sql).await.unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        }
    }
    let config = pgsse::config::Config::new(format!("{} password=change-me", as_role(&url, &gw))).unwrap();
    let gateway = Gateway::start_with(config).await;
    app.batch_execute("INSERT INTO app.customers (name, country, notes) VALUES ('ann', 'NZ', 'private')")
        .await
        .unwrap();
    let mut snapshot = SseStream::ok(gateway.addr, "/customers/events?snapshot=true", &[]).await;
    assert_eq!(snapshot.expect().await.json(), json!({"id": 1, "name": "ann", "country": "NZ"}));
    let posted = call(gateway.addr, "POST", "/customers", &[JSON], Bytes::from(r#"{"name": "bo"}"#)).await.unwrap();
    assert_eq!(posted.status, 201, "{}", posted.body);
}

/// The table's own code (a policy, a domain's CHECK) may raise any message it likes while the gateway reads
/// a snapshot: none of its words reach the client, only what kind of refusal it was.
#[tokio::test]
async fn a_table_owners_error_messages_never_reach_a_client() {
    let Legacy { url, admin, app, admin_role, .. } = legacy().await;
    app.batch_execute(&format!(
        "CREATE FUNCTION app.spy() RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN RAISE EXCEPTION 'pgsse: leaked %', (SELECT string_agg(payload::text, ' ') FROM pgsse.events)
             USING ERRCODE = '42501', HINT = 'leaked too'; END $$;
         CREATE FUNCTION app.spy_check(t text) RETURNS boolean LANGUAGE plpgsql AS $$
         BEGIN
             IF t = 'x' THEN RAISE EXCEPTION 'pgsse: leaked by a check' USING ERRCODE = '22023'; END IF;
             RETURN true;
         END $$;
         CREATE DOMAIN app.code AS text CHECK (app.spy_check(VALUE));
         CREATE TABLE app.orders (id bigserial PRIMARY KEY, code app.code);
         CREATE TABLE app.spied (id bigserial PRIMARY KEY);
         GRANT TRIGGER ON app.orders, app.spied TO {admin_role};
         GRANT SELECT ON app.orders, app.spied TO pgsse_gateway;
         ALTER TABLE app.spied ENABLE ROW LEVEL SECURITY;
         CREATE POLICY spy ON app.spied FOR SELECT USING (app.spy());
         INSERT INTO app.spied DEFAULT VALUES;
         INSERT INTO app.orders (code) VALUES ('y');"
    ))
    .await
    .unwrap();
    admin
        .batch_execute("SELECT pgsse.publish_table('app.orders'); SELECT pgsse.publish_table('app.spied')")
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    let resp = get(gw.addr, "/spied/events?snapshot=true", &[]).await.unwrap();
    assert_eq!(resp.status, 403, "{}", resp.body);
    assert!(!resp.body.contains("leaked"), "{}", resp.body);
    assert!(resp.body.contains("table of channel"), "{}", resp.body);
    // A filter's value is cast to the domain's base type, so the domain's CHECK does not even run.
    let mut filtered = common::SseStream::ok(gw.addr, "/orders/events?snapshot=true&code=eq.x", &[]).await;
    let end = filtered.expect().await;
    assert_eq!((end.event.as_str(), end.json()["rows"].clone()), ("snapshot-end", json!(0)));
}

/// Nor do its words reach a client through a write: its triggers run as the gateway's login on POST and
/// DELETE, and whatever they raise comes back as pgsse's own kind of refusal.
#[tokio::test]
async fn a_table_owners_triggers_never_speak_to_a_client_through_a_write() {
    let Legacy { url, admin, app, admin_role, .. } = legacy().await;
    app.batch_execute(&format!(
        "CREATE TABLE app.notes (id bigserial PRIMARY KEY, code text);
         CREATE FUNCTION app.leak() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             RAISE EXCEPTION 'LEAK %', (SELECT string_agg(payload::text, ',') FROM pgsse.events)
                 USING ERRCODE = coalesce(NEW.code, OLD.code), HINT = 'LEAK', COLUMN = 'LEAK', CONSTRAINT = 'LEAK';
         END $$;
         CREATE TRIGGER leak BEFORE INSERT OR DELETE ON app.notes FOR EACH ROW EXECUTE FUNCTION app.leak();
         GRANT TRIGGER ON app.notes TO {admin_role}; GRANT SELECT ON app.notes TO pgsse_gateway;
         GRANT INSERT, DELETE ON app.notes TO {GATEWAY_ROLE}; GRANT USAGE ON SEQUENCE app.notes_id_seq TO {GATEWAY_ROLE};
         ALTER TABLE app.notes DISABLE TRIGGER leak; INSERT INTO app.notes (code) VALUES ('P0001');
         ALTER TABLE app.notes ENABLE TRIGGER leak;"
    ))
    .await
    .unwrap();
    admin
        .batch_execute("SELECT pgsse.publish_table('app.notes', writable => true, allow_clear => true)")
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    for (code, status) in
        [("42501", 403), ("22023", 400), ("23505", 409), ("23502", 422), ("P0001", 422), ("P0002", 422)]
    {
        let body = Bytes::from(format!(r#"{{"code": "{code}"}}"#));
        let resp = call(gw.addr, "POST", "/notes", &[JSON], body).await.unwrap();
        assert_eq!(resp.status, status, "{code}: {}", resp.body);
        assert!(!resp.body.contains("LEAK"), "{code}: {}", resp.body);
    }
    let resp = call(gw.addr, "DELETE", "/notes", &[], Bytes::new()).await.unwrap();
    assert_eq!(resp.status, 422, "{}", resp.body);
    assert!(!resp.body.contains("LEAK") && resp.body.contains("own code"), "{}", resp.body);
}
