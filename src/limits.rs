//! Stream limits, in total and per client address (`X-Forwarded-For` believed only from configured
//! proxies), open connections per peer address, and counters of every limit that refused a request. Each
//! place taken or given back is counted as churn, for [`Scavenger`].

use crate::memory::Scavenger;
use crate::refusal::{Refusal, Refuse};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use http::HeaderMap;

/// Above the per-client stream limit: each HTTP/1 stream holds a connection, and requests need a few more.
const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 256;
const DEFAULT_MAX_STREAMS: usize = 10_000;
const DEFAULT_MAX_STREAMS_PER_CLIENT: usize = 100;
/// A quarter of the default pool: each snapshot being read holds a connection.
const DEFAULT_MAX_SNAPSHOTS: usize = 4;
const DEFAULT_MAX_SNAPSHOTS_PER_CLIENT: usize = 2;
/// How long a snapshot waits for a place before it is refused.
pub const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Streams and connections per gateway and per client.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Limits")]
pub struct LimitArgs {
    /// Open streams on this gateway; more get 429 with Retry-After.
    #[arg(long, env = "PGSSE_MAX_STREAMS", default_value_t = DEFAULT_MAX_STREAMS, value_parser = crate::parse::positive)]
    pub max_streams: usize,

    /// Open streams per client address; more get 429 with Retry-After.
    #[arg(long, env = "PGSSE_MAX_STREAMS_PER_CLIENT", default_value_t = DEFAULT_MAX_STREAMS_PER_CLIENT,
          value_parser = crate::parse::positive)]
    pub max_streams_per_client: usize,

    /// Open connections per peer address (trusted proxies excepted); more are closed as they are accepted.
    #[arg(long, env = "PGSSE_MAX_CONNECTIONS_PER_CLIENT", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
          value_parser = crate::parse::positive)]
    pub max_connections_per_client: usize,

    /// Snapshots being read at once on this gateway, each holding a database connection until its client
    /// has taken it; at most half of --pool-size. More get 429 with Retry-After.
    #[arg(long, env = "PGSSE_MAX_SNAPSHOTS", default_value_t = DEFAULT_MAX_SNAPSHOTS, value_parser = crate::parse::positive)]
    pub max_snapshots: usize,
    /// Snapshots being read at once per client address; more get 429 with Retry-After.
    #[arg(long, env = "PGSSE_MAX_SNAPSHOTS_PER_CLIENT", default_value_t = DEFAULT_MAX_SNAPSHOTS_PER_CLIENT,
          value_parser = crate::parse::positive)]
    pub max_snapshots_per_client: usize,
    /// Proxy address whose X-Forwarded-For names the client (repeatable); from anyone else it is ignored.
    #[arg(long = "trusted-proxy", env = "PGSSE_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("too many open streams on this gateway (at most {0}); try again later")]
    Streams(usize),
    #[error("too many open streams and history requests from this client (at most {0}); close some first")]
    StreamsFromClient(usize),
    #[error("too many snapshots being read on this gateway (at most {0}); try again shortly")]
    Snapshots(usize),
    #[error("too many snapshots being read for this client (at most {0}); read those first")]
    SnapshotsFromClient(usize),
}

/// How often each limit refused a request.
#[derive(Default)]
pub struct Rejections {
    pub streams_total: AtomicU64,
    pub streams_per_client: AtomicU64,
    pub connections_per_client: AtomicU64,
    pub url_too_long: AtomicU64,
    pub body_too_large: AtomicU64,
    pub snapshots: AtomicU64,
}

impl Rejections {
    /// A request refused with 414 (`--max-url-length`).
    pub fn url_too_long(&self) {
        self.url_too_long.fetch_add(1, Ordering::Relaxed);
    }

    /// A body refused with 413 (`--body-limit`).
    pub fn body_too_large(&self) {
        self.body_too_large.fetch_add(1, Ordering::Relaxed);
    }
}

