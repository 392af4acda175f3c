//! The errors a user can cause, each with the one line that names its cause and, where there is one, the
//! fix: one table, walked by one test per way of meeting them (the binary's output, HTTP answers).

mod common;

use std::process::Command;

use common::{empty_db, fresh_db, Gateway};

const BIN: &str = env!("CARGO_BIN_EXE_pgsse");

/// `url` with its database (the last path segment) or user replaced.
fn with_database(url: &str, database: &str) -> String {
    format!("{}/{database}", url.rsplit_once('/').unwrap().0)
}

fn with_user(url: &str, user: &str) -> String {
    url.replacen("postgres://postgres@", &format!("postgres://{user}@"), 1)
}

#[tokio::test]
async fn the_binary_names_each_database_error_and_its_fix() {
    let url = fresh_db().await;
    let port = url.rsplit_once(':').unwrap().1.split('/').next().unwrap().to_string();
    // A port nothing listens on once this listener is dropped.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let refused = format!("postgres://postgres@{closed}/postgres");
    for (args, exit, message) in [
        (
            vec!["migrate", "--database-url", &with_database(&url, "no_such_db")],
            1,
            format!("cannot connect to 127.0.0.1:{port}: database \"no_such_db\" does not exist"),
        ),
        (
            vec!["migrate", "--database-url", &with_user(&url, "no_such_role")],
            1,
            format!("cannot connect to 127.0.0.1:{port}: role \"no_such_role\" does not exist"),
        ),
        (
            vec!["migrate", "--database-url", &refused],
            1,
            format!("cannot connect to {closed}: error connecting to server: Connection refused"),
        ),
    ] {
        let out = Command::new(BIN).args(&args).env_remove("DATABASE_URL").output().unwrap();
        // The log (stdout) carries the error: where the operator's log collector already looks.
        let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(exit), "{args:?}: {output}");
        assert!(output.contains(&message), "{args:?}: wanted {message:?} in {output}");
        assert!(!output.contains("\u{1b}["), "{args:?}: no colour when not on a terminal: {output:?}");
    }
}

#[tokio::test]
async fn a_gateway_before_migrate_says_to_run_it() {
    let url = empty_db().await;
    let gw = Gateway::spawn(common::gateway_config(&url)).await;
    let fix = "run `pgsse migrate`";
    common::wait_for("healthz to name the missing schema", || async {
        let health = common::get(gw.addr, "/healthz", &[]).await.unwrap();
        health.status == 503 && health.body.contains("schema \\\"pgsse\\\" does not exist") && health.body.contains(fix)
    })
    .await;
    for path in ["/orders/events", "/orders"] {
        let resp = common::get(gw.addr, path, &[]).await.unwrap();
        assert_eq!(resp.status, 503, "{path}");
        assert!(resp.json()["error"].as_str().unwrap().contains(fix), "{path}: {}", resp.body);
    }
}

/// `serve` before `migrate` says so once at start and keeps retrying, without a warning per retry.
#[tokio::test]
async fn serve_before_migrate_says_so_once() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let url = empty_db().await;
    let mut serve = tokio::process::Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &url])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(serve.stdout.take().unwrap()).lines();
    let (addr, mut log) = common::serving_addr(&mut lines).await;
    common::wait_for("five failed attempts", || async {
        common::metric(addr, "pgsse_listener_failed_attempts_total").await >= 5
    })
    .await;
    assert_eq!(common::metric(addr, "pgsse_listener_reconnects_total").await, 0, "never up, so no outage");
    serve.start_kill().unwrap();
    while let Ok(Some(line)) = lines.next_line().await {
        log.push(line);
    }
    let warnings: Vec<&String> = log.iter().filter(|l| l.contains("listener connection lost")).collect();
    assert_eq!(warnings.len(), 1, "{log:#?}");
    assert!(warnings[0].contains("run `pgsse migrate`"), "{}", warnings[0]);
}

/// One request: method, path, headers, body, and the status and message it must get.
type Case<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)], &'a str, u16, &'a str);

/// Every error a client of the HTTP interface can cause, with the one line it gets back.
#[tokio::test]
async fn each_http_error_names_its_cause_and_fix() {
    let db = common::TestDb::new().await;
    db.admin
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, user_id int);
             SELECT pgsse.publish_table('orders');
             CREATE TABLE notes (id int PRIMARY KEY, body text);
             SELECT pgsse.publish_table('notes', writable => true);
             GRANT INSERT ON notes TO pgsse_gateway;",
        )
        .await
        .unwrap();
    let gw = Gateway::start(&db.url).await;
    let json = ("content-type", "application/json");
    let table: &[Case] = &[
        ("GET", "/bad%20name/events", &[], "", 400, "invalid channel name \"bad%20name\": use letters, digits"),
        (
            "GET",
            "/nope/events",
            &[],
            "",
            404,
            "unknown channel \"nope\": create it with pgsse.create_channel or pgsse.publish_table",
        ),
        (
            "GET",
            "/nope",
            &[],
            "",
            404,
            "unknown channel \"nope\": create it with pgsse.create_channel or pgsse.publish_table",
        ),
        ("GET", "/events", &[], "", 400, "no channel given: use /{channel}/events or /events?channel=a&channel=b"),
        (
            "GET",
            "/orders/events?usr_id=eq.1",
            &[],
            "",
            400,
            "filter \"usr_id\" names no published column of channel \"orders\" (its columns: id, user_id)",
        ),
        ("GET", "/orders/events?user_id=42", &[], "", 400, "expected operator.value, e.g. eq.42"),
        ("GET", "/orders?usr_id=eq.1", &[], "", 400, "filter \"usr_id\" names no published column"),
        ("GET", "/orders?limit=0", &[], "", 400, "limit must be at least 1"),
        (
            "GET",
            "/orders/events",
            &[("last-event-id", "abc")],
            "",
            400,
            "invalid resume id \"abc\": expected a non-negative integer",
        ),
        (
            "GET",
            "/orders/events?snapshot=true&limit=0",
            &[],
            "",
            400,
            "use a whole number from 1 to 10000 (--snapshot-max-rows)",
        ),
        ("GET", "/orders/events?order=id", &[], "", 400, "order and limit shape a snapshot: add snapshot=true"),
        ("POST", "/orders", &[json], "{\"id\": 1}", 403, "publish its table with writable => true"),
        ("POST", "/notes", &[("content-type", "text/plain")], "x", 415, "content type must be application/json"),
        ("POST", "/notes", &[json], "{", 400, "request body is not valid JSON"),
        ("POST", "/notes", &[json], "[1]", 400, "request body must be a JSON object"),
        ("POST", "/notes", &[json], "{\"id\": \"two\"}", 400, "column \"id\": not a value of its type, integer"),
        ("POST", "/notes", &[json], "{\"nope\": 1}", 400, "unknown column: nope"),
        ("DELETE", "/notes", &[], "", 403, "allow_clear"),
        ("PUT", "/notes", &[], "", 405, "method PUT not allowed here"),
        ("GET", "/a/b/c", &[], "", 404, "not found: /a/b/c"),
    ];
    let mut wrong = Vec::new();
    for (method, path, headers, body, status, message) in table {
        let resp = common::call(gw.addr, method, path, headers, bytes::Bytes::from(body.to_string())).await.unwrap();
        let error = resp.json()["error"].as_str().unwrap_or_default().to_string();
        if resp.status != *status || !error.contains(message) {
            wrong.push(format!("{method} {path}: wanted {status} {message:?}, got {} {error:?}", resp.status));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
