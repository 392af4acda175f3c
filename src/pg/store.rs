//! Reads of the event log and channel registry through the connection pool (never the LISTEN connection).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{
    Client, ClientWrapper, Hook, HookError, Manager, ManagerConfig, Metrics, Pool, RecyclingMethod, Runtime,
};
use tokio_postgres::{NoTls, SimpleQueryMessage};

use crate::pg::error::StoreError;
use crate::pg::logrow::{filter_columns, payload_bytes, row_bytes, EventRow, Undecodable, ISSUED_HEAD};
use crate::pg::sightings::Sightings;
use crate::shared_read::SharedRead;

/// Rows per replay query at most: large enough for throughput with small events.
pub const REPLAY_BATCH: i64 = 1000;
/// Event data one replay batch or history page holds at most (its first event always comes whole): a
/// replaying stream whose client does not read pins about two batches, not the backlog, and a client that
/// asks for pages without reading them pins one per place it holds under the per-client limit.
pub const PAGE_BYTES: i64 = 256 * 1024;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// `/healthz` and `/readyz` answer within a second whatever the database does.
const HEALTH_BOUND: Duration = Duration::from_secs(1);

const DEFAULT_DB_TIMEOUT: &str = "15s";
/// The share of `--db-timeout` that one statement of the pool may take, server-side.
const STATEMENT_SHARE: f64 = 1.0 / 3.0;
/// The share of `--db-timeout` that a gateway's own write waits for another session's sequencing step to
/// give its event an id: with the write's own statement, short of the bound, so that a write that
/// committed is never answered with a timeout.
const SEQUENCED_SHARE: f64 = 1.0 / 2.0;
const DEFAULT_POOL_SIZE: usize = 16;
/// Sent after each statement that runs a table's own code (its triggers, rules, policies, casts), in the
/// same round trip, each a message of its own: that code runs in a pooled session, as the gateway, and
/// what it left there would otherwise meet every later request on it: settings (no statement timeout, a
/// search_path of its own) and a role. Temporary types and tables cannot shadow pg_catalog's: the
/// session's search_path puts pg_temp last. Not DISCARD ALL: it also discards every cached plan, the
/// capture triggers' included, which doubled a POST's cost.
const RESETS: [&str; 2] = ["RESET ALL", "RESET ROLE"];

/// Runs `statement`, which runs a table's own code, and resets the session after it in the same round
/// trip (see [`RESETS`]). The statement must be prepared already: [`reset`] counts the session's. The
/// session is marked before the statement is sent and cleared only once the reset proves it clean, so
/// that one whose request went away half way (its client left) is not handed out again either.
pub(crate) async fn resetting<T>(client: &Client, statement: impl std::future::Future<Output = T>) -> T {
    let session = taint(client);
    let (out, clean) = tokio::join!(statement, reset(client));
    if clean {
        untaint(session);
    }
    out
}

/// Resets `client`'s session (see [`RESETS`]), and checks that its prepared statements are the gateway's
/// own, as many as its cache holds: a table's code may DEALLOCATE one of them, and PREPARE a statement
/// under that name, so that a later request would run the table owner's query instead. Only a protocol
/// message makes a statement that is not `from_sql`, and only the gateway sends those. Whether the
/// session is clean: should a reset fail (a statement timeout that the table's code set can cut `RESET
/// ROLE` short, and so can its cancels of the gateway's other sessions) or the check not say so, it stays
/// marked ([`taint`]); what is left of the request on it runs with its statements dropped and the session
/// reset once more, at best.
async fn reset(client: &Client) -> bool {
    let check = format!(
        "SELECT count(*) FILTER (WHERE from_sql) = 0 AND count(*) = {} FROM pg_catalog.pg_prepared_statements",
        client.statement_cache.size()
    );
    let (all, role, checked) =
        tokio::join!(client.batch_execute(RESETS[0]), client.batch_execute(RESETS[1]), client.simple_query(&check));
    let own = checked.is_ok_and(|messages| {
        messages.iter().any(|m| matches!(m, SimpleQueryMessage::Row(row) if row.get(0) == Some("t")))
    });
    if all.is_ok() && role.is_ok() && own {
        return true;
    }
    client.statement_cache.clear();
    let _ = tokio::join!(
        client.batch_execute(RESETS[0]),
        client.batch_execute(RESETS[1]),
        client.batch_execute("DEALLOCATE ALL")
    );
    false
}

