//! Opening one SSE stream: validate its channels, then either go live at once or replay from the log and
//! switch to live frames at an exact seam (no gap, no duplicate).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::api::snapshot::{Begun, Shape, Shared, Snapshot, Taken};
use crate::api::stream::{Cadence, Feed, Sent, SseBody};
use crate::channel::ChannelError;
use crate::fanout::hub::{Hub, UpdateFrames};
use crate::filter::{ChannelFilters, Filter};
use crate::limits::{SnapshotGate, SnapshotSlot};
use crate::pg::published::Published;
use crate::pg::store::{Store, REPLAY_BATCH};
use crate::sse;

const DEFAULT_HEARTBEAT: &str = "15s";
const DEFAULT_MAX_CHANNELS: usize = 32;
const DEFAULT_QUEUE_CAPACITY: usize = 1024;
const DEFAULT_RETRY: &str = "3s";
const DEFAULT_SNAPSHOT_MAX_ROWS: usize = 10_000;

/// What every event stream is told and held to.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Streams")]
pub struct StreamArgs {
    /// Comment sent on an idle stream this often, so proxies and clients see it is alive.
    #[arg(long, env = "PGSSE_HEARTBEAT", default_value = DEFAULT_HEARTBEAT, value_parser = crate::parse::duration)]
    pub heartbeat: Duration,

    /// Reconnect delay the browser is told to use (`retry:` field).
    #[arg(long, env = "PGSSE_RETRY", default_value = DEFAULT_RETRY, value_parser = crate::parse::duration)]
    pub retry: Duration,

    /// Frames queued per stream before a slow client is cut off (it resumes from the log).
    #[arg(long, env = "PGSSE_QUEUE_CAPACITY", default_value_t = DEFAULT_QUEUE_CAPACITY,
          value_parser = crate::parse::positive)]
    pub queue_capacity: usize,

    /// Maximum channels in one stream.
    #[arg(long, env = "PGSSE_MAX_CHANNELS", default_value_t = DEFAULT_MAX_CHANNELS,
          value_parser = crate::parse::positive)]
    pub max_channels: usize,

    /// Most rows a stream's snapshot (`?snapshot=true`) may send; a larger one is refused, asking for a `limit`.
    #[arg(long, env = "PGSSE_SNAPSHOT_MAX_ROWS", default_value_t = DEFAULT_SNAPSHOT_MAX_ROWS,
          value_parser = crate::parse::positive)]
    pub snapshot_max_rows: usize,
}

/// Streams opened by how they start, and events sent from the log rather than live.
#[derive(Default)]
pub struct Counters {
    pub replays: AtomicU64,
    pub events_replayed: AtomicU64,
    pub snapshots: AtomicU64,
    pub snapshot_queries: AtomicU64,
}

/// What opening a stream needs: the log, the hub, and the streams' settings; nothing of HTTP.
pub struct Events {
    store: Arc<Store>,
    hub: Arc<Hub>,
    published: Arc<Published>,
    snapshots: Shared,
    args: StreamArgs,
    /// How long a stream after a snapshot waits for the snapshot's transactions (`--db-timeout`).
    db_timeout: Duration,
    counters: Counters,
    sent: Arc<Sent>,
    cadence: Arc<Cadence>,
    /// Cancelled on shutdown: ends every replay.
    shutdown: CancellationToken,
}

/// How long a stream opened while the gateway is still starting waits for its first database connection.
const START_WAIT: Duration = Duration::from_secs(5);
/// How often a resuming stream asks for the log again while the database is away.
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// How often a stream after a snapshot looks for the snapshot's transactions in the log.
const AWAIT_POLL: Duration = Duration::from_millis(5);

impl Events {
    pub fn new(
        store: Arc<Store>,
        hub: Arc<Hub>,
        published: Arc<Published>,
        args: StreamArgs,
        db_timeout: Duration,
        shutdown: CancellationToken,
    ) -> Arc<Self> {
        Arc::new(Self {
            store,
            hub,
            published,
            snapshots: Shared::default(),
            cadence: Cadence::new(sse::prelude(args.retry), args.heartbeat),
            args,
            db_timeout,
            counters: Counters::default(),
            sent: Arc::default(),
            shutdown,
        })
    }

