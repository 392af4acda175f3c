//! `hoard`: clients that ask for a lot and read nothing (issues 12 and 26): streams resuming from before
//! a backlog of large events, connections pipelining history pages, and streams asking for distinct
//! 1,000-row snapshots of those events' rows. The gateway's RSS must stay bounded.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use super::{mb, sample_rss, Bench, Report};
use crate::gateway::Gateway;

const BACKLOG: i64 = 5_000;
const EVENT_BYTES: i32 = 10_000;
const STREAMS: usize = 20;
const PIPELINES: usize = 20;
const PAGES_PER_PIPELINE: usize = 20;
const SNAPSHOTS: usize = 20;
const SNAPSHOT_ROWS: usize = 1000;
const HOLD: Duration = Duration::from_secs(10);
const TARGET_MB: f64 = 100.0;

impl Bench {
    pub(super) async fn hoard(&self) -> Report {
        let from = self.head().await;
        self.db
            .execute(
                "INSERT INTO bench (sent, pad) SELECT 0, repeat('x', $1) FROM generate_series(1, $2::bigint)",
                &[&EVENT_BYTES, &BACKLOG],
            )
            .await
            .unwrap();
        let gw = Gateway::start(&self.gateway, &self.url, &[]);
        let rss_idle = gw.rss_bytes();
        let peak = Arc::new(AtomicU64::new(rss_idle));
        let sampling = Arc::new(AtomicBool::new(true));
        let sampler = sample_rss(&gw, peak.clone(), sampling.clone());

        let stream = format!("GET /bench/events HTTP/1.1\r\nHost: h\r\nLast-Event-ID: {from}\r\n\r\n");
        let pages = "GET /bench?limit=1000 HTTP/1.1\r\nHost: h\r\n\r\n".repeat(PAGES_PER_PIPELINE);
        let mut held = Vec::new();
        for _ in 0..STREAMS {
            held.push(never_reading(&gw, stream.as_bytes()).await);
        }
        for _ in 0..PIPELINES {
            held.push(never_reading(&gw, pages.as_bytes()).await);
        }
        // Distinct filters, so that no two share one read.
        for i in 0..SNAPSHOTS {
            let snapshot =
                format!("GET /bench/events?snapshot=true&limit={SNAPSHOT_ROWS}&id=gt.{i} HTTP/1.1\r\nHost: h\r\n\r\n");
            held.push(never_reading(&gw, snapshot.as_bytes()).await);
        }
        tokio::time::sleep(HOLD).await;
        sampling.store(false, Ordering::Relaxed);
        let _ = sampler.await;
        let peak_mb = mb(peak.load(Ordering::Relaxed));
        drop(held);
        Report {
            scenario: "hoard".into(),
            clients: STREAMS + PIPELINES + SNAPSHOTS,
            gateway_rss_idle_mb: mb(rss_idle),
            gateway_rss_peak_mb: peak_mb,
            note: format!(
                "{STREAMS} streams from before {BACKLOG} x {} KB events, {PIPELINES} connections pipelining \
                 {PAGES_PER_PIPELINE} history pages and {SNAPSHOTS} streams asking for distinct {SNAPSHOT_ROWS}-row \
                 snapshots of those rows, none reading, for {} s: peak RSS {peak_mb:.1} MB (target < {TARGET_MB} \
                 MB: {})",
                EVENT_BYTES / 1000,
                HOLD.as_secs(),
                if peak_mb < TARGET_MB { "met" } else { "MISSED" }
            ),
            ..Report::default()
        }
    }
}

/// A connection with a small receive buffer that sends `request` and never reads the answer.
async fn never_reading(gw: &Gateway, request: &[u8]) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(gw.addr).await.unwrap();
    conn.write_all(request).await.unwrap();
    conn
}
