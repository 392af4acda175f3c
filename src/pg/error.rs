//! PostgreSQL errors in one line a user can act on: the server's own message with its detail and hint,
//! or, for a connection that failed, what the network said and where it was going.

use std::error::Error;

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
