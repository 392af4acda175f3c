//! When the listener reads the log next. At once while the streams it wakes are few; spaced out when the
//! wakeups would cost more than the gateway spends freely (a token bucket), so each carries several events.

use std::time::Duration;

use tokio::time::Instant;

/// Stream wakeups per second that reads are paced to once the burst is spent. A wakeup costs a poll and a
/// write syscall, about 10 µs on loopback (measured with `perf record` in the fan-out benchmark): this is
/// half a core.
const WAKEUP_BUDGET: f64 = 50_000.0;
/// Wakeups spent at once before the budget paces reads: 20 ms worth, so bursts and light loads pass.
const WAKEUP_BURST: f64 = WAKEUP_BUDGET * 0.02;
/// Above this many events per second (small write transactions, each notifying), reads start at most
/// every [`BUSY_INTERVAL`], so the listener batches instead of taking a PostgreSQL core from the writers;
/// it also stops being notified of each commit and reads on the clock (see [`Pacing::busy`]).
/// Judged on the rate, not on one read: a rule like "this read found several events" feeds itself (the
/// wait gathers several for the next) and flipped light loads between 0.7 and 2 ms latency run to run.
const BUSY_EVENT_RATE: f64 = 2_000.0;
/// 3 ms rather than 1 cut the gateway's CPU at 17,000 inserts/s from 17% to 14% for 1 ms more latency. 10 ms
/// rather than 3 (bench `--scenario ingest`, two builds alternated): gateway CPU 7.5% → 4.4%, and the
/// writers' throughput steadier (89-100% of the rate without the gateway over ten rounds, against 74-104%),
/// since fewer wakeups preempt writers that hold the ordering lock; p99 6 → 13 ms, within the 20 ms asked.
const BUSY_INTERVAL: Duration = Duration::from_millis(10);
/// The widest spacing, whatever the number of streams: the latency it adds at most.
const MAX_INTERVAL: Duration = Duration::from_millis(25);
/// How long events are counted before their rate is judged.
const WINDOW: Duration = Duration::from_millis(100);

pub struct Pacing {
    last_read: Instant,
    interval: Duration,
    /// Wakeups that may be spent now; negative after a read overspent, which then delays the next.
    tokens: f64,
    window_start: Instant,
    window_events: u64,
    /// Over [`BUSY_EVENT_RATE`] lately; cleared only below half of it, so batching does not flap.
    busy: bool,
}

impl Pacing {
    pub fn new(now: Instant) -> Self {
        Self {
            last_read: now,
            interval: Duration::ZERO,
            tokens: WAKEUP_BURST,
            window_start: now,
            window_events: 0,
            busy: false,
        }
    }

    /// Whether commits arrive fast enough that reading on the clock beats being notified of each.
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// When the next read may start.
    pub fn next_read(&self) -> Instant {
        self.last_read + self.interval
    }

    /// Records a read that started at `started`, found `events` and woke `woken` streams.
    pub fn record(&mut self, started: Instant, events: u64, woken: u64) {
        let refill = started.saturating_duration_since(self.last_read).as_secs_f64() * WAKEUP_BUDGET;
        // The debt is capped at what one widest spacing repays, so the pace recovers as soon as load drops.
        let floor = -WAKEUP_BUDGET * MAX_INTERVAL.as_secs_f64();
        self.tokens = ((self.tokens + refill).min(WAKEUP_BURST) - woken as f64).max(floor);
        self.last_read = started;
        self.window_events += events;
        let elapsed = started.saturating_duration_since(self.window_start);
        if elapsed >= WINDOW {
            let rate = self.window_events as f64 / elapsed.as_secs_f64();
            if rate > BUSY_EVENT_RATE {
                self.busy = true;
            } else if rate < BUSY_EVENT_RATE / 2.0 {
                self.busy = false;
            }
            self.window_start = started;
            self.window_events = 0;
        }
        let spacing = Duration::from_secs_f64((-self.tokens).max(0.0) / WAKEUP_BUDGET).min(MAX_INTERVAL);
        let busy = if self.busy { BUSY_INTERVAL } else { Duration::ZERO };
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
    fn light_load_reads_at_once_and_batches_only_while_busy() {
        let t = Instant::now();
        let mut p = Pacing::new(t);
        // 100 streams, one event every 5 ms: 20,000 wakeups/s, under budget; a read that happens to
        // find two events changes nothing.
        for i in 1..=100 {
            p.record(t + ms(5 * i), 1 + i % 2, 100);
            assert_eq!(p.next_read(), t + ms(5 * i), "read {i} leaves the next unthrottled");
        }
        // 10,000 events/s in reads a millisecond apart, woken streams few: busy, so batched.
        let mut at = t + ms(500);
        for _ in 0..100 {
            at += ms(1);
            p.record(at, 10, 1);
        }
        assert_eq!(p.next_read(), at + BUSY_INTERVAL);
        // Down to 500 events/s: reads at once again.
        for _ in 0..100 {
            at += ms(2);
            p.record(at, 1, 1);
        }
        assert_eq!(p.next_read(), at);
    }

    #[test]
    fn heavy_fan_out_spaces_reads_to_the_budget_and_recovers() {
        let t = Instant::now();
        let mut p = Pacing::new(t);
        // 1,000 streams, an event every millisecond: the burst allowance goes on the first read.
        p.record(t, 1, 1000);
        assert_eq!(p.next_read(), t);
        p.record(t + ms(1), 1, 1000);
        assert_eq!(p.next_read(), t + ms(1) + ms(19), "950 wakeups overspent at 50,000/s");
        // From then on, reads 20 ms apart: 1,000 wakeups each, 50,000/s.
        let mut at = t + ms(20);
        for _ in 0..10 {
            p.record(at, 20, 1000);
            assert_eq!(p.next_read(), at + ms(20));
            at += ms(20);
        }
        // The event rate drops: ten per second. Reads at once again.
        for _ in 0..3 {
            at += ms(100);
            p.record(at, 1, 1000);
            assert_eq!(p.next_read(), at);
        }
        p.record(at + ms(1), 1, 100_000);
        assert_eq!(p.next_read(), at + ms(1) + MAX_INTERVAL, "never spaced wider than the cap");
        p.record(at + ms(30), 1, 1);
        assert_eq!(p.next_read(), at + ms(30), "and the debt is gone after one widest spacing");
    }
}