/// Sessions that must not be handed out again, by their statement cache (which lives as long as the
/// session): the pool's check before it hands a session out ([`untainted`]) drops them.
static TAINTED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// Marks `client`'s session, and returns the mark.
fn taint(client: &Client) -> usize {
    let session = Arc::as_ptr(&client.statement_cache) as usize;
    TAINTED.lock().unwrap_or_else(|p| p.into_inner()).push(session);
    session
}

/// Takes one of `session`'s marks away; whether it had one.
fn untaint(session: usize) -> bool {
    let mut tainted = TAINTED.lock().unwrap_or_else(|p| p.into_inner());
    let at = tainted.iter().position(|&c| c == session);
    at.map(|at| tainted.swap_remove(at)).is_some()
}

/// The pool's hook before it hands out an idle session: one that [`taint`] marked is dropped (and its mark
/// with it), and the pool opens another.
fn untainted(client: &mut ClientWrapper, _: &Metrics) -> Result<(), HookError> {
    match untaint(Arc::as_ptr(&client.statement_cache) as usize) {
        true => Err(HookError::message("a table's code left this session in a state the gateway could not reset")),
        false => Ok(()),
    }
}

mod channels;
mod mercure;
mod plans;
mod reads;
mod writes;
pub use mercure::{NewUpdate, SAME_ID};
use plans::Plans;
use reads::{on, Reads};
pub use writes::Written;

/// The pool that replays, lookups and writes use (the LISTEN connection is separate).
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Database pool")]
pub struct PoolArgs {
    /// Connections in the pool used for replay and lookups (the LISTEN connection is separate).
    #[arg(long, env = "PGSSE_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE,
          value_parser = crate::parse::positive)]
    pub pool_size: usize,

    /// Longest wait for a pooled connection, and then for its answer: a request past it gets 503 and the
    /// connection is dropped (a replaying stream retries); the kernel also drops a connection whose data
    /// goes unacknowledged this long.
    #[arg(long, env = "PGSSE_DB_TIMEOUT", default_value = DEFAULT_DB_TIMEOUT, value_parser = crate::parse::duration)]
    pub db_timeout: Duration,
}

/// A channel as the command endpoints see it.
pub struct ChannelInfo {
    pub has_table: bool,
}

/// What `/readyz` reads: see [`Store::readiness`].
pub struct Readiness {
    pub version: Option<i32>,
    pub backlog: Option<(i64, f64)>,
}

/// One batch of a replay, read in one snapshot with the watermark of the stream's channels: every id at
/// or below `watermark` may be missing, every later one through `last` is in `rows` (but for rows that
/// are not UTF-8, which are skipped).
pub struct ReplayBatch {
    pub watermark: i64,
    pub rows: Vec<EventRow>,
    /// The highest id read, skipped or not.
    pub last: Option<i64>,
    /// Whether the batch stopped at its row limit or byte budget, so more events may follow it.
    pub more: bool,
}

pub struct Store {
    pool: Pool,
    /// The hot standby's pool, under `--replica-database-url`: the log's reads go there.
    reads: Option<Reads>,
    /// Longest wait for a pooled connection, and then for its answer (`--db-timeout`).
    bound: Duration,
    known_channels: Mutex<HashSet<String>>,
    /// The last read of the committed head, shared. See [`Store::committed_head`].
    head: SharedRead<Result<i64, String>>,
    /// Where the listener reports the events the gateway's own writes wait for.
    sightings: Option<Arc<Sightings>>,
    /// The inserts of POSTed rows, per channel and key set.
    plans: Plans,
}

