//! The streaming response body of one SSE stream: it merges replayed and live frames, coalesces queued
//! frames, sends heartbeats, and ends with its source, its credentials or shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame as BodyFrame, SizeHint};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};

use crate::fanout::hub::{Moved, Subscription};
use crate::limits::StreamSlot;

/// Upper bound for one coalesced write; one frame larger than this is still sent whole.
const COALESCE_BYTES: usize = 64 * 1024;

pub const HEARTBEAT: &[u8] = b": keep-alive\n\n";

/// What every stream of a front end opens with and how often it beats: one for all its streams, so
/// that a stream holds a pointer rather than both (a smaller body makes hyper's task for an HTTP/2
/// stream one size class smaller).
pub struct Cadence {
    prelude: Bytes,
    heartbeat: Duration,
}

impl Cadence {
    pub fn new(prelude: Bytes, heartbeat: Duration) -> Arc<Self> {
        Arc::new(Self { prelude, heartbeat })
    }
}

/// A stream whose heartbeat or end is this close is not parked: it would only be woken again at once.
const PARK_MARGIN: Duration = Duration::from_millis(20);

/// What stream bodies have written, and how many of them are parked, for the metrics.
#[derive(Default)]
pub struct Sent {
    pub frames: AtomicU64,
    pub bytes: AtomicU64,
    pub parked: AtomicU64,
}

/// What the replay task hands the body: encoded history, then the live subscription.
pub enum Feed {
    Chunk(Bytes),
    /// Switch to live frames, dropping any with an id at or below `skip_through` (already replayed).
    Live {
        sub: Subscription,
        skip_through: i64,
    },
}

enum Source {
    Replay(mpsc::Receiver<Feed>),
    Live(Subscription),
    Done,
}

/// Ends when its source does: at shutdown the hub closes every live queue and the replay task is
/// cancelled, so the body needs no shutdown signal of its own (polling the gateway-wide token on every
/// delivery took its lock from every stream at once).
pub struct SseBody {
    cadence: Arc<Cadence>,
    /// The prelude is still to be sent.
    opening: bool,
    source: Source,
    skip_through: i64,
    /// Fires once `heartbeat` has passed since `last_sent`. Re-armed from `last_sent` only when it fires,
    /// rather than reset by every event, which would update the runtime's timer wheel per delivery. Set
    /// when first polled, and dropped while the stream is parked, as is `expiry`.
    timer: Option<Pin<Box<Sleep>>>,
    last_sent: Instant,
    /// When the client's credentials run out; the stream ends then.
    expires: Option<Instant>,
    expiry: Option<Pin<Box<Sleep>>>,
    /// What went out last was the prelude or a heartbeat.
    quiet: bool,
    /// The stream's place under the limits, given back when the body is dropped.
    slot: Option<StreamSlot>,
    sent: Option<Arc<Sent>>,
}

impl SseBody {
    pub fn replaying(cadence: Arc<Cadence>, feed: mpsc::Receiver<Feed>) -> Self {
        Self::new(cadence, Source::Replay(feed), 0)
    }

    /// A live stream that drops frames with an id at or below `skip_through` (from before it began).
    pub fn live(cadence: Arc<Cadence>, sub: Subscription, skip_through: i64) -> Self {
        Self::new(cadence, Source::Live(sub), skip_through)
    }

    fn new(cadence: Arc<Cadence>, source: Source, skip_through: i64) -> Self {
        Self {
            cadence,
            opening: true,
            source,
            skip_through,
            timer: None,
            last_sent: Instant::now(),
            expires: None,
            expiry: None,
            quiet: true,
            slot: None,
            sent: None,
        }
    }

    /// Counts what this stream sends in the gateway's metrics.
    pub fn counted(mut self, sent: Arc<Sent>) -> Self {
        self.sent = Some(sent);
        self
    }