    pub fn args(&self) -> &StreamArgs {
        &self.args
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    pub fn sent(&self) -> &Sent {
        &self.sent
    }

    /// What streams open with and how often they beat, for other front ends' streams (Mercure's).
    pub fn cadence(&self) -> Arc<Cadence> {
        self.cadence.clone()
    }

    /// The counter stream bodies add to, for other front ends' streams (Mercure's).
    pub fn sent_counter(&self) -> Arc<Sent> {
        self.sent.clone()
    }

    /// Checks names and removes duplicates, without asking the database: this is all that may happen before
    /// the client is authenticated (which channels exist is not for strangers to learn, nor to cost a query).
    pub fn check_names(&self, mut channels: Vec<String>) -> Result<Vec<String>, StreamError> {
        if let Some(bad) = channels.iter().find(|c| !crate::channel::valid(c)) {
            return Err(ChannelError::invalid(bad).into());
        }
        channels.sort();
        channels.dedup();
        if channels.is_empty() {
            return Err(StreamError::NoChannel);
        }
        if channels.len() > self.args.max_channels {
            return Err(StreamError::TooManyChannels(channels.len(), self.args.max_channels));
        }
        Ok(channels)
    }

    /// Refuses channels the database does not know.
    pub async fn check_known(&self, channels: &[String]) -> Result<(), StreamError> {
        if let Some(unknown) = self.store.unknown_channels(channels).await?.into_iter().next() {
            return Err(ChannelError::Unknown(unknown).into());
        }
        Ok(())
    }

    /// Refuses a client's filter that names no published column of a table channel.
    pub async fn check_filter(&self, channels: &[String], filter: &Filter) -> Result<(), StreamError> {
        for channel in channels {
            self.published.check(&self.store, channel, filter).await?;
        }
        Ok(())
    }

    /// Opens a stream; each channel's filter applies to replayed and live events alike. A stream that does
    /// not resume may start with a snapshot of the channels' tables. The stream ends by itself at `expires`
    /// (the end of the client's token), and the client reconnects with a fresh one.
    pub async fn open(
        self: &Arc<Self>,
        channels: Vec<String>,
        resume: Option<i64>,
        snapshot: Option<Shape>,
        filters: ChannelFilters,
        expires: Option<SystemTime>,
        gate: &SnapshotGate,
    ) -> Result<SseBody, StreamError> {
        // An end too far away for the clock to represent is as good as none.
        let expires =
            expires.and_then(|at| Instant::now().checked_add(at.duration_since(SystemTime::now()).unwrap_or_default()));
        // Until the listener has read the head once there is no seam to make: such a new gateway is not ready.
        self.hub.wait_started(START_WAIT).await?;
        let (tx, rx) = mpsc::channel(1);
        let start = match (resume, snapshot) {
            (Some(after), _) => {
                self.counters.replays.fetch_add(1, Ordering::Relaxed);
                Start::Resume(after)
            }
            (None, Some(shape)) => {
                self.counters.snapshots.fetch_add(1, Ordering::Relaxed);
                // Boxed: inline, a snapshot's future would make every stream's opening as large.
                let begin = self.snapshots.begin(
                    &self.store,
                    &channels,
                    &filters,
                    &shape,
                    &self.counters.snapshot_queries,
                    gate,
                );
                match Box::pin(begin).await? {
                    Begun::Shared(taken) => Start::Shared(taken),
                    Begun::Streaming(snapshot, reading) => Start::Snapshot(snapshot, reading),
                }
            }
            (None, None) => {
                let (sub, _) = self.hub.subscribe(&channels, &filters)?;
                // A new stream starts at the database's present, not at the listener's: an event that committed
                // before this request but was not yet broadcast must not reach it. Subscribing first means every
                // event after that head still arrives live. On a standby, the present is the standby's: an
                // event the primary committed just before may still reach the stream.
                let skip_through = match self.store.committed_head().await {
                    Ok(head) => head,
                    Err(err) => {
                        debug!(cause = %err, "no committed head; starting at the listener's");
                        0
                    }
                };
                return Ok(SseBody::live(self.cadence.clone(), sub, skip_through)
                    .ending_at(expires)
                    .counted(self.sent.clone()));
            }
        };
        // One batch waits here while the body writes the one before: a client that stops reading pins two
        // batches (each at most `PAGE_BYTES` beyond one event), never the backlog.
        let mut replay = Replay {
            events: self.clone(),
            channels,
            filters,
            tx,
            limit: REPLAY_BATCH,
            skip: HashSet::new(),
            awaiting: HashSet::new(),
            seam: false,
        };
        let token = self.shutdown.clone();
        tokio::spawn(async move {
            let run = async {
                let after = match start {
                    Start::Resume(after) => after,
                    Start::Snapshot(snapshot, reading) => {
                        let (head, pending) = (snapshot.head, snapshot.pending.clone());
                        let sent = snapshot.send(&replay.tx).await.map_err(StreamError::from)?;
                        drop(reading);
                        if !sent {
                            return Err(ReplayError::Gone);
                        }
                        replay.skip_from(pending);
                        head
                    }
                    Start::Shared(taken) => {
                        for chunk in &taken.chunks {
                            replay.send(Feed::Chunk(chunk.clone())).await?;
                        }
                        replay.skip_from(taken.pending.clone());
                        taken.head
                    }
                };
                replay.run(after).await
            };
            tokio::select! {
                result = run => match result {
                    Ok(()) => {}
                    Err(ReplayError::Gone) => debug!("client left during replay"),
                    Err(err) => warn!(cause = %err, "replay failed; ending the stream so the client resumes"),
                },
                _ = token.cancelled() => {}
            }
        });
        Ok(SseBody::replaying(self.cadence.clone(), rx).ending_at(expires).counted(self.sent.clone()))
    }
}

/// Where a stream that does not start live begins.
enum Start {
    Resume(i64),
    /// With its place among the snapshots being read, given back once the rows are sent.
    Snapshot(Box<Snapshot>, SnapshotSlot),
    Shared(Arc<Taken>),
}

/// The `reset` event: the requested id is no longer (or never was) in the log; the stream goes on
/// after `from`, and carries it as its id so the browser resumes from there next time.
fn reset_frame(from: i64, reason: &str) -> Bytes {
    let data = serde_json::json!({ "from": from, "reason": reason }).to_string();
    sse::encode(from, "reset", &data).unwrap_or_default()
}

struct Replay {
    events: Arc<Events>,
    channels: Vec<String>,
    filters: ChannelFilters,
    tx: mpsc::Sender<Feed>,
    /// Rows the next query asks for: twice what the byte budget let through last time, so large events
    /// are not rendered by PostgreSQL only to be cut.
    limit: i64,
    /// Transactions whose events are not sent: a snapshot before the replay already holds their changes.
    skip: HashSet<i64>,
    /// Those of `skip` not read yet: the stream goes live only once they have passed, or their events
    /// could arrive live.
    awaiting: HashSet<i64>,
    /// Reading the seam up to the live position: on the primary, which holds all of it.
    seam: bool,
}

#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error(transparent)]
    Failed(#[from] StreamError),
    #[error("client went away")]
    Gone,
}

impl Replay {
    async fn run(mut self, after: i64) -> Result<(), ReplayError> {
        let head = self.issued_head().await?;
        let mut cursor = after;
        if after > head {
            self.send(Feed::Chunk(reset_frame(head, "unknown_id"))).await?;
            cursor = head;
        }
        // Most of the history is read before registering, so a long replay does not fill the live queue.
        // It stops at the issued head: a row beyond what the sequence issued is not pgsse's.
        while self.batch(&mut cursor, Some(head)).await? {}
        self.await_skipped(&mut cursor).await?;
        let (sub, live_from) = self.events.hub.subscribe(&self.channels, &self.filters).map_err(StreamError::from)?;
        if cursor < live_from {
            self.seam = true;
            while self.batch(&mut cursor, Some(live_from)).await? {}
        }
        debug!(cursor, live_from, "replay done, going live");
        self.send(Feed::Live { sub, skip_through: cursor }).await
    }

