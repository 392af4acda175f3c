//! The scenarios, the load they drive, and how their results are measured and printed.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgsse::demo::Cluster;
use tokio::sync::{mpsc, watch};
use tokio_postgres::{Client, NoTls};

use crate::client::{self, Seen};
use crate::gateway::Gateway;
use crate::Args;
use report::{account, mb, print, rate, tally, Percentiles, Report};

/// Clients connect from these loopback sources in turn, so large N does not exhaust one address's ports.
const SOURCES: u8 = 8;
const CONNECT_CONCURRENCY: usize = 256;
const DRAIN_LIMIT: Duration = Duration::from_secs(15);
const REPLAY_EVENTS: i64 = 100_000;
/// The share of insert throughput kept with the gateway moved by ±10% between single runs on this shared
/// 2-core machine: several rounds, and their median, say more than one.
const INGEST_ROUNDS: usize = 5;
/// Within hyper's default limit on concurrent streams per HTTP/2 connection (200).
const HTTP2_STREAMS_PER_CONNECTION: usize = 100;

mod bulk;
mod hoard;
mod mercure;
mod post;
mod quiet;
mod replicas;
mod report;
mod snapshot;
mod writepath;

pub struct Bench {
    url: String,
    gateway: PathBuf,
    cluster: Option<Throwaway>,
    db: Client,
    payload: String,
}

/// What a scenario drives: clients, writers and for how long.
#[derive(Clone)]
struct Load {
    clients: usize,
    /// Inserts per second over all writers; `None`: as fast as they can.
    rate: Option<f64>,
    writers: usize,
    duration: Duration,
    stalled: usize,
}

/// The bench's own cluster, stopped and removed when dropped: a run that panics (a `--gateway` that cannot
/// migrate, say) leaves no PostgreSQL behind.
struct Throwaway(Cluster);

impl std::ops::Deref for Throwaway {
    type Target = Cluster;

    fn deref(&self) -> &Cluster {
        &self.0
    }
}

impl Drop for Throwaway {
    fn drop(&mut self) {
        let _ = self.0.stop("fast");
        let _ = std::fs::remove_dir_all(&self.0.data_dir);
    }
}

