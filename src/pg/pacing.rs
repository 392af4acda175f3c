//! When the listener reads the log next. At once while the streams it wakes are few; spaced out when the
//! wakeups reading every event at once would cost clearly more than the gateway spends freely, so that
//! each wakeup then carries several events.

use std::time::Duration;

use tokio::time::Instant;

/// Stream wakeups per second that reads are paced to: about half a core of polls and writes
/// (docs/performance.md, "Why the constants are what they are").
const WAKEUP_BUDGET: f64 = 50_000.0;
/// Pacing starts once reading at once would take this many budgets, and stops below one. A load near the
/// budget gains nothing from spacing (each read would still find one event) and would pay for it in
/// latency.
const PACE_ABOVE: f64 = 1.5;
/// Above this many events per second (small write transactions, each notifying), reads start at most
/// every [`BUSY_INTERVAL`], so the listener batches instead of taking a PostgreSQL core from the writers;
/// it also stops being notified of each commit and reads on the clock (see [`Pacing::busy`]).
/// Judged on the rate, not on one read: a rule like "this read found several events" feeds itself (the
/// wait gathers several for the next) and made light loads' latency flip run to run.
const BUSY_EVENT_RATE: f64 = 2_000.0;
/// Wider spacing costs latency and saves the gateway's CPU and the writers' throughput; 10 ms kept p99
/// within the 20 ms asked (docs/performance.md, "Why the constants are what they are").
const BUSY_INTERVAL: Duration = Duration::from_millis(10);
/// The widest spacing, whatever the number of streams: the latency it adds at most.
const MAX_INTERVAL: Duration = Duration::from_millis(25);
/// How long reads are counted before the load is judged: long enough for a few reads even when paced.
const WINDOW: Duration = Duration::from_millis(100);
/// A heavy fan-out is judged sooner, once this much of a window shows it: unpaced, it spends a whole
/// budget's worth of wakeups every few milliseconds.
const EARLY: Duration = Duration::from_millis(20);

pub struct Pacing {
    last_read: Instant,
    window_start: Instant,
    window_events: u64,
    window_woken: u64,
    /// Reads in the window that found events.
    window_reads: u64,
    /// Over [`BUSY_EVENT_RATE`] lately; cleared only below half of it, so batching does not flap.
    busy: bool,
    /// Reads are spaced to the budget: set above [`PACE_ABOVE`] budgets, cleared below one.
    paced: bool,
    spacing: Duration,
}

impl Pacing {
    pub fn new(now: Instant) -> Self {
        Self {
            last_read: now,
            window_start: now,
            window_events: 0,
            window_woken: 0,
            window_reads: 0,
            busy: false,
            paced: false,
            spacing: Duration::ZERO,
        }
    }

    /// Whether commits arrive fast enough that reading on the clock beats being notified of each.
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// When the next read may start.
    pub fn next_read(&self) -> Instant {
        let busy = if self.busy { BUSY_INTERVAL } else { Duration::ZERO };
        self.last_read + self.spacing.max(busy)
    }

    /// Records a read that started at `started`, found `events` and woke `woken` streams.
    pub fn record(&mut self, started: Instant, events: u64, woken: u64) {
        self.last_read = started;
        self.window_events += events;
        self.window_woken += woken;
        self.window_reads += u64::from(events > 0);
        let elapsed = started.saturating_duration_since(self.window_start);
        let secs = elapsed.as_secs_f64();
        let heavy = secs > 0.0 && self.window_woken as f64 / secs > PACE_ABOVE * WAKEUP_BUDGET;
        if elapsed >= WINDOW || (elapsed >= EARLY && heavy && !self.paced) {
            let rate = self.window_events as f64 / secs;
            if rate > BUSY_EVENT_RATE {
                self.busy = true;
            } else if rate < BUSY_EVENT_RATE / 2.0 {
                self.busy = false;
            }
            // What reading every event at once would cost: the streams a read wakes, once per event.
            // Paced reads each carry several events, so their own wakeups understate it.
            let per_read = self.window_woken as f64 / self.window_reads.max(1) as f64;
            let demand = per_read * rate;
            if demand > PACE_ABOVE * WAKEUP_BUDGET {
                self.paced = true;
            } else if demand < WAKEUP_BUDGET {
                self.paced = false;
            }
            self.spacing = match self.paced {
                true => Duration::from_secs_f64(per_read / WAKEUP_BUDGET).min(MAX_INTERVAL),
                false => Duration::ZERO,
            };
            self.window_start = started;
            (self.window_events, self.window_woken, self.window_reads) = (0, 0, 0);
        }
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
        // 1,000 streams, an event every millisecond: a million wakeups a second if read at once. Judged
        // after the first 20 ms, then read 20 ms apart: 1,000 wakeups each, 50,000/s.
        let mut at = t;
        for _ in 0..20 {
            at += ms(1);
            assert_eq!(p.next_read(), at - ms(1), "at once until judged");
            p.record(at, 1, 1000);
        }
        assert_eq!(p.next_read(), at + ms(20));
        for _ in 0..20 {
            at += ms(20);
            p.record(at, 20, 1000);
            assert_eq!(p.next_read(), at + ms(20));
        }
        // The event rate drops to ten per second: at once again after one window.
        for _ in 0..3 {
            at += ms(100);
            p.record(at, 1, 1000);
        }
        assert_eq!(p.next_read(), at);
        // However many streams, never spaced wider than the cap.
        for _ in 0..30 {
            at += ms(1);
            p.record(at, 1, 100_000);
        }
        assert_eq!(p.next_read(), at + MAX_INTERVAL);
    }

    #[test]
    fn a_load_near_the_budget_is_not_paced() {
        let t = Instant::now();
        let mut p = Pacing::new(t);
        // 101 streams at 500 events/s: just over the budget, and no read would find two events anyway.
        let mut at = t;
        for i in 0..5_000 {
            at += ms(2);
            p.record(at, 1, 101);
            assert_eq!(p.next_read(), at, "read {i} is not delayed");
        }
        // 160 streams at the same rate, 1.6 budgets: paced, 160 wakeups 3.2 ms apart.
        for _ in 0..50 {
            at += ms(2);
            p.record(at, 1, 160);
        }
        assert_eq!(p.next_read(), at + Duration::from_micros(3200));
    }
}
