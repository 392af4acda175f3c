//! The inserts of POSTed rows, kept per channel and key set (`pgsse.insert_plan`'s guarded statement): a
//! POST to a table channel is then one prepared statement and no lookup. The table's code that it runs
//! could take a prepared statement's name: `store::resetting` checks the session's statements after it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use deadpool_postgres::Client;
use serde_json::{Map, Value};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Type;

use crate::pg::error::StoreError;

/// Plans kept at most; a new key set takes the place of the one used longest ago. Key sets are subsets
/// of a table's columns, so without a bound a client that sends many could grow this.
const MAX_PLANS: usize = 64;
/// The kept plans' bytes (their keys, columns and statements), summed, at most: a statement's text grows
/// with its keys, which a client chooses.
const MAX_BYTES: usize = 1024 * 1024;
/// Statements a pooled session keeps prepared at most: the gateway's own (about 25) and a few kept inserts.
/// Past it, all of the session's go, and are prepared again as used.
const SESSION_STATEMENTS: usize = 32;
/// The widest table whose kept inserts are prepared: a session holds each prepared insert's plan, which
/// grows with the table's columns (their defaults and checks), not with the keys sent, and a client
/// chooses how many key sets it sends. A wider table's insert is planned at each POST, unnamed.
const PREPARED_WIDTH: i16 = 40;
/// How long a key set with no statement to keep (its table does not capture inserts, is too wide, or
/// has rules) takes `pgsse.insert_json` before the gateway asks again.
const RECHECK: Duration = Duration::from_secs(10);

type Key = (String, Vec<String>);

/// What `pgsse.kept_insert_stale` raises.
const STALE: &str = "PGS05";

enum Plan {
    /// Each key of the row and the column it names, the statement that inserts the row so renamed, and
    /// whether sessions prepare it (see [`PREPARED_WIDTH`]).
    Kept { columns: Vec<(String, String)>, statement: String, prepared: bool },
    /// Nothing to keep, as found at this instant.
    Unkept(Instant),
}

struct Entry {
    plan: Arc<Plan>,
    /// Its key's bytes and its plan's: what the bound counts.
    bytes: usize,
    /// When it was last used, on [`Plans::clock`].
    used: AtomicU64,
}

/// See the module's header.
#[derive(Default)]
pub(super) struct Plans {
    kept: Mutex<Kept>,
    clock: AtomicU64,
}

#[derive(Default)]
struct Kept {
    plans: HashMap<Key, Entry>,
    /// The kept plans' bytes, summed.
    bytes: usize,
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
    /// then commits. The session is reset after it, in the same round trip.
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
        let Plan::Kept { columns, statement, prepared } = &*plan else { return Ok(Outcome::Unkept) };
        if Instant::now() > commit_by {
            return Ok(Outcome::Unkept);
        }
        let renamed = renamed(object, columns);
        let inserted = if *prepared {
            if client.statement_cache.size() >= SESSION_STATEMENTS {
                client.statement_cache.clear();
            }
            let stmt = match client.prepare_typed_cached(statement, &[Type::TEXT]).await {
                Ok(stmt) => stmt,
                Err(err) => return self.failed(&key, &plan, err),
            };
            super::resetting(client, client.query(&stmt, &[&renamed])).await
        } else {
            let params: [(&(dyn tokio_postgres::types::ToSql + Sync), Type); 1] = [(&renamed, Type::TEXT)];
            super::resetting(client, client.query_typed(statement, &params)).await
        };
        match inserted {
            Ok(rows) => Ok(match rows.first().map(|row| (row.try_get(0), row.try_get(1))) {
                Some((Ok(txid), Ok(after))) => Outcome::Inserted { txid, after },
                _ => Outcome::Committed,
            }),
            Err(err) => self.failed(&key, &plan, err),
        }
    }

    /// A kept insert that failed, and so wrote nothing (the statement is its own transaction), or whose
    /// outcome is unknown (no answer: the connection is gone).
    fn failed(&self, key: &Key, plan: &Arc<Plan>, err: tokio_postgres::Error) -> Result<Outcome, StoreError> {
        let Some(code) = err.code() else { return Err(err.into()) };
        // Kept through whatever a request's row makes the table refuse (a row security check raises
        // 42501), which a client could otherwise repeat to have it made again and again: dropped only when
        // the channel or the table changed.
        if code.code() == STALE || [SqlState::UNDEFINED_COLUMN, SqlState::UNDEFINED_TABLE].contains(code) {
            self.forget(key, plan, None);
        } else if *code == SqlState::FEATURE_NOT_SUPPORTED {
            // A rule on the table: an INSERT in WITH cannot run, so none is kept for a while.
            self.forget(key, plan, Some(Plan::Unkept(Instant::now())));
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
        let entry = kept.plans.get(key).filter(|e| !matches!(*e.plan, Plan::Unkept(at) if at.elapsed() > RECHECK))?;
        entry.used.store(self.clock.fetch_add(1, Ordering::Relaxed), Ordering::Relaxed);
        Some(entry.plan.clone())
    }

    /// Keeps `plan` for `key`, in place of the plans used longest ago; one too large for the bound on its
    /// own is kept as nothing to keep.
    fn keep(&self, key: Key, plan: Plan) -> Arc<Plan> {
        let plan = Arc::new(match plan {
            plan @ Plan::Kept { .. } if weight(&key, &plan) > MAX_BYTES => Plan::Unkept(Instant::now()),
            plan => plan,
        });
        let bytes = weight(&key, &plan);
        {
            let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(old) = kept.plans.remove(&key) {
                kept.bytes -= old.bytes;
            }
            while kept.plans.len() >= MAX_PLANS || kept.bytes + bytes > MAX_BYTES {
                let Some(oldest) =
                    kept.plans.iter().min_by_key(|(_, e)| e.used.load(Ordering::Relaxed)).map(|(k, _)| k.clone())
                else {
                    break;
                };
                if let Some(old) = kept.plans.remove(&oldest) {
                    kept.bytes -= old.bytes;
                }
            }
            kept.bytes += bytes;
            let used = AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed));
            kept.plans.insert(key, Entry { plan: plan.clone(), bytes, used });
        }
        plan
    }

    /// Drops `plan` (unless another has replaced it), in favour of `instead` if given.
    fn forget(&self, key: &Key, plan: &Arc<Plan>, instead: Option<Plan>) {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        if kept.plans.get(key).is_some_and(|e| Arc::ptr_eq(&e.plan, plan)) {
            if let Some(old) = kept.plans.remove(key) {
                kept.bytes -= old.bytes;
            }
            if let Some(instead) = instead {
                let bytes = weight(key, &instead);
                kept.bytes += bytes;
                let used = AtomicU64::new(self.clock.fetch_add(1, Ordering::Relaxed));
                kept.plans.insert(key.clone(), Entry { plan: Arc::new(instead), bytes, used });
            }
        }
    }
}

