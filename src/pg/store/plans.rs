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
const MAX_PLANS: usize = 64;
/// The kept plans' tables' columns, summed, at most: a prepared insert's plan holds about 1.3 KB in its
/// backend per column of its table (385 KB for one of 300 columns), so each pooled connection holds a few
/// MB at most.
const MAX_WIDTH: usize = 2048;
/// Prepared statements past which a pooled connection drops them all. Only a change of a table or
/// channel leaves a kept statement unused (and prepared on connections other than the one that found it).
const MAX_PREPARED: usize = MAX_PLANS + 32;
/// How long a key set with no statement to keep (its table does not capture inserts) takes
/// `pgsse.insert_json` before the gateway asks again.
const RECHECK: Duration = Duration::from_secs(10);

type Key = (String, Vec<String>);

/// What `pgsse.kept_insert_stale` raises.
const STALE: &str = "PGS05";

enum Plan {
    /// Each key of the row and the column it names, the statement that inserts the row so renamed, and
    /// its table's column count.
    Kept { columns: Vec<(String, String)>, statement: String, width: usize },
    /// Nothing to keep, as found at this instant.
    Unkept(Instant),
}

/// See the module's header.
#[derive(Default)]
pub(super) struct Plans {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    plans: HashMap<Key, Arc<Plan>>,
    /// The kept plans' widths, summed.
    width: usize,
}

/// What a kept insert did.
pub(super) enum Outcome {
    /// The row went in, in transaction `txid`; its event's id will be above `after`.
    Inserted { txid: i64, after: i64 },
    /// The write committed, but its answer could not be read.
    Committed,
    /// Nothing was written, and the write is `pgsse.insert_json`'s to do: no statement is kept for these
    /// keys, the channel or table changed since, or the database refused the row (`pgsse.insert_json` says
    /// why in pgsse's own words; the table's code may have put anything in its own).
    Unkept,
}

impl Plans {
    /// Inserts `row` into `channel`'s table with its kept statement (asking for one first if none is
    /// kept), unless it would start past `commit_by`: past it, the gateway could give up on an insert that
    /// then commits.
    pub(super) async fn insert(
        &self,
        client: &Client,
        channel: &str,
        row: &Value,
        commit_by: Instant,
    ) -> Result<Outcome, StoreError> {
        let Some(object) = row.as_object() else { return Ok(Outcome::Unkept) };
        let key = key(channel, object);
        let plan = match self.get(&key) {
            Some(plan) => plan,
            None => match ask(client, &key).await {
                Ok(plan) => self.keep(key.clone(), plan),
                Err(err) if err.code().is_some() => return Ok(Outcome::Unkept),
                Err(err) => return Err(err.into()),
            },
        };
        let Plan::Kept { columns, statement, .. } = &*plan else { return Ok(Outcome::Unkept) };
        if client.statement_cache.size() >= MAX_PREPARED {
            client.statement_cache.clear();
        }
        let stmt = match client.prepare_cached(statement).await {
            Ok(stmt) => stmt,
            Err(err) => return self.failed(client, &key, &plan, err),
        };
        if Instant::now() > commit_by {
            return Ok(Outcome::Unkept);
        }
        match client.query_one(&stmt, &[&renamed(object, columns)]).await {
            Ok(row) => Ok(match (row.try_get(0), row.try_get(1)) {
                (Ok(txid), Ok(after)) => Outcome::Inserted { txid, after },
                _ => Outcome::Committed,
            }),
            Err(err) => self.failed(client, &key, &plan, err),
        }
    }

    /// A kept insert that failed, and so wrote nothing (the statement is its own transaction), or whose
    /// outcome is unknown (no answer: the connection is gone).
    fn failed(
        &self,
        client: &Client,
        key: &Key,
        plan: &Arc<Plan>,
        err: tokio_postgres::Error,
    ) -> Result<Outcome, StoreError> {
        let Some(code) = err.code() else { return Err(err.into()) };
        // Kept through what a request's row makes the table do, which a client could otherwise repeat to
        // have new statements prepared on every connection: dropped only once the channel or the table
        // changed (PGS05; a column or table gone, a grant revoked; a rule added).
        if code.code() == STALE || ["42", "0A"].contains(&&code.code()[..2]) {
            self.forget(client, key, plan);
        }
        Ok(Outcome::Unkept)
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
        kept.plans.get(key).filter(|plan| !matches!(***plan, Plan::Unkept(at) if at.elapsed() > RECHECK)).cloned()
    }

    fn keep(&self, key: Key, plan: Plan) -> Arc<Plan> {
        let plan = Arc::new(plan);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let before = kept.plans.get(&key).map_or(0, |p| p.width());
        let width = kept.width - before + plan.width();
        if width <= MAX_WIDTH && (kept.plans.len() < MAX_PLANS || kept.plans.contains_key(&key)) {
            kept.plans.insert(key, plan.clone());
            kept.width = width;
        }
        plan
    }

    /// Drops `plan`, unless another has replaced it, and this connection's statement for it.
    fn forget(&self, client: &Client, key: &Key, plan: &Arc<Plan>) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.plans.get(key).is_some_and(|k| Arc::ptr_eq(k, plan)) {
            kept.plans.remove(key);
            kept.width -= plan.width();
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

impl Plan {
    fn width(&self) -> usize {
        match self {
            Plan::Kept { width, .. } => *width,
            Plan::Unkept(_) => 0,
        }
    }
}

/// The plan for channel `key.0` and keys `key.1`, from `pgsse.insert_plan`; an error when it refuses them.
async fn ask(client: &Client, key: &Key) -> Result<Plan, tokio_postgres::Error> {
    let stmt = client.prepare_cached("SELECT columns, guarded, width FROM pgsse.insert_plan($1, $2)").await?;
    let row = client.query_one(&stmt, &[&key.0, &key.1]).await?;
    let (columns, guarded, width): (Option<Vec<Option<String>>>, Option<String>, Option<i32>) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    Ok(match (columns, guarded, width.and_then(|w| usize::try_from(w).ok())) {
        (Some(columns), Some(statement), Some(width)) if columns.len() == key.1.len() => {
            let columns = key.1.iter().cloned().zip(columns).map(|(k, c)| Some((k, c?))).collect::<Option<Vec<_>>>();
            columns.map_or(Plan::Unkept(Instant::now()), |columns| Plan::Kept { columns, statement, width })
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
