//! Reads from a hot standby (`--replica-database-url`): replay, history, snapshots and the listener's reads
//! of the log go there, and a read that must see a primary's commit first waits until the standby has
//! replayed the primary's WAL past it (its LSN), bounded by `--replica-max-lag`.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_postgres::{Client, Statement};

use crate::pg::logrow::ISSUED_HEAD;

const DEFAULT_MAX_LAG: &str = "10s";

/// Where the log is read, when not from the primary.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Hot standby")]
pub struct ReplicaArgs {
    /// A streaming hot standby of --database-url: replay, history, snapshots and the listener's reads of the
    /// log go there; the LISTEN connection, sequencing and writes stay on the primary.
    #[arg(long, env = "PGSSE_REPLICA_DATABASE_URL", hide_env_values = true)]
    pub replica_database_url: Option<String>,

    /// How long the standby may take to replay what the primary committed before /readyz answers 503
    /// naming the lag (the gateway keeps serving what the standby has).
    #[arg(long, env = "PGSSE_REPLICA_MAX_LAG", default_value = DEFAULT_MAX_LAG, value_parser = crate::parse::duration)]
    pub replica_max_lag: Duration,
}

impl ReplicaArgs {
    /// The standby's URL, where one is given (an empty one is as good as none).
    pub fn url(&self) -> Option<&str> {
        self.replica_database_url.as_deref().filter(|url| !url.trim().is_empty())
    }
}

/// The primary's WAL position now: whatever committed before this is replayed on a standby past it.
pub const PRIMARY_LSN: &str = "SELECT pg_current_wal_insert_lsn()::text";
/// Whether the standby holds an id announced on the primary (`$1`), or a later one: it then holds every
/// batch before it. One step down the primary key from the highest id the sequence issued, whatever the
/// statistics say (a row above it was not written by pgsse); an id deleted since (a cleared channel) is
/// never held, and the caller stops waiting soon.
pub fn holds() -> String {
    format!("SELECT coalesce(max(id), 0) >= $1 FROM pgsse.events WHERE id <= {ISSUED_HEAD}")
}

/// Whether the standby is one, has replayed past `$1`, and how many bytes it is short of it.
pub const REPLAYED: &str =
    "SELECT pg_is_in_recovery(), coalesce(pg_last_wal_replay_lsn() >= $1::text::pg_lsn, false), \
                        greatest(coalesce(pg_wal_lsn_diff($1::text::pg_lsn, pg_last_wal_replay_lsn()), 0), 0)::float8";

/// The first look again at a standby that has not caught up, and the longest pause between looks.
const POLL_MIN: Duration = Duration::from_micros(500);
const POLL_MAX: Duration = Duration::from_millis(20);

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
    #[error("--replica-database-url is not a standby (promoted?): its log no longer follows the primary's")]
    NotStandby,
    #[error(
        "--replica-database-url leads to a primary that --database-url does not (a standby promoted beside a \
         running primary): point it at a standby of --database-url"
    )]
    SplitBrain,
    #[error("the standby is unavailable: {0}")]
    Unavailable(String),
}

/// How the standby keeps up, as the barrier saw it, for the metrics and `/readyz`.
#[derive(Default)]
pub struct ReplicaStatus {
    /// Bytes of WAL the standby was short of at the last barrier's first look.
    pub lag_bytes: AtomicU64,
    /// Seconds (f64 bits) the last barrier waited.
    pub lag_seconds: AtomicU64,
    pub waits: AtomicU64,
    /// Microseconds waited at barriers, in all.
    pub waited_us: AtomicU64,
    /// The last barrier gave up at `--replica-max-lag`.
    pub behind: AtomicBool,
}

impl ReplicaStatus {
    pub fn lag_seconds(&self) -> f64 {
        f64::from_bits(self.lag_seconds.load(Ordering::Relaxed))
    }
}

/// What one look at the standby saw: whether it has replayed the position, and how many bytes it is short.
pub struct Look {
    pub caught_up: bool,
    pub short_bytes: f64,
}

/// Looks once at the standby behind `client` (`stmt` is [`REPLAYED`] prepared on it).
pub async fn look(client: &Client, stmt: &Statement, lsn: &str) -> Result<Look, ReplicaError> {
    let row = client.query_one(stmt, &[&lsn]).await?;
    if !row.try_get::<_, bool>(0)? {
        return Err(ReplicaError::NotStandby);
    }
    Ok(Look { caught_up: row.try_get(1)?, short_bytes: row.try_get(2)? })
}

/// Looks with `look` until it says caught up, pausing 0.5 ms doubling to 20 ms between looks (a standby
/// has no notifications), for at most `max`. Returns whether it got there and the bytes the first look
/// said it was short.
pub async fn poll<F: Future<Output = Result<Look, E>>, E>(
    mut look: impl FnMut() -> F,
    max: Duration,
) -> Result<(bool, f64), E> {
    let started = Instant::now();
    let mut pause = POLL_MIN;
    let mut short = None;
    loop {
        let seen = look().await?;
        let first = *short.get_or_insert(seen.short_bytes);
        if seen.caught_up {
            return Ok((true, first));
        }
        if started.elapsed() + pause > max {
            return Ok((false, first));
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(POLL_MAX);
    }
}

/// Looks at the standby with `look` until it has replayed the primary's WAL through the position asked,
/// at most `max`. Returns whether it got there; past `max` the caller reads what the standby has, and the
/// status says it is behind.
pub async fn wait<F: Future<Output = Result<Look, ReplicaError>>>(
    look: impl FnMut() -> F,
    max: Duration,
    status: &ReplicaStatus,
) -> Result<bool, ReplicaError> {
    let started = Instant::now();
    let (caught_up, short) = match poll(look, max).await {
        Ok(seen) => seen,
        Err(err) => {
            status.behind.store(false, Ordering::Relaxed);
            return Err(err);
        }
    };
    status.lag_bytes.store(short as u64, Ordering::Relaxed);
    let waited = started.elapsed();
    status.lag_seconds.store(waited.as_secs_f64().to_bits(), Ordering::Relaxed);
    status.waits.fetch_add(1, Ordering::Relaxed);
    status.waited_us.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    status.behind.store(!caught_up, Ordering::Relaxed);
    Ok(caught_up)
}
