//! When the listener reads the log next. At once while the streams it wakes are few; spaced out when the
//! wakeups would cost more than the gateway spends freely, so each wakeup carries several events.

use std::time::Duration;

use tokio::time::Instant;

/// Stream wakeups per second spent without spacing reads. A wakeup costs a poll and a write syscall,
/// about 10 µs on loopback (measured with `perf record` in the fan-out benchmark): this is half a core.
const WAKEUP_BUDGET: f64 = 50_000.0;
/// While reads keep finding several events (a stream of small write transactions, each notifying), they
/// start at most this often, so the listener batches instead of taking a PostgreSQL core from the writers.
/// 3 ms rather than 1 cut the gateway's CPU at 17,000 inserts/s from 17% to 14% for 1 ms more latency.
const BUSY_INTERVAL: Duration = Duration::from_millis(3);
/// The widest spacing, whatever the number of streams: the latency it adds at most.
const MAX_INTERVAL: Duration = Duration::from_millis(25);
/// How long wakeups are counted before the rate is judged.
const WINDOW: Duration = Duration::from_millis(100);

pub struct Pacing {
    last_read: Instant,
    interval: Duration,
    window_start: Instant,
    window_wakeups: u64,
    /// Over budget lately; cleared only once the rate falls to half of it, so spacing does not flap.
    spaced: bool,
}

impl Pacing {
    pub fn new(now: Instant) -> Self {
        Self { last_read: now, interval: Duration::ZERO, window_start: now, window_wakeups: 0, spaced: false }
    }

    /// When the next read may start.
    pub fn next_read(&self) -> Instant {
        self.last_read + self.interval
    }

    /// Records a read that started at `started`, found `events` and woke `woken` streams.
    pub fn record(&mut self, started: Instant, events: u64, woken: u64) {
        self.last_read = started;
        self.window_wakeups += woken;
        let elapsed = started.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            let rate = self.window_wakeups as f64 / elapsed.as_secs_f64();
            if rate > WAKEUP_BUDGET {
                self.spaced = true;
            } else if rate < WAKEUP_BUDGET / 2.0 {
                self.spaced = false;
            }
            self.window_start = started;
            self.window_wakeups = 0;
        }
        let spacing = match self.spaced {
            true => Duration::from_secs_f64(woken as f64 / WAKEUP_BUDGET).min(MAX_INTERVAL),
            false => Duration::ZERO,
        };
        let busy = if events > 1 { BUSY_INTERVAL } else { Duration::ZERO };
        self.interval = spacing.max(busy);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn light_load_reads_at_once_and_batches_only_when_busy() {
        let t = Instant::now();
        let mut p = Pacing::new(t);
        // 100 streams, one event every 5 ms: 20,000 wakeups/s, under budget.
        for i in 1..=100 {
            p.record(t + ms(5 * i), 1, 100);
            assert_eq!(p.next_read(), t + ms(5 * i), "read {i} leaves the next unthrottled");
        }
        p.record(t + ms(505), 3, 300);
        assert_eq!(p.next_read(), t + ms(505) + BUSY_INTERVAL, "several events in one read: the next waits");
    }

    #[test]
    fn heavy_fan_out_spaces_reads_until_the_rate_falls() {
        let t = Instant::now();
        let mut p = Pacing::new(t);
        // 1,000 streams, an event every millisecond: a million wakeups/s.
        for i in 1..=100 {
            p.record(t + ms(i), 1, 1000);
        }
        assert_eq!(p.next_read(), t + ms(100) + ms(20), "1,000 wakeups at 50,000/s: 20 ms apart");
        // Spaced reads meet the budget and stay spaced (no flapping back and forth).
        let mut at = t + ms(100);
        for _ in 0..10 {
            at += ms(20);
            p.record(at, 20, 1000);
        }
        assert_eq!(p.next_read(), at + ms(20));
        // The event rate drops: ten per second.
        for _ in 0..10 {
            at += ms(100);
            p.record(at, 1, 1000);
        }
        assert_eq!(p.next_read(), at, "back to reading at once");
        p.record(at + ms(1), 1, 100_000);
        assert!(p.next_read() <= at + ms(1) + MAX_INTERVAL);
    }
}
