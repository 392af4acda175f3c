//! `pgsse migrate`: applies the SQL files in `sql/` in order. Each file is idempotent and takes an advisory
//! lock itself, so this is safe on every deploy, from several instances at once, and equal to `psql -f`.

use tokio_postgres::NoTls;

/// The schema version the SQL below installs (`pgsse.meta.schema_version`); `/readyz` waits for it.
pub const SCHEMA_VERSION: i32 = 3;

/// The files of `sql/`, embedded at build time, in the order they apply.
pub const MIGRATIONS: &[(&str, &str)] = &[("001_pgsse.sql", include_str!("../sql/001_pgsse.sql"))];

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("cannot connect: {0}")]
    Connect(tokio_postgres::Error),
    #[error("{file}: {cause}")]
    Apply { file: &'static str, cause: String },
}

pub async fn migrate(database_url: &str) -> Result<(), MigrateError> {
    let (client, connection) = tokio_postgres::connect(database_url, NoTls).await.map_err(MigrateError::Connect)?;
    let driver = tokio::spawn(connection);
    for (file, sql) in MIGRATIONS {
        client.batch_execute(sql).await.map_err(|err| MigrateError::Apply {
            file,
            cause: err.as_db_error().map_or_else(|| err.to_string(), |db| db.message().to_string()),
        })?;
        tracing::info!(file, "applied");
    }
    drop(client);
    let _ = driver.await;
    Ok(())
}
