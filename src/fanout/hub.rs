//! Fan-out from the listener to subscribers. Each event arrives encoded once; subscribers get clones of
//! the same `Bytes` through bounded queues, and one whose queue is full is cut off (it resumes from the log).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use bytes::Bytes;
use tokio::sync::watch;

pub use crate::fanout::moves::{Shown, UpdateFrames, UpdateRows};
use crate::fanout::queue::Frame;
use crate::fanout::queue::{PushError, Queue};
use crate::fanout::update::{Interest, Update};
use crate::filter::{ChannelFilters, Filter};
use crate::refusal::{Refusal, Refuse};
use crate::sse;

/// An event as the listener hands it to the hub. Only `frame` is queued to subscribers: cloning `data`
/// too (a slice of the same buffer) would double the contended reference counting per delivery.
pub struct Event {
    pub channel: String,
    pub frame: Frame,
    /// The event's JSON data, for row filters.
    pub data: Bytes,
    /// For an update: its old row, and what a filtered stream gets when the row entered or left its filter.
    pub moves: Option<Box<UpdateFrames>>,
    /// A `clear`, or its table's truncate event: it empties the channel, so every stream gets it whatever
    /// its filter.
    pub wide: bool,
    /// The frames streams of several channels get (the channel in the event name): of the event as it is,
    /// and of the insert and delete an update becomes. Made once some stream needs them.
    named: [OnceLock<Frame>; 3],
    /// The event as a Mercure update, where it is one.
    update: Option<Box<Update>>,
}

impl Event {
    pub fn new(channel: String, frame: Frame, data: Bytes, moves: Option<Box<UpdateFrames>>, wide: bool) -> Self {
        Self { channel, frame, data, moves, wide, named: Default::default(), update: None }
    }

    pub fn with_update(mut self, update: Option<Box<Update>>) -> Self {
        self.update = update;
        self
    }

