//! POST's `Idempotency-Key`: a write made under a key is remembered in its own transaction
//! (`pgsse.remember`), so that a repeat, on any gateway, answers with that write's event.

use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::pg::error::StoreError;
use crate::refusal::Refusal;

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
pub fn params<'a>(write: &[&'a (dyn ToSql + Sync)], key: &'a Keyed) -> Vec<&'a (dyn ToSql + Sync)> {
    let mut params = write.to_vec();
    params.extend([&key.scope as &(dyn ToSql + Sync), &key.key, &key.request]);
    params
}

/// Refuses a key sent again with another request. The row's columns `at` and `at + 1` are the `_once`
/// function's `fresh` and `same`; for a repeat of the first request, its first two columns are the first
/// write's transaction and log head, so the caller finds that write's event as it finds a new one's.
pub fn same_request(row: &Row, key: Option<&Keyed>, at: usize) -> Result<(), StoreError> {
    if key.is_none() || row.try_get::<_, bool>(at)? || row.try_get::<_, bool>(at + 1)? {
        return Ok(());
    }
    Err(StoreError::Rejected {
        kind: Refusal::Unprocessable,
        message: "this Idempotency-Key was first sent with another request (channel, event or body): \
                  use a new key for a new request"
            .into(),
    })
}