pub struct Limits {
    max_streams: usize,
    max_per_client: usize,
    max_connections_per_client: usize,
    trusted_proxies: Vec<IpAddr>,
    max_snapshots: usize,
    max_snapshots_per_client: usize,
    open: Mutex<Open>,
    snapshots: Mutex<Open>,
    snapshot_freed: tokio::sync::Notify,
    connections: Mutex<HashMap<IpAddr, usize>>,
    pub rejections: Rejections,
    /// Counts the places taken and given back: a storm of them leaves freed memory to give back.
    pub scavenger: Arc<Scavenger>,
}

/// One accepted connection of a peer address; dropping it gives the place back.
pub struct ConnectionSlot {
    limits: Arc<Limits>,
    /// `None` for a trusted proxy, whose connections are not counted.
    peer: Option<IpAddr>,
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.limits.scavenger.churned();
        let Some(peer) = self.peer else { return };
        let mut connections = self.limits.connections.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = connections.get_mut(&peer) {
            *n -= 1;
            if *n == 0 {
                connections.remove(&peer);
            }
        }
    }
}

#[derive(Default)]
struct Open {
    total: usize,
    per_client: HashMap<IpAddr, usize>,
}

impl Open {
    fn release(&mut self, client: IpAddr) {
        if let Some(n) = self.per_client.get_mut(&client) {
            *n -= 1;
            if *n == 0 {
                self.per_client.remove(&client);
            }
        }
    }
}

/// A client's way to the snapshot places, used only by a request that reads a snapshot itself (one that
/// shares another's read holds no connection).
pub struct SnapshotGate {
    limits: Arc<Limits>,
    client: IpAddr,
}

impl SnapshotGate {
    /// A place now, if there is one.
    pub fn try_enter(&self) -> Option<SnapshotSlot> {
        self.limits.admit_snapshot(self.client).ok()
    }

    /// A place for a snapshot to be read, held until its client has taken it: snapshots cannot take every
    /// database connection, nor one client every snapshot place. A burst (a page many browsers behind one
    /// address open at once) waits up to [`SNAPSHOT_WAIT`] for places that snapshots read meanwhile give
    /// back; only then is it refused.
    pub async fn enter(&self) -> Result<SnapshotSlot, LimitError> {
        let deadline = tokio::time::Instant::now() + SNAPSHOT_WAIT;
        loop {
            let freed = self.limits.snapshot_freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            match self.limits.admit_snapshot(self.client) {
                Ok(slot) => return Ok(slot),
                Err(refused) if tokio::time::timeout_at(deadline, freed).await.is_err() => {
                    self.limits.rejections.snapshots.fetch_add(1, Ordering::Relaxed);
                    return Err(refused);
                }
                Err(_) => {}
            }
        }
    }
}

/// A snapshot being read for a client (it holds a database connection); dropping it gives the place back.
pub struct SnapshotSlot {
    limits: Arc<Limits>,
    client: IpAddr,
}

impl Drop for SnapshotSlot {
    fn drop(&mut self) {
        let mut open = self.limits.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        open.total = open.total.saturating_sub(1);
        open.release(self.client);
        drop(open);
        self.limits.snapshot_freed.notify_waiters();
    }
}

/// One admitted stream or history request; dropping it gives the place back.
pub struct StreamSlot {
    limits: Arc<Limits>,
    client: IpAddr,
    /// Streams count against the gateway's total too; history requests only against their client's.
    stream: bool,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.limits.scavenger.churned();
        let mut open = self.limits.lock();
        if self.stream {
            open.total = open.total.saturating_sub(1);
        }
        open.release(self.client);
    }
}

impl Limits {
    pub fn new(args: &LimitArgs) -> Self {
        Self {
            max_streams: args.max_streams,
            max_per_client: args.max_streams_per_client,
            max_connections_per_client: args.max_connections_per_client,
            trusted_proxies: args.trusted_proxies.clone(),
            max_snapshots: args.max_snapshots,
            max_snapshots_per_client: args.max_snapshots_per_client,
            open: Mutex::default(),
            snapshots: Mutex::default(),
            snapshot_freed: tokio::sync::Notify::new(),
            connections: Mutex::default(),
            rejections: Rejections::default(),
            scavenger: Arc::default(),
        }
    }

