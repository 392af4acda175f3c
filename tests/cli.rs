//! The `pgsse` binary as an operator runs it: configuration errors, `migrate` (also concurrently and as
//! the documented `psql` lines), and `pgsse demo` end to end with the very lines it prints.

mod common;

use std::process::{Command, Stdio};

use common::{connect, fresh_db, SseStream, TIMEOUT};
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_pgsse");

fn pgsse(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).env_remove("DATABASE_URL").output().expect("run pgsse")
}

#[test]
fn invalid_configuration_prints_one_line_and_exits_64() {
    for args in [
        &["--heartbeat", "soon"][..],
        &["serve", "--listen", "nowhere"],
        &["--database-url", "postgres://x@h/db", "--auth", "jwt", "--jwt-secret", "short"],
        &["serve"],
        &["migrate"],
        &["--database-url", "postgres://x@h/db", "--queue-capacity", "0"],
        &["--database-url", "not a url at all"],
        &["--no-such-flag"],
        &["serve", "--heartbat", "5"],
        &["--database-url", "postgres://x@h/db", "--tls-cert", "/nonexistent/cert.pem"],
        &["--database-url", "postgres://x@h/db", "--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"],
        &["--database-url", "postgres://x@h/db", "--jwt-secret", "0123456789abcdef0123456789abcdef"],
        &["serve", "--database-url", ""],
        &["migrate", "--database-url", " "],
    ] {
        let out = pgsse(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: one line, got {stderr:?}");
        assert!(stderr.starts_with("pgsse: "), "{args:?}: {stderr}");
        if args.contains(&"short") {
            assert!(stderr.contains("--jwt-secret (PGSSE_JWT_SECRET) is 5 bytes; HS256 needs at least 32"), "{stderr}");
        }
        if args.contains(&"--jwt-secret") && !args.contains(&"short") {
            assert!(stderr.contains("--auth is none, so it would be ignored"), "{stderr}");
        }
        if args.contains(&"") || args.contains(&" ") {
            assert!(stderr.contains("no database given"), "{stderr}");
        }
        if args.contains(&"nowhere") {
            assert!(stderr.contains("127.0.0.1:4000 for this machine only"), "{stderr}");
        }
        if args.contains(&"--heartbat") {
            assert!(stderr.contains("tip: a similar argument exists: '--heartbeat'"), "the fix for a typo: {stderr}");
        }
        if args.contains(&"--tls-cert") {
            assert!(
                stderr.contains("--tls-key") || stderr.contains("/nonexistent/c.pem"),
                "names what is wrong: {stderr}"
            );
        }
    }
}

#[test]
fn json_logs_are_one_object_per_line() {
    let out = pgsse(&["--log-format", "json", "migrate", "--database-url", "postgres://postgres@127.0.0.1:1/none"]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line =
        stdout.lines().next().unwrap_or_else(|| panic!("a log line; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    let entry: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(entry["level"], "ERROR");
    assert!(entry["fields"]["cause"].as_str().unwrap().contains("cannot connect"));
}

#[test]
fn help_names_every_option_with_its_environment_variable() {
    let out = pgsse(&["serve", "--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in ["--database-url", "DATABASE_URL", "--listen", "PGSSE_LISTEN", "127.0.0.1:4000", "PGSSE_HEARTBEAT"] {
        assert!(help.contains(needle), "help mentions {needle}:\n{help}");
    }
    let demo = String::from_utf8_lossy(&pgsse(&["demo", "--help"]).stdout).into_owned();
    assert!(demo.contains("--data-dir") && !demo.contains("--demo"), "the demo always serves its pages:\n{demo}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_is_idempotent_concurrent_and_equal_to_psql() {
    let url = fresh_db().await;
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let url = url.clone();
            tokio::task::spawn_blocking(move || Command::new(BIN).args(["migrate", "--database-url", &url]).output())
        })
        .collect();
    for run in runs {
        let out = run.await.unwrap().unwrap();
        assert!(out.status.success(), "concurrent migrate: {}", String::from_utf8_lossy(&out.stderr));
    }
    // The documented equivalent (docs/operations.md, Upgrading), run as written: on the migrated database
    // twice, and on an empty one.
    let operations = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/operations.md")).unwrap();
    let by_hand = operations.split("`psql` does the same").nth(1).unwrap();
    let snippet = by_hand.split("```sh\n").nth(1).unwrap().split("```").next().unwrap();
    let by_psql = common::empty_db().await;
    for target in [&url, &url, &by_psql] {
        let out = Command::new("sh")
            .args(["-ec", snippet])
            .env("DATABASE_URL", target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(out.status.success(), "the psql lines: {}", String::from_utf8_lossy(&out.stderr));
    }
    let version = "SELECT schema_version FROM pgsse.meta";
    assert_eq!(connect(&by_psql).await.query_one(version, &[]).await.unwrap().get::<_, i32>(0), pgsse::SCHEMA_VERSION);
    let recorded = "SELECT string_agg(name, ',' ORDER BY name) FROM pgsse.migrations";
    let by_psql = connect(&by_psql).await;
    let names: String = by_psql.query_one(recorded, &[]).await.unwrap().get(0);
    let numbered: Vec<&str> = pgsse::MIGRATIONS.iter().map(|(name, _)| *name).collect();
    assert_eq!(names, numbered.join(","));
    let admin = connect(&url).await;
    assert_eq!(admin.query_one(recorded, &[]).await.unwrap().get::<_, String>(0), names);
    admin.batch_execute("CREATE TABLE t (id int); SELECT pgsse.publish_table('t');").await.unwrap();
    common::writer(&url).await.batch_execute("INSERT INTO t VALUES (1)").await.unwrap();
    // No gateway runs: the event waits, staged, for the first one.
    let row = admin.query_one("SELECT count(*), (SELECT schema_version FROM pgsse.meta) FROM pgsse.staged", &[]).await;
    let (events, version): (i64, i32) = row.map(|r| (r.get(0), r.get(1))).unwrap();
    assert_eq!((events, version), (1, pgsse::SCHEMA_VERSION));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_and_its_printed_psql_line_reaches_the_printed_curl_stream_ignoring_database_url() {
    let dir = std::env::temp_dir().join(format!("pgsse-demo-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let pg_port = pgsse::testing::pg_port().to_string();
    let _cleanup = StopCluster(pgsse::demo::Cluster::new(&dir, pg_port.parse().unwrap()).unwrap());
    let start = || {
        tokio::process::Command::new(BIN)
            .args(["demo", "--listen", "127.0.0.1:0", "--pg-port", &pg_port, "--data-dir"])
            .arg(&dir)
            // A shell set up for the app: the demo must leave that database alone and start its own.
            .env("DATABASE_URL", "postgres://app@127.0.0.1:1/production")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn demo")
    };

    for run in 0..2 {
        let mut demo = start();
        let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
        let mut printed = Vec::new();
        let read = async {
            while let Some(line) = lines.next_line().await.unwrap() {
                let done = line.trim_start().starts_with("psql ");
                printed.push(line);
                if done {
                    break;
                }
            }
        };
        tokio::time::timeout(TIMEOUT * 3, read).await.expect("demo printed its instructions");
        let find =
            |prefix: &str| printed.iter().find(|l| l.trim_start().starts_with(prefix)).unwrap().trim().to_string();
        let curl = find("curl -N ");
        let url = curl.rsplit(' ').next().unwrap();
        let (addr, path) = url.strip_prefix("http://").unwrap().split_once('/').unwrap();
        let mut stream = SseStream::ok(addr.parse().unwrap(), &format!("/{path}?last_event_id=0"), &[]).await;

        if run == 0 {
            // A second demo on the same data dir refuses, and leaves the first one's PostgreSQL running; one
            // on the same HTTP port refuses before starting any PostgreSQL. Both exit as `serve` would (64).
            let other_dir = dir.with_extension("other");
            for (listen, data_dir, want) in
                [("127.0.0.1:0", &dir, "another pgsse demo is using"), (addr, &other_dir, "cannot listen on")]
            {
                let out = Command::new(BIN)
                    .args([
                        "demo",
                        "--listen",
                        listen,
                        "--pg-port",
                        &pgsse::testing::pg_port().to_string(),
                        "--data-dir",
                    ])
                    .arg(data_dir)
                    .env_remove("DATABASE_URL")
                    .output()
                    .unwrap();
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert_eq!(out.status.code(), Some(64), "{listen} {}: {stderr}", data_dir.display());
                assert!(stderr.contains(want), "{stderr}");
            }
            assert!(!other_dir.exists(), "no PostgreSQL was started for a demo that cannot serve");
        }

        let psql = find("psql ");
        let out = Command::new("sh").args(["-c", &psql]).output().unwrap();
        assert!(out.status.success(), "{psql}: {}", String::from_utf8_lossy(&out.stderr));
        // The second run replays the first run's row too: the demo database survives restarts.
        for seen in 0..=run {
            let ev = stream.expect().await;
            assert_eq!(ev.json()["body"], "hello from psql", "event {seen} of run {run}");
        }

        let pid = demo.id().unwrap().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        let status = tokio::time::timeout(TIMEOUT, demo.wait()).await.expect("demo exits on SIGTERM").unwrap();
        assert!(status.success(), "demo exit status {status}");
        assert!(stream.next().await.is_none(), "stream ended by shutdown");
    }
}

/// Stops the demo's cluster and removes its directory even when the test fails half-way (the demo process
/// itself is killed on drop, which leaves its PostgreSQL running).
struct StopCluster(pgsse::demo::Cluster);

impl Drop for StopCluster {
    fn drop(&mut self) {
        if self.0.is_running() {
            let _ = self.0.stop("immediate");
        }
        let _ = std::fs::remove_dir_all(&self.0.data_dir);
    }
}

/// `pgsse serve` on `database_url`, run until it exits by itself: its exit code and its stderr.
async fn serve_until_it_exits(database_url: &str) -> (Option<i32>, String) {
    let out = tokio::time::timeout(
        TIMEOUT,
        tokio::process::Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--database-url", database_url])
            .stdout(Stdio::null())
            .output(),
    )
    .await
    .expect("serve ends by itself")
    .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// `serve` as a login that can never work ends at start with one line naming the cause and the fix (and
/// exit 64, so an orchestrator shows it); a database that does not answer yet is waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_credentials_that_cannot_work_exits_with_the_fix() {
    let cluster = common::private_cluster();
    let url = pgsse::testing::fresh_db_on(&cluster.url("postgres"), "").await;
    let su = connect(&url).await;
    let db: String = su.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    // Password logins for these two roles only (the test cluster trusts every other local login).
    let hba = cluster.data_dir.join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).unwrap();
    std::fs::write(&hba, format!("host all {db}_pw,{db}_member 127.0.0.1/32 scram-sha-256\n{rules}")).unwrap();
    su.batch_execute(&format!(
        "CREATE ROLE {db}_pw LOGIN PASSWORD 'right' IN ROLE pgsse_gateway; CREATE ROLE {db}_outsider LOGIN;
         SELECT pg_reload_conf();"
    ))
    .await
    .unwrap();
    let base = format!("postgres://{{}}@127.0.0.1:{}/{{}}", cluster.port);
    let at = |user: &str, database: &str| base.replacen("{}", user, 1).replacen("{}", database, 1);
    for (database_url, want) in [
        (at(&format!("{db}_pw:wrong"), &db), format!("refused role {db}_pw's password")),
        (at("nosuchrole", &db), "CREATE ROLE nosuchrole LOGIN".to_string()),
        (at(&format!("{db}_pw:right"), "nosuchdb"), "database \"nosuchdb\" does not exist".to_string()),
        (at(&format!("{db}_outsider"), &db), format!("GRANT pgsse_gateway TO {db}_outsider;")),
    ] {
        let (code, stderr) = serve_until_it_exits(&database_url).await;
        assert_eq!(code, Some(64), "{database_url}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{database_url}: one line, got {stderr:?}");
        assert!(stderr.contains("--database-url") && stderr.contains(&want), "{database_url}: want {want}: {stderr}");
    }

    // Nothing listens here (yet): the gateway serves, says it waits, and does not exit.
    let nowhere = format!("postgres://postgres@127.0.0.1:{}/{db}", pgsse::testing::pg_port());
    let (mut serve, addr) = common::gateway_process_unhealthy(&["serve", "--database-url", &nowhere]).await;
    common::wait_for("healthz to say the database is not reachable", || async {
        common::get(addr, "/healthz", &[]).await.is_ok_and(|r| r.status == 503)
    })
    .await;
    assert!(serve.try_wait().unwrap().is_none(), "still running");
    drop(su);
    cluster.stop("fast").unwrap();
}

/// A database that a newer pgsse migrated is refused by this binary's `migrate` (which would put back
/// older bodies of every function) and `serve`, each with one line naming both versions.
#[tokio::test]
async fn migrate_and_serve_refuse_a_database_a_newer_pgsse_migrated() {
    let url = fresh_db().await;
    let admin = connect(&url).await;
    admin
        .batch_execute(
            "INSERT INTO pgsse.migrations (name) VALUES ('099_future.sql'); UPDATE pgsse.meta SET schema_version = 99",
        )
        .await
        .unwrap();
    let last = pgsse::MIGRATIONS.last().unwrap().0;
    let err = pgsse::migrate(&url).await.unwrap_err().to_string();
    assert_eq!(
        err,
        format!(
            "this database was migrated by a newer pgsse (it has 099_future.sql; this binary knows up to {last}): run \
             the newer binary's migrate, or upgrade this one"
        )
    );
    let gateway_url = common::as_role(&url, common::GATEWAY_ROLE);
    let (code, stderr) = serve_until_it_exits(&gateway_url).await;
    assert_eq!(code, Some(64), "{stderr}");
    let want = format!("schema 99, newer than this binary's {}", pgsse::SCHEMA_VERSION);
    assert!(stderr.trim_end().lines().count() == 1 && stderr.contains(&want), "{stderr}");
}
