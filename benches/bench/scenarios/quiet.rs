//! `idle`, `idle_http2` and `replay`: the memory of many quiet streams (HTTP/1.1 and HTTP/2), and how fast
//! one stream catches up on a long log.

use std::time::Instant;

use super::*;

impl Bench {
    /// Memory of many open, quiet streams; then how soon one event reaches them all (parked, each needs
    /// a task again).
    pub(super) async fn idle(&self, n: usize) -> Report {
        let gw = Gateway::start(&self.gateway, &self.url, &[]);
        let (base, kernel0) = (gw.rss_bytes(), socket_memory());
        let t0 = Instant::now();
        let clients = Clients::connect(gw.addr, n, t0).await;
        let parked = parked(&gw).await;
        let rss = rss_while_open(&gw, n).await;
        let kernel = socket_memory();
        let sent = t0.elapsed().as_micros() as i64;
        self.db.execute("INSERT INTO bench (sent, pad) VALUES ($1, 'to the quiet streams')", &[&sent]).await.unwrap();
        let head = self.head().await;
        let seen = clients.drain(head).await;
        let trims = heap_trims(&gw);
        let connected = seen.iter().filter(|s| s.connected).count();
        let reached = seen.iter().filter(|s| s.ids.contains(&head)).count();
        let woke = Percentiles::of(seen.iter().flat_map(|s| s.latencies_us.iter().copied()).collect())
            .map_or("-".into(), |p| format!("p50 {:.1} ms, p99 {:.1} ms, last {:.1} ms", p.p50, p.p99, p.max));
        let closed = rss_once_closed(&gw, trims).await;
        Report {
            scenario: "idle".into(),
            clients: connected,
            gateway_rss_idle_mb: mb(rss),
            gateway_rss_peak_mb: mb(rss),
            note: format!(
                "{:.2} KB per stream ({} streams, {} parked, over a base of {:.1} MB, {:.1} MB once they closed); \
                 kernel {}; the next event reached {} of them, INSERT to client {}",
                (rss.saturating_sub(base)) as f64 / connected.max(1) as f64 / 1024.0,
                connected,
                parked,
                mb(base),
                mb(closed),
                per_connection(kernel0, kernel, connected),
                reached,
                woke
            ),
            ..Report::default()
        }
    }

    /// Memory of many open, quiet streams multiplexed over HTTP/2 (prior knowledge), as a browser's tabs
    /// and an HTTP/2 proxy hold them: opened all at once on each connection, as a proxy's burst does (h2
    /// then keeps queues grown for the burst), or one after another, as tabs open.
    pub(super) async fn idle_http2(&self, n: usize, together: bool) -> Report {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let gw = Gateway::start(&self.gateway, &self.url, &[]);
        let (base, kernel0) = (gw.rss_bytes(), socket_memory());
        let mut held = Vec::with_capacity(n);
        for _ in 0..n.div_ceil(HTTP2_STREAMS_PER_CONNECTION) {
            let tcp = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp)).await.unwrap();
            tokio::spawn(conn);
            let mut opening = tokio::task::JoinSet::new();
            for _ in 0..HTTP2_STREAMS_PER_CONNECTION.min(n - held.len()) {
                let mut sender = sender.clone();
                let uri = format!("http://{}/bench/events", gw.addr);
                let req = hyper::Request::get(uri).body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
                let open = async move { sender.send_request(req).await };
                if together {
                    opening.spawn(open);
                } else {
                    held.extend(open.await.ok().filter(|r| r.status() == 200));
                }
            }
            while let Some(opened) = opening.join_next().await {
                held.extend(opened.ok().and_then(Result::ok).filter(|r| r.status() == 200));
            }
        }
        let rss = rss_while_open(&gw, held.len()).await;
        let kernel = socket_memory();
        let connections = n.div_ceil(HTTP2_STREAMS_PER_CONNECTION);
        let (streams, trims) = (held.len(), heap_trims(&gw));
        drop(held);
        let closed = rss_once_closed(&gw, trims).await;
        Report {
            scenario: if together { "idle over HTTP/2" } else { "idle HTTP/2 in turn" }.into(),
            clients: streams,
            gateway_rss_idle_mb: mb(rss),
            gateway_rss_peak_mb: mb(rss),
            note: format!(
                "{:.2} KB per stream ({} streams on {} connections, opened {} on each, over a base of {:.1} MB, \
                 {:.1} MB once they closed); kernel {}",
                (rss.saturating_sub(base)) as f64 / streams.max(1) as f64 / 1024.0,
                streams,
                connections,
                if together { "all at once" } else { "one after another" },
                mb(base),
                mb(closed),
                per_connection(kernel0, kernel, connections)
            ),
            ..Report::default()
        }
    }

    /// One client 100,000 events behind catches up.
    pub(super) async fn replay(&self) -> Report {
        let from = self.head().await;
        self.db
            .execute(
                "INSERT INTO bench (sent, pad) SELECT 0, $1 FROM generate_series(1, $2::bigint)",
                &[&self.payload, &REPLAY_EVENTS],
            )
            .await
            .unwrap();
        // No gateway runs now to give them ids: sequence them here, so the client is behind a log that
        // holds them all, which is what this scenario measures (not the first gateway's catching up).
        pgsse::testing::sequence_staged(&self.db).await;
        let until = self.head().await;
        let gw = Gateway::start(&self.gateway, &self.url, &[]);
        let cpu0 = gw.cpu_seconds();
        let (stop_tx, stop) = watch::channel(false);
        let (ready, _keep) = mpsc::channel(1);
        let started = Instant::now();
        let path = format!("/bench/events?last_event_id={from}");
        let stream = client::connect(gw.addr, IpAddr::V4(Ipv4Addr::LOCALHOST), &path).await.unwrap();
        let last = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let seen =
            tokio::time::timeout(DRAIN_LIMIT * 4, client::follow(stream, started, Some(until), stop, ready, last))
                .await
                .unwrap_or_default();
        let took = started.elapsed();
        drop(stop_tx);
        let n = seen.ids.len() as u64;
        Report {
            scenario: "replay".into(),
            clients: 1,
            deliveries: n,
            deliveries_per_s: n as f64 / took.as_secs_f64(),
            lost: (REPLAY_EVENTS as u64).saturating_sub(n),
            gateway_cpu_pct: (gw.cpu_seconds() - cpu0) / took.as_secs_f64() * 100.0,
            gateway_rss_peak_mb: mb(gw.rss_bytes()),
            note: format!("{n} events in {:.0} ms", took.as_secs_f64() * 1000.0),
            ..Report::default()
        }
    }
}