impl Store {
    pub fn new(database_url: &str, pool_size: usize, bound: Duration) -> Result<Self, StoreError> {
        let pool = Self::pool(database_url, pool_size, bound)?;
        let known_channels = Mutex::new(HashSet::new());
        let head = SharedRead::default();
        Ok(Self { pool, reads: None, bound, known_channels, head, sightings: None, plans: Plans::default() })
    }

    /// Writes learn their events' ids from the listener reporting to `sightings`, while it reads.
    pub fn with_sightings(mut self, sightings: Arc<Sightings>) -> Self {
        self.sightings = Some(sightings);
        self
    }

    fn pool(database_url: &str, pool_size: usize, bound: Duration) -> Result<Pool, StoreError> {
        let mut pg = super::session_config(database_url, "pgsse", CONNECT_TIMEOUT.min(bound), bound)
            .map_err(StoreError::Config)?;
        // The server gives up a statement well before the gateway gives up its connection: a write that the
        // gateway answers with a timeout has then not committed (a dropped connection alone would not stop
        // a statement waiting on a lock, which then commits after the client was told to retry).
        let statement_ms = bound.mul_f64(STATEMENT_SHARE).as_millis().max(1);
        pg.options(format!("{} -c statement_timeout={statement_ms}", pg.get_options().unwrap_or_default()));
        let manager = Manager::from_config(pg, NoTls, ManagerConfig { recycling_method: RecyclingMethod::Fast });
        let pool = Pool::builder(manager)
            .max_size(pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(bound))
            .create_timeout(Some(bound))
            .recycle_timeout(Some(bound))
            .pre_recycle(Hook::sync_fn(untainted))
            .build()?;
        Ok(pool)
    }