fn key(channel: &str, object: &Map<String, Value>) -> Key {
    let mut keys: Vec<String> = object.keys().cloned().collect();
    keys.sort_unstable();
    (channel.to_owned(), keys)
}

/// What each string kept costs beyond its bytes: its own header and the allocator's smallest chunk.
const PER_STRING: usize = 48;

/// What keeping `plan` for `key` holds, in bytes: a key set with nothing to keep holds its keys too, and
/// many short keys cost more in strings than in text.
fn weight(key: &Key, plan: &Plan) -> usize {
    let text = |s: &String| s.len() + PER_STRING;
    let keys = text(&key.0) + key.1.iter().map(text).sum::<usize>();
    keys + match plan {
        Plan::Kept { columns, statement, .. } => {
            text(statement) + columns.iter().map(|(key, column)| text(key) + text(column)).sum::<usize>()
        }
        Plan::Unkept(_) => 0,
    }
}

/// The plan for channel `key.0` and keys `key.1`, from `pgsse.insert_plan`; an error when it refuses them.
async fn ask(client: &Client, key: &Key) -> Result<Plan, tokio_postgres::Error> {
    let stmt = client
        .prepare_cached(
            "SELECT p.columns, p.guarded, (SELECT c.relnatts FROM pg_catalog.pg_class c WHERE c.oid = p.source) \
             FROM pgsse.insert_plan($1, $2) p",
        )
        .await?;
    let row = client.query_one(&stmt, &[&key.0, &key.1]).await?;
    let (columns, guarded): (Option<Vec<Option<String>>>, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
    let prepared = row.try_get::<_, Option<i16>>(2)?.is_some_and(|width| width <= PREPARED_WIDTH);
    Ok(match (columns, guarded) {
        (Some(columns), Some(statement)) if columns.len() == key.1.len() => {
            let columns = key.1.iter().cloned().zip(columns).map(|(k, c)| Some((k, c?))).collect::<Option<Vec<_>>>();
            columns.map_or(Plan::Unkept(Instant::now()), |columns| Plan::Kept { columns, statement, prepared })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(bytes: usize) -> Plan {
        Plan::Kept { columns: Vec::new(), statement: "x".repeat(bytes), prepared: true }
    }

    fn key(n: usize) -> Key {
        ("c".into(), vec![format!("k{n}")])
    }

    #[test]
    fn a_new_key_set_takes_the_place_of_the_one_used_longest_ago() {
        let plans = Plans::default();
        for n in 0..MAX_PLANS {
            plans.keep(key(n), kept(1));
        }
        assert!(plans.get(&key(0)).is_some(), "used again: now the newest");
        plans.keep(key(MAX_PLANS), kept(1));
        let held: usize = (0..=MAX_PLANS).filter(|&n| n != 1).map(|n| weight(&key(n), &kept(1))).sum();
        let kept = plans.kept.lock().unwrap();
        assert_eq!((kept.plans.len(), kept.bytes), (MAX_PLANS, held));
        assert!(kept.plans.contains_key(&key(0)) && !kept.plans.contains_key(&key(1)));
    }

    #[test]
    fn the_kept_statements_bytes_are_bounded() {
        let plans = Plans::default();
        for n in 0..4 {
            plans.keep(key(n), kept(MAX_BYTES / 3 - 4 * PER_STRING));
        }
        assert!(plans.kept.lock().unwrap().bytes <= MAX_BYTES);
        assert!(matches!(*plans.keep(key(9), kept(MAX_BYTES + 1)), Plan::Unkept(_)), "never used");
        {
            let kept = plans.kept.lock().unwrap();
            assert!(kept.bytes <= MAX_BYTES && kept.plans.len() == 4, "{} {}", kept.bytes, kept.plans.len());
        }
        let wide = |n: usize| ("c".to_string(), vec![format!("{n}{}", "k".repeat(MAX_BYTES / 3))]);
        for n in 0..4 {
            plans.keep(wide(n), Plan::Unkept(Instant::now()));
        }
        let kept = plans.kept.lock().unwrap();
        assert!(kept.bytes <= MAX_BYTES && kept.plans.len() <= 3, "key sets with nothing to keep count too");
    }
}
