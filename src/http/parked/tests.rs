//! The parking thread with real sockets and a real hub, no database: slots that a stream could not take,
//! and a runtime that is gone while streams are parked.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use super::*;
use crate::api::stream::{Cadence, SseBody};
use crate::fanout::hub::{Event, Hub};
use crate::fanout::queue::Frame;
use crate::http::access::Logged;
use crate::limits::Limits;

struct Rig {
    lot: Lot,
    hub: Arc<Hub>,
    limits: Arc<Limits>,
    permits: Arc<tokio::sync::Semaphore>,
    sent: Arc<Sent>,
    connections: TaskTracker,
}

impl Rig {
    /// A runtime of one worker, and the rig on it.
    fn started() -> (tokio::runtime::Runtime, Self) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
        let rig = Self::new(runtime.handle().clone());
        (runtime, rig)
    }

    fn new(runtime: Handle) -> Self {
        let limits = Arc::new(Limits::new(&crate::config::Config::new("postgres://x").unwrap().limits));
        let hub = Arc::new(Hub::new(16));
        hub.start_at(0);
        let (sent, connections) = (Arc::new(Sent::default()), TaskTracker::new());
        let serving = Serving {
            runtime,
            connections: connections.clone(),
            shutdown: CancellationToken::new(),
            stall: Duration::from_secs(60),
            sent: sent.clone(),
        };
        let lot = Lot::start(serving).unwrap();
        Self { lot, hub, limits, permits: Arc::new(tokio::sync::Semaphore::new(100)), sent, connections }
    }

    /// Hands the thread a stream on `channel`, with `queued` frames already waiting for it; returns the
    /// client's end.
    fn park(&self, runtime: &Handle, channel: &str, queued: &[i64]) -> TcpStream {
        let (parked, admitted, client) = self.stream(runtime, channel);
        self.hub.broadcast(queued.iter().map(|&id| event(channel, id)).collect());
        self.lot.park(parked, admitted);
        client
    }

    /// A stream on `channel` (its body built in `runtime`'s context, as its timers need), its places,
    /// and the client's end.
    fn stream(&self, runtime: &Handle, channel: &str) -> (Parked, Admitted, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (tcp, _) = listener.accept().unwrap();
        tcp.set_nonblocking(true).unwrap();
        let (sub, _) = self.hub.subscribe(&[channel.to_string()], &Default::default()).unwrap();
        let body = {
            let _runtime = runtime.enter();
            SseBody::live(Cadence::new(Bytes::new(), Duration::from_secs(60)), sub, 0)
        };
        let admitted = (
            self.limits.admit_connection("127.0.0.1".parse().unwrap()).unwrap(),
            self.permits.clone().try_acquire_owned().unwrap(),
        );
        (Parked { tcp, body: Logged::new(body, None) }, admitted, client)
    }

    fn parked(&self) -> u64 {
        self.sent.parked.load(Ordering::Relaxed)
    }

    fn wait_parked(&self, n: u64) {
        wait_until(&format!("{n} parked"), || self.parked() == n);
    }
}

/// Waits (bounded, 10 s) until `done` holds.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "not in time: {what}");
        std::thread::yield_now();
    }
}

fn event(channel: &str, id: i64) -> Event {
    let frame = Frame { id, bytes: Bytes::from(format!("id: {id}\n\n")) };
    Event::new(channel.into(), frame, Bytes::new(), None, false)
}