    fn skip_from(&mut self, pending: Vec<i64>) {
        self.skip.extend(pending.iter().copied());
        self.awaiting.extend(pending);
    }

    /// Reads on until every transaction a snapshot skips has been read past. Such a transaction committed
    /// before the snapshot, so the gateway sequences it within moments; past `--db-timeout` the stream
    /// goes live anyway (its events could then repeat rows of the snapshot) and says why in the log.
    async fn await_skipped(&mut self, cursor: &mut i64) -> Result<(), ReplayError> {
        let deadline = Instant::now() + self.events.db_timeout;
        while !self.awaiting.is_empty() {
            if Instant::now() >= deadline {
                warn!(transactions = self.awaiting.len(), "a snapshot's transactions did not reach the log in time");
                return Ok(());
            }
            tokio::select! {
                _ = tokio::time::sleep(AWAIT_POLL) => {}
                _ = self.tx.closed() => return Err(ReplayError::Gone),
            }
            let head = self.issued_head().await?;
            while self.batch(cursor, Some(head)).await? {}
        }
        Ok(())
    }

    /// Waits out a database outage with the stream already open: a browser's EventSource gives up for
    /// good on an error status, but keeps an open stream and resumes it if it breaks.
    async fn issued_head(&self) -> Result<i64, ReplayError> {
        let mut pause = RETRY_MIN;
        loop {
            match self.events.store.issued_head().await {
                Ok(head) => return Ok(head),
                Err(err) => debug!(cause = %err, "log head unavailable; the stream waits"),
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => pause = (pause * 2).min(RETRY_MAX),
                _ = self.tx.closed() => return Err(ReplayError::Gone),
            }
        }
    }

