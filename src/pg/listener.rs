//! The one dedicated LISTEN connection: LISTEN, catch up from the log, then on each burst of notifications
//! run the sequencing step (see [`crate::pg::sequencer`]) and read the log once, handing the encoded frames to
//! the hub. Reconnects with jittered backoff.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::{interval, sleep, sleep_until, timeout, Instant, MissedTickBehavior};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls, Row, Statement};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::fanout::hub::{Event, Hub, UpdateFrames};
use crate::pg::logrow::{filter_columns, topic_column, EventRow, ISSUED_HEAD};
use crate::pg::pacing::Pacing;
use crate::pg::replica::{ReplicaError, ReplicaStatus, PRIMARY_LSN};
use crate::pg::sequencer::{self, Sequencing, Work};
use crate::pg::sightings::Sightings;
use crate::pg::status::ListenerStatus;
use backoff::{jitter, BACKOFF_MAX, BACKOFF_MIN};
use conn::{ListenConnection, News};
use standby::{Barrier, Standby};

mod backoff;
mod conn;
mod standby;

/// The channel that pgsse's commits and batches notify: named by a token that only the roles that may read
/// `pgsse.meta` know, so that other logins can neither watch commits nor wake the gateways.
const NOTIFY_CHANNEL: &str = "SELECT 'pgsse_' || bell_token FROM pgsse.meta";
/// Rows per read of the log, at most; see [`Hub::fill_limit`] for the bound that usually applies.
const FETCH_BATCH: i64 = 2000;
/// Who holds the sequencing step's lock: the sessions an operator may have to end.
const STEP_HOLDERS: &str = "SELECT string_agg(format('pid %s (role %s, %s)', l.pid, coalesce(a.usename::text, '?'), \
     coalesce(a.state, '?')), ', ') FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
     WHERE l.relation = 'pgsse.commit_order'::pg_catalog.regclass AND l.granted";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const DEFAULT_PROBE_INTERVAL: &str = "10s";

/// The one LISTEN connection.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "LISTEN connection")]
pub struct ListenerArgs {
    /// Separate URL for the LISTEN connection, e.g. straight to PostgreSQL when the pool goes through
    /// PgBouncer in transaction mode (where LISTEN does not work). Default: --database-url.
    #[arg(long, env = "PGSSE_LISTEN_DATABASE_URL", hide_env_values = true)]
    pub listen_database_url: Option<String>,