    /// Runs `work` on a pooled connection, waiting at most `bound` for the connection and as long again
    /// for the work. A connection that did not answer in time is taken out of the pool rather than handed
    /// to the next request (it may be half-open).
    async fn bounded<T>(
        &self,
        bound: Duration,
        work: impl AsyncFnOnce(&Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        on(&self.pool, bound, work).await
    }

    /// How long a write waits for its event's id, or history for a step another session is taking.
    fn sequenced_wait(&self) -> Duration {
        self.bound.mul_f64(SEQUENCED_SHARE)
    }

    /// How long one statement of the pool may take, server-side.
    fn statement_bound(&self) -> Duration {
        self.bound.mul_f64(STATEMENT_SHARE)
    }

    /// [`Self::bounded`] by `--db-timeout`.
    async fn with<T>(&self, work: impl AsyncFnOnce(&Client) -> Result<T, StoreError>) -> Result<T, StoreError> {
        self.bounded(self.bound, work).await
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.bounded(HEALTH_BOUND.min(self.bound), async |client| {
            client.simple_query("SELECT 1").await?;
            Ok(())
        })
        .await
    }

    /// Deletes up to `batch` events older than `age` (a prefix of the log); returns how many.
    pub async fn prune_older_than(&self, age: Duration, batch: i32) -> Result<i64, StoreError> {
        self.with(async |client| {
            let stmt = client.prepare_cached("CALL pgsse.retain(now() - make_interval(secs => $1), NULL, $2)").await?;
            Ok(client.query_one(&stmt, &[&age.as_secs_f64(), &batch]).await?.try_get(0)?)
        })
        .await
    }

    /// Deletes up to `batch` events beyond the newest `keep` of each channel; returns how many.
    pub async fn prune_beyond(&self, keep: i64, batch: i32) -> Result<i64, StoreError> {
        self.with(async |client| {
            let stmt = client.prepare_cached("CALL pgsse.retain(NULL, $1, $2)").await?;
            Ok(client.query_one(&stmt, &[&keep, &batch]).await?.try_get(0)?)
        })
        .await
    }

    /// For `/readyz`, within [`HEALTH_BOUND`]: the installed schema version (`None` before `pgsse migrate`)
    /// and, once it is this build's, the events committed but not yet in the log with the oldest one's age
    /// in seconds.
    pub async fn readiness(&self) -> Result<Readiness, StoreError> {
        self.bounded(HEALTH_BOUND.min(self.bound), async |client| {
            let installed: bool =
                client.query_one("SELECT to_regclass('pgsse.meta') IS NOT NULL", &[]).await?.try_get(0)?;
            let version: Option<i32> = match installed {
                true => Some(client.query_one("SELECT schema_version FROM pgsse.meta", &[]).await?.try_get(0)?),
                false => None,
            };
            let backlog = match version {
                Some(v) if v >= crate::pg::migrate::SCHEMA_VERSION => {
                    let stmt = client
                        .prepare_cached("SELECT pending, coalesce(oldest_seconds, 0) FROM pgsse.backlog()")
                        .await?;
                    let row = client.query_one(&stmt, &[]).await?;
                    Some((row.try_get(0)?, row.try_get(1)?))
                }
                _ => None,
            };
            Ok(Readiness { version, backlog })
        })
        .await
    }

    /// The highest id ever handed out, committed or not: a resume id above it was never issued.
    pub async fn issued_head(&self) -> Result<i64, StoreError> {
        self.with(async |client| {
            let stmt = client.prepare_cached(&format!("SELECT {ISSUED_HEAD}")).await?;
            Ok(client.query_one(&stmt, &[]).await?.try_get(0)?)
        })
        .await
    }

    /// The newest committed event id, read after this call began. Unlike the sequence (`issued_head`), it
    /// never names an id whose transaction is still committing: ids become visible in order, under the
    /// ordering lock. Concurrent callers share reads: one that began after a caller arrived saw every
    /// commit from before it, so a reconnect storm of fresh streams costs a query per wave rather than one
    /// per stream (and the streams wait for one another's query instead of piling up, each holding its
    /// connection's buffers).
    pub async fn committed_head(&self) -> Result<i64, StoreError> {
        let mut turn = self.head.turn(tokio::time::Instant::now()).await;
        if let Some(outcome) = turn.shared() {
            return outcome.clone().map_err(StoreError::Shared);
        }
        let began = tokio::time::Instant::now();
        // Boxed: of a storm's openings only the one that reads pays for a query's future (about 2 KB); the
        // others wait for its outcome with a few bytes each.
        let outcome = Box::pin(self.read_committed_head()).await;
        turn.set(began, outcome.as_ref().copied().map_err(ToString::to_string));
        outcome
    }

    async fn read_committed_head(&self) -> Result<i64, StoreError> {
        self.with_reads(async |client| {
            // Bounded by the sequence as the listener's reads are: a row with an id it never issued is not pgsse's.
            let stmt = client
                .prepare_cached(&format!("SELECT coalesce(max(id), 0) FROM pgsse.events WHERE id <= {ISSUED_HEAD}"))
                .await?;
            Ok(client.query_one(&stmt, &[]).await?.try_get(0)?)
        })
        .await
    }

    /// Up to `limit` events of `channel` with `id < before`, newest first, with what filters need
    /// ([`filter_columns`]). The page stops early once its events' data would pass [`PAGE_BYTES`].
    pub async fn history(
        &self,
        channel: &str,
        before: i64,
        limit: i64,
    ) -> Result<Vec<Result<EventRow, Undecodable>>, StoreError> {
        self.with_reads(async |client| {
            // The running sum cuts the page inside PostgreSQL: an over-budget page never reaches the gateway.
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT id, channel, event, payload, old, moves, nested_new, wide FROM ( \
                       SELECT h.*, sum({}) OVER (ORDER BY h.id DESC ROWS UNBOUNDED PRECEDING) AS upto \
                       FROM (SELECT e.id, e.channel, e.event, {} AS payload, {} FROM pgsse.history($1, $2, $3) e) h \
                     ) t WHERE upto - {} < $4 ORDER BY id DESC",
                    row_bytes("h"),
                    payload_bytes("e.payload"),
                    filter_columns("e"),
                    row_bytes("")
                ))
                .await?;
            let rows = client.query(&stmt, &[&channel, &before, &limit, &PAGE_BYTES]).await?;
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                events.push(match EventRow::from_row(row)? {
                    Ok(event) => Ok(event.with_filter_columns(row, 4)?),
                    Err(poison) => Err(poison),
                });
            }
            Ok(events)
        })
        .await
    }

    /// Up to `limit` events of `channels` with `after < id <= through` (no upper bound when `through` is
    /// `None`), stopping early once their data would pass [`PAGE_BYTES`].
    pub async fn replay(
        &self,
        after: i64,
        through: Option<i64>,
        channels: &[String],
        limit: i64,
    ) -> Result<ReplayBatch, StoreError> {
        self.replay_on(after, through, channels, limit, false).await
    }

    /// [`Store::replay`] on the primary where `primary` says, even with a standby: the short read between
    /// a replay and the live position the listener reached, which another standby behind the same address
    /// (a reader endpoint) might not hold yet.
    pub async fn replay_on(
        &self,
        after: i64,
        through: Option<i64>,
        channels: &[String],
        limit: i64,
        primary: bool,
    ) -> Result<ReplayBatch, StoreError> {
        let work = async |client: &Client| {
            // No event at all comes back as one row of NULLs beside the watermark. A ROWS frame keeps the running
            // sum one addition a row.
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT id, channel, event, payload, mark, txid, old, moves, nested_new, wide FROM ( \
                       SELECT r.*, sum({}) OVER (ORDER BY r.id ROWS UNBOUNDED PRECEDING) AS upto \
                       FROM ( \
                         SELECT e.id, e.channel, e.event, {} AS payload, w.mark, e.txid::text::int8 AS txid, {} FROM pgsse.watermark($3) AS w(mark) \
                         LEFT JOIN LATERAL pgsse.replay($1, $2, $3, $4) AS e ON true \
                       ) r \
                     ) t WHERE upto IS NULL OR upto - {} < $5 ORDER BY id",
                    row_bytes("r"),
                    payload_bytes("e.payload"),
                    filter_columns("e"),
                    row_bytes("")
                ))
                .await?;
            let rows = client.query(&stmt, &[&after, &through, &channels, &limit, &PAGE_BYTES]).await?;
            let watermark: i64 = match rows.first() {
                Some(row) => row.try_get(4)?,
                None => 0,
            };
            let mut events = Vec::with_capacity(rows.len());
            let (mut last, mut read, mut bytes) = (None, 0, 0);
            for row in &rows {
                // No event at all comes back as one row of NULLs beside the watermark.
                if let Some(id) = row.try_get::<_, Option<i64>>(0)? {
                    (last, read) = (Some(id), read + 1);
                    match EventRow::from_row(row)? {
                        Ok(event) => {
                            let event = EventRow { txid: row.try_get(5)?, ..event }.with_filter_columns(row, 6)?;
                            bytes += event.weight() as i64;
                            events.push(event);
                        }
                        Err(_) => bytes += PAGE_BYTES,
                    }
                }
            }
            // The budget cut the batch only if what came reached it (reaching it exactly with nothing after
            // costs one more, empty, read).
            let more = read == limit || bytes >= PAGE_BYTES;
            Ok(ReplayBatch { watermark, rows: events, last, more })
        };
        if primary {
            self.with(work).await
        } else {
            self.with_reads(work).await
        }
    }
}