/// Reads until `want` has come (or the connection closed or 10 s passed); returns all that came.
fn read_until(client: &mut TcpStream, want: &str) -> String {
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (mut got, mut buf) = (String::new(), [0; 256]);
    while !got.contains(want) {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
    got
}

/// A stream that cannot be parked (frames were waiting for it) takes no slot: the thread once counted
/// such a slot as free, decided nothing was parked, and dropped the one stream that was.
#[test]
fn a_stream_served_at_once_leaves_the_parked_ones_parked() {
    let (runtime, rig) = Rig::started();
    let mut parked = rig.park(runtime.handle(), "a", &[]);
    rig.wait_parked(1);
    let mut busy = rig.park(runtime.handle(), "b", &[1]);
    assert!(read_until(&mut busy, "id: 1\n\n").ends_with("id: 1\n\n"), "served by a task at once");
    rig.hub.broadcast(vec![event("a", 2)]);
    assert_eq!(read_until(&mut parked, "id: 2\n\n"), "id: 2\n\n", "woken, not dropped");
    drop(rig.connections);
}

/// Streams still parked when the runtime has gone end without a panic, and give back their places.
#[test]
fn streams_woken_after_the_runtime_is_gone_end_and_give_back_their_places() {
    let (runtime, rig) = Rig::started();
    let mut client = rig.park(runtime.handle(), "a", &[]);
    rig.wait_parked(1);
    drop(runtime);
    rig.hub.close();
    assert_eq!(read_until(&mut client, "never"), "", "closed with nothing written");
    rig.wait_parked(0);
    wait_until("its places among the connections given back", || {
        rig.connections.is_empty() && rig.permits.available_permits() == 100
    });
}

/// A stream given a task again stays registered with the thread, so that a wake costs it no system call:
/// the thread may then hear of that stream's client after another stream has taken its slot, and must
/// not end the other one for it.
#[test]
fn news_of_a_stream_no_longer_parked_leaves_the_one_parked_in_its_slot() {
    let (runtime, rig) = Rig::started();
    let woken = rig.park(runtime.handle(), "a", &[]);
    rig.wait_parked(1);
    // The runtime's one worker is held, so that the woken stream's task keeps its socket open, unread.
    let (held, release) = (std::sync::mpsc::channel::<()>(), std::sync::mpsc::channel::<()>());
    runtime.spawn(async move {
        held.0.send(()).unwrap();
        let _ = release.1.recv();
    });
    held.1.recv().unwrap();
    rig.hub.broadcast(vec![event("a", 1)]);
    rig.wait_parked(0);
    let mut parked = rig.park(runtime.handle(), "b", &[]);
    rig.wait_parked(1);
    // On loopback, the close has reached the woken stream's socket, and the thread's registration of it,
    // when `drop` returns; the next arrival is handled after it.
    drop(woken);
    let _also = rig.park(runtime.handle(), "c", &[]);
    rig.wait_parked(2);
    release.0.send(()).unwrap();
    rig.hub.broadcast(vec![event("b", 2)]);
    assert_eq!(read_until(&mut parked, "id: 2\n\n"), "id: 2\n\n", "still served");
    drop(rig.connections);
}

/// The generation wraps, so news of a woken stream's client may come to carry the slot and generation of
/// a stream parked later: the thread asks the parked stream's own socket before it ends it. (The
/// generation is set back here, in place of 2^32 parks.)
#[test]
fn news_that_only_seems_a_parked_streams_is_checked_against_its_socket() {
    let (runtime, rig) = Rig::started();
    let serving = Serving {
        runtime: runtime.handle().clone(),
        connections: rig.connections.clone(),
        shutdown: CancellationToken::new(),
        stall: Duration::from_secs(60),
        sent: rig.sent.clone(),
    };
    let (mut keeper, _lot) = Keeper::new(serving).unwrap();
    let arrival = |channel| {
        let (parked, admitted, client) = rig.stream(runtime.handle(), channel);
        (Arrival { parked, admitted, span: Span::none(), _place: rig.connections.token() }, client)
    };
    let (woken, mut woken_client) = arrival("a");
    keeper.park(woken);
    keeper.unpark(0, 1, Bytes::new());
    keeper.generation = 0;
    let (parked, mut parked_client) = arrival("b");
    keeper.park(parked);
    woken_client.write_all(b"x").unwrap();
    let mut events = Events::with_capacity(16);
    keeper.poll.poll(&mut events, Some(Duration::from_secs(10))).unwrap();
    assert!(events.iter().any(|e| parked_in(e.token()) == (0, 1)), "the woken stream's news, as (0, 1)");
    keeper.heard(&events);
    assert_eq!(keeper.parked, 1, "the stream parked in slot 0 is still parked");
    parked_client.write_all(b"y").unwrap();
    keeper.poll.poll(&mut events, Some(Duration::from_secs(10))).unwrap();
    keeper.heard(&events);
    assert_eq!(keeper.parked, 0, "its own client's byte ends it");
    assert_eq!(read_until(&mut parked_client, "never"), "", "closed with nothing written");
}

/// A client's byte ends its parked stream as the stream's task would: the byte read, then a FIN, not
/// the reset of a socket closed with a byte unread.
#[test]
fn a_clients_byte_ends_its_parked_stream_with_a_close_not_a_reset() {
    let (runtime, rig) = Rig::started();
    let mut client = rig.park(runtime.handle(), "a", &[]);
    rig.wait_parked(1);
    client.write_all(b"x").unwrap();
    rig.wait_parked(0);
    client.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let read = client.read(&mut [0; 16]);
    assert!(matches!(read, Ok(0)), "{read:?}");
}