    /// What a stream gets of this event: `chosen` (`shown` of it), named by channel on a stream of several.
    fn as_sent<'a>(&'a self, chosen: &'a Frame, shown: Shown, named: bool) -> &'a Frame {
        if !named {
            return chosen;
        }
        let cell = match shown {
            Shown::Insert => &self.named[1],
            Shown::Delete => &self.named[2],
            Shown::Update | Shown::Hidden => &self.named[0],
        };
        cell.get_or_init(|| Frame { id: chosen.id, bytes: sse::with_channel(&chosen.bytes, &self.channel) })
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HubError {
    #[error("the gateway has not yet read the event log's position")]
    NotStarted,
    #[error("the gateway is shutting down")]
    Closed,
}

struct Subscriber {
    queue: Arc<Queue>,
    filter: Option<Arc<Filter>>,
    /// A stream of several channels: its events name their channel.
    named: bool,
}

type Senders = HashMap<u64, Subscriber>;

struct Inner {
    /// Highest id broadcast (or the log head found at start); `None` until the listener first connects.
    last_id: Option<i64>,
    channels: HashMap<Arc<str>, Senders>,
    /// Mercure subscribers: each gets the updates its interest selects, of every channel.
    updates: HashMap<u64, (Arc<Queue>, Arc<Interest>)>,
    closed: bool,
}

pub struct Hub {
    inner: Mutex<Inner>,
    queue_capacity: usize,
    next_id: AtomicU64,
    cut_slow: AtomicU64,
    /// Becomes true once the listener has read the log head; streams opened before that wait for it.
    started: watch::Sender<bool>,
}

/// A live registration. Dropping it unregisters; its queue ends once the hub closes it (cut off for being
/// slow, or shutdown) and the frames already queued are drained.
pub struct Subscription {
    pub queue: Arc<Queue>,
    id: u64,
    channels: Vec<Arc<str>>,
    hub: Arc<Hub>,
}

/// What [`Subscription::relocate`] moved away from, to be freed by another thread than the one that
/// relocates: freed there, glibc's per-thread cache would hand the same blocks to its next relocations.
pub struct Moved {
    _queue: Arc<Queue>,
    _channels: Vec<Arc<str>>,
}

impl Subscription {
    /// Moves what the subscription keeps for as long as it lasts (its queue, its list of channels) to
    /// allocations the calling thread makes now. A parked stream's thread keeps them together, away from
    /// the buffers freed around those its opening made, which would otherwise each keep a page in use.
    /// Does nothing once frames are queued or the hub is closed.
    pub fn relocate(&mut self) -> Option<Moved> {
        let mut inner = self.hub.lock();
        if inner.closed || !self.queue.is_idle() {
            return None;
        }
        // Frames are pushed under the hub's lock, so none can reach the old queue once this holds it.
        let queue = Arc::new(self.queue.emptied());
        for channel in &self.channels {
            if let Some(subscriber) = inner.channels.get_mut(channel).and_then(|s| s.get_mut(&self.id)) {
                subscriber.queue = queue.clone();
            }
        }
        if let Some((updates, _)) = inner.updates.get_mut(&self.id) {
            *updates = queue.clone();
        }
        drop(inner);
        let channels = self.channels.clone();
        Some(Moved {
            _queue: std::mem::replace(&mut self.queue, queue),
            _channels: std::mem::replace(&mut self.channels, channels),
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut inner = self.hub.lock();
        inner.updates.remove(&self.id);
        for channel in &self.channels {
            if let Some(senders) = inner.channels.get_mut(channel) {
                senders.remove(&self.id);
                if senders.is_empty() {
                    inner.channels.remove(channel);
                }
            }
        }
    }
}

impl Hub {
    pub fn new(queue_capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                last_id: None,
                channels: HashMap::new(),
                updates: HashMap::new(),
                closed: false,
            }),
            queue_capacity: queue_capacity.max(1),
            next_id: AtomicU64::new(1),
            cut_slow: AtomicU64::new(0),
            started: watch::Sender::new(false),
        }
    }

    /// The most events one broadcast should carry: half a queue. Catching up after an outage in bigger
    /// bites would cut every stream that had anything queued; between bites, streams drain.
    pub fn fill_limit(&self) -> usize {
        (self.queue_capacity / 2).max(1)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Nothing panics while holding the lock, but a poisoned map is still consistent: keep serving.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the starting position when the listener first reads the log head; later calls are ignored
    /// because the position then only moves by broadcasting.
    pub fn start_at(&self, head: i64) {
        let mut inner = self.lock();
        if inner.last_id.is_none() {
            inner.last_id = Some(head);
            self.started.send_replace(true);
        }
    }

    /// Waits up to `limit` for the listener's first connection, so a stream opened right after start-up
    /// is served rather than refused.
    pub async fn wait_started(&self, limit: std::time::Duration) -> Result<(), HubError> {
        let mut rx = self.started.subscribe();
        let started = tokio::time::timeout(limit, rx.wait_for(|started| *started)).await.is_ok_and(|r| r.is_ok());
        if started {
            Ok(())
        } else {
            Err(HubError::NotStarted)
        }
    }

    pub fn last_id(&self) -> Option<i64> {
        self.lock().last_id
    }

    /// A new subscriber's queue and id, and the hub locked with its last id, for it to register under.
    fn register(&self) -> Result<(Arc<Queue>, u64, MutexGuard<'_, Inner>, i64), HubError> {
        let queue = Arc::new(Queue::new(self.queue_capacity));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let inner = self.lock();
        if inner.closed {
            return Err(HubError::Closed);
        }
        let last_id = inner.last_id.ok_or(HubError::NotStarted)?;
        Ok((queue, id, inner, last_id))
    }

    /// Registers for live frames. Returns the last id broadcast before registration: every later frame
    /// reaches this subscriber, every earlier one must come from the log. Taken under the same lock as
    /// `broadcast`, which is what makes the replay/live seam exact.
    pub fn subscribe(
        self: &Arc<Self>,
        channels: &[String],
        filters: &ChannelFilters,
    ) -> Result<(Subscription, i64), HubError> {
        let (queue, id, mut inner, last_id) = self.register()?;
        let mut names = Vec::with_capacity(channels.len());
        for channel in channels {
            let key = match inner.channels.get_key_value(channel.as_str()) {
                Some((key, _)) => key.clone(),
                None => Arc::from(channel.as_str()),
            };
            let filter = filters.get(channel).cloned();
            let subscriber = Subscriber { queue: queue.clone(), filter, named: channels.len() > 1 };
            inner.channels.entry(key.clone()).or_default().insert(id, subscriber);
            names.push(key);
        }
        drop(inner);
        Ok((Subscription { queue, id, channels: names, hub: self.clone() }, last_id))
    }

    /// Registers a Mercure subscriber for live updates; returns, as [`Hub::subscribe`] does, the last id
    /// broadcast before it.
    pub fn subscribe_updates(self: &Arc<Self>, interest: Arc<Interest>) -> Result<(Subscription, i64), HubError> {
        let (queue, id, mut inner, last_id) = self.register()?;
        inner.updates.insert(id, (queue.clone(), interest));
        drop(inner);
        Ok((Subscription { queue, id, channels: Vec::new(), hub: self.clone() }, last_id))
    }

    /// Delivers frames (in id order) to every subscriber of their channel without ever waiting. Returns
    /// how many streams it woke: each wakeup costs a poll and a write, whatever the frames in it.
    pub fn broadcast(&self, events: Vec<Event>) -> u64 {
        let mut woken = 0;
        let mut inner = self.lock();
        let mut cut: Vec<u64> = Vec::new();
        if !inner.updates.is_empty() && events.iter().any(|e| e.update.is_some()) {
            woken += deliver_updates(&mut inner, &events, &self.cut_slow);
        }
        // Consecutive events of one channel go to each of its subscribers in one push (one lock, one
        // wakeup); runs stay in id order, so a stream on several channels still sees ids increase.
        for run in events.chunk_by(|a, b| a.channel == b.channel) {
            if let Some(last) = run.last() {
                inner.last_id = Some(inner.last_id.map_or(last.frame.id, |id| id.max(last.frame.id)));
            }
            let Some(senders) = inner.channels.get(run[0].channel.as_str()) else { continue };
            // Parsed at most once per event, and only when some subscriber filters.
            let mut parsed: Vec<Option<Option<serde_json::Value>>> = Vec::new();
            for (id, sub) in senders {
                let pushed = match &sub.filter {
                    None => sub.queue.push_all(run.iter().map(|e| e.as_sent(&e.frame, Shown::Update, sub.named))),
                    Some(filter) => {
                        parsed.resize(run.len(), None);
                        let matching = run.iter().zip(parsed.iter_mut()).filter_map(|(event, value)| {
                            let value = value.get_or_insert_with(|| serde_json::from_slice(&event.data).ok());
                            let new = value.as_ref().is_some_and(|v| filter.matches(v));
                            let (shown, chosen) = match &event.moves {
                                Some(moves) => moves.choose(&event.frame, new, filter)?,
                                None => (Shown::Update, (new || event.wide).then_some(&event.frame)?),
                            };
                            Some(event.as_sent(chosen, shown, sub.named))
                        });
                        sub.queue.push_all(matching)
                    }
                };
                match pushed {
                    Ok(woke) => woken += u64::from(woke),
                    Err(PushError::Full) => {
                        sub.queue.close();
                        cut.push(*id);
                    }
                    Err(PushError::Closed) => {}
                }
            }
            if !cut.is_empty() {
                cut.sort_unstable();
                cut.dedup();
                self.cut_slow.fetch_add(cut.len() as u64, Ordering::Relaxed);
                tracing::info!(subscribers = cut.len(), "cut off slow subscribers; they resume from the log");
                for senders in inner.channels.values_mut() {
                    senders.retain(|id, _| cut.binary_search(id).is_err());
                }
                inner.channels.retain(|_, senders| !senders.is_empty());
                cut.clear();
            }
        }
        woken
    }

    /// UpdateFrames the position back to `head` (the log lost events already broadcast) and ends every stream,
    /// so each client resumes and is told where its history now continues.
    pub fn rewind(&self, head: i64) {
        let mut inner = self.lock();
        inner.last_id = Some(head);
        close_all(&mut inner);
    }

    /// Ends every live subscription and refuses new ones.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        close_all(&mut inner);
    }

    /// Open subscriptions per channel (a stream on several channels counts in each).
    pub fn subscriber_counts(&self) -> Vec<(String, usize)> {
        let inner = self.lock();
        inner.channels.iter().map(|(name, senders)| (name.to_string(), senders.len())).collect()
    }

    /// Open Mercure subscriptions, live.
    pub fn update_subscribers(&self) -> usize {
        self.lock().updates.len()
    }

    pub fn cut_slow_total(&self) -> u64 {
        self.cut_slow.load(Ordering::Relaxed)
    }
}

/// Hands Mercure subscribers the updates among `events` that each wants, in one push each; one whose
/// queue is full is cut off like any stream.
fn deliver_updates(inner: &mut Inner, events: &[Event], cut_slow: &AtomicU64) -> u64 {
    let mut woken = 0;
    let mut cut = Vec::new();
    for (id, (queue, interest)) in &inner.updates {
        let wanted = events.iter().filter_map(|e| interest.choose(e.update.as_deref()?));
        match queue.push_all(wanted) {
            Ok(woke) => woken += u64::from(woke),
            Err(PushError::Full) => {
                queue.close();
                cut.push(*id);
            }
            Err(PushError::Closed) => {}
        }
    }
    if !cut.is_empty() {
        cut_slow.fetch_add(cut.len() as u64, Ordering::Relaxed);
        tracing::info!(subscribers = cut.len(), "cut off slow Mercure subscribers; they resume from the log");
        for id in cut {
            inner.updates.remove(&id);
        }
    }
    woken
}

/// Closes and forgets every subscriber; each stream ends after the frames already queued.
fn close_all(inner: &mut Inner) {
    for (_, (queue, _)) in inner.updates.drain() {
        queue.close();
    }
    for (_, senders) in inner.channels.drain() {
        for sub in senders.values() {
            sub.queue.close();
        }
    }
}

impl Refuse for HubError {
    fn refusal(&self) -> Refusal {
        match self {
            HubError::NotStarted | HubError::Closed => Refusal::Unavailable,
        }
    }

    fn told(&self) -> String {
        match self {
            HubError::NotStarted => "gateway is not yet connected to the database, try again".to_string(),
            HubError::Closed => self.to_string(),
        }
    }
}

#[cfg(test)]
mod tests;