impl Bench {
    pub async fn setup(args: &Args) -> Result<Self, String> {
        let (url, cluster) = match &args.database_url {
            Some(url) => (url.clone(), None),
            None => {
                let dir = std::env::temp_dir().join(format!("pgsse-bench-{}", std::process::id()));
                let probe = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
                let port = probe.local_addr().map_err(|e| e.to_string())?.port();
                drop(probe);
                let cluster = Cluster::new(&dir, port).map_err(|e| e.to_string())?;
                let cluster = tokio::task::spawn_blocking(move || {
                    cluster.init(true)?;
                    cluster.start().map(|()| cluster)
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
                (cluster.url("postgres"), Some(Throwaway(cluster)))
            }
        };
        let gateway = args.gateway.clone().unwrap_or_else(|| env!("CARGO_BIN_EXE_pgsse").into());
        migrate_with(&gateway, &url);
        let db = connect(&url).await;
        db.batch_execute(
            "CREATE TABLE IF NOT EXISTS bench (id bigserial PRIMARY KEY, sent bigint NOT NULL, pad text NOT NULL);
             SELECT pgsse.publish_table('bench', writable => true);",
        )
        .await
        .map_err(|e| e.to_string())?;
        Ok(Self { url, gateway, cluster, db, payload: "x".repeat(args.payload_bytes) })
    }

    pub async fn teardown(self) {
        if let Some(cluster) = self.cluster {
            let _ = tokio::task::spawn_blocking(move || drop(cluster)).await;
        }
    }

    pub async fn run(&self, args: &Args) -> bool {
        let all = args.scenario == "all";
        let wanted = |name: &str| all || args.scenario == name;
        let mut reports = Vec::new();
        let secs = Duration::from_secs;
        if wanted("light") {
            let load = Load { clients: 100, rate: Some(200.0), writers: 2, duration: secs(10), stalled: 0 };
            reports.push(self.load("light", &load).await);
        }
        if wanted("fanout") {
            let load = Load { clients: 1000, rate: Some(1000.0), writers: 4, duration: secs(10), stalled: 0 };
            reports.push(self.load("fanout", &load).await);
        }
        if wanted("ingest") {
            reports.extend(self.ingest().await);
        }
        if wanted("idle") {
            // The most this machine's limit of 20,000 descriptors a process leaves room for.
            reports.push(self.idle(19_000).await);
            reports.push(self.idle_http2(19_000, true).await);
            reports.push(self.idle_http2(19_000, false).await);
        }
        if wanted("replay") {
            reports.push(self.replay().await);
        }
        if wanted("hoard") {
            reports.push(self.hoard().await);
        }
        if wanted("bulk") {
            reports.push(self.bulk().await);
        }
        if wanted("writepath") {
            reports.extend(writepath::writepath(&self.gateway, &self.payload, args.flush_delay_us).await);
        }
        if wanted("snapshot") {
            reports.push(self.snapshot().await);
        }
        if wanted("snapshot-storm") {
            reports.push(self.snapshot_storm().await);
        }
        if wanted("post") {
            reports.extend(self.post().await);
        }
        if wanted("mercure") {
            reports.extend(self.mercure().await);
        }
        if wanted("replicas") {
            reports.extend(self.replicas().await);
        }
        if wanted("slow") {
            let load = Load { clients: 100, rate: Some(500.0), writers: 2, duration: secs(5), stalled: 0 };
            reports.push(self.load("slow: none stalled", &load).await);
            reports.push(self.load("slow: 1 stalled", &Load { stalled: 1, ..load }).await);
        }
        if args.scenario == "custom" {
            let load = Load {
                clients: args.clients,
                rate: (args.rate > 0.0).then_some(args.rate),
                writers: args.writers.max(1),
                duration: secs(args.seconds),
                stalled: args.stalled,
            };
            reports.push(self.load("custom", &load).await);
        }
        if reports.is_empty() {
            eprintln!("pgsse-bench: unknown scenario {:?}", args.scenario);
            return false;
        }
        print(&reports, args.json);
        true
    }

    async fn head(&self) -> i64 {
        settled_head(&self.db).await
    }

    /// Clients on `gw`, writers at the load's rate, then a drain until every client has the last event.
    async fn load(&self, name: &str, load: &Load) -> Report {
        let gw = Gateway::start(&self.gateway, &self.url, &[]);
        let rss_base = gw.rss_bytes();
        let t0 = Instant::now();
        let start_id = self.head().await;
        let clients = Clients::connect(gw.addr, load.clients, t0).await;
        let stalled = stall(gw.addr, load.stalled).await;
        let rss_idle = gw.rss_bytes();
        let cpu0 = gw.cpu_seconds();
        let peak = Arc::new(AtomicU64::new(rss_idle));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = sample_rss(&gw, peak.clone(), sampling.clone());

        let started = Instant::now();
        let (inserts, wrote_for, round_trips) = self.write(load, t0).await;
        let end_id = self.head().await;
        let all_seen = clients.drain(end_id).await;
        let cpu = (gw.cpu_seconds() - cpu0) / started.elapsed().as_secs_f64() * 100.0;
        sampling.store(false, Ordering::Relaxed);
        let _ = sampler.await;
        drop(stalled);

        let expected = self.ids_between(start_id, end_id).await;
        let lag = gw.broadcast_lag_mean_ms().map_or("-".into(), |ms| format!("{ms:.2} ms"));
        let mut report = Report {
            scenario: name.into(),
            clients: load.clients,
            writers: load.writers,
            target_rate: load.rate,
            inserts,
            inserts_per_s: inserts as f64 / wrote_for.as_secs_f64(),
            gateway_cpu_pct: cpu,
            gateway_rss_idle_mb: mb(rss_idle),
            gateway_rss_peak_mb: mb(peak.load(Ordering::Relaxed)),
            note: format!(
                "INSERT round trip {}; commit to broadcast mean {lag}; gateway RSS with no streams {:.1} MB",
                Percentiles::of(round_trips)
                    .map_or("-".into(), |p| format!("p50 {:.2} ms, p99 {:.2} ms", p.p50, p.p99)),
                mb(rss_base)
            ),
            ..Report::default()
        };
        account(&mut report, &expected, all_seen, start_id, wrote_for);
        if report.resumed > 0 {
            report.note += &format!("; {} streams cut as too slow resumed from their last id", report.resumed);
        }
        report
    }

    async fn ids_between(&self, after: i64, through: i64) -> Vec<i64> {
        let rows = self
            .db
            .query(
                "SELECT id FROM pgsse.events WHERE channel = 'bench' AND id > $1 AND id <= $2 ORDER BY id",
                &[&after, &through],
            )
            .await
            .unwrap();
        rows.iter().map(|r| r.get(0)).collect()
    }

    /// Inserts at the load's rate (open loop: each writer keeps its schedule) or flat out, once every writer
    /// has connected. Returns the count, the time spent writing, and each INSERT's round trip in
    /// microseconds (autocommit: it includes the commit).
    async fn write(&self, load: &Load, t0: Instant) -> (u64, Duration, Vec<u32>) {
        let mut writers = Vec::with_capacity(load.writers);
        for _ in 0..load.writers {
            let db = connect(&self.url).await;
            let insert = db.prepare("INSERT INTO bench (sent, pad) VALUES ($1, $2)").await.unwrap();
            writers.push((db, insert));
        }
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let deadline = started + load.duration;
        let k = load.writers as u32;
        let mut tasks = Vec::new();
        for (i, (db, insert)) in (0..k).zip(writers) {
            let (pad, done) = (self.payload.clone(), done.clone());
            // Writers take turns, evenly spaced. Started together, their commits would come in bunches of K,
            // each waiting on the one before it for the log's ordering lock: not the rate R asked for.
            let mut tick = load.rate.map(|r| {
                let period = Duration::from_secs_f64(f64::from(k) / r);
                tokio::time::interval_at(tokio::time::Instant::from_std(started) + period * i / k, period)
            });
            tasks.push(tokio::spawn(async move {
                let mut round_trips = Vec::new();
                while Instant::now() < deadline {
                    if let Some(tick) = tick.as_mut() {
                        tick.tick().await;
                    }
                    let sent = t0.elapsed().as_micros() as i64;
                    db.execute(&insert, &[&sent, &pad]).await.unwrap();
                    round_trips.push((t0.elapsed().as_micros() as i64 - sent) as u32);
                    done.fetch_add(1, Ordering::Relaxed);
                }
                round_trips
            }));
        }
        let mut round_trips = Vec::new();
        for task in tasks {
            round_trips.extend(task.await.unwrap());
        }
        (done.load(Ordering::Relaxed), started.elapsed(), round_trips)
    }

    /// Insert throughput flat out with a gateway serving 10 clients, in rounds between runs without one.
    /// One row per round; each round's baseline is the mean of the runs without the gateway on its either
    /// side, so the log's growth and autovacuum weigh on both sides of the comparison.
    async fn ingest(&self) -> Vec<Report> {
        let load = Load { clients: 10, rate: None, writers: 8, duration: Duration::from_secs(5), stalled: 0 };
        let mut before = rate(self.write(&load, Instant::now()).await);
        let mut reports = Vec::new();
        let mut shares = Vec::new();
        for round in 1..=INGEST_ROUNDS {
            let mut report = self.load("ingest", &load).await;
            let after = rate(self.write(&load, Instant::now()).await);
            let alone = (before + after) / 2.0;
            let share = report.inserts_per_s / alone * 100.0;
            report.note = format!(
                "{}; round {round} of {INGEST_ROUNDS}: {alone:.0} inserts/s without the gateway, {share:.1}% of that with it",
                report.note
            );
            shares.push(share);
            reports.push(report);
            before = after;
        }
        shares.sort_by(f64::total_cmp);
        if let Some(last) = reports.last_mut() {
            last.note += &format!("; median of the rounds {:.1}%", shares[shares.len() / 2]);
        }
        reports
    }
}

/// Open SSE clients and their results.
struct Clients {
    tasks: Vec<tokio::task::JoinHandle<Seen>>,
    last_ids: Vec<Arc<std::sync::atomic::AtomicI64>>,
    stop: watch::Sender<bool>,
}

/// Client `i`'s stream path: fresh (`None`), or resuming after an id.
type PathOf = Arc<dyn Fn(usize, Option<i64>) -> String + Send + Sync>;

impl Clients {
    async fn connect(addr: SocketAddr, n: usize, t0: Instant) -> Self {
        let native = |_: usize, after: Option<i64>| match after {
            None => "/bench/events".to_string(),
            Some(after) => format!("/bench/events?last_event_id={after}"),
        };
        Self::connect_to(addr, n, t0, Arc::new(native)).await
    }

    async fn connect_to(addr: SocketAddr, n: usize, t0: Instant, path_of: PathOf) -> Self {
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, mut ready_rx) = mpsc::channel(n.max(1));
        let limit = Arc::new(tokio::sync::Semaphore::new(CONNECT_CONCURRENCY));
        let mut tasks = Vec::with_capacity(n);
        let mut last_ids = Vec::with_capacity(n);
        for i in 0..n {
            let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % SOURCES as usize) as u8));
            let (stop, ready, limit, path_of) = (stop_rx.clone(), ready_tx.clone(), limit.clone(), path_of.clone());
            let last = Arc::new(std::sync::atomic::AtomicI64::new(0));
            last_ids.push(last.clone());
            tasks.push(tokio::spawn(async move {
                let mut all = Seen::default();
                let mut path = path_of(i, None);
                loop {
                    let permit = limit.clone().acquire_owned().await;
                    let stream = match client::connect(addr, source, &path).await {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = ready.send(()).await;
                            all.error = Some(e.to_string());
                            return all;
                        }
                    };
                    drop(permit);
                    all.extend(client::follow(stream, t0, None, stop.clone(), ready.clone(), last.clone()).await);
                    if !all.cut_by_server() || *stop.borrow() {
                        return all;
                    }
                    all.resumed += 1;
                    path = path_of(i, Some(last.load(Ordering::Relaxed)));
                }
            }));
        }
        drop(ready_tx);
        for _ in 0..n {
            if tokio::time::timeout(Duration::from_secs(60), ready_rx.recv()).await.ok().flatten().is_none() {
                break;
            }
        }
        Self { tasks, last_ids, stop }
    }

    /// Waits (bounded) until every client has seen `through`, then stops them and collects what they saw.
    async fn drain(self, through: i64) -> Vec<Seen> {
        let each = vec![through; self.last_ids.len()];
        self.drain_each(&each).await
    }

    /// As [`Clients::drain`], with the id each client must see first.
    async fn drain_each(self, through: &[i64]) -> Vec<Seen> {
        let deadline = Instant::now() + DRAIN_LIMIT;
        let behind = || self.last_ids.iter().zip(through).any(|(l, t)| l.load(Ordering::Relaxed) < *t);
        while Instant::now() < deadline && behind() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = self.stop.send(true);
        let mut out = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            out.push(task.await.unwrap_or_default());
        }
        out
    }
}

