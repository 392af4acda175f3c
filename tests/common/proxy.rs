//! A TCP proxy between a gateway and PostgreSQL that injects network faults on command: freeze the
//! connections it holds (bytes stop, sockets stay open, as when a NAT drops their state), refuse new ones,
//! delay every chunk, cut every connection, or cut each one in the middle of what the server sends.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};

#[derive(Clone, Copy, Debug, Default)]
struct State {
    /// Connections opened before this one (by number) forward nothing.
    frozen_below: u64,
    refuse: bool,
    delay: Duration,
    /// Connections opened before this one close after passing `cut_bytes` more bytes from the server.
    cut_below: u64,
    cut_bytes: usize,
    /// Where new connections go instead of the first target (a failover).
    target: Option<SocketAddr>,
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    state: watch::Sender<State>,
    opened: Arc<Mutex<u64>>,
    pumps: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (state, watching) = watch::channel(State::default());
        let opened = Arc::new(Mutex::new(0));
        let pumps: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = tokio::spawn({
            let (opened, pumps) = (opened.clone(), pumps.clone());
            async move {
                while let Ok((client, _)) = listener.accept().await {
                    if watching.borrow().refuse {
                        continue;
                    }
                    let to = watching.borrow().target.unwrap_or(target);
                    let Ok(server) = TcpStream::connect(to).await else { continue };
                    let number = {
                        let mut opened = opened.lock().unwrap();
                        *opened += 1;
                        *opened
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    let mut pumps = pumps.lock().unwrap();
                    pumps.extend(pump(client_read, server_write, number, false, watching.clone()));
                    pumps.extend(pump(server_read, client_write, number, true, watching.clone()));
                }
            }
        });
        Self { addr, state, opened, pumps, accept }
    }

    /// `url` (key=value or URL form) with its host and port replaced by the proxy's.
    pub fn url(&self, url: &str) -> String {
        let config: tokio_postgres::Config = url.parse().unwrap();
        let (db, user) = (config.get_dbname().unwrap(), config.get_user().unwrap());
        format!("host=127.0.0.1 port={} dbname={db} user={user}", self.addr.port())
    }

    /// New connections go to `to` from now on, as a failover's address would send them.
    pub fn retarget(&self, to: SocketAddr) {
        self.state.send_modify(|s| s.target = Some(to));
    }

    /// Existing connections stop forwarding, both ways, without closing; new ones pass.
    pub fn freeze(&self) {
        let below = *self.opened.lock().unwrap() + 1;
        self.state.send_modify(|s| s.frozen_below = below);
    }

    /// New connections are accepted and closed at once.
    pub fn refuse(&self, refuse: bool) {
        self.state.send_modify(|s| s.refuse = refuse);
    }

    /// Every chunk is forwarded `delay` after it arrived (latency, not a slower link).
    pub fn delay(&self, delay: Duration) {
        self.state.send_modify(|s| s.delay = delay);
    }

    /// Closes every connection the proxy holds.
    pub fn cut(&self) {
        for pump in self.pumps.lock().unwrap().drain(..) {
            pump.abort();
        }
    }

    /// Each connection held now closes once `bytes` more bytes from the server have passed: in the middle
    /// of a message, for a large one.
    pub fn cut_after(&self, bytes: usize) {
        let below = *self.opened.lock().unwrap() + 1;
        self.state.send_modify(|s| (s.cut_below, s.cut_bytes) = (below, bytes));
    }

    /// Forwards everything again.
    pub fn heal(&self) {
        self.state.send_modify(|s| *s = State::default());
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// Reads `from` and writes to `to`, each chunk once the state lets it through: a reader and a writer task,
/// so that a delay applies to each chunk from when it arrived.
fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    number: u64,
    from_server: bool,
    mut state: watch::Receiver<State>,
) -> [JoinHandle<()>; 2] {
    // Bounded: a frozen connection stops reading too, so the sender's kernel buffers fill as on a real network.
    let (chunks, mut arriving) = mpsc::channel::<(Instant, Bytes)>(16);
    let reader = tokio::spawn(async move {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            if chunks.send((Instant::now(), Bytes::copy_from_slice(&buf[..n]))).await.is_err() {
                break;
            }
        }
    });
    let writer = tokio::spawn(async move {
        let mut left: Option<usize> = None;
        while let Some((arrived, chunk)) = arriving.recv().await {
            loop {
                let now = *state.borrow_and_update();
                if number < now.frozen_below {
                    if state.changed().await.is_err() {
                        return;
                    }
                    continue;
                }
                sleep_until(arrived + now.delay).await;
                break;
            }
            let cut = *state.borrow();
            if from_server && number < cut.cut_below {
                let budget = *left.get_or_insert(cut.cut_bytes);
                if chunk.len() >= budget {
                    // Dropping the socket's halves without a shutdown closes it mid-stream.
                    let _ = to.write_all(&chunk[..budget]).await;
                    return;
                }
                left = Some(budget - chunk.len());
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    [reader, writer]
}