/// The kernel's memory that sockets use: their buffers (`mem` of /proc/net/sockstat's TCP line, in pages)
/// and the slab caches that hold sockets, files and epoll entries (`Slab` of /proc/meminfo), in bytes,
/// machine-wide.
fn socket_memory() -> Option<(u64, u64)> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let tcp = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let pages: u64 = tcp.split_whitespace().skip_while(|f| *f != "mem").nth(1)?.parse().ok()?;
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let slab_kb: u64 =
        meminfo.lines().find_map(|l| l.strip_prefix("Slab:"))?.trim().trim_end_matches(" kB").parse().ok()?;
    Some((pages * 4096, slab_kb * 1024))
}

/// The kernel memory that `connections` idle loopback connections added, per connection (both of its
/// ends, the client's and the gateway's).
fn per_connection(before: Option<(u64, u64)>, after: Option<(u64, u64)>, connections: usize) -> String {
    let Some(((buffers0, slab0), (buffers, slab))) = before.zip(after) else { return "-".into() };
    let per = |bytes: u64| bytes as f64 / connections.max(1) as f64 / 1024.0;
    format!(
        "{:.2} KB per connection in buffers, {:.2} KB in slab (both ends)",
        per(buffers.saturating_sub(buffers0)),
        per(slab.saturating_sub(slab0))
    )
}

/// The gateway's RSS with `streams` open, once it has given back what opening them freed: read after a trim
/// that came once they were all open, or 3 s without one (the storm's last trim may have come before they
/// were counted; a build without trimming has none); not at a fixed time, which the trim, or its rest after
/// the one before, can outlast.
async fn rss_while_open(gw: &Gateway, streams: usize) -> u64 {
    rss_after_trim(gw, |open| open >= streams as f64, None, Duration::from_secs(3)).await
}

/// `pgsse_streams_parked` once it has stopped rising (for 1 s, within 10 s): HTTP/1 streams park once
/// their opening is written. 0 from a build without it, or for streams that do not park.
async fn parked(gw: &Gateway) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    let (mut seen, mut since) = (gw.metric("pgsse_streams_parked").unwrap_or(0.0), Instant::now());
    while since.elapsed() < Duration::from_secs(1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = gw.metric("pgsse_streams_parked").unwrap_or(0.0);
        if now > seen {
            (seen, since) = (now, Instant::now());
        }
    }
    seen
}

/// The gateway's RSS once its streams have all closed and it has given back what they freed: what a storm
/// of connections leaves it holding. Read after a trim since `trims` (a build without trimming has none:
/// then after 10 s).
async fn rss_once_closed(gw: &Gateway, trims: f64) -> u64 {
    rss_after_trim(gw, |open| open <= 0.0, Some(trims), Duration::from_secs(10)).await
}

/// The RSS once `pgsse_streams_open` is `counted`, and then a trim has come since `trims` (since then, if
/// `None`) or `no_trim` has passed without one, once it has not fallen by more than 1% for 1 s; all within
/// 30 s.
async fn rss_after_trim(gw: &Gateway, counted: impl Fn(f64) -> bool, trims: Option<f64>, no_trim: Duration) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    while gw.metric_sum("pgsse_streams_open").is_none_or(|open| !counted(open)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (trims, since) = (trims.unwrap_or_else(|| heap_trims(gw)), Instant::now());
    while heap_trims(gw) <= trims && since.elapsed() < no_trim {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (mut lowest, mut since) = (gw.rss_bytes(), Instant::now());
    while since.elapsed() < Duration::from_secs(1) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let rss = gw.rss_bytes();
        if rss < lowest - lowest / 100 {
            since = Instant::now();
        }
        lowest = lowest.min(rss);
    }
    gw.rss_bytes()
}

/// `pgsse_heap_trims_total`; 0 from a build without it.
fn heap_trims(gw: &Gateway) -> f64 {
    gw.metric("pgsse_heap_trims_total").unwrap_or(0.0)
}