    /// A place for a connection from `peer`, or `None` when it has as many open as it may: one address
    /// cannot take every connection the gateway allows. A trusted proxy carries many clients, so it is not
    /// limited here (its clients are, by the stream limits).
    pub fn admit_connection(self: &Arc<Self>, peer: IpAddr) -> Option<ConnectionSlot> {
        if self.trusted_proxies.contains(&peer) {
            self.scavenger.churned();
            return Some(ConnectionSlot { limits: self.clone(), peer: None });
        }
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        let open = connections.entry(peer).or_default();
        if *open >= self.max_connections_per_client {
            self.rejections.connections_per_client.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *open += 1;
        drop(connections);
        self.scavenger.churned();
        Some(ConnectionSlot { limits: self.clone(), peer: Some(peer) })
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client's address: the peer, or, when the peer is a trusted proxy, the nearest address in
    /// `X-Forwarded-For` that is not itself a trusted proxy.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.trusted_proxies.contains(&peer) {
            return peer;
        }
        let forwarded = headers.get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
        let hops: Vec<IpAddr> = forwarded.flat_map(|v| v.split(',')).filter_map(|a| a.trim().parse().ok()).collect();
        hops.into_iter().rev().find(|ip| !self.trusted_proxies.contains(ip)).unwrap_or(peer)
    }

    pub fn admit(self: &Arc<Self>, client: IpAddr) -> Result<StreamSlot, LimitError> {
        self.take(client, true)
    }

    /// A place for a history request, held until its response is written: a client that pipelines
    /// requests without reading holds at most its per-client limit of pages.
    pub fn admit_request(self: &Arc<Self>, client: IpAddr) -> Result<StreamSlot, LimitError> {
        self.take(client, false)
    }

    /// Where `client`'s snapshot reads take their places: see [`SnapshotGate::enter`].
    pub fn snapshot_gate(self: &Arc<Self>, client: IpAddr) -> SnapshotGate {
        SnapshotGate { limits: self.clone(), client }
    }

    fn admit_snapshot(self: &Arc<Self>, client: IpAddr) -> Result<SnapshotSlot, LimitError> {
        let mut open = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        if open.total >= self.max_snapshots {
            return Err(LimitError::Snapshots(self.max_snapshots));
        }
        if open.per_client.get(&client).is_some_and(|n| *n >= self.max_snapshots_per_client) {
            return Err(LimitError::SnapshotsFromClient(self.max_snapshots_per_client));
        }
        open.total += 1;
        *open.per_client.entry(client).or_default() += 1;
        Ok(SnapshotSlot { limits: self.clone(), client })
    }

    fn take(self: &Arc<Self>, client: IpAddr, stream: bool) -> Result<StreamSlot, LimitError> {
        let mut open = self.lock();
        if stream && open.total >= self.max_streams {
            self.rejections.streams_total.fetch_add(1, Ordering::Relaxed);
            return Err(LimitError::Streams(self.max_streams));
        }
        let mine = open.per_client.entry(client).or_default();
        if *mine >= self.max_per_client {
            self.rejections.streams_per_client.fetch_add(1, Ordering::Relaxed);
            return Err(LimitError::StreamsFromClient(self.max_per_client));
        }
        *mine += 1;
        if stream {
            open.total += 1;
        }
        drop(open);
        self.scavenger.churned();
        Ok(StreamSlot { limits: self.clone(), client, stream })
    }
}

