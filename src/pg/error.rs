//! PostgreSQL errors in one line a user can act on: the server's own message with its detail and hint,
//! or, for a connection that failed, what the network said and where it was going; and the pool's errors,
//! with those the request's own data caused told apart from the database's.

use std::error::Error;
use std::time::Duration;

use tokio_postgres::error::SqlState;

use crate::refusal::{Refusal, Refuse, UNAVAILABLE};

/// pgsse.refused: the table's own code (a trigger, rule or check) refused the gateway's write.
const TABLE_REFUSED: &str = "PGS02";
/// pgsse.remember: a request with the same Idempotency-Key is still being written.
const KEY_IN_FLIGHT: &str = "PGS04";

/// The server's message (and detail and hint), or the error and its causes; where pgsse's schema is
/// missing, the fix.
pub fn describe(err: &tokio_postgres::Error) -> String {
    let Some(db) = err.as_db_error() else {
        let mut text = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            text.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        return text;
    };
    let mut text = db.message().to_string();
    if let Some(detail) = db.detail() {
        text.push_str(&format!(" ({detail})"));
    }
    if let Some(hint) = db.hint() {
        text.push_str(&format!("; {hint}"));
    }
    if schema_missing(err) {
        text.push_str("; run `pgsse migrate` with this binary");
    }
    text
}

/// Whether pgsse's schema (or the part this binary needs) is not installed: an undefined schema, table
/// or function of pgsse's own.
pub fn schema_missing(err: &tokio_postgres::Error) -> bool {
    err.as_db_error().is_some_and(|db| {
        [SqlState::INVALID_SCHEMA_NAME, SqlState::UNDEFINED_TABLE, SqlState::UNDEFINED_FUNCTION].contains(db.code())
            && db.message().contains("pgsse")
    })
}

/// `host:port` of a database URL (the first, when it names several), for connection errors.
pub fn target(database_url: &str) -> String {
    match database_url.parse::<tokio_postgres::Config>() {
        Ok(config) => target_of(&config),
        Err(_) => "the database".into(),
    }
}

/// `host:port` of a connection's configuration.
pub fn target_of(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(host)) => host.clone(),
        Some(tokio_postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    format!("{host}:{}", config.get_ports().first().copied().unwrap_or(5432))
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {}", pool_error(.0))]
    Pool(#[from] deadpool_postgres::PoolError),
    #[error("database error: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    #[error("invalid database url: {0}")]
    Config(#[source] tokio_postgres::Error),
    #[error("the database pool cannot be made: {0}")]
    PoolBuild(#[from] deadpool_postgres::BuildError),
    /// A read that concurrent requests shared failed (the first of them got its cause).
    #[error("database unavailable: {0}")]
    Shared(String),
    /// The database refused the request's data; the message is safe to show to the client.
    #[error("{message}")]
    Rejected { kind: Refusal, message: String },
    /// No connection, or no answer on one, within the bound (`--db-timeout`); the connection is dropped.
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    /// A write committed, but the log holds no event of it on its channel.
    #[error("the write committed but recorded no event")]
    NotSequenced,
    #[error(transparent)]
    Replica(#[from] crate::pg::replica::ReplicaError),
}

/// What a client is told of a database without pgsse's schema (or an older one).
pub const SCHEMA_MISSING: &str =
    "pgsse is not installed in this database, or is older than this gateway: run `pgsse migrate`";

impl Refuse for StoreError {
    fn refusal(&self) -> Refusal {
        match self {
            StoreError::Rejected { kind, .. } => *kind,
            StoreError::Pool(_)
            | StoreError::Query(_)
            | StoreError::Config(_)
            | StoreError::PoolBuild(_)
            | StoreError::Shared(_)
            | StoreError::Timeout(_)
            | StoreError::NotSequenced
            | StoreError::Replica(_) => Refusal::Unavailable,
        }
    }

    /// Database errors carry SQL details; clients only learn that the database is unavailable.
    fn told(&self) -> String {
        match self {
            StoreError::Rejected { message, .. } => message.clone(),
            err if err.schema_missing() => SCHEMA_MISSING.to_string(),
            _ => UNAVAILABLE.to_string(),
        }
    }
}

impl StoreError {
    /// Sorts database errors caused by the request's data from the rest, phrasing the former without SQL.
    pub(crate) fn from_db(err: tokio_postgres::Error) -> Self {
        let Some(db) = err.as_db_error() else { return StoreError::Query(err) };
        let constraint = db.constraint().filter(|c| !c.is_empty()).unwrap_or("unnamed");
        let (kind, message) = match db.code() {
            c if [SqlState::UNIQUE_VIOLATION, SqlState::EXCLUSION_VIOLATION].contains(c) => {
                (Refusal::Conflict, format!("a row with this key already exists ({constraint})"))
            }
            c if *c == SqlState::NOT_NULL_VIOLATION => match db.column().filter(|c| !c.is_empty()) {
                Some(column) => (Refusal::Unprocessable, format!("column {column:?} must not be null")),
                None => (Refusal::Unprocessable, strip_prefix(db.message())),
            },
            c if *c == SqlState::CHECK_VIOLATION => {
                (Refusal::Unprocessable, format!("value violates check constraint {constraint:?}"))
            }
            c if *c == SqlState::FOREIGN_KEY_VIOLATION => {
                (Refusal::Unprocessable, format!("a referenced row does not exist ({constraint})"))
            }
            c if *c == SqlState::NO_DATA_FOUND => (Refusal::NotFound, strip_prefix(db.message())),
            c if *c == SqlState::INSUFFICIENT_PRIVILEGE => (
                Refusal::Forbidden,
                match db.hint() {
                    Some(hint) => format!("{}: {hint}", strip_prefix(db.message())),
                    None => strip_prefix(db.message()),
                },
            ),
            c if [SqlState::UNDEFINED_COLUMN, SqlState::GENERATED_ALWAYS].contains(c) => {
                (Refusal::Invalid, strip_prefix(db.message()))
            }
            c if c.code() == TABLE_REFUSED => (Refusal::Unprocessable, strip_prefix(db.message())),
            c if c.code() == KEY_IN_FLIGHT => (Refusal::Conflict, strip_prefix(db.message())),
            // Class 22, data exceptions: a value the request gave.
            c if c.code().starts_with("22") => (Refusal::Invalid, strip_prefix(db.message())),
            _ => return StoreError::Query(err),
        };
        StoreError::Rejected { kind, message }
    }
}

impl StoreError {
    /// The database answered, but pgsse is not installed there (or is older than this binary).
    pub fn schema_missing(&self) -> bool {
        matches!(self, StoreError::Query(err) if schema_missing(err))
    }
}

/// A pool error with the database's own words when a connection could not be made.
fn pool_error(err: &deadpool_postgres::PoolError) -> String {
    match err {
        deadpool_postgres::PoolError::Backend(err) => describe(err),
        other => other.to_string(),
    }
}

fn strip_prefix(message: &str) -> String {
    message.strip_prefix("pgsse: ").unwrap_or(message).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(target("postgres://u@db.example:6543/app"), "db.example:6543");
        assert_eq!(target("host=/run/postgresql dbname=app"), "/run/postgresql:5432");
        assert_eq!(target("not a url ::"), "the database");
    }
}
