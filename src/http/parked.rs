//! Quiet HTTP/1 streams parked off the runtime: no task, timer or reactor registration each, their lasting
//! state kept together by one thread, until frames, a heartbeat or the end of their credentials give the
//! stream a task again, or the client's bytes or close end it (docs/performance.md).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Wake, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::unix::SourceFd;
use mio::{Events, Interest, Token};
use tokio::runtime::Handle;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::task_tracker::TaskTrackerToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument, Span};

use crate::api::stream::{Sent, HEARTBEAT};
use crate::fanout::hub::Moved;
use crate::http::socket::Stalling;
use crate::http::writing::{Http1, Parked};
use crate::limits::ConnectionSlot;
use woken::Woken;

mod woken;

/// What a connection holds under the limits for as long as it is open, parked or not.
pub type Admitted = (ConnectionSlot, OwnedSemaphorePermit);

const WAKER: Token = Token(usize::MAX);

/// A handle on the thread that keeps parked streams; the thread ends once every handle is gone (the
/// server's, and those of streams it gave a task again).
#[derive(Clone)]
pub struct Lot {
    shared: Arc<Shared>,
    _open: Arc<Open>,
}

/// What a stream's connection needs to be served again, and the way in to the thread.
pub struct Serving {
    pub runtime: Handle,
    /// The server's connections: a parked stream holds a place among them, so shutdown waits for it.
    pub connections: TaskTracker,
    pub shutdown: CancellationToken,
    /// How long a client may take no byte of a write (`socket::Stalling`).
    pub stall: Duration,
    pub sent: Arc<Sent>,
}

struct Shared {
    waker: mio::Waker,
    inbox: Mutex<Inbox>,
    closed: AtomicBool,
    serving: Serving,
}

#[derive(Default)]
struct Inbox {
    arriving: Vec<Arrival>,
    /// Parked streams whose queue has frames or was closed: their slot and the generation parked in it.
    woken: Vec<(usize, u32)>,
}

struct Arrival {
    parked: Parked,
    admitted: Admitted,
    span: Span,
    _place: TaskTrackerToken,
}

struct Open(Arc<Shared>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.closed.store(true, Ordering::Release);
        let _ = self.0.waker.wake();
    }
}

impl Lot {
    pub fn start(serving: Serving) -> io::Result<Self> {
        let (keeper, lot) = Keeper::new(serving)?;
        std::thread::Builder::new().name("pgsse-parked".into()).spawn(move || keeper.run())?;
        Ok(lot)
    }

    /// Keeps a stream that has nothing to send, with its connection's places, until something wakes it.
    pub fn park(&self, parked: Parked, admitted: Admitted) {
        let place = self.shared.serving.connections.token();
        let arrival = Arrival { parked, admitted, span: Span::current(), _place: place };
        self.shared.post(|inbox| inbox.arriving.push(arrival));
    }

    /// What a connection's task does as it ends: hands its stream over if it was parked.
    pub fn ended(lot: Option<&Lot>, served: Result<Option<Parked>, hyper::Error>, admitted: Admitted) {
        match (served, lot) {
            (Ok(Some(parked)), Some(lot)) => lot.park(parked, admitted),
            (Ok(_), _) => {}
            (Err(err), _) => debug!(cause = ?err, "connection ended with an error"),
        }
    }
}

impl Shared {
    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        // Nothing panics while holding the lock; a poisoned inbox is still consistent.
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts something in the inbox, waking the thread if the inbox was empty (the thread empties it whole
    /// each time it wakes, so a wake per batch is enough).
    fn post(&self, put: impl FnOnce(&mut Inbox)) {
        let mut inbox = self.inbox();
        let wake = inbox.arriving.is_empty() && inbox.woken.is_empty();
        put(&mut inbox);
        drop(inbox);
        if !wake {
            return;
        }
        if let Err(err) = self.waker.wake() {
            warn!(cause = %err, "could not wake the parked streams' thread");
        }
    }
}

/// Registered in a parked stream's queue: its next frames or its close wake it.
struct Wakes {
    shared: Arc<Shared>,
    slot: usize,
    generation: u32,
}

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.shared.post(|inbox| inbox.woken.push((self.slot, self.generation)));
    }
}