impl Refuse for LimitError {
    fn refusal(&self) -> Refusal {
        match self {
            LimitError::Streams(_)
            | LimitError::StreamsFromClient(_)
            | LimitError::Snapshots(_)
            | LimitError::SnapshotsFromClient(_) => Refusal::Busy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(max_streams: usize, per_client: usize, connections: usize, proxies: Vec<IpAddr>) -> LimitArgs {
        LimitArgs {
            max_streams,
            max_streams_per_client: per_client,
            max_connections_per_client: connections,
            max_snapshots: 2,
            max_snapshots_per_client: 1,
            trusted_proxies: proxies,
        }
    }
    use http::HeaderValue;

    /// Every place taken and given back is counted for the heaps' trimming; a refusal takes none.
    #[test]
    fn counts_each_place_taken_and_given_back_as_churn() {
        let proxy: IpAddr = "10.0.0.9".parse().unwrap();
        let limits = Arc::new(Limits::new(&args(1, 1, 1, vec![proxy])));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let (conn, stream, page) =
            (limits.admit_connection(a).unwrap(), limits.admit(a).unwrap(), limits.admit_request(a));
        assert!(limits.admit_connection(a).is_none() && page.is_err());
        assert_eq!(limits.scavenger.count(), 2);
        drop((conn, stream));
        assert_eq!(limits.scavenger.count(), 4);
        // A trusted proxy's connections are not limited, but they are counted here too.
        drop(limits.admit_connection(proxy).unwrap());
        assert_eq!(limits.scavenger.count(), 6);
    }

    #[test]
    fn admits_up_to_the_limits_and_releases_on_drop() {
        let limits = Arc::new(Limits::new(&args(3, 2, 10, vec![])));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).err(), Some(LimitError::StreamsFromClient(2)));
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).err(), Some(LimitError::Streams(3)));
        drop(a1);
        assert!(limits.admit(b).is_ok());
        // A history request takes a place of its client's, not of the gateway's total.
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let (_c1, c2) = (limits.admit_request(c).unwrap(), limits.admit_request(c).unwrap());
        assert_eq!(limits.admit_request(c).err(), Some(LimitError::StreamsFromClient(2)));
        assert!(limits.admit("10.0.0.4".parse().unwrap()).is_ok(), "the total counts streams only");
        drop(c2);
        assert!(limits.admit_request(c).is_ok());
        assert_eq!(limits.rejections.streams_total.load(Ordering::Relaxed), 1);
        assert_eq!(limits.rejections.streams_per_client.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn snapshots_are_limited_in_all_and_per_client_after_a_short_wait() {
        let limits = Arc::new(Limits::new(&args(10, 10, 10, vec![])));
        let (a, b, c): (IpAddr, IpAddr, IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap());
        let a1 = limits.snapshot_gate(a).enter().await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(limits.snapshot_gate(a).enter().await.err(), Some(LimitError::SnapshotsFromClient(1)));
        assert_eq!(started.elapsed(), SNAPSHOT_WAIT, "refused only after waiting for a place");
        let _b1 = limits.snapshot_gate(b).enter().await.unwrap();
        assert_eq!(limits.snapshot_gate(c).enter().await.err(), Some(LimitError::Snapshots(2)));
        // A place given back while one waits is taken at once.
        let waiting = tokio::spawn({
            let limits = limits.clone();
            async move { limits.snapshot_gate(c).enter().await.is_ok() }
        });
        tokio::time::sleep(SNAPSHOT_WAIT / 2).await;
        drop(a1);
        assert!(waiting.await.unwrap());
        assert_eq!(limits.rejections.snapshots.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn connections_per_peer_address_except_trusted_proxies() {
        let proxy: IpAddr = "10.9.9.9".parse().unwrap();
        let limits = Arc::new(Limits::new(&args(10, 10, 2, vec![proxy])));
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let (first, _second) = (limits.admit_connection(peer).unwrap(), limits.admit_connection(peer).unwrap());
        assert!(limits.admit_connection(peer).is_none());
        assert!(limits.admit_connection("10.0.0.2".parse().unwrap()).is_some(), "another address is not affected");
        drop(first);
        assert!(limits.admit_connection(peer).is_some());
        let held: Vec<ConnectionSlot> = (0..5).filter_map(|_| limits.admit_connection(proxy)).collect();
        assert_eq!(held.len(), 5, "a trusted proxy is not counted");
        assert_eq!(limits.rejections.connections_per_client.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        let limits = Limits::new(&args(10, 10, 10, vec![proxy, "10.9.9.9".parse().unwrap()]));
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", HeaderValue::from_static("1.2.3.4, 5.6.7.8, 10.9.9.9"));
        assert_eq!(limits.client(proxy, &headers), "5.6.7.8".parse::<IpAddr>().unwrap());
        let stranger: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(limits.client(stranger, &headers), stranger, "a client cannot claim another address");
        headers.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(limits.client(proxy, &headers), proxy);
    }
}
