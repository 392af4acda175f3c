//! Whether the gateway's logins can ever work: a wrong password, an unknown role or database, a login
//! without `pgsse_gateway`, or a schema newer than this binary ends `serve` at start with the fix; a
//! database that does not answer is waited for.

use std::time::Duration;

use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

use crate::pg::migrate::SCHEMA_VERSION;

const RETRY_MIN: Duration = Duration::from_millis(500);
const RETRY_MAX: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A login that retrying will not fix, in one line with the fix.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    #[error("{flag}: the database refused role {role}'s password: fix the URL's password, or set the role's (ALTER ROLE {role} PASSWORD '...';)")]
    Password { flag: &'static str, role: String },
    #[error("{flag}: {message}: fix the URL, or have an admin create the login (CREATE ROLE {role} LOGIN PASSWORD '...' IN ROLE pgsse_gateway;)")]
    Login { flag: &'static str, role: String, message: String },
    #[error("{flag}: {message}: fix the database name in the URL")]
    Database { flag: &'static str, message: String },
    #[error("{flag}: role {role} is not a member of pgsse_gateway: have an admin run GRANT pgsse_gateway TO {role};")]
    NotGateway { flag: &'static str, role: String },
    #[error(
        "{flag}: this database has pgsse schema {database}, newer than this binary's {binary}: upgrade the gateway \
         to the release that migrated it"
    )]
    Newer { flag: &'static str, database: i32, binary: i32 },
    #[error("{flag}: {source}")]
    Url {
        flag: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

/// Checks each login the gateway uses (`--database-url`, and `--listen-database-url` if given) until each
/// has answered once; returns the first that cannot work. Never returns while the database is unreachable.
pub async fn credentials(database_url: String, listen_url: Option<String>) -> Result<(), CredentialError> {
    check("--database-url", &database_url).await?;
    match listen_url {
        Some(url) => check("--listen-database-url", &url).await,
        None => Ok(()),
    }
}

async fn check(flag: &'static str, url: &str) -> Result<(), CredentialError> {
    let mut pg: tokio_postgres::Config = url.parse().map_err(|source| CredentialError::Url { flag, source })?;
    pg.connect_timeout(CONNECT_TIMEOUT);
    let role = pg.get_user().unwrap_or("(default)").to_string();
    let mut pause = RETRY_MIN;
    loop {
        match pg.connect(NoTls).await {
            Ok((client, connection)) => {
                let driver = tokio::spawn(connection);
                // Before `pgsse migrate` made pgsse_gateway, serving waits for it (and says so at /healthz).
                let answer = gateway_and_schema(&client).await;
                drop(client);
                let _ = driver.await;
                match answer {
                    Ok((false, _)) => return Err(CredentialError::NotGateway { flag, role }),
                    Ok((true, Some(database))) if database > SCHEMA_VERSION => {
                        return Err(CredentialError::Newer { flag, database, binary: SCHEMA_VERSION })
                    }
                    Ok(_) => return Ok(()),
                    Err(_) => {}
                }
            }
            Err(err) => {
                if let Some(db) = err.as_db_error() {
                    let message = db.message().to_string();
                    match *db.code() {
                        SqlState::INVALID_PASSWORD => return Err(CredentialError::Password { flag, role }),
                        SqlState::INVALID_AUTHORIZATION_SPECIFICATION => {
                            return Err(CredentialError::Login { flag, role, message })
                        }
                        SqlState::INVALID_CATALOG_NAME => return Err(CredentialError::Database { flag, message }),
                        _ => {}
                    }
                }
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(RETRY_MAX);
    }
}

const SUPERUSER: &str = "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user";

/// Whether the login may act as a gateway (or pgsse is not installed yet), and the installed schema's
/// version when it may read it.
async fn gateway_and_schema(client: &tokio_postgres::Client) -> Result<(bool, Option<i32>), tokio_postgres::Error> {
    let row = client
        .query_one(
            "SELECT NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'pgsse_gateway')
                 OR pg_catalog.pg_has_role('pgsse_gateway', 'USAGE'),
             EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname = 'pgsse' AND c.relname = 'meta'
                        AND pg_catalog.has_schema_privilege(n.oid, 'USAGE')
                        AND pg_catalog.has_table_privilege(c.oid, 'SELECT'))",
            &[],
        )
        .await?;
    let (member, readable): (bool, bool) = (row.get(0), row.get(1));
    if member && client.query_one(SUPERUSER, &[]).await?.get::<_, bool>(0) {
        // A table's owner's code (its triggers, policies) runs as the gateway's login on POST and snapshots.
        tracing::warn!(
            "this login is a superuser, so a published table's owner's code would run with every right: serve as \
             a login with only pgsse_gateway (docs/operations.md, Least privilege)"
        );
    }
    if !(member && readable) {
        return Ok((member, None));
    }
    let version = client.query_one("SELECT max(schema_version) FROM pgsse.meta", &[]).await?;
    Ok((true, version.get(0)))
}

/// Whether a connection failed on its credentials, which no retry fixes until someone changes them.
pub fn is_credentials(err: &tokio_postgres::Error) -> bool {
    err.as_db_error().is_some_and(|db| {
        [SqlState::INVALID_PASSWORD, SqlState::INVALID_AUTHORIZATION_SPECIFICATION].contains(db.code())
    })
}
