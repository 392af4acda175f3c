//! `pgsse migrate`: applies each numbered file of `sql/` that `pgsse.migrations` does not list yet, then
//! the repeatable `functions.sql`. Every file takes the migration lock and records itself, so this is safe
//! on every deploy, from several instances at once, and equal to `psql -f` of the files in name order.

use tokio_postgres::{Client, NoTls};

/// The schema version the SQL below installs (`pgsse.meta.schema_version`); `/readyz` waits for it.
pub const SCHEMA_VERSION: i32 = 11;

/// The numbered files of `sql/`, embedded at build time, in the order they apply.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("001_schema.sql", include_str!("../../sql/001_schema.sql")),
    ("002_capture_options.sql", include_str!("../../sql/002_capture_options.sql")),
    ("003_locks_and_writes.sql", include_str!("../../sql/003_locks_and_writes.sql")),
    ("004_staging.sql", include_str!("../../sql/004_staging.sql")),
    ("005_staged_floor.sql", include_str!("../../sql/005_staged_floor.sql")),
    ("006_old_rows.sql", include_str!("../../sql/006_old_rows.sql")),
    ("007_least_privilege.sql", include_str!("../../sql/007_least_privilege.sql")),
    ("008_idempotency.sql", include_str!("../../sql/008_idempotency.sql")),
    ("009_wide_events.sql", include_str!("../../sql/009_wide_events.sql")),
];

/// Functions, roles and grants: applied again by every migrate, after the numbered files.
pub const FUNCTIONS: (&str, &str) = ("functions.sql", include_str!("../../sql/functions.sql"));

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
    #[error("{0}")]
    Privilege(String),
    #[error(
        "this database was migrated by a newer pgsse (it has {applied}; this binary knows up to {known}): run the \
         newer binary's migrate, or upgrade this one"
    )]
    Newer { applied: String, known: &'static str },
}

pub async fn migrate(database_url: &str) -> Result<(), MigrateError> {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls)
        .await
        .map_err(|source| MigrateError::Connect { target: crate::pg::error::target(database_url), source })?;
    let driver = tokio::spawn(connection);
    check_privileges(&client).await?;
    warn_on_sql_ascii(&client).await?;
    let recorded = recorded(&client).await?;
    // An older binary's functions.sql would put back older bodies of every function (and schema 9's
    // security) in a database that a newer pgsse migrated.
    let newer: Vec<&String> = recorded.iter().filter(|name| !MIGRATIONS.iter().any(|(file, _)| file == name)).collect();
    if let Some(last) = newer.iter().max() {
        return Err(MigrateError::Newer { applied: last.to_string(), known: MIGRATIONS[MIGRATIONS.len() - 1].0 });
    }
    let mut applied = 0;
    for &(file, sql) in MIGRATIONS {
        if !recorded.iter().any(|name| name == file) {
            apply(&client, file, sql).await?;
            tracing::info!(file, "applied");
            applied += 1;
        }
    }
    apply(&client, FUNCTIONS.0, FUNCTIONS.1).await?;
    if applied == 0 {
        tracing::info!(version = SCHEMA_VERSION, "schema up to date");
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}

/// Says which privilege is missing before any file runs, rather than a server error from the middle of one.
async fn check_privileges(client: &Client) -> Result<(), MigrateError> {
    let fail = |err: tokio_postgres::Error| apply_error(MIGRATIONS[0].0, &err);
    let row = client
        .query_one(
            "SELECT current_user::text, current_database()::text, has_database_privilege(current_database(), 'CREATE'),
                    (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgsse'),
                    (SELECT pg_has_role(nspowner, 'USAGE') FROM pg_namespace WHERE nspname = 'pgsse')",
            &[],
        )
        .await
        .map_err(fail)?;
    let (user, db): (String, String) = (row.get(0), row.get(1));
    match (row.get::<_, bool>(2), row.get::<_, Option<String>>(3), row.get::<_, Option<bool>>(4)) {
        (false, None, _) => Err(MigrateError::Privilege(format!(
            "role {user} lacks the CREATE privilege on database {db}, which installing schema pgsse needs: run \
             migrate as the database's owner, or have it run: GRANT CREATE ON DATABASE {db} TO {user};"
        ))),
        (_, Some(owner), Some(false)) => Err(MigrateError::Privilege(format!(
            "schema pgsse belongs to role {owner}, and role {user} is not a member of it: run migrate as {owner}, \
             the role that installed it"
        ))),
        _ => Ok(()),
    }
}

/// A `SQL_ASCII` database stores text without checking it: a row that is not UTF-8 cannot become an event.
async fn warn_on_sql_ascii(client: &Client) -> Result<(), MigrateError> {
    let row =
        client.query_one("SELECT getdatabaseencoding()", &[]).await.map_err(|e| apply_error(MIGRATIONS[0].0, &e))?;
    if row.get::<_, String>(0) == "SQL_ASCII" {
        tracing::warn!(
            "this database's encoding is SQL_ASCII, which stores any bytes as text: a captured row that is not \
             valid UTF-8 is skipped (logged, pgsse_events_skipped_total{{reason=\"undecodable\"}}), never sent"
        );
    }
    Ok(())
}

/// The numbered files this database has applied; none before `001_schema.sql` made the table.
async fn recorded(client: &Client) -> Result<Vec<String>, MigrateError> {
    let fail = |err: tokio_postgres::Error| apply_error(MIGRATIONS[0].0, &err);
    let table = client.query_one("SELECT to_regclass('pgsse.migrations') IS NOT NULL", &[]).await.map_err(fail)?;
    if !table.try_get::<_, bool>(0).map_err(fail)? {
        return Ok(Vec::new());
    }
    let rows = client.query("SELECT name FROM pgsse.migrations", &[]).await.map_err(fail)?;
    rows.iter().map(|row| row.try_get(0).map_err(fail)).collect()
}

async fn apply(client: &Client, file: &'static str, sql: &str) -> Result<(), MigrateError> {
    client.batch_execute(sql).await.map_err(|err| apply_error(file, &err))
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
