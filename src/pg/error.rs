//! PostgreSQL errors in one line a user can act on: the server's own message with its detail and hint,
//! or, for a connection that failed, what the network said and where it was going; and the pool's errors,
//! with those the request's own data caused told apart from the database's.

use std::error::Error;
use std::time::Duration;

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
    err.as_db_error()
        .is_some_and(|db| matches!(db.code().code(), "3F000" | "42P01" | "42883") && db.message().contains("pgsse"))
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
    Config(String),
    /// A read that concurrent requests shared failed (the first of them got its cause).
    #[error("database unavailable: {0}")]
    Shared(String),
    /// The database refused the request's data; the message is safe to show to the client.
    #[error("{message}")]
    Rejected { kind: Rejection, message: String },
    /// No connection, or no answer on one, within the bound (`--db-timeout`); the connection is dropped.
    #[error("database did not answer within {0:?}")]
    Timeout(Duration),
    /// A write committed, but the log holds no event of it on its channel.
    #[error("the write committed but recorded no event")]
    NotSequenced,
}

/// Why the database refused a write, as far as the client needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Malformed values, unknown columns, invalid names.
    Invalid,
    /// A unique or exclusion constraint: the row already exists.
    Conflict,
    /// A NOT NULL, CHECK or foreign key constraint.
    Unprocessable,
    NotFound,
    Forbidden,
}

impl StoreError {
    /// Sorts database errors caused by the request's data from the rest, phrasing the former without SQL.
    pub(crate) fn from_db(err: tokio_postgres::Error) -> Self {
        let Some(db) = err.as_db_error() else { return StoreError::Query(err) };
        let code = db.code().code();
        let constraint = db.constraint().filter(|c| !c.is_empty()).unwrap_or("unnamed");
        let (kind, message) = match code {
            "23505" | "23P01" => (Rejection::Conflict, format!("a row with this key already exists ({constraint})")),
            "23502" => match db.column().filter(|c| !c.is_empty()) {
                Some(column) => (Rejection::Unprocessable, format!("column {column:?} must not be null")),
                None => (Rejection::Unprocessable, strip_prefix(db.message())),
            },
            "23514" => (Rejection::Unprocessable, format!("value violates check constraint {constraint:?}")),
            "23503" => (Rejection::Unprocessable, format!("a referenced row does not exist ({constraint})")),
            "P0002" => (Rejection::NotFound, strip_prefix(db.message())),
            "42501" => (
                Rejection::Forbidden,
                match db.hint() {
                    Some(hint) => format!("{}: {hint}", strip_prefix(db.message())),
                    None => strip_prefix(db.message()),
                },
            ),
            "42703" | "428C9" => (Rejection::Invalid, strip_prefix(db.message())),
            // pgsse.refused: the table's own code refused the write (its words are not passed on).
            "PGS02" => (Rejection::Unprocessable, strip_prefix(db.message())),
            // pgsse.remember: a request with the same Idempotency-Key is still being written.
            "PGS04" => (Rejection::Conflict, strip_prefix(db.message())),
            c if c.starts_with("22") => (Rejection::Invalid, strip_prefix(db.message())),
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
