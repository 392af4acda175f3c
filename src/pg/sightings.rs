//! The gateway's own writes meet their events here: while a write waits, the listener reports each event it
//! reads, so a `POST` answers with its event's id without a query of its own (the step and the lookup that
//! [`crate::pg::store`] falls back to).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;

/// Events read while a write was between its statement and its wait, kept for it: at most this many bytes
/// of payload (a write that finds its event gone from here falls back to asking the database).
const RECENT_BYTES: usize = 1 << 20;

/// An event as the listener read it: its id and its data (JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sighting {
    pub id: i64,
    pub payload: String,
}

#[derive(Default)]
pub struct Sightings {
    /// Writes from before their statement is sent until they stop waiting: events read meanwhile are kept.
    watching: AtomicUsize,
    /// The listener is connected and reading; otherwise nobody would report the event.
    live: AtomicBool,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// By writing transaction: its channel, the id its event must be above, and the waiter.
    waiting: HashMap<i64, (String, i64, oneshot::Sender<Sighting>)>,
    recent: VecDeque<(i64, String, Sighting)>,
    recent_bytes: usize,
}

impl Sightings {
    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts watching for a write about to be sent, while the listener is reading; `None` otherwise.
    pub fn watch(self: &Arc<Self>) -> Option<Watch> {
        if !self.live.load(Ordering::Acquire) {
            return None;
        }
        self.watching.fetch_add(1, Ordering::SeqCst);
        Some(Watch { sightings: self.clone(), txid: None })
    }

    pub(crate) fn set_live(&self, live: bool) {
        self.live.store(live, Ordering::Release);
    }

    /// Whether any write waits: only then is [`Sightings::saw`] worth calling.
    pub(crate) fn watched(&self) -> bool {
        self.watching.load(Ordering::SeqCst) > 0
    }

    /// The listener read event `id` on `channel`, written by transaction `txid`.
    pub(crate) fn saw(&self, txid: i64, channel: &str, id: i64, payload: &str) {
        let mut inner = self.inner();
        if inner.waiting.get(&txid).is_some_and(|(ch, after, _)| ch == channel && id > *after) {
            if let Some((_, _, waiter)) = inner.waiting.remove(&txid) {
                let _ = waiter.send(Sighting { id, payload: payload.to_string() });
            }
            return;
        }
        if !self.watched() {
            return;
        }
        let weight = payload.len() + channel.len();
        while inner.recent_bytes + weight > RECENT_BYTES {
            let Some((_, ch, old)) = inner.recent.pop_front() else { return };
            inner.recent_bytes -= old.payload.len() + ch.len();
        }
        inner.recent_bytes += weight;
        inner.recent.push_back((txid, channel.to_string(), Sighting { id, payload: payload.to_string() }));
    }
}

/// One write's watch; dropping it ends the wait.
pub struct Watch {
    sightings: Arc<Sightings>,
    txid: Option<i64>,
}

impl Watch {
    /// The event that transaction `txid` (committed) recorded on `channel` with an id above `after`, once
    /// the listener has read it, waiting at most `wait`.
    pub async fn wait(mut self, txid: i64, after: i64, channel: &str, wait: Duration) -> Option<Sighting> {
        let seen = {
            let mut inner = self.sightings.inner();
            let found = inner.recent.iter().find(|(t, ch, s)| *t == txid && ch == channel && s.id > after);
            if let Some((_, _, sighting)) = found {
                return Some(sighting.clone());
            }
            let (tx, rx) = oneshot::channel();
            inner.waiting.insert(txid, (channel.to_string(), after, tx));
            self.txid = Some(txid);
            rx
        };
        tokio::time::timeout(wait, seen).await.ok()?.ok()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut inner = self.sightings.inner();
        if let Some(txid) = self.txid {
            inner.waiting.remove(&txid);
        }
        if self.sightings.watching.fetch_sub(1, Ordering::SeqCst) == 1 {
            inner.recent.clear();
            inner.recent_bytes = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Arc<Sightings> {
        let s = Arc::new(Sightings::default());
        s.set_live(true);
        s
    }

    #[tokio::test]
    async fn a_write_gets_its_event_whether_read_before_or_after_it_waits() {
        let s = live();
        let early = s.watch().unwrap();
        s.saw(7, "messages", 41, "{\"a\":1}");
        let seen = early.wait(7, 40, "messages", Duration::from_secs(1)).await;
        assert_eq!(seen, Some(Sighting { id: 41, payload: "{\"a\":1}".into() }), "read before the wait");

        let late = s.watch().unwrap();
        let reader = s.clone();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            reader.saw(8, "other", 42, "{}");
            reader.saw(8, "messages", 43, "{}");
        });
        let seen = late.wait(8, 40, "messages", Duration::from_secs(5)).await;
        assert_eq!(seen.map(|s| s.id), Some(43), "its own channel's event");
        assert!(s.inner().recent.is_empty() && s.inner().waiting.is_empty(), "nothing kept once none waits");
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_is_kept_unless_a_write_waits_and_a_wait_ends_by_itself() {
        let s = live();
        s.saw(9, "messages", 50, "{}");
        let watch = s.watch().unwrap();
        assert_eq!(watch.wait(9, 0, "messages", Duration::from_millis(100)).await, None);
        assert!(s.inner().waiting.is_empty(), "a wait that ended leaves no waiter");
        s.set_live(false);
        assert!(s.watch().is_none(), "no listener, no watch");
    }

    #[test]
    fn kept_events_are_bounded_by_bytes() {
        let s = live();
        let _watch = s.watch().unwrap();
        let payload = "x".repeat(1000);
        for id in 0..5000 {
            s.saw(id, "messages", id, &payload);
        }
        let inner = s.inner();
        assert!(inner.recent_bytes <= RECENT_BYTES);
        assert_eq!(inner.recent.back().map(|(_, _, s)| s.id), Some(4999), "the newest are kept");
    }
}
