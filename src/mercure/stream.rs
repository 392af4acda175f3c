//! A Mercure subscription's stream: where its last event id puts it in the log, the replay from there
//! (each update held to the subscriber's selectors and grants), and the exact seam to live updates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::api::stream::{Feed, SseBody};
use crate::fanout::update::{parse_hub_id, Interest, TableTopic, Update};
use crate::mercure::{Mercure, MercureError};
use crate::pg::error::StoreError;
use crate::pg::store::{REPLAY_BATCH, SAME_ID};

/// How long a subscription opened while the gateway is still starting waits for the log's position.
const START_WAIT: Duration = Duration::from_secs(5);

/// The most updates of one publisher id a resume looks through.
const SAME_ID_READ: i64 = 1024;

/// The response's `Mercure-Last-Event-ID` when the stream holds every update retention kept.
const EARLIEST: &str = "earliest";

pub(super) async fn open(
    m: &Mercure,
    interest: Arc<Interest>,
    last: Option<String>,
    channels: Vec<(String, Option<TableTopic>)>,
    expires: Option<SystemTime>,
) -> Result<(SseBody, Option<String>), MercureError> {
    // An end too far away for the clock to represent is as good as none.
    let expires =
        expires.and_then(|at| Instant::now().checked_add(at.duration_since(SystemTime::now()).unwrap_or_default()));
    m.hub.wait_started(START_WAIT).await?;
    // `channels`, those that carry updates, are read for a resume, which reads the log.
    let names: Vec<String> = channels.iter().map(|(name, _)| name.clone()).collect();
    let Some(last) = last else {
        let (sub, _) = m.hub.subscribe_updates(interest)?;
        // As a native stream does: an update committed before this request but not yet broadcast is
        // before its start.
        let head = m.store.committed_head().await?;
        let body = SseBody::live(m.cadence.clone(), sub, head);
        return Ok((body.ending_at(expires).counted(m.sent.clone()), None));
    };
    let found = match (last.as_str(), parse_hub_id(&last)) {
        (EARLIEST, _) => None,
        (_, Some(n)) => Some(n),
        (id, None) => Box::pin(with_publisher_id(m, &interest, id)).await?,
    };
    let (after, shown) = match found {
        Some(n) if n <= Box::pin(m.store.issued_head()).await? && n >= Box::pin(m.store.watermark(&names)).await? => {
            (n, last)
        }
        // `earliest`, or an id never issued, gone with retention, or of an update this subscriber would not
        // get: the specification's answer is `earliest`, and the stream then holds every update retention
        // kept (whatever followed the id is among them).
        _ => (0, EARLIEST.to_string()),
    };
    let (tx, rx) = mpsc::channel(1);
    let replay = Replay {
        store: m.store.clone(),
        hub: m.hub.clone(),
        interest,
        topics: channels.into_iter().collect(),
        names,
        tx,
    };
    let shutdown = m.shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            result = replay.run(after) => if let Err(err) = result {
                tracing::debug!(cause = %err, "Mercure replay ended; the client resumes");
            },
            _ = shutdown.cancelled() => {}
        }
    });
    let body = SseBody::replaying(m.cadence.clone(), rx).ending_at(expires).counted(m.sent.clone());
    Ok((body, Some(shown)))
}

/// The newest update carrying publisher id `id` that this subscriber would get. Only such an update
/// counts: another publisher may reuse the id elsewhere, and a private update's id is nobody else's to
/// confirm. Up to [`SAME_ID_READ`] updates are looked through, so that a publisher reusing the id many
/// times on other topics cannot easily hide the subscriber's own from it.
async fn with_publisher_id(m: &Mercure, interest: &Interest, id: &str) -> Result<Option<i64>, MercureError> {
    let mut before = i64::MAX;
    for _ in 0..SAME_ID_READ / SAME_ID {
        let page = m.store.updates_with_id(id, before).await?;
        let Some(&(oldest, ..)) = page.last() else { return Ok(None) };
        let wanted = page
            .into_iter()
            .find_map(|(n, topics, private)| interest.wants(&Update::routed(n, topics, private)).then_some(n));
        if wanted.is_some() {
            return Ok(wanted);
        }
        before = oldest;
    }
    Ok(None)
}

struct Replay {
    store: Arc<crate::pg::store::Store>,
    hub: Arc<crate::fanout::hub::Hub>,
    interest: Arc<Interest>,
    /// Each channel whose events are updates, with its table's topic.
    topics: HashMap<String, Option<TableTopic>>,
    names: Vec<String>,
    tx: mpsc::Sender<Feed>,
}

#[derive(Debug, thiserror::Error)]
enum ReplayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hub(#[from] crate::fanout::hub::HubError),
    #[error("client went away")]
    Gone,
}

impl Replay {
    /// As a native stream's replay: most of the history before registering, the rest up to where live
    /// updates begin after it.
    async fn run(self, after: i64) -> Result<(), ReplayError> {
        let head = self.store.issued_head().await?;
        let mut cursor = after;
        while self.batch(&mut cursor, head, false).await? {}
        let (sub, live_from) = self.hub.subscribe_updates(self.interest.clone())?;
        while cursor < live_from && self.batch(&mut cursor, live_from, true).await? {}
        self.tx.send(Feed::Live { sub, skip_through: cursor }).await.map_err(|_| ReplayError::Gone)
    }

    /// Sends the updates this subscriber wants of one batch after `cursor`; whether more may follow.
    /// `seam`: the read up to the live position, on the primary (see `Store::replay_on`).
    async fn batch(&self, cursor: &mut i64, through: i64, seam: bool) -> Result<bool, ReplayError> {
        // A subscriber whose selectors match little is sent little: notice it left before reading on.
        if self.tx.is_closed() {
            return Err(ReplayError::Gone);
        }
        let batch = self.store.replay_on(*cursor, Some(through), &self.names, REPLAY_BATCH, seam).await?;
        // Retention took updates this stream had not seen: Mercure has no way to say so, the stream goes on.
        *cursor = (*cursor).max(batch.watermark);
        let mut chunk = BytesMut::new();
        for row in batch.rows.iter().filter(|row| row.id > *cursor) {
            let topic = self.topics.get(&row.channel).and_then(Option::as_ref);
            if topic.is_some() && row.wide {
                continue;
            }
            let moved = row.moved.as_ref();
            let Ok(Some(update)) = Update::from_log(row.id, &row.channel, &row.event, &row.payload, moved, topic)
            else {
                continue;
            };
            if let Some(frame) = self.interest.choose(&update) {
                chunk.extend_from_slice(&frame.bytes);
            }
        }
        if let Some(last) = batch.last {
            *cursor = (*cursor).max(last);
        }
        if !chunk.is_empty() {
            self.tx.send(Feed::Chunk(chunk.freeze())).await.map_err(|_| ReplayError::Gone)?;
        }
        Ok(batch.more)
    }
}