    /// How often the LISTEN connection is probed; a probe or query unanswered for this long forces a reconnect.
    #[arg(long, env = "PGSSE_PROBE_INTERVAL", default_value = DEFAULT_PROBE_INTERVAL, value_parser = crate::parse::duration)]
    pub probe_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("database error: {}", crate::pg::error::describe(.0))]
    Db(#[from] tokio_postgres::Error),
    #[error("cannot connect to {target}: {}", crate::pg::error::describe(.source))]
    Connect {
        target: String,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("connection closed")]
    Closed,
    #[error("liveness probe got no answer within {0:?}")]
    ProbeTimeout(Duration),
    #[error("query got no answer within {0:?}")]
    QueryTimeout(Duration),
    #[error("invalid database url: {0}")]
    Config(#[source] tokio_postgres::Error),
    #[error(transparent)]
    Replica(#[from] ReplicaError),
}

pub struct Listener {
    pg: tokio_postgres::Config,
    hub: Arc<Hub>,
    status: Arc<ListenerStatus>,
    probe_interval: Duration,
    /// Highest id handed to the hub; `None` until the first connection reads the log head.
    last_id: Option<i64>,
    /// Where the log is read, when not on the LISTEN connection itself.
    standby: Option<Standby>,
    /// Events are made Mercure updates too (`--mercure`); otherwise no read or event pays for it.
    updates: bool,
    /// The gateway's own writes waiting for their events.
    sightings: Option<Arc<Sightings>>,
}

impl Listener {
    pub fn new(
        database_url: &str,
        hub: Arc<Hub>,
        status: Arc<ListenerStatus>,
        probe_interval: Duration,
    ) -> Result<Self, ListenerError> {
        // Two probe intervals without an acknowledgement drop the connection in the kernel, even between queries.
        let pg = super::session_config(database_url, "pgsse-listener", CONNECT_TIMEOUT, probe_interval * 2)
            .map_err(ListenerError::Config)?;
        Ok(Self { pg, hub, status, probe_interval, last_id: None, standby: None, updates: false, sightings: None })
    }

    /// Makes each event a Mercure update where it is one, for the hub's Mercure subscribers.
    pub fn with_updates(mut self) -> Self {
        self.updates = true;
        self
    }

    /// Reports each event it reads to the gateway's writes that wait for theirs.
    pub fn reporting_to(mut self, sightings: Arc<Sightings>) -> Self {
        self.sightings = Some(sightings);
        self
    }

    /// Reads the log from the hot standby at `url`, each read after the standby has replayed the step
    /// before it (waiting at most `max_lag`; past it, reading what the standby has).
    pub fn reading_from(
        mut self,
        url: &str,
        max_lag: Duration,
        status: Arc<ReplicaStatus>,
    ) -> Result<Self, ListenerError> {
        let pg = super::session_config(url, "pgsse-listener-standby", CONNECT_TIMEOUT, self.probe_interval * 2)
            .map_err(ListenerError::Config)?;
        self.standby = Some(Standby::new(pg, max_lag, status));
        Ok(self)
    }

    /// Runs until `shutdown` is cancelled.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = BACKOFF_MIN;
        let mut last_cause = String::new();
        loop {
            let result = self.session(&shutdown, &mut backoff).await;
            if shutdown.is_cancelled() {
                break;
            }
            let err = result.err().unwrap_or(ListenerError::Closed);
            // An outage is counted once, when a connection that was serving is lost; each try after it
            // that fails too is an attempt.
            if self.status.up.load(Ordering::Acquire) {
                self.status.reconnects.fetch_add(1, Ordering::Relaxed);
            } else {
                self.status.failed_attempts.fetch_add(1, Ordering::Relaxed);
            }
            self.status.set_down(err.to_string());
            self.set_live(false);
            let delay = jitter(backoff);
            // A cause that persists (a database not migrated yet, say) is said once, not every few seconds;
            // a session that got going in between resets the backoff, and its failure is news again.
            let cause = err.to_string();
            let credentials =
                matches!(&err, ListenerError::Connect { source, .. } if crate::pg::preflight::is_credentials(source));
            if credentials {
                // A password rotated while running: nothing gets better until someone fixes the URL.
                error!(cause, retry_in = ?delay, "the database refuses the listener's login");
            } else if backoff == BACKOFF_MIN || cause != last_cause {
                warn!(cause, retry_in = ?delay, "listener connection lost");
            } else {
                debug!(cause, retry_in = ?delay, "listener connection still failing");
            }
            last_cause = cause;
            backoff = (backoff * 2).min(BACKOFF_MAX);
            tokio::select! {
                _ = sleep(delay) => {}
                _ = shutdown.cancelled() => break,
            }
        }
        self.status.up.store(false, Ordering::Release);
        self.set_live(false);
    }

    fn set_live(&self, live: bool) {
        if let Some(sightings) = &self.sightings {
            sightings.set_live(live);
        }
    }

    async fn session(&mut self, shutdown: &CancellationToken, backoff: &mut Duration) -> Result<(), ListenerError> {
        let (client, connection) = tokio::select! {
            conn = self.pg.connect(NoTls) => conn.map_err(|source| ListenerError::Connect { target: crate::pg::error::target_of(&self.pg), source })?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let mut conn =
            ListenConnection { connection, news: News::default(), own_pid: None, bound: self.probe_interval };

        // Prepared first: before migrate, its error is the one that names the missing schema.
        let sequence = conn.bounded(client.prepare(sequencer::SEQUENCE_SQL)).await?;
        // LISTEN before reading the log, so nothing committed in between goes unnoticed.
        let channel =
            conn.bounded(client.query_one(NOTIFY_CHANNEL, &[])).await?.try_get::<_, String>(0)?.replace('"', "\"\"");
        conn.bounded(client.batch_execute(&format!("LISTEN \"{channel}\""))).await?;
        // This session's own batches are announced to it too; it reads the log after each anyway.
        conn.own_pid = Some(conn.bounded(client.query_one("SELECT pg_backend_pid()", &[])).await?.try_get(0)?);
        // A table's Mercure topic is read beside each row only for a gateway serving Mercure.
        let topic = if self.updates { format!(", {}", topic_column("pgsse.events")) } else { String::new() };
        // The writing transaction last, for the gateway's own writes waiting for their events.
        let fetch_sql = format!(
            "SELECT {}, extract(epoch FROM clock_timestamp() - created_at)::float8, {}{topic}, txid::text::int8 \
             FROM pgsse.events WHERE id > $1 AND id <= {ISSUED_HEAD} ORDER BY id LIMIT $2",
            EventRow::columns(),
            filter_columns("pgsse.events"),
        );
        // On a standby, the log is read there, each read after the standby replayed the step before it.
        let standby = match &self.standby {
            Some(standby) => Some(conn.bounded(standby.connect()).await?),
            None => None,
        };
        if let Some(session) = standby.as_ref().filter(|s| s.promoted) {
            // Promoted: read as the primary only when it is the primary (a failover that moved the primary's
            // address to it); a second primary beside the first would never hold the events sequenced there.
            let started = "SELECT pg_postmaster_start_time()::text";
            let (here, there) = (
                conn.bounded(client.query_one(started, &[])).await?.try_get::<_, String>(0)?,
                conn.bounded(session.client.query_one(started, &[])).await?.try_get::<_, String>(0)?,
            );
            if here != there {
                return Err(ReplicaError::SplitBrain.into());
            }
        }
        let reads = standby.as_ref().map_or(&client, |s| &s.client);
        let fetch = conn.bounded(reads.prepare(&fetch_sql)).await?;
        // The highest committed id (ids at or below the retention watermark count as committed) and the
        // highest issued one.
        let head_sql = format!(
            "SELECT greatest(coalesce((SELECT max(id) FROM pgsse.events WHERE id <= {ISSUED_HEAD}), 0), \
             m.pruned_through), {ISSUED_HEAD} FROM pgsse.meta m"
        );
        let head = conn.bounded(reads.query_one(&head_sql, &[])).await?;
        let (committed, mut issued): (i64, i64) = (head.try_get(0)?, head.try_get(1)?);
        if standby.is_some() {
            // Whether the log went backwards is the primary's to say: a standby further behind than the last
            // one read is only late.
            issued = conn.bounded(client.query_one(&format!("SELECT {ISSUED_HEAD}"), &[])).await?.try_get(0)?;
        }
        let probe_sql = format!(
            "SELECT pg_notification_queue_usage(), count(e.id), max(e.id), b.pending, coalesce(b.oldest_seconds, 0) \
             FROM pgsse.backlog() b LEFT JOIN pgsse.events e ON e.id > {ISSUED_HEAD} GROUP BY b.pending, b.oldest_seconds"
        );
        let probe_query = conn.bounded(client.prepare(&probe_sql)).await?;
        match self.last_id {
            None => {
                self.hub.start_at(committed);
                self.last_id = Some(committed);
            }
            // Ids already broadcast are being handed out again: the database was restored from a backup or
            // lost commits in a crash (synchronous_commit = off). Following the old position would silently
            // skip every new event up to it, so start over from the log as it is now.
            Some(last) if issued < last => {
                error!(broadcast_through = last, log_head = committed, "event log went backwards; restarting streams");
                self.hub.rewind(committed);
                self.last_id = Some(committed);
            }
            Some(_) => {}
        }
        let mut sequencing = Sequencing::new(Instant::now());
        let primary_lsn = match &standby {
            Some(_) => Some(conn.bounded(client.prepare(PRIMARY_LSN)).await?),
            None => None,
        };
        let barrier = match (&self.standby, &standby, &primary_lsn) {
            (Some(config), Some(session), Some(lsn)) if !session.promoted => Some(Barrier {
                lsn,
                replayed: &session.replayed,
                holds: &session.holds,
                max_lag: config.max_lag,
                status: config.status.clone(),
            }),
            _ => None,
        };
        let mut log = Statements { client: &client, reads, fetch: &fetch, sequence: &sequence, barrier };
        self.advance(&mut log, &mut conn, &mut sequencing, (Work::Step, 0), true).await?;
        self.status.set_up();
        self.set_live(true);
        *backoff = BACKOFF_MIN;
        info!(last_id = self.last_id, "listener connected and caught up");

        let mut probe = interval(self.probe_interval);
        probe.set_missed_tick_behavior(MissedTickBehavior::Delay);
        probe.reset();
        let mut pacing = Pacing::new(Instant::now());
        let mut listening = true;
        loop {
            tokio::select! {
                woke = async {
                    if listening {
                        // Without a notification, a step is due anyway at some point (see Sequencing).
                        conn.notified(sequencing.due()).await?;
                    }
                    let next = pacing.next_read();
                    if next > Instant::now() {
                        conn.run(async { sleep_until(next).await; Ok::<_, ListenerError>(()) }).await?;
                    }
                    Ok::<_, ListenerError>(())
                } => {
                    woke?;
                    let started = Instant::now();
                    let news = std::mem::take(&mut conn.news);
                    let Some(work) = sequencing.wake(started, news.rung, news.announced, !listening) else {
                        continue;
                    };
                    let (events, woken) =
                        self.advance(&mut log, &mut conn, &mut sequencing, (work, news.head), listening).await?;
                    pacing.record(started, events, woken);
                    // Under a steady stream of commits every read finds work anyway: stop being notified of
                    // each (the server's listening backend and this connection handle every one) and read on
                    // the clock until the rate falls; then LISTEN again, before catching up.
                    if listening == pacing.busy() {
                        listening = !listening;
                        let sql = if listening { "LISTEN" } else { "UNLISTEN" };
                        conn.bounded(client.batch_execute(&format!("{sql} \"{channel}\""))).await?;
                        self.status.polling.store(!listening, Ordering::Relaxed);
                        if let Some(work) = sequencing.wake(Instant::now(), false, false, true).filter(|_| listening) {
                            self.advance(&mut log, &mut conn, &mut sequencing, (work, 0), listening).await?;
                        }
                    }
                }
                _ = probe.tick() => {
                    // The probe's answer is worth keeping: a filling NOTIFY queue means a listener somewhere
                    // is stuck, and at 100% every notifying commit in the database fails.
                    let probed = timeout(self.probe_interval, conn.run(client.query_one(&probe_query, &[])))
                        .await
                        .map_err(|_| ListenerError::ProbeTimeout(self.probe_interval))??;
                    self.status.queue_usage.store(probed.try_get::<_, f64>(0)?.to_bits(), Ordering::Relaxed);
                    self.status.saw_beyond_sequence(probed.try_get(1)?, probed.try_get(2)?);
                    let pending: i64 = probed.try_get(3)?;
                    self.status.pending.store(pending.max(0) as u64, Ordering::Relaxed);
                    self.status.oldest_pending.store(probed.try_get::<_, f64>(4)?.to_bits(), Ordering::Relaxed);
                    // A notification lost to a bug elsewhere would otherwise delay events until the next one.
                    if let Some(work) = sequencing.wake(Instant::now(), false, false, true) {
                        self.advance(&mut log, &mut conn, &mut sequencing, (work, 0), listening).await?;
                    }
                }
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    /// Runs the sequencing step until nothing staged is left (unless another session is running it), reading
    /// what each batch made visible, or (`Work::Read`) reads what other sessions' batches made visible.
    /// Returns how many events it read and how many streams that woke.
    async fn advance(
        &mut self,
        log: &mut Statements<'_>,
        conn: &mut ListenConnection,
        sequencing: &mut Sequencing,
        (work, head): (Work, i64),
        listening: bool,
    ) -> Result<(u64, u64), ListenerError> {
        let (mut events, mut woken) = (0, 0);
        loop {
            let (last, limit) = (self.last_id.unwrap_or(0), self.fetch_limit());
            let fetch_params: [&(dyn ToSql + Sync); 2] = [&last, &limit];
            if work == Work::Read {
                if let Some(barrier) = &log.barrier {
                    barrier.announced(log.client, log.reads, conn, head).await?;
                }
                let rows = conn.bounded(log.reads.query(log.fetch, &fetch_params)).await?;
                let (read, wake) = self.catch_up(log.reads, log.fetch, conn, rows, limit).await?;
                sequencing.read(Instant::now(), read);
                self.status.stepping.store(sequencing.stepping(), Ordering::Relaxed);
                return Ok((read, wake));
            }
            // The step and the first read go out together (tokio::join! polls in order, and a query is sent
            // on its first poll): PostgreSQL runs them in turn on this session, so the read sees what the
            // step moved, a round trip sooner.
            let arms = sequencing.arms(listening);
            let step_params: [&(dyn ToSql + Sync); 1] = [&arms];
            let (stepped, rows) = match &log.barrier {
                // A promoted standby: read it after the step, as a primary is read.
                None if !std::ptr::eq(log.client, log.reads) => {
                    let step = conn.bounded(log.client.query_one(log.sequence, &step_params)).await?;
                    (step, conn.bounded(log.reads.query(log.fetch, &fetch_params)).await?)
                }
                None => {
                    conn.bounded(async {
                        let (step, rows) = tokio::join!(
                            log.client.query_one(log.sequence, &step_params),
                            log.client.query(log.fetch, &fetch_params)
                        );
                        Ok::<_, tokio_postgres::Error>((step?, rows?))
                    })
                    .await?
                }
                Some(barrier) => {
                    // The position is read right after the step, on its session: past it lies the step's commit.
                    let (step, lsn) = conn
                        .bounded(async {
                            let (step, lsn) = tokio::join!(
                                log.client.query_one(log.sequence, &step_params),
                                log.client.query_one(barrier.lsn, &[])
                            );
                            Ok::<_, tokio_postgres::Error>((step?, lsn?))
                        })
                        .await?;
                    barrier.wait(log.reads, conn, &lsn.try_get::<_, String>(0)?).await?;
                    (step, conn.bounded(log.reads.query(log.fetch, &fetch_params)).await?)
                }
            };
            let (moved, in_flight): (i64, bool) = (stepped.try_get(0)?, stepped.try_get(1)?);
            let (read, wake) = self.catch_up(log.reads, log.fetch, conn, rows, limit).await?;
            (events, woken) = (events + read, woken + wake);
            sequencing.record(Instant::now(), in_flight, moved, read);
            self.status.steps.fetch_add(1, Ordering::Relaxed);
            self.status.stepping.store(sequencing.stepping(), Ordering::Relaxed);
            if sequencing.stuck(Instant::now()) {
                let holders: Option<String> =
                    conn.bounded(log.client.query_one(STEP_HOLDERS, &[])).await?.try_get(0)?;
                error!(
                    holders = holders.as_deref().unwrap_or("none now"),
                    "the sequencing step has been held by another session for over {:?}: events are staged, not \
                     lost, until it lets go; end it (SELECT pg_terminate_backend(pid)) and rotate its login",
                    sequencer::STUCK
                );
            }
            if moved < sequencer::BATCH {
                return Ok((events, woken));
            }
        }
    }

    /// Rows of the log read at once: a batch, or fewer when the streams' queues have less room.
    fn fetch_limit(&self) -> i64 {
        FETCH_BATCH.min(self.hub.fill_limit() as i64)
    }

    /// Broadcasts `rows` (the log after `last_id`, read with `limit`), then reads the rest in batches; never
    /// waits on a subscriber. Returns how many events it read and how many streams that woke.
    async fn catch_up(
        &mut self,
        client: &Client,
        fetch: &Statement,
        conn: &mut ListenConnection,
        mut rows: Vec<Row>,
        mut limit: i64,
    ) -> Result<(u64, u64), ListenerError> {
        let Some(mut last) = self.last_id else { return Ok((0, 0)) };
        let (mut total, mut woken) = (0, 0);
        loop {
            let n = rows.len() as i64;
            let mut events = Vec::with_capacity(rows.len());
            for row in &rows {
                self.status.lag.observe(row.try_get::<_, f64>(4)?.max(0.0));
                let event = match EventRow::from_row(row)? {
                    Ok(event) if self.updates => event.with_filter_columns(row, 5)?.with_topic(row, 9)?,
                    Ok(event) => event.with_filter_columns(row, 5)?,
                    Err(poison) => {
                        error!(id = poison.id, "skipping an event whose payload is not UTF-8 (a SQL_ASCII database?)");
                        self.status.undecodable.fetch_add(1, Ordering::Relaxed);
                        last = poison.id;
                        continue;
                    }
                };
                last = event.id;
                if let Some(sightings) = self.sightings.as_ref().filter(|s| s.watched()) {
                    if let Some(txid) = row.try_get::<_, Option<i64>>(if self.updates { 10 } else { 9 })? {
                        sightings.saw(txid, &event.channel, event.id, &event.payload);
                    }
                }
                if let Some((frame, data)) = event.encode() {
                    let update = if self.updates { event.update() } else { None };
                    let moves = event.moved.map(|moved| Box::new(UpdateFrames::new(event.id, data.clone(), moved)));
                    events.push(Event::new(event.channel, frame, data, moves, event.wide).with_update(update));
                }
            }
            self.status.events.fetch_add(n as u64, Ordering::Relaxed);
            total += n as u64;
            woken += self.hub.broadcast(events);
            self.last_id = Some(last);
            if n < limit {
                return Ok((total, woken));
            }
            limit = self.fetch_limit();
            rows = conn.bounded(client.query(fetch, &[&last, &limit])).await?;
        }
    }
}

/// The listener session's prepared statements.
struct Statements<'a> {
    client: &'a Client,
    /// Where the log is read: the standby's client, or `client`.
    reads: &'a Client,
    fetch: &'a Statement,
    sequence: &'a Statement,
    barrier: Option<Barrier<'a>>,
}
