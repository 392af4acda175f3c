//! The inserts of POSTed rows, kept per channel and key set (`pgsse.insert_plan`'s guarded statement) and
//! prepared on each pooled connection: a POST to a table channel is then one statement and no lookup.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Client;
use serde_json::{Map, Value};

use crate::pg::error::StoreError;

/// Plans kept at most. Key sets are subsets of a table's columns, so a client that sends each could
/// otherwise grow this, and every pooled connection's prepared statements, without bound; past it a POST
/// takes `pgsse.insert_json`, as before.
const MAX_PLANS: usize = 256;
/// Prepared statements past which a pooled connection drops them all: each holds a plan in its backend.
const MAX_PREPARED: usize = MAX_PLANS + 64;
/// How long a key set with no statement to keep (its table does not capture inserts) takes
/// `pgsse.insert_json` before the gateway asks again.
const RECHECK: Duration = Duration::from_secs(10);

type Key = (String, Vec<String>);

enum Plan {
    /// Each key of the row and the column it names, and the statement that inserts the row so renamed.
    Kept { columns: Vec<(String, String)>, statement: String },
    /// Nothing to keep, as found at this instant.
    Unkept(Instant),
}

/// See the module's header.
#[derive(Default)]
pub(super) struct Plans {
    kept: Mutex<HashMap<Key, Arc<Plan>>>,
}

impl Plans {
    /// Inserts `row` into `channel`'s table with its kept statement (asking for one first if none is kept),
    /// and returns its transaction and the id its event will be above. `None` when nothing was written and
    /// the write is `pgsse.insert_json`'s to do: no statement is kept for these keys, the channel changed
    /// since (the statement then inserts nothing), or the database refused the row (`pgsse.insert_json`
    /// says why in pgsse's own words; the table's code may have put anything in its own).
    pub(super) async fn insert(
        &self,
        client: &Client,
        channel: &str,
        row: &Value,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let Some(object) = row.as_object() else { return Ok(None) };
        let key = key(channel, object);
        let plan = match self.get(&key) {
            Some(plan) => plan,
            None => match ask(client, &key).await {
                Ok(plan) => self.keep(key.clone(), plan),
                Err(err) if err.code().is_some() => return Ok(None),
                Err(err) => return Err(err.into()),
            },
        };
        let Plan::Kept { columns, statement } = &*plan else { return Ok(None) };
        if client.statement_cache.size() >= MAX_PREPARED {
            client.statement_cache.clear();
        }
        let renamed = renamed(object, columns);
        let inserted = match client.prepare_cached(statement).await {
            Ok(stmt) => client.query_opt(&stmt, &[&renamed]).await,
            Err(err) => Err(err),
        };
        match inserted {
            Ok(Some(row)) => Ok(Some((row.try_get(0)?, row.try_get(1)?))),
            Ok(None) => {
                self.forget(client, &key, &plan);
                Ok(None)
            }
            Err(err) => {
                let Some(code) = err.code() else { return Err(err.into()) };
                // A value the row gave, or a key the table already holds, says nothing of the statement.
                if !["22", "23"].contains(&&code.code()[..2]) {
                    self.forget(client, &key, &plan);
                }
                Ok(None)
            }
        }
    }

    /// Whether a statement is kept for a row with `row`'s keys on `channel`: it then is a table channel,
    /// unless it changed since (and the statement inserts nothing).
    pub(super) fn keeps(&self, channel: &str, row: &Value) -> bool {
        row.as_object()
            .and_then(|object| self.get(&key(channel, object)))
            .is_some_and(|p| matches!(*p, Plan::Kept { .. }))
    }

    fn get(&self, key: &Key) -> Option<Arc<Plan>> {
        let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.get(key).filter(|plan| !matches!(***plan, Plan::Unkept(at) if at.elapsed() > RECHECK)).cloned()
    }

    fn keep(&self, key: Key, plan: Plan) -> Arc<Plan> {
        let plan = Arc::new(plan);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < MAX_PLANS || kept.contains_key(&key) {
            kept.insert(key, plan.clone());
        }
        plan
    }

    /// Drops `plan`, unless another has replaced it, and this connection's statement for it.
    fn forget(&self, client: &Client, key: &Key, plan: &Arc<Plan>) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.get(key).is_some_and(|k| Arc::ptr_eq(k, plan)) {
            kept.remove(key);
        }
        if let Plan::Kept { statement, .. } = &**plan {
            client.statement_cache.remove(statement, &[]);
        }
    }
}

fn key(channel: &str, object: &Map<String, Value>) -> Key {
    let mut keys: Vec<String> = object.keys().cloned().collect();
    keys.sort_unstable();
    (channel.to_owned(), keys)
}

/// The plan for channel `key.0` and keys `key.1`, from `pgsse.insert_plan`; an error when it refuses them.
async fn ask(client: &Client, key: &Key) -> Result<Plan, tokio_postgres::Error> {
    let stmt = client.prepare_cached("SELECT columns, guarded FROM pgsse.insert_plan($1, $2)").await?;
    let row = client.query_one(&stmt, &[&key.0, &key.1]).await?;
    let (columns, guarded): (Option<Vec<Option<String>>>, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
    Ok(match (columns, guarded) {
        (Some(columns), Some(statement)) if columns.len() == key.1.len() => {
            let columns = key.1.iter().cloned().zip(columns).map(|(k, c)| Some((k, c?))).collect::<Option<Vec<_>>>();
            columns.map_or(Plan::Unkept(Instant::now()), |columns| Plan::Kept { columns, statement })
        }
        _ => Plan::Unkept(Instant::now()),
    })
}

/// `object` as JSON text, each key replaced by the column it names.
fn renamed(object: &Map<String, Value>, columns: &[(String, String)]) -> String {
    let renamed: Map<String, Value> =
        columns.iter().filter_map(|(key, column)| Some((column.clone(), object.get(key)?.clone()))).collect();
    Value::Object(renamed).to_string()
}
