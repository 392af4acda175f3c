//! `snapshot`: one client opens a stream that starts with a 10,000-row table; time to `snapshot-end`, then
//! live latency at `light`'s rate. `snapshot-storm`: 1,000 clients open the same 50-row snapshot at once
//! while a writer inserts 100 rows/s; each must rebuild exactly the table's rows from where its snapshot began.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{Bench, Percentiles, Report};
use crate::gateway::Gateway;

const TABLE_ROWS: i64 = 10_000;
const TIMED_RUNS: usize = 5;
const LIVE_RATE: f64 = 200.0;
const LIVE_FOR: Duration = Duration::from_secs(5);
const STORM_CLIENTS: usize = 1000;
const STORM_ROWS: i64 = 50;
const STORM_RATE: f64 = 100.0;
const STORM_WRITING: Duration = Duration::from_secs(3);

/// One stream over HTTP/1.0, whose body is the raw SSE text until the server closes it.
struct Stream {
    tcp: TcpStream,
    buf: Vec<u8>,
    body_from: Option<usize>,
    scanned: usize,
}

/// One event: its name and data (the bench needs no more).
struct Event {
    name: String,
    data: String,
}

impl Stream {
    async fn open(addr: SocketAddr, path: &str) -> Self {
        let mut tcp = TcpStream::connect(addr).await.expect("connect to the gateway");
        tcp.set_nodelay(true).unwrap();
        tcp.write_all(format!("GET {path} HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n").as_bytes()).await.unwrap();
        Self { tcp, buf: Vec::with_capacity(64 * 1024), body_from: None, scanned: 0 }
    }

