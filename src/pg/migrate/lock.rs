//! The migration lock: `pgsse.migrations` itself once it exists (only its owner and that role's members may
//! lock it), the advisory key before the first install. A wait says who holds it, and ends at a timeout.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::Transaction;

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

/// Takes the lock for the rest of `tx`, waiting at most `timeout`. `file` names what it is taken for.
pub(super) async fn take(tx: &mut Transaction<'_>, file: &'static str, timeout: Duration) -> Result<(), MigrateError> {
    let fail = |err: tokio_postgres::Error| apply_error(file, &err);
    tx.batch_execute("SET LOCAL client_min_messages = warning").await.map_err(fail)?;
    let table: bool =
        tx.query_one("SELECT pg_catalog.to_regclass('pgsse.migrations') IS NOT NULL", &[]).await.map_err(fail)?.get(0);
    if got_at_once(tx, table).await.map_err(fail)? {
        return Ok(());
    }
    let holders = holders(tx).await.map_err(fail)?;
    tracing::warn!(%holders, ?timeout, "waiting for the migration lock");
    tx.batch_execute(&format!("SET LOCAL lock_timeout = {}", timeout.as_millis().max(1))).await.map_err(fail)?;
    let wait = if table { EXCLUSIVE.to_string() } else { format!("SELECT pg_catalog.pg_advisory_xact_lock({KEY})") };
    match tx.batch_execute(&wait).await {
        Ok(()) => tx.batch_execute("SET LOCAL lock_timeout = DEFAULT").await.map_err(fail),
        Err(err) if err.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) => Err(MigrateError::Locked { timeout, holders }),
        Err(err) => Err(fail(err)),
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
    let each = rows.iter().map(|row| {
        let (pid, role, app, state): (i32, String, String, String) = (row.get(0), row.get(1), row.get(2), row.get(3));
        let app = if app.is_empty() { String::new() } else { format!(", application {app:?}") };
        format!("pid {pid} (role {role}{app}, {state})")
    });
    let list: Vec<String> = each.collect();
    Ok(if list.is_empty() { "a session that has just ended".into() } else { list.join(", ") })
}