    /// Sends one batch after `cursor` as a single chunk; returns whether more events may follow it.
    async fn batch(&mut self, cursor: &mut i64, through: Option<i64>) -> Result<bool, ReplayError> {
        let store = &self.events.store;
        let batch = store
            .replay_on(*cursor, through, &self.channels, self.limit, self.seam)
            .await
            .map_err(StreamError::from)?;
        let cut = (batch.rows.len() as i64) < self.limit && batch.more;
        self.limit = if cut { batch.rows.len() as i64 * 2 } else { self.limit * 2 }.clamp(16, REPLAY_BATCH);
        let mut chunk = BytesMut::new();
        if batch.watermark > *cursor {
            // Retention took events this stream had not seen yet: say so, and go on after them.
            *cursor = batch.watermark;
            chunk.extend_from_slice(&reset_frame(batch.watermark, "pruned"));
        }
        let after = *cursor;
        for txid in batch.rows.iter().filter_map(|row| row.txid) {
            self.awaiting.remove(&txid);
        }
        let mut sent = 0;
        for row in batch.rows.iter().filter(|row| row.id > after && row.txid.is_none_or(|t| !self.skip.contains(&t))) {
            let Some((frame, data)) = row.encode() else { continue };
            let chosen = match self.filters.get(&row.channel) {
                None => Some(frame),
                Some(filter) => {
                    let new = filter.matches_text(row.payload.as_bytes());
                    match &row.moved {
                        Some(moved) => UpdateFrames::new(row.id, data, moved.clone())
                            .choose(&frame, new, filter)
                            .map(|(_, f)| f.clone()),
                        None => (new || row.wide).then_some(frame),
                    }
                }
            };
            if let Some(frame) = chosen {
                if self.channels.len() > 1 {
                    sse::put_with_channel(&mut chunk, &frame.bytes, &row.channel);
                } else {
                    chunk.extend_from_slice(&frame.bytes);
                }
                sent += 1;
            }
        }
        if let Some(last) = batch.last {
            *cursor = (*cursor).max(last);
        }
        if !chunk.is_empty() {
            self.send(Feed::Chunk(chunk.freeze())).await?;
            self.events.counters.events_replayed.fetch_add(sent, Ordering::Relaxed);
        }
        Ok(batch.more)
    }

    async fn send(&self, feed: Feed) -> Result<(), ReplayError> {
        self.tx.send(feed).await.map_err(|_| ReplayError::Gone)
    }
}

mod error;
#[cfg(test)]
mod tests;

pub use error::StreamError;
