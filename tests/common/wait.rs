//! Waiting on conditions, never on time: every wait polls its condition and fails the test at a deadline.

use std::net::SocketAddr;
use std::time::Duration;

use super::get;

pub const TIMEOUT: Duration = Duration::from_secs(20);

/// Re-checks `cond` every 20 ms until it holds; fails the test after [`TIMEOUT`].
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        if cond().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
    }
}

/// One sample of `/metrics`, e.g. `pgsse_streams_open{channel="messages"}`; 0 when absent (a gauge drops
/// a label set that falls to zero).
pub async fn metric(addr: SocketAddr, sample: &str) -> u64 {
    let metrics = get(addr, "/metrics", &[]).await.unwrap().body;
    metrics.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0)
}
