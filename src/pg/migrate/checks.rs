//! What `pgsse migrate` checks before any file runs: the privileges it needs, that an existing schema
//! `pgsse` is pgsse's, and the database's encoding.

use tokio_postgres::Client;

use super::{apply_error, MigrateError, MIGRATIONS};

/// Says which privilege is missing before any file runs, rather than a server error from the middle of one;
/// and refuses a schema `pgsse` that someone else made, whose objects the files would read and run.
pub(super) async fn privileges(client: &Client) -> Result<(), MigrateError> {
    let fail = |err: tokio_postgres::Error| apply_error(MIGRATIONS[0].0, &err);
    let row = client
        .query_one(
            "SELECT current_user::text, current_database()::text, has_database_privilege(current_database(), 'CREATE'),
                    (SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgsse'),
                    (SELECT pg_has_role(nspowner, 'USAGE') FROM pg_namespace WHERE nspname = 'pgsse'),
                    (SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user)",
            &[],
        )
        .await
        .map_err(fail)?;
    let (user, db): (String, String) = (row.get(0), row.get(1));
    let (create, owner, member, can_grant): (bool, Option<String>, Option<bool>, bool) =
        (row.get(2), row.get(3), row.get(4), row.get(5));
    match owner {
        None if !create => Err(MigrateError::NoCreate { user, db }),
        None => Ok(()),
        Some(owner) if owner == "pgsse_owner" && (member == Some(true) || can_grant) => Ok(()),
        Some(owner) if owner == "pgsse_owner" => Err(MigrateError::NotOwnerMember { user }),
        // An install made before schema 9 belongs to whoever migrated it.
        Some(owner) if owner == user => Ok(()),
        Some(owner) => Err(MigrateError::ForeignSchema { owner, user }),
    }
}

/// A `SQL_ASCII` database stores text without checking it: a row that is not UTF-8 cannot become an event.
pub(super) async fn encoding(client: &Client) -> Result<(), MigrateError> {
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
