//! The migration lock: `pgsse.migrations` itself once it exists (only its owner and that role's members may
//! lock it), the advisory key before the first install. Every lock a migration waits for (this one, a
//! published table's for its triggers, the log's) ends at the timeout, and a watch names who holds it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_postgres::error::SqlState;
use tokio_postgres::{NoTls, Transaction};

use super::{apply_error, MigrateError};

/// The advisory key of the first install, before `pgsse.migrations` exists (any login may take it).
const KEY: i64 = 7083711516;

const EXCLUSIVE: &str = "LOCK TABLE pgsse.migrations IN EXCLUSIVE MODE";

/// The sessions that hold what `take` waits for, as an operator would look them up.
const HOLDERS: &str = "
    SELECT a.pid, coalesce(a.usename::text, '?'), coalesce(a.application_name, ''), coalesce(a.state, '')
      FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
     WHERE l.granted AND l.pid <> pg_catalog.pg_backend_pid()
       AND ((l.locktype = 'relation' AND l.relation = pg_catalog.to_regclass('pgsse.migrations')
             AND l.mode <> 'AccessShareLock')
            OR (l.locktype = 'advisory' AND l.objsubid = 1
                AND l.classid::bigint * 4294967296 + l.objid::bigint = $1))
     ORDER BY a.pid";

/// Takes the lock for the rest of `tx`, waiting at most `timeout`, as every later lock of `tx` will.
/// `file` names what it is taken for.
pub(super) async fn take(tx: &mut Transaction<'_>, file: &'static str, timeout: Duration) -> Result<(), MigrateError> {
    let fail = |err: tokio_postgres::Error| apply_error(file, &err);
    tx.batch_execute("SET LOCAL client_min_messages = warning").await.map_err(fail)?;
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {}", timeout.as_millis().max(1))).await.map_err(fail)?;
    let table: bool =
        tx.query_one("SELECT pg_catalog.to_regclass('pgsse.migrations') IS NOT NULL", &[]).await.map_err(fail)?.get(0);
    if got_at_once(tx, table).await.map_err(fail)? {
        return Ok(());
    }
    let holders = holders(tx).await.map_err(fail)?;
    tracing::warn!(%holders, ?timeout, "waiting for the migration lock");
    let wait = if table { EXCLUSIVE.to_string() } else { format!("SELECT pg_catalog.pg_advisory_xact_lock({KEY})") };
    match tx.batch_execute(&wait).await {
        Ok(()) => Ok(()),
        Err(err) if err.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => {
            Err(MigrateError::Locked { timeout, what: "the migration lock", holders })
        }
        Err(err) => Err(fail(err)),
    }
}

/// Watches the migrating session from a connection of its own while it runs, and names whoever it is
/// blocked by: another migrate, a writer's open transaction on a table whose triggers it replaces, a
/// session reading the log.
pub(super) struct Watch {
    blockers: Arc<Mutex<String>>,
    task: JoinHandle<()>,
}

impl Watch {
    const EVERY: Duration = Duration::from_secs(1);

    /// `None` when no second connection can be made: migrate then runs unwatched.
    pub(super) async fn start(database_url: &str, pid: i32) -> Option<Self> {
        let (client, connection) = tokio_postgres::connect(database_url, NoTls).await.ok()?;
        let blockers = Arc::new(Mutex::new(String::new()));
        let seen = blockers.clone();
        let task = tokio::spawn(async move {
            let driver = tokio::spawn(connection);
            let query = "SELECT a.pid, coalesce(a.usename::text, '?'), coalesce(a.application_name, ''),
                                coalesce(a.state, '')
                           FROM pg_catalog.pg_stat_activity a
                          WHERE a.pid = ANY (pg_catalog.pg_blocking_pids($1)) ORDER BY a.pid";
            loop {
                tokio::time::sleep(Self::EVERY).await;
                let Ok(rows) = client.query(query, &[&pid]).await else { break };
                let now = describe(&rows);
                let mut last = seen.lock().unwrap_or_else(|p| p.into_inner());
                if !rows.is_empty() && *last != now {
                    tracing::warn!(blocked_by = %now, "migrate is waiting for a lock");
                    *last = now;
                }
            }
            driver.abort();
        });
        Some(Self { blockers, task })
    }

    /// Who the session was last seen waiting for.
    pub(super) fn blockers(&self) -> String {
        let seen = self.blockers.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if seen.is_empty() {
            "a session that has since let go".into()
        } else {
            seen
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Tries without waiting; the table's lock in a savepoint, since a refusal aborts what it runs in.
async fn got_at_once(tx: &mut Transaction<'_>, table: bool) -> Result<bool, tokio_postgres::Error> {
    if !table {
        let row = tx.query_one("SELECT pg_catalog.pg_try_advisory_xact_lock($1)", &[&KEY]).await?;
        return Ok(row.get(0));
    }
    let attempt = tx.savepoint("pgsse_lock").await?;
    match attempt.batch_execute(&format!("{EXCLUSIVE} NOWAIT")).await {
        Ok(()) => attempt.commit().await.map(|()| true),
        Err(err) if err.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => attempt.rollback().await.map(|()| false),
        Err(err) => Err(err),
    }
}

async fn holders(tx: &Transaction<'_>) -> Result<String, tokio_postgres::Error> {
    let rows = tx.query(HOLDERS, &[&KEY]).await?;
    Ok(if rows.is_empty() { "a session that has just ended".into() } else { describe(&rows) })
}

/// Sessions as an operator would look them up: pid, role, application and state.
fn describe(rows: &[tokio_postgres::Row]) -> String {
    let each = rows.iter().map(|row| {
        let (pid, role, app, state): (i32, String, String, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
        let app = if app.is_empty() { String::new() } else { format!(", application {app:?}") };
        format!("pid {pid} (role {role}{app}, {state})")
    });
    each.collect::<Vec<_>>().join(", ")
}