struct Entry {
    arrival: Arrival,
    /// Which of the streams parked in its slot over time this is: wakes meant for one before it are
    /// ignored. Wrapping: a stale wake that matched would only make a stream look for frames, and news of
    /// a client that matched is checked against the stream's own socket (`end`).
    generation: u32,
}

/// The thread's own state. Everything a parked stream keeps is allocated here, by this thread, so that
/// it lies together rather than among the buffers freed around each stream's opening.
struct Keeper {
    poll: mio::Poll,
    shared: Arc<Shared>,
    open: Weak<Open>,
    /// Boxed: one vector of whole entries, 0.3 KB each, is megabytes after a storm, and glibc, once such
    /// a block is freed, raises its thresholds and keeps that much of each thread's heap for good.
    slots: Vec<Option<Box<Entry>>>,
    free: Vec<usize>,
    /// Slots that hold a stream.
    parked: usize,
    /// When each parked stream must be woken for its heartbeat or the end of its credentials.
    deadlines: BinaryHeap<Reverse<(Instant, usize, u32)>>,
    generation: u32,
    /// What relocations left, freed on the runtime's threads (see [`Moved`]).
    moved: Vec<Moved>,
}

impl Keeper {
    /// The thread's state, and the first handle on it.
    fn new(serving: Serving) -> io::Result<(Self, Lot)> {
        let poll = mio::Poll::new()?;
        let waker = mio::Waker::new(poll.registry(), WAKER)?;
        let shared = Arc::new(Shared { waker, inbox: Mutex::default(), closed: AtomicBool::new(false), serving });
        let open = Arc::new(Open(shared.clone()));
        let keeper = Keeper {
            poll,
            shared: shared.clone(),
            open: Arc::downgrade(&open),
            slots: Vec::new(),
            free: Vec::new(),
            parked: 0,
            deadlines: BinaryHeap::new(),
            generation: 0,
            moved: Vec::new(),
        };
        Ok((keeper, Lot { shared, _open: open }))
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.deadlines.peek().map(|Reverse((at, ..))| at.saturating_duration_since(Instant::now()));
            if let Err(err) = self.poll.poll(&mut events, timeout) {
                if err.kind() != io::ErrorKind::Interrupted {
                    warn!(cause = %err, "waiting on parked streams failed");
                }
            }
            if self.shared.closed.load(Ordering::Acquire) {
                // Only once the server is gone: whatever is still parked ends with this thread.
                self.shared.serving.sent.parked.fetch_sub(self.parked as u64, Ordering::Relaxed);
                return;
            }
            self.heard(&events);
            let inbox = std::mem::take(&mut *self.shared.inbox());
            for arrival in inbox.arriving {
                self.park(arrival);
            }
            for (slot, generation) in inbox.woken {
                self.unpark(slot, generation, Bytes::new());
            }
            if !self.moved.is_empty() {
                let moved = std::mem::take(&mut self.moved);
                self.shared.serving.runtime.spawn(async move { drop(moved) });
            }
            let now = Instant::now();
            while let Some(&Reverse((at, slot, generation))) = self.deadlines.peek() {
                if at > now {
                    break;
                }
                self.deadlines.pop();
                self.due(slot, generation);
            }
            if self.parked > 0 {
                continue;
            }
            // None parked: give back the slab a storm of streams grew (its deadlines are all stale).
            (self.slots, self.free, self.deadlines) = Default::default();
        }
    }

    /// A parked stream's heartbeat or end is due. A heartbeat is written here, with no task, when the
    /// socket takes it whole (a quiet stream's usual case); anything else gives the stream its task.
    fn due(&mut self, slot: usize, generation: u32) {
        let Some(entry) = holding_mut(&mut self.slots, slot, generation) else { return };
        let parked = &mut entry.arrival.parked;
        if !parked.body.body().beat_due() {
            return self.unpark(slot, generation, Bytes::new());
        }
        let beat = Bytes::from_static(HEARTBEAT);
        let written = (&parked.tcp).write(&beat);
        let gone = written.as_ref().is_err_and(|e| e.kind() != io::ErrorKind::WouldBlock);
        if !gone {
            // Written, or to be written by the stream's task.
            parked.body.body_mut().beat_sent();
            parked.body.count(&beat);
        }
        match written {
            Ok(n) if n == beat.len() => {
                let wakes_at = parked.body.body().wakes_at().into_std();
                self.deadline(wakes_at, slot, generation);
            }
            Ok(n) => self.unpark(slot, generation, beat.slice(n..)),
            Err(err) if err.kind() == io::ErrorKind::WouldBlock => self.unpark(slot, generation, beat),
            // The client is gone: the stream ends here (and its access log line is written).
            Err(_) => {
                if let Some(entry) = self.take(slot) {
                    debug!(parent: &entry.arrival.span, "a parked stream's client is gone");
                }
            }
        }
    }

    fn park(&mut self, mut arrival: Arrival) {
        self.generation = self.generation.wrapping_add(1);
        // Taken from `free` only once the stream is parked in it.
        let (slot, generation) = (self.free.last().copied().unwrap_or(self.slots.len()), self.generation);
        let waker = Waker::from(Arc::new(Wakes { shared: self.shared.clone(), slot, generation }));
        let body = arrival.parked.body.body_mut();
        self.moved.extend(body.relocate());
        if !body.park(&waker) {
            return self.serve(arrival, Bytes::new());
        }
        let wakes_at = body.wakes_at().into_std();
        let tcp = &arrival.parked.tcp;
        // This thread writes heartbeats itself: a write that could block would make every parked stream
        // wait on one client. The runtime left the socket non-blocking; this makes sure of it.
        let registered = tcp.set_nonblocking(true).and_then(|()| {
            let (registry, fd, token) =
                (self.poll.registry(), &mut SourceFd(&tcp.as_raw_fd()), token(slot, generation));
            // Still registered if it was parked before (see `take`).
            match registry.register(fd, token, Interest::READABLE) {
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    registry.reregister(fd, token, Interest::READABLE)
                }
                registered => registered,
            }
        });
        if let Err(err) = registered {
            debug!(parent: &arrival.span, cause = %err, "could not park a stream");
            return self.serve(arrival, Bytes::new());
        }
        let entry = Some(Box::new(Entry { arrival, generation }));
        match self.slots.get_mut(slot) {
            Some(free) => {
                self.free.pop();
                *free = entry;
            }
            None => self.slots.push(entry),
        }
        self.parked += 1;
        self.shared.serving.sent.parked.fetch_add(1, Ordering::Relaxed);
        self.deadline(wakes_at, slot, generation);
    }

    /// Wakes the stream parked in `slot` as `generation` at `at`. The deadlines of streams given a task
    /// again stay until they pass (at most a heartbeat); if they come to outnumber the parked streams, they
    /// are dropped at once.
    fn deadline(&mut self, at: Instant, slot: usize, generation: u32) {
        self.deadlines.push(Reverse((at, slot, generation)));
        if self.deadlines.len() > 2 * self.parked + 1024 {
            let slots = &self.slots;
            self.deadlines.retain(|&Reverse((_, slot, generation))| holding(slots, slot, generation).is_some());
        }
    }

    /// Gives the stream in `slot` a task again, to write `pending` and then what woke it, if it is
    /// (still) the one parked there as `generation`.
    fn unpark(&mut self, slot: usize, generation: u32, pending: Bytes) {
        if holding(&self.slots, slot, generation).is_none() {
            return;
        }
        if let Some(entry) = self.take(slot) {
            self.serve(entry.arrival, pending);
        }
    }

    /// News of clients from the epoll: bytes or a close.
    fn heard(&mut self, events: &Events) {
        for event in events.iter().filter(|e| e.token() != WAKER) {
            let (slot, generation) = parked_in(event.token());
            self.end(slot, generation);
        }
    }

    /// The client of the stream parked in `slot` as `generation` sent bytes or closed: the stream ends
    /// here, read and closed as its task would (one byte, then a FIN), with no task given to it. (Given
    /// one, it once found nothing to read on its socket, just registered with the runtime's reactor and
    /// not yet polled by it, and was parked again, over and over, until the reactor's turn came.)
    fn end(&mut self, slot: usize, generation: u32) {
        let Some(entry) = holding(&self.slots, slot, generation) else { return };
        // The news may be of an earlier stream's client, registered under a generation this one has come
        // to carry again: the stream's own socket says whether its client sent bytes or closed.
        let read = (&entry.arrival.parked.tcp).read(&mut [0; 1]);
        if read.is_err_and(|e| matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted)) {
            return;
        }
        if let Some(entry) = self.take(slot) {
            let _ = entry.arrival.parked.tcp.shutdown(std::net::Shutdown::Write);
            debug!(parent: &entry.arrival.span, "a parked stream's client sent bytes or closed");
        }
    }

    /// Takes the stream out of `slot`. Its socket stays registered here, so that a storm of wakes costs
    /// this thread no system call: the events it may still bring carry a generation no longer parked, and
    /// the registration goes when the socket closes, or is moved when the stream is parked again.
    fn take(&mut self, slot: usize) -> Option<Box<Entry>> {
        let entry = self.slots.get_mut(slot)?.take()?;
        self.free.push(slot);
        self.parked -= 1;
        self.shared.serving.sent.parked.fetch_sub(1, Ordering::Relaxed);
        Some(entry)
    }

    /// Gives the stream a task. The task writes what woke the stream straight to the socket, and only
    /// then registers it with the runtime's reactor ([`Woken`]), on the runtime's threads: a storm of
    /// wakes is then not this thread's system calls in turn, and its frames do not wait for them.
    fn serve(&self, arrival: Arrival, pending: Bytes) {
        let Arrival { parked: Parked { tcp, body }, admitted, span, _place } = arrival;
        let serving = &self.shared.serving;
        // Gone only while the server stops: the stream is then served to its end without parking again.
        let lot = self.open.upgrade().map(|open| Lot { shared: self.shared.clone(), _open: open });
        let io = Stalling::new(Woken::Bare(tcp), serving.stall);
        let http1 = Http1::unparked(io, body, pending, serving.shutdown.clone(), lot.is_some());
        let task = async move { Lot::ended(lot.as_ref(), http1.await, admitted) };
        serving.connections.spawn_on(task.instrument(span), &serving.runtime);
    }
}

/// A parked stream's socket is registered under its slot and generation, so that events meant for a
/// stream no longer parked there are known.
fn token(slot: usize, generation: u32) -> Token {
    Token(slot | (generation as usize) << 32)
}

fn parked_in(token: Token) -> (usize, u32) {
    (token.0 & u32::MAX as usize, (token.0 >> 32) as u32)
}

/// The stream in `slot`, if it is (still) the one parked there as `generation`.
fn holding(slots: &[Option<Box<Entry>>], slot: usize, generation: u32) -> Option<&Entry> {
    slots.get(slot)?.as_deref().filter(|e| e.generation == generation)
}

fn holding_mut(slots: &mut [Option<Box<Entry>>], slot: usize, generation: u32) -> Option<&mut Entry> {
    slots.get_mut(slot)?.as_deref_mut().filter(|e| e.generation == generation)
}

#[cfg(test)]
mod tests;