    async fn next(&mut self) -> Option<Event> {
        loop {
            if self.body_from.is_none() {
                if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    assert!(
                        self.buf.starts_with(b"HTTP/1.0 200") || self.buf.starts_with(b"HTTP/1.1 200"),
                        "stream refused: {}",
                        String::from_utf8_lossy(&self.buf)
                    );
                    self.body_from = Some(end + 4);
                    self.scanned = end + 4;
                }
            }
            if let Some(from) = self.body_from {
                let start = self.scanned.max(from);
                if let Some(at) = self.buf[start..].windows(2).position(|w| w == b"\n\n") {
                    let end = start + at + 2;
                    let text = String::from_utf8_lossy(&self.buf[from..end]).into_owned();
                    self.buf.drain(from..end);
                    self.scanned = from;
                    let (mut name, mut data) = ("message".to_string(), String::new());
                    for line in text.lines() {
                        if let Some(v) = line.strip_prefix("event: ") {
                            name = v.into();
                        } else if let Some(v) = line.strip_prefix("data: ") {
                            data = v.into();
                        }
                    }
                    if data.is_empty() {
                        continue; // the prelude's retry and comments
                    }
                    return Some(Event { name, data });
                }
                self.scanned = self.buf.len().saturating_sub(1).max(from);
            }
            let mut chunk = [0u8; 16 * 1024];
            match tokio::time::timeout(Duration::from_secs(20), self.tcp.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }
}

fn id_of(data: &str) -> i64 {
    serde_json::from_str::<serde_json::Value>(data).ok().and_then(|v| v["id"].as_i64()).unwrap_or(-1)
}

impl Bench {
    pub(super) async fn snapshot(&self) -> Report {
        self.db
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS snap; CREATE TABLE snap (id bigserial PRIMARY KEY, sent bigint NOT NULL, pad text NOT NULL);
                 INSERT INTO snap (sent, pad) SELECT 0, repeat('x', 100) FROM generate_series(1, {TABLE_ROWS});
                 SELECT pgsse.publish_table('snap');"
            ))
            .await
            .unwrap();
        let gw = Gateway::start(&self.gateway, &self.url, &["--snapshot-max-rows", "20000"]);
        let mut to_end = Vec::new();
        let mut stream = None;
        for _ in 0..TIMED_RUNS {
            let started = Instant::now();
            let mut s = Stream::open(gw.addr, "/snap/events?snapshot=true").await;
            let mut rows = 0;
            while let Some(e) = s.next().await {
                if e.name == "snapshot-end" {
                    break;
                }
                rows += 1;
            }
            assert_eq!(rows, TABLE_ROWS, "every row of the table");
            to_end.push(started.elapsed().as_micros() as u32);
            stream = Some(s);
        }
        // Live latency on the last stream, at light's rate.
        let mut s = stream.expect("a stream");
        let t0 = Instant::now();
        let insert = self.db.prepare("INSERT INTO snap (sent, pad) VALUES ($1, 'x')").await.unwrap();
        let reader = tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Some(e) = s.next().await {
                let sent: i64 = serde_json::from_str::<serde_json::Value>(&e.data).unwrap()["sent"].as_i64().unwrap();
                if sent < 0 {
                    break;
                }
                latencies.push((t0.elapsed().as_micros() as i64 - sent) as u32);
            }
            latencies
        });
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / LIVE_RATE));
        let mut inserts = 0;
        while t0.elapsed() < LIVE_FOR {
            tick.tick().await;
            let sent = t0.elapsed().as_micros() as i64;
            self.db.execute(&insert, &[&sent]).await.unwrap();
            inserts += 1;
        }
        self.db.execute(&insert, &[&-1i64]).await.unwrap();
        let latencies = reader.await.unwrap();
        let ends = Percentiles::of(to_end.clone()).expect("runs");
        drop(gw);
        Report {
            scenario: "snapshot".into(),
            clients: 1,
            writers: 1,
            inserts,
            deliveries: latencies.len() as u64,
            lost: inserts.saturating_sub(latencies.len() as u64),
            latency_ms: Percentiles::of(latencies),
            note: format!(
                "{TABLE_ROWS}-row table: time to snapshot-end p50 {:.1} ms, max {:.1} ms over {TIMED_RUNS} runs \
                 (target <= 100 ms); then {LIVE_RATE}/s inserts live, latency above",
                ends.p50, ends.max
            ),
            ..Report::default()
        }
    }

    pub(super) async fn snapshot_storm(&self) -> Report {
        self.db
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS storm; CREATE TABLE storm (id bigserial PRIMARY KEY, sent bigint NOT NULL, pad text NOT NULL);
                 INSERT INTO storm (sent, pad) SELECT 0, 'x' FROM generate_series(1, {STORM_ROWS});
                 SELECT pgsse.publish_table('storm');"
            ))
            .await
            .unwrap();
        let gw = Gateway::start(&self.gateway, &self.url, &[]);
        let addr = gw.addr;
        let queries_before = metric(addr, "pgsse_snapshot_queries_total").await;
        let writer = {
            let url = self.url.clone();
            tokio::spawn(async move {
                let db = super::connect(&url).await;
                let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / STORM_RATE));
                let started = Instant::now();
                while started.elapsed() < STORM_WRITING {
                    tick.tick().await;
                    db.execute("INSERT INTO storm (sent, pad) VALUES (0, 'x')", &[]).await.unwrap();
                }
                db.query_one("INSERT INTO storm (sent, pad) VALUES (-1, 'last') RETURNING id", &[])
                    .await
                    .unwrap()
                    .get::<_, i64>(0)
            })
        };
        let path = format!("/storm/events?snapshot=true&order=id.desc&limit={STORM_ROWS}");
        let clients: Vec<_> = (0..STORM_CLIENTS)
            .map(|_| {
                let path = path.clone();
                tokio::spawn(async move {
                    let started = Instant::now();
                    let mut s = Stream::open(addr, &path).await;
                    let connected = started.elapsed().as_micros() as u32;
                    let (mut rows, mut to_end, mut duplicated) = (BTreeSet::new(), None, 0u64);
                    while let Some(e) = s.next().await {
                        match e.name.as_str() {
                            "snapshot-end" => to_end = Some(started.elapsed().as_micros() as u32),
                            _ => {
                                let id = id_of(&e.data);
                                duplicated += u64::from(!rows.insert(id));
                                if e.data.contains("\"last\"") {
                                    break;
                                }
                            }
                        }
                    }
                    (rows, to_end, duplicated, connected)
                })
            })
            .collect();
        let last = writer.await.unwrap();
        let (mut to_end, mut connects) = (Vec::new(), Vec::new());
        let (mut exact, mut duplicated, mut wrong) = (0, 0, 0);
        for client in clients {
            let (rows, end, dups, connected) = client.await.unwrap();
            connects.push(connected);
            to_end.extend(end);
            duplicated += dups;
            let from = rows.first().copied().unwrap_or(last);
            let table: BTreeSet<i64> = self
                .db
                .query("SELECT id FROM storm WHERE id >= $1", &[&from])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            if rows == table {
                exact += 1;
            } else {
                wrong += 1;
            }
        }
        let queries = metric(addr, "pgsse_snapshot_queries_total").await - queries_before;
        let ends = Percentiles::of(to_end.clone());
        let connects = Percentiles::of(connects).expect("clients");
        drop(gw);
        Report {
            scenario: "snapshot-storm".into(),
            clients: STORM_CLIENTS,
            writers: 1,
            duplicated,
            latency_ms: ends,
            note: format!(
                "{STORM_CLIENTS} clients open the same {STORM_ROWS}-row snapshot at once during {STORM_RATE}/s inserts; \
                 latency above is connect to snapshot-end (target: all within 1,000 ms; {} of them were); snapshot \
                 queries {queries} (target <= 10); clients that rebuilt exactly the table's rows: {exact}, not: {wrong}; \
                 TCP connect p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                to_end.iter().filter(|&&us| us <= 1_000_000).count(),
                connects.p50,
                connects.p99,
                connects.max
            ),
            ..Report::default()
        }
    }
}

async fn metric(addr: SocketAddr, name: &str) -> u64 {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").await.unwrap();
    let mut text = String::new();
    tcp.read_to_string(&mut text).await.unwrap();
    text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0)
}
