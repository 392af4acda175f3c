//! `pgsse migrate`: applies each numbered file of `sql/` that `pgsse.migrations` does not list yet, then
//! the repeatable `sql/functions/`. The runner owns each file's transaction, lock and record (the files hold
//! DDL only), so this is safe on every deploy, from several instances at once, and equal to `psql -1` of
//! each file with `record.sql` (docs/operations.md, Upgrading).

mod checks;
mod lock;

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

/// The numbered files of `sql/`, embedded at build time, in the order they apply. A file's number is the
/// schema version it installs.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("003_schema.sql", include_str!("../../sql/003_schema.sql")),
    ("004_capture_options.sql", include_str!("../../sql/004_capture_options.sql")),
    ("005_locks_and_writes.sql", include_str!("../../sql/005_locks_and_writes.sql")),
    ("006_staging.sql", include_str!("../../sql/006_staging.sql")),
    ("007_staged_floor.sql", include_str!("../../sql/007_staged_floor.sql")),
    ("008_old_rows.sql", include_str!("../../sql/008_old_rows.sql")),
    ("009_least_privilege.sql", include_str!("../../sql/009_least_privilege.sql")),
    ("010_idempotency.sql", include_str!("../../sql/010_idempotency.sql")),
    ("011_wide_events.sql", include_str!("../../sql/011_wide_events.sql")),
    ("012_mercure.sql", include_str!("../../sql/012_mercure.sql")),
    ("013_standbys.sql", include_str!("../../sql/013_standbys.sql")),
];

/// The schema version the files install (`pgsse.meta.schema_version`): the last file's number. `/readyz`
/// waits for it.
pub const SCHEMA_VERSION: i32 = number(MIGRATIONS[MIGRATIONS.len() - 1].0);

/// Functions, roles and grants: applied again by every migrate, after the numbered files, in one transaction
/// in this order.
pub const FUNCTIONS: &[(&str, &str)] = &[
    ("01_retired.sql", include_str!("../../sql/functions/01_retired.sql")),
    ("02_roles.sql", include_str!("../../sql/functions/02_roles.sql")),
    ("03_names.sql", include_str!("../../sql/functions/03_names.sql")),
    ("04_capture.sql", include_str!("../../sql/functions/04_capture.sql")),
    ("05_sequencing.sql", include_str!("../../sql/functions/05_sequencing.sql")),
    ("06_channels.sql", include_str!("../../sql/functions/06_channels.sql")),
    ("07_reads.sql", include_str!("../../sql/functions/07_reads.sql")),
    ("08_snapshots.sql", include_str!("../../sql/functions/08_snapshots.sql")),
    ("09_writes.sql", include_str!("../../sql/functions/09_writes.sql")),
    ("10_retention.sql", include_str!("../../sql/functions/10_retention.sql")),
    ("11_mercure.sql", include_str!("../../sql/functions/11_mercure.sql")),
    ("12_upgrades.sql", include_str!("../../sql/functions/12_upgrades.sql")),
    ("13_privileges.sql", include_str!("../../sql/functions/13_privileges.sql")),
];

/// The roles pgsse owns its objects with and grants to, made (or checked) first.
const ROLES: &[(&str, &str)] = &[("02_roles.sql", include_str!("../../sql/functions/02_roles.sql"))];

/// Records a file as applied and raises the schema version to its number; psql runs it with `-v file=`.
const RECORD: &str = include_str!("../../sql/record.sql");

/// The names the files had before their numbers were their schema versions, as older installs recorded them.
const RENAMED: [(&str, &str); 9] = [
    ("001_schema.sql", "003_schema.sql"),
    ("002_capture_options.sql", "004_capture_options.sql"),
    ("003_locks_and_writes.sql", "005_locks_and_writes.sql"),
    ("004_staging.sql", "006_staging.sql"),
    ("005_staged_floor.sql", "007_staged_floor.sql"),
    ("006_old_rows.sql", "008_old_rows.sql"),
    ("007_least_privilege.sql", "009_least_privilege.sql"),
    ("008_idempotency.sql", "010_idempotency.sql"),
    ("009_wide_events.sql", "011_wide_events.sql"),
];

/// How long `pgsse migrate` waits for another migration (or whoever holds its lock) by default.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(600);

