//! POST's `Idempotency-Key`: a write made under a key is remembered in its own transaction
//! (`pgsse.remember`), so that a repeat, on any gateway, answers with that write's event.

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::pg::error::{Rejection, StoreError};

/// A request's key: whose it is (the token's subject, or ""), the key, and the request it was sent with
/// (channel, event and body), which a repeat must match.
pub struct Keyed {
    pub scope: String,
    pub key: String,
    pub request: String,
}

/// The keyed forms of the gateway's writes, exactly: `pgsse.remember` serves no other statement, so no
/// login can remember a key without making its write.
pub const INSERT: &str = "SELECT * FROM pgsse.insert_json_once($1, $2, $3, $4, $5)";
pub const PUBLISH: &str = "SELECT * FROM pgsse.publish_json_once($1, $2, $3, $4, $5, $6)";

/// The write's parameters, then the key's (for the `_once` form of pgsse's write functions).
pub fn params<'a>(write: &[&'a (dyn ToSql + Sync)], key: Option<&'a Keyed>) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut params = write.to_vec();
    if let Some(key) = key {
        params.extend([&key.scope as &(dyn ToSql + Sync), &key.key, &key.request]);
    }
    params
}

/// Whether the row (whose columns `at` and `at + 1` are the `_once` function's `fresh` and `same`) is a
/// repeat of a key's first write, whose transaction and log head its first two columns then are; a
/// refusal when the key came with another request.
pub fn repeat(row: &Row, key: Option<&Keyed>, at: usize) -> Result<bool, StoreError> {
    if key.is_none() || row.try_get::<_, bool>(at)? {
        return Ok(false);
    }
    if !row.try_get::<_, bool>(at + 1)? {
        return Err(StoreError::Rejected {
            kind: Rejection::Unprocessable,
            message: "this Idempotency-Key was first sent with another request (channel, event or body): \
                      use a new key for a new request"
                .into(),
        });
    }
    Ok(true)
}