    fn sent(&self, bytes: Bytes, frames: u64) -> Poll<Option<Result<BodyFrame<Bytes>, Infallible>>> {
        if let Some(sent) = &self.sent {
            // A heartbeat sends no frame: no write to a counter every stream shares.
            if frames > 0 {
                sent.frames.fetch_add(frames, Ordering::Relaxed);
            }
            sent.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        Poll::Ready(Some(Ok(BodyFrame::data(bytes))))
    }

    pub fn holding(mut self, slot: StreamSlot) -> Self {
        self.slot = Some(slot);
        self
    }

    /// Ends the stream at `deadline`, if there is one.
    pub fn ending_at(mut self, deadline: Option<Instant>) -> Self {
        self.expires = deadline;
        self
    }

    /// Whether a heartbeat is due, re-arming the timer if events went out since it was set.
    fn heartbeat_due(&mut self, cx: &mut Context<'_>) -> bool {
        let due = self.last_sent + self.cadence.heartbeat;
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        while timer.as_mut().poll(cx).is_ready() {
            let due = self.last_sent + self.cadence.heartbeat;
            if due <= timer.deadline() {
                self.last_sent = Instant::now();
                timer.as_mut().reset(self.last_sent + self.cadence.heartbeat);
                return true;
            }
            timer.as_mut().reset(due);
        }
        false
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(at) = self.expires else { return false };
        let expiry = self.expiry.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        expiry.as_mut().poll(cx).is_ready()
    }

    /// Whether the stream may be parked once it has nothing to send: it is live, and what it sent last was
    /// its prelude or a heartbeat (a stream that events keep busy stays with its task until a heartbeat's
    /// time passes without one).
    pub fn parkable(&self) -> bool {
        self.quiet
            && !self.opening
            && matches!(self.source, Source::Live(_))
            && self.wakes_at() > Instant::now() + PARK_MARGIN
    }

    /// Moves the subscription's lasting state to allocations the calling thread makes
    /// ([`Subscription::relocate`]).
    pub fn relocate(&mut self) -> Option<Moved> {
        match &mut self.source {
            Source::Live(sub) => sub.relocate(),
            _ => None,
        }
    }

    /// Parks the stream: `waker` is woken by its next frames or its end, and its timers are dropped (the
    /// caller wakes it at [`SseBody::wakes_at`]). `false`, and nothing changed, if it has something to send.
    pub fn park(&mut self, waker: &Waker) -> bool {
        let Source::Live(sub) = &self.source else { return false };
        if !sub.queue.park(waker) {
            return false;
        }
        self.timer = None;
        self.expiry = None;
        true
    }

    /// Whether what a parked stream is due is a heartbeat, which it may send where it is kept; if not
    /// (the end of its credentials, or nothing yet), it needs its task.
    pub fn beat_due(&self) -> bool {
        let now = Instant::now();
        self.expires.is_none_or(|at| at > now) && self.last_sent + self.cadence.heartbeat <= now
    }

    /// Counts a heartbeat ([`HEARTBEAT`]) as sent now by whoever keeps the parked stream.
    pub fn beat_sent(&mut self) {
        self.last_sent = Instant::now();
        self.quiet = true;
        if let Some(sent) = &self.sent {
            sent.bytes.fetch_add(HEARTBEAT.len() as u64, Ordering::Relaxed);
        }
    }

    /// When a parked stream must be woken: its next heartbeat, or the end of its credentials.
    pub fn wakes_at(&self) -> Instant {
        let beat = self.last_sent + self.cadence.heartbeat;
        self.expires.map_or(beat, |at| at.min(beat))
    }

    /// Takes every frame that is ready now, up to [`COALESCE_BYTES`], as one chunk.
    fn poll_live(&mut self, cx: &mut Context<'_>) -> Poll<Option<(Bytes, u64)>> {
        match &self.source {
            Source::Live(sub) => sub.queue.poll_chunk(cx, self.skip_through, COALESCE_BYTES),
            _ => Poll::Ready(None),
        }
    }

    /// The next chunk and how many live frames are in it (replayed history counts as none).
    fn poll_source(&mut self, cx: &mut Context<'_>) -> Poll<Option<(Bytes, u64)>> {
        loop {
            match &mut self.source {
                Source::Done => return Poll::Ready(None),
                Source::Live(_) => return self.poll_live(cx),
                Source::Replay(rx) => match rx.poll_recv(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Feed::Chunk(bytes))) => return Poll::Ready(Some((bytes, 0))),
                    Poll::Ready(Some(Feed::Live { sub, skip_through })) => {
                        self.skip_through = skip_through;
                        self.source = Source::Live(sub);
                    }
                    // The replay task failed (it logged why): end the stream so the client resumes.
                    Poll::Ready(None) => self.source = Source::Done,
                },
            }
        }
    }
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<BodyFrame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if this.opening {
            this.opening = false;
            return this.sent(this.cadence.prelude.clone(), 0);
        }
        if matches!(this.source, Source::Done) {
            return Poll::Ready(None);
        }
        if this.expired(cx) {
            this.source = Source::Done;
            return Poll::Ready(None);
        }
        match this.poll_source(cx) {
            Poll::Ready(Some((bytes, frames))) => {
                this.last_sent = Instant::now();
                this.quiet = false;
                return this.sent(bytes, frames);
            }
            Poll::Ready(None) => {
                this.source = Source::Done;
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if this.heartbeat_due(cx) {
            this.quiet = true;
            return this.sent(Bytes::from_static(HEARTBEAT), 0);
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        !self.opening && matches!(self.source, Source::Done)
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::hub::{Event, Hub};
    use crate::fanout::queue::Frame;
    use http_body_util::BodyExt;

    fn hub_with(channel: &str) -> (Arc<Hub>, Subscription) {
        let hub = Arc::new(Hub::new(16));
        hub.start_at(0);
        let (sub, _) = hub.subscribe(&[channel.to_string()], &Default::default()).unwrap();
        (hub, sub)
    }

    async fn next_chunk(body: &mut SseBody) -> Option<Bytes> {
        body.frame().await.map(|f| f.unwrap().into_data().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeat_after_idle_interval_and_reset_by_events() {
        let (hub, sub) = hub_with("c");
        let beat = Duration::from_secs(15);
        let mut body = SseBody::live(Cadence::new(Bytes::from_static(b"P"), beat), sub, 0);
        assert_eq!(next_chunk(&mut body).await.unwrap(), "P");

        let start = Instant::now();
        assert_eq!(&next_chunk(&mut body).await.unwrap()[..], HEARTBEAT);
        assert_eq!(start.elapsed(), beat, "first heartbeat exactly one interval after start");

        tokio::time::advance(Duration::from_secs(10)).await;
        let frame = Frame { id: 1, bytes: Bytes::from_static(b"E") };
        hub.broadcast(vec![Event::new("c".into(), frame, Bytes::new(), None, false)]);
        assert_eq!(next_chunk(&mut body).await.unwrap(), "E");
        let after_event = Instant::now();
        assert_eq!(&next_chunk(&mut body).await.unwrap()[..], HEARTBEAT);
        assert_eq!(after_event.elapsed(), beat, "an event restarts the heartbeat interval");

        // Two events, the second just before the heartbeat the first one moved: it moves it again.
        for (id, wait) in [(2, 3), (3, 11)] {
            tokio::time::advance(Duration::from_secs(wait)).await;
            let frame = Frame { id, bytes: Bytes::from_static(b"E") };
            hub.broadcast(vec![Event::new("c".into(), frame, Bytes::new(), None, false)]);
            assert_eq!(next_chunk(&mut body).await.unwrap(), "E");
        }
        let after_last = Instant::now();
        assert_eq!(&next_chunk(&mut body).await.unwrap()[..], HEARTBEAT);
        assert_eq!(after_last.elapsed(), beat, "the heartbeat comes one interval after the last event");
    }

    #[tokio::test(start_paused = true)]
    async fn coalesces_ready_frames_and_skips_replayed_ids() {
        let (hub, sub) = hub_with("c");
        let (tx, rx) = mpsc::channel(4);
        let mut body = SseBody::replaying(Cadence::new(Bytes::new(), Duration::from_secs(15)), rx);
        next_chunk(&mut body).await;
        tx.send(Feed::Chunk(Bytes::from_static(b"R1"))).await.unwrap();
        tx.send(Feed::Live { sub, skip_through: 2 }).await.unwrap();
        let frames = (1..=4).map(|id| {
            Event::new("c".into(), Frame { id, bytes: Bytes::from(format!("L{id}")) }, Bytes::new(), None, false)
        });
        hub.broadcast(frames.collect());
        assert_eq!(next_chunk(&mut body).await.unwrap(), "R1");
        assert_eq!(next_chunk(&mut body).await.unwrap(), "L3L4");
    }

    #[tokio::test(start_paused = true)]
    async fn ends_when_the_credentials_expire() {
        let (_hub, sub) = hub_with("c");
        let until = Instant::now() + Duration::from_secs(60);
        let mut body =
            SseBody::live(Cadence::new(Bytes::new(), Duration::from_secs(15)), sub, 0).ending_at(Some(until));
        next_chunk(&mut body).await;
        let mut heartbeats = 0;
        while next_chunk(&mut body).await.is_some() {
            heartbeats += 1;
        }
        assert_eq!((heartbeats, Instant::now()), (3, until), "heartbeats at 15, 30, 45 s, then the end at 60 s");
    }

    /// Shutdown reaches a body through its source: the hub closes every live queue, and the replay task,
    /// cancelled, drops its sender.
    #[tokio::test(start_paused = true)]
    async fn ends_when_the_hub_closes_or_the_replay_stops() {
        let (hub, sub) = hub_with("c");
        let mut body = SseBody::live(Cadence::new(Bytes::new(), Duration::from_secs(15)), sub, 0);
        next_chunk(&mut body).await;
        let frame = Frame { id: 1, bytes: Bytes::from_static(b"E") };
        hub.broadcast(vec![Event::new("c".into(), frame, Bytes::new(), None, false)]);
        hub.close();
        assert_eq!(next_chunk(&mut body).await.unwrap(), "E", "what was queued still goes out");
        assert!(next_chunk(&mut body).await.is_none());
        assert!(body.is_end_stream());

        let (tx, rx) = mpsc::channel(4);
        let mut body = SseBody::replaying(Cadence::new(Bytes::new(), Duration::from_secs(15)), rx);
        next_chunk(&mut body).await;
        drop(tx);
        assert!(next_chunk(&mut body).await.is_none());
    }
}