/// The number a migration file's name starts with.
const fn number(name: &str) -> i32 {
    let b = name.as_bytes();
    (b[0] - b'0') as i32 * 100 + (b[1] - b'0') as i32 * 10 + (b[2] - b'0') as i32
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect to {target}: {}", crate::pg::error::describe(.source))]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("{file}: {cause}")]
    Apply { file: &'static str, cause: String },
    #[error(
        "role {user} lacks the CREATE privilege on database {db}, which installing schema pgsse needs: run migrate \
         as the database's owner, or have it run: GRANT CREATE ON DATABASE {db} TO {user};"
    )]
    NoCreate { user: String, db: String },
    #[error(
        "schema pgsse belongs to role pgsse_owner, and role {user} is not a member of it: have an admin run GRANT \
         pgsse_owner TO {user}; (or run migrate as a member of it)"
    )]
    NotOwnerMember { user: String },
    #[error(
        "schema pgsse belongs to role {owner}, not to pgsse_owner or to role {user}: if {owner} installed pgsse \
         (before schema 9), run migrate as {owner}; if not, the schema is not pgsse's, and its objects would run \
         with your rights: drop it first"
    )]
    ForeignSchema { owner: String, user: String },
    #[error(
        "this database was migrated by a newer pgsse (it has {applied}; this binary knows up to {known}): run the \
         newer binary's migrate, or upgrade this one"
    )]
    Newer { applied: String, known: &'static str },
    #[error(
        "waited {timeout:?} for {what}, which {holders} held: another pgsse migrate, or a transaction still open on \
         the table; end that session (SELECT pg_terminate_backend(pid)) or let it finish, and run migrate again"
    )]
    Locked { timeout: Duration, what: &'static str, holders: String },
}

/// [`migrate_within`] the default [`LOCK_TIMEOUT`].
pub async fn migrate(database_url: &str) -> Result<(), MigrateError> {
    migrate_within(database_url, LOCK_TIMEOUT).await
}