/// Connections that ask for a stream and never read it.
async fn stall(addr: SocketAddr, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut out = Vec::new();
    for _ in 0..n {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(addr).await.unwrap();
        use tokio::io::AsyncWriteExt;
        stream.write_all(b"GET /bench/events HTTP/1.1\r\nHost: stalled\r\n\r\n").await.unwrap();
        out.push(stream);
    }
    out
}

fn sample_rss(gw: &Gateway, peak: Arc<AtomicU64>, running: Arc<AtomicBool>) -> tokio::task::JoinHandle<()> {
    let status = format!("/proc/{}/status", gw.pid());
    tokio::spawn(async move {
        while running.load(Ordering::Relaxed) {
            if let Some(rss) = crate::gateway::rss_of(&status) {
                peak.fetch_max(rss, Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

/// Installs the schema with the gateway under test, so two builds compared back to back each run on
/// their own SQL.
fn migrate_with(gateway: &std::path::Path, url: &str) {
    let out = std::process::Command::new(gateway)
        .args(["migrate", "--database-url", url])
        .env("PGSSE_LOG", "warn")
        .output()
        .expect("run the gateway's migrate");
    assert!(out.status.success(), "migrate: {}", String::from_utf8_lossy(&out.stderr));
}

/// The log's head once every committed event is in it (builds that stage events sequence them shortly
/// after their commit).
async fn settled_head(db: &Client) -> i64 {
    let staging: bool = db.query_one("SELECT to_regclass('pgsse.staged') IS NOT NULL", &[]).await.unwrap().get(0);
    let deadline = Instant::now() + DRAIN_LIMIT;
    while staging && Instant::now() < deadline {
        let staged: i64 = db.query_one("SELECT count(*) FROM pgsse.staged", &[]).await.unwrap().get(0);
        if staged == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    db.query_one("SELECT coalesce(max(id), 0) FROM pgsse.events", &[]).await.unwrap().get(0)
}

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect to PostgreSQL");
    tokio::spawn(conn);
    client
}
