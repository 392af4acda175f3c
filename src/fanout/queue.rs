//! One subscriber's bounded queue of frames: the hub pushes without ever waiting, and the stream body takes
//! everything that is ready in one go, coalesced into a single write. Empty until used, so an idle stream
//! holds no buffer.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};

/// One encoded event as it travels to subscribers.
#[derive(Clone, Debug)]
pub struct Frame {
    pub id: i64,
    pub bytes: Bytes,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// The subscriber fell `capacity` frames behind.
    Full,
    Closed,
}

pub struct Queue {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    frames: VecDeque<Frame>,
    waker: Option<Waker>,
    /// No more frames will come; what is queued is still delivered.
    closed: bool,
}

impl State {
    fn idle(&self) -> bool {
        self.frames.is_empty() && !self.closed
    }
}

impl Queue {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), state: Mutex::new(State::default()) }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned queue is still consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues frames in order under one lock; `Ok(true)` when that woke the stream (the first frames since
    /// it last looked). A stream is woken at most once per call, however many frames it gets.
    pub fn push_all<'a>(&self, frames: impl IntoIterator<Item = &'a Frame>) -> Result<bool, PushError> {
        let mut state = self.lock();
        if state.closed {
            return Err(PushError::Closed);
        }
        let before = state.frames.len();
        for frame in frames {
            if state.frames.len() >= self.capacity {
                return Err(PushError::Full);
            }
            state.frames.push_back(frame.clone());
        }
        if state.frames.len() == before {
            return Ok(false);
        }
        let waker = state.waker.take();
        drop(state);
        let woke = waker.is_some();
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(woke)
    }

    /// A queue like this one, with nothing in it yet.
    pub fn emptied(&self) -> Self {
        Self::new(self.capacity)
    }

    /// Empty, and frames may still come.
    pub fn is_idle(&self) -> bool {
        self.lock().idle()
    }

    /// Leaves `waker` to be woken by the next frames or the close, unless frames or the close are already
    /// here (`false`): how a parked stream, which has no task to poll it, learns it has something to send.
    pub fn park(&self, waker: &Waker) -> bool {
        let mut state = self.lock();
        if !state.idle() {
            return false;
        }
        state.waker = Some(waker.clone());
        true
    }

    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        let waker = state.waker.take();
        drop(state);
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Everything queued with an id above `skip_through`, as one chunk of at most about `limit` bytes (a
    /// single larger frame is returned whole), with the number of frames in it. `Ready(None)` once closed
    /// and drained.
    pub fn poll_chunk(&self, cx: &mut Context<'_>, skip_through: i64, limit: usize) -> Poll<Option<(Bytes, u64)>> {
        let mut state = self.lock();
        let mut count = 0;
        let mut single: Option<Bytes> = None;
        let mut merged: Option<BytesMut> = None;
        while let Some(frame) = state.frames.front() {
            let size = merged.as_ref().map_or(0, BytesMut::len) + single.as_ref().map_or(0, Bytes::len);
            if size > 0 && size + frame.bytes.len() > limit {
                break;
            }
            let Some(frame) = state.frames.pop_front() else { break };
            if frame.id <= skip_through {
                continue;
            }
            count += 1;
            match (&mut merged, single.take()) {
                (Some(m), _) => m.extend_from_slice(&frame.bytes),
                (None, None) => single = Some(frame.bytes),
                (None, Some(first)) => {
                    let mut m = BytesMut::with_capacity(first.len() + frame.bytes.len());
                    m.extend_from_slice(&first);
                    m.extend_from_slice(&frame.bytes);
                    merged = Some(m);
                }
            }
        }
        if state.frames.is_empty() && state.frames.capacity() > self.capacity / 4 {
            // A burst grew the buffer; an idle stream should not keep it.
            state.frames = VecDeque::new();
        }
        match (merged, single) {
            (Some(m), _) => Poll::Ready(Some((m.freeze(), count))),
            (None, Some(b)) => Poll::Ready(Some((b, count))),
            (None, None) if state.closed => Poll::Ready(None),
            (None, None) => {
                if !state.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    state.waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    fn frame(id: i64, text: &'static str) -> Frame {
        Frame { id, bytes: Bytes::from_static(text.as_bytes()) }
    }

    #[test]
    fn coalesces_skips_bounds_and_wakes() {
        let wakes = Arc::new(Count(Default::default()));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let q = Queue::new(3);
        assert_eq!(q.poll_chunk(&mut cx, 0, 100), Poll::Pending);
        assert_eq!(q.push_all([]), Ok(false), "nothing to wake for");
        assert_eq!(q.push_all([&frame(1, "a")]), Ok(true), "woke the waiting stream");
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(q.push_all([&frame(2, "b"), &frame(3, "c")]), Ok(false), "already woken");
        assert_eq!(q.push_all([&frame(4, "d")]), Err(PushError::Full));
        assert_eq!(q.poll_chunk(&mut cx, 1, 100), Poll::Ready(Some((Bytes::from_static(b"bc"), 2))));
        q.push_all([&frame(5, "eeee"), &frame(6, "ff")]).unwrap();
        assert_eq!(q.poll_chunk(&mut cx, 0, 5), Poll::Ready(Some((Bytes::from_static(b"eeee"), 1))), "limit");
        q.close();
        assert_eq!(q.push_all([&frame(7, "g")]), Err(PushError::Closed));
        assert_eq!(
            q.poll_chunk(&mut cx, 0, 100),
            Poll::Ready(Some((Bytes::from_static(b"ff"), 1))),
            "drained after close"
        );
        assert_eq!(q.poll_chunk(&mut cx, 0, 100), Poll::Ready(None));
    }

    #[test]
    fn a_parked_waker_is_woken_by_frames_or_the_close_and_not_left_when_they_are_here() {
        let wakes = Arc::new(Count(Default::default()));
        let waker = Waker::from(wakes.clone());
        let q = Queue::new(3);
        assert!(q.park(&waker));
        q.push_all([&frame(1, "a")]).unwrap();
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(!q.park(&waker), "frames are waiting: no park");
        assert!(!q.is_idle());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(q.poll_chunk(&mut cx, 0, 100).is_ready());
        assert!(q.is_idle() && q.park(&waker));
        q.close();
        assert_eq!(wakes.0.load(std::sync::atomic::Ordering::SeqCst), 2, "the close wakes it");
        assert!(!q.park(&waker) && !q.is_idle());
        assert!(q.emptied().is_idle(), "a fresh queue of the same capacity");
    }
}
