//! Test support for the unit tests and `tests/` (feature `testing`): one throwaway PostgreSQL per test
//! process (or `PGSSE_TEST_DATABASE_URL`), a fresh database per test, and the roles production uses.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

use tokio_postgres::{Client, NoTls};

use crate::demo::Cluster;
/// The query a gateway on a standby asks whether it holds an announced id, for a test of its plan.
pub use crate::pg::replica::holds as announced_id_held;

/// The login a test gateway runs as: it holds only `pgsse_gateway`, plus (through the default privileges
/// below) INSERT and DELETE on the tables a test creates, for `POST` and `DELETE` on table channels.
pub const GATEWAY_ROLE: &str = "pgsse_test_gateway";
/// The login that tests write published tables with: no grant on schema pgsse at all.
pub const WRITER_ROLE: &str = "pgsse_test_writer";
/// An application's role that was also granted `pgsse_publisher`, to call `pgsse.publish` beside its writes.
pub const PUBLISHER_ROLE: &str = "pgsse_test_publisher";

static SHARED: OnceLock<String> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A port for a PostgreSQL that a test starts: below the kernel's ephemeral range, so no socket bound to
/// port 0 (every gateway's and proxy's in the tests) can take it before PostgreSQL binds it; apart for
/// each process and call, and checked free.
pub fn pg_port() -> u16 {
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let (low, span) = (10_000, ephemeral.saturating_sub(10_000).max(1));
    let start = std::process::id().wrapping_mul(97).wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed) * 7);
    (0..span)
        .map(|i| (low + (start + i) % span) as u16)
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .expect("a free port below the ephemeral range")
}

/// A cluster in a fresh temp dir. A detached watchdog stops it and removes the dir when this test process
/// exits, however it exits.
pub fn private_cluster() -> Cluster {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pgsse-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cluster = Cluster::new(&dir, pg_port()).expect("PostgreSQL binaries (see README: Tests)");
    cluster.init(true).expect("initdb");
    cluster.start().expect("pg_ctl start");
    watchdog(&dir);
    cluster
}

/// A streaming standby of `primary` (a [`private_cluster`]) in a fresh temp dir, with `extra` lines of
/// configuration (`recovery_min_apply_delay = '200ms'`, say), started; stopped and removed like it.
pub fn private_standby(primary: &Cluster, extra: &str) -> Cluster {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pgsse-test-{}-{n}-standby", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let standby = primary.standby(&dir, pg_port(), extra).expect("pg_basebackup and start a standby");
    watchdog(&dir);
    standby
}

fn watchdog(dir: &std::path::Path) {
    let script = r#"tail --pid="$1" -f /dev/null 2>/dev/null
pid=$(head -n 1 "$2/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ]; then kill -QUIT "$pid" 2>/dev/null; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; fi
rm -rf "$2""#;
    let _ = std::process::Command::new("setsid")
        .args(["sh", "-c", script, "watchdog", &std::process::id().to_string()])
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

/// URL of a server to create test databases on (its `postgres` database).
pub fn admin_url() -> &'static str {
    SHARED.get_or_init(|| match std::env::var("PGSSE_TEST_DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            let cluster = private_cluster();
            let url = cluster.url("postgres");
            std::mem::forget(cluster);
            url
        }
    })
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// A new database without the pgsse schema, made with `CREATE DATABASE ... {options}` on the server whose
/// `postgres` database `admin` names; returns its URL.
pub async fn empty_db_on(admin: &str, options: &str) -> String {
    let name = format!("t{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    connect(admin).await.batch_execute(&format!("CREATE DATABASE {name} {options}")).await.unwrap();
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("admin url without database: {admin}"),
    }
}

/// A new, migrated database on `admin`'s server, with the test roles' privileges; returns its URL.
pub async fn fresh_db_on(admin: &str, options: &str) -> String {
    let url = empty_db_on(admin, options).await;
    crate::migrate(&url).await.expect("migrate");
    test_roles(admin, &url).await;
    url
}

/// A new, migrated database on the test server; returns its URL.
pub async fn fresh_db() -> String {
    fresh_db_on(admin_url(), "").await
}

/// Creates the test logins once per cluster (roles are cluster-wide; the lock keeps concurrent tests
/// from racing on them) and gives them the table privileges an application would grant in `url`.
async fn test_roles(admin: &str, url: &str) {
    connect(admin)
        .await
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(7083711599);
             DO $$ BEGIN
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{GATEWAY_ROLE}') THEN
                     CREATE ROLE {GATEWAY_ROLE} LOGIN;
                 END IF;
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{WRITER_ROLE}') THEN
                     CREATE ROLE {WRITER_ROLE} LOGIN;
                 END IF;
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{PUBLISHER_ROLE}') THEN
                     CREATE ROLE {PUBLISHER_ROLE} LOGIN IN ROLE pgsse_publisher;
                 END IF;
                 IF NOT pg_has_role('{GATEWAY_ROLE}', 'pgsse_gateway', 'MEMBER') THEN
                     GRANT pgsse_gateway TO {GATEWAY_ROLE};
                 END IF;
             END $$;
             COMMIT;"
        ))
        .await
        .expect("test roles");
    connect(url)
        .await
        .batch_execute(&format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO {WRITER_ROLE}, {PUBLISHER_ROLE};
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT INSERT, DELETE ON TABLES TO {GATEWAY_ROLE};
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO {WRITER_ROLE}, {PUBLISHER_ROLE}, {GATEWAY_ROLE};"
        ))
        .await
        .expect("test privileges");
}

/// `url` with its user replaced by `role`, as a key=value connection string (the test cluster trusts every
/// local login; append ` password=...` for one that does not).
pub fn as_role(url: &str, role: &str) -> String {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        tokio_postgres::config::Host::Unix(dir) => dir.display().to_string(),
    };
    let (port, db) = (config.get_ports()[0], config.get_dbname().unwrap());
    format!("host={host} port={port} dbname={db} user={role}")
}

/// Runs the sequencing step as a gateway would, until nothing staged is left: tests that read the log
/// with no gateway running (or with its listener cut off) put committed events there first.
pub async fn sequence_staged(admin: &Client) {
    admin
        .batch_execute("BEGIN; LOCK TABLE pgsse.commit_order IN EXCLUSIVE MODE; SELECT pgsse.sequence_batch(); COMMIT;")
        .await
        .unwrap();
}