/// Migrates, waiting at most `lock_timeout` for the migration lock each time it takes it.
pub async fn migrate_within(database_url: &str, lock_timeout: Duration) -> Result<(), MigrateError> {
    let (mut client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .map_err(|source| MigrateError::Connect { target: crate::pg::error::target(database_url), source })?;
    let driver = tokio::spawn(connection);
    // Whoever may create in a schema on the caller's path (public, on older PostgreSQL) could otherwise
    // have a function of theirs called, with the migrating admin's rights, in place of a built-in.
    // And settings a database's owner may have set that would change what the files mean.
    let pin = "SET search_path = pg_catalog, pg_temp; SET standard_conforming_strings = on;
               SET default_transaction_read_only = off; SET application_name = 'pgsse migrate'";
    client.batch_execute(pin).await.map_err(|err| apply_error(MIGRATIONS[0].0, &err))?;
    checks::privileges(&client).await?;
    checks::encoding(&client).await?;
    let pid: i32 =
        client.query_one("SELECT pg_backend_pid()", &[]).await.map_err(|e| apply_error(MIGRATIONS[0].0, &e))?.get(0);
    let runner = Runner { lock_timeout, watch: lock::Watch::start(database_url, pid).await };
    runner.rename_recorded(&mut client).await?;
    // The roles first: a role that cannot make them (or join pgsse_owner) is told so before any file
    // applies, rather than after the numbered files, with none of the functions in place.
    runner.apply_functions(&mut client, ROLES).await?;
    let recorded = recorded(&client).await?;
    refuse_newer(&recorded)?;
    let mut applied = 0;
    for &(file, sql) in MIGRATIONS {
        if !recorded.iter().any(|name| name == file) && runner.apply(&mut client, file, sql).await? {
            tracing::info!(file, version = number(file), "applied");
            applied += 1;
        }
    }
    runner.apply_functions(&mut client, FUNCTIONS).await?;
    if applied == 0 {
        tracing::info!(version = SCHEMA_VERSION, "schema up to date");
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// An older binary's functions would put back older bodies of every function (and schema 9's security) in
/// a database that a newer pgsse migrated: checked first, and again under the lock before each write.
fn refuse_newer(recorded: &[String]) -> Result<(), MigrateError> {
    let newer = recorded.iter().filter(|name| !MIGRATIONS.iter().any(|(file, _)| file == name)).max();
    match newer {
        Some(last) => Err(MigrateError::Newer { applied: last.clone(), known: MIGRATIONS[MIGRATIONS.len() - 1].0 }),
        None => Ok(()),
    }
}

/// The numbered files this database has applied; none before `003_schema.sql` made the table.
async fn recorded(client: &impl tokio_postgres::GenericClient) -> Result<Vec<String>, MigrateError> {
    let fail = |err: tokio_postgres::Error| apply_error(MIGRATIONS[0].0, &err);
    let table = client.query_one("SELECT to_regclass('pgsse.migrations') IS NOT NULL", &[]).await.map_err(fail)?;
    if !table.try_get::<_, bool>(0).map_err(fail)? {
        return Ok(Vec::new());
    }
    let rows = client.query("SELECT name FROM pgsse.migrations", &[]).await.map_err(fail)?;
    rows.iter().map(|row| row.try_get(0).map_err(fail)).collect()
}

struct Runner {
    lock_timeout: Duration,
    watch: Option<lock::Watch>,
}

impl Runner {
    /// Applies a numbered file and records it, in a transaction of its own under the migration lock, unless
    /// another migrate applied it while this one waited for the lock (`false`).
    async fn apply(&self, client: &mut Client, file: &'static str, sql: &str) -> Result<bool, MigrateError> {
        let fail = |err: tokio_postgres::Error| apply_error(file, &err);
        let mut tx = client.transaction().await.map_err(fail)?;
        lock::take(&mut tx, file, self.lock_timeout).await?;
        let recorded = recorded(&tx).await?;
        refuse_newer(&recorded)?;
        if recorded.iter().any(|name| name == file) {
            return Ok(false);
        }
        tx.batch_execute(sql).await.map_err(|err| self.failed(file, &err))?;
        tx.execute(&RECORD.replace(":'file'", "$1"), &[&file]).await.map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        Ok(true)
    }

    /// Functions' files, one after another in one transaction: a half-replaced set never runs.
    async fn apply_functions(&self, client: &mut Client, files: &[(&'static str, &str)]) -> Result<(), MigrateError> {
        let first = files[0].0;
        let mut tx = client.transaction().await.map_err(|err| apply_error(first, &err))?;
        lock::take(&mut tx, first, self.lock_timeout).await?;
        refuse_newer(&recorded(&tx).await?)?;
        for &(file, sql) in files {
            tx.batch_execute(sql).await.map_err(|err| self.failed(file, &err))?;
        }
        tx.commit().await.map_err(|err| apply_error(files[files.len() - 1].0, &err))
    }

    /// A file's failure; a lock it waited for past the timeout names who held it.
    fn failed(&self, file: &'static str, err: &tokio_postgres::Error) -> MigrateError {
        match (err.code(), &self.watch) {
            (Some(code), Some(watch)) if *code == SqlState::LOCK_NOT_AVAILABLE => {
                MigrateError::Locked { timeout: self.lock_timeout, what: file, holders: watch.blockers() }
            }
            _ => apply_error(file, err),
        }
    }

    /// Moves an older install's records to the files' present names; a name recorded both ways (the psql
    /// lines run on such an install) keeps the present one.
    async fn rename_recorded(&self, client: &mut Client) -> Result<(), MigrateError> {
        const WHAT: &str = "renaming pgsse.migrations";
        let fail = |err: tokio_postgres::Error| apply_error(WHAT, &err);
        if recorded(client).await?.iter().all(|name| !RENAMED.iter().any(|(old, _)| old == name)) {
            return Ok(());
        }
        let mut tx = client.transaction().await.map_err(fail)?;
        lock::take(&mut tx, WHAT, self.lock_timeout).await?;
        for (old, new) in RENAMED {
            let drop_old = "DELETE FROM pgsse.migrations WHERE name = $1
                               AND EXISTS (SELECT 1 FROM pgsse.migrations WHERE name = $2)";
            tx.execute(drop_old, &[&old, &new]).await.map_err(fail)?;
            tx.execute("UPDATE pgsse.migrations SET name = $2 WHERE name = $1", &[&old, &new]).await.map_err(fail)?;
        }
        tx.commit().await.map_err(fail)
    }
}

/// The server's message and its hint (which carries the SQL an operator runs when a privilege is missing).
fn apply_error(file: &'static str, err: &tokio_postgres::Error) -> MigrateError {
    let cause = match err.as_db_error() {
        Some(db) => match db.hint() {
            Some(hint) => format!("{} ({hint})", db.message()),
            None => db.message().to_string(),
        },
        None => err.to_string(),
    };
    MigrateError::Apply { file, cause }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_sql_is_listed_and_numbered_by_the_schema_it_installs() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/sql");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name.starts_with(|c: char| c.is_ascii_digit()))
            .collect();
        on_disk.sort();
        let listed: Vec<&str> = MIGRATIONS.iter().map(|(name, _)| *name).collect();
        assert_eq!(on_disk, listed);
        let numbers: Vec<i32> = listed.iter().map(|name| number(name)).collect();
        assert!(numbers.windows(2).all(|w| w[1] == w[0] + 1), "{numbers:?}");
        assert_eq!(SCHEMA_VERSION, 13);
        assert!(RENAMED.iter().all(|(_, new)| listed.contains(new)));
        let mut functions: Vec<String> = std::fs::read_dir(format!("{dir}/functions"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        functions.sort();
        assert_eq!(functions, FUNCTIONS.iter().map(|(name, _)| *name).collect::<Vec<_>>());
    }
}
