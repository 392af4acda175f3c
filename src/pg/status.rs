//! What the rest of the gateway (`/healthz`, `/readyz`, the metrics) sees of the LISTEN connection: up or
//! down and why, events read and skipped, the probe's last readings, and commit-to-broadcast lag.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus_client::metrics::histogram::Histogram;
use tracing::error;

/// Commit-to-broadcast lag buckets, in seconds: sub-millisecond when healthy, minutes after an outage.
const LAG_BUCKETS: [f64; 16] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// What `/healthz` and the metrics see of the listener.
pub struct ListenerStatus {
    pub(super) up: AtomicBool,
    /// Reading the log on the clock (unlistened) while commits arrive faster than notifications are worth.
    pub(super) polling: AtomicBool,
    /// Times a connection that had caught up was lost (outages), and failed tries to connect or catch up.
    pub(super) reconnects: AtomicU64,
    pub(super) failed_attempts: AtomicU64,
    pub(super) events: AtomicU64,
    /// Sequencing steps run, and whether this gateway is the one stepping (the others read its batches).
    pub(super) steps: AtomicU64,
    pub(super) stepping: AtomicBool,
    /// Rows of the log with ids the sequence never issued: as the probe last counted them, and how many
    /// have appeared in all (each skipped).
    beyond_sequence: AtomicU64,
    skipped_beyond_sequence: AtomicU64,
    /// Rows whose payload is not UTF-8 (only a `SQL_ASCII` database stores such text), each skipped.
    pub(super) undecodable: AtomicU64,
    /// `pg_notification_queue_usage()` as f64 bits, from the last liveness probe.
    pub(super) queue_usage: AtomicU64,
    /// Events committed but not yet sequenced, and the oldest one's age in seconds (f64 bits), from the
    /// last probe.
    pub(super) pending: AtomicU64,
    pub(super) oldest_pending: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Seconds from an event's commit to its broadcast, both read on the database's clock.
    pub(super) lag: Histogram,
}

impl Default for ListenerStatus {
    fn default() -> Self {
        Self {
            up: AtomicBool::new(false),
            polling: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            events: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            stepping: AtomicBool::new(false),
            beyond_sequence: AtomicU64::new(0),
            skipped_beyond_sequence: AtomicU64::new(0),
            undecodable: AtomicU64::new(0),
            queue_usage: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            oldest_pending: AtomicU64::new(0),
            last_error: Mutex::new(None),
            lag: Histogram::new(LAG_BUCKETS),
        }
    }
}

impl ListenerStatus {
    pub fn lag(&self) -> &Histogram {
        &self.lag
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn is_polling(&self) -> bool {
        self.polling.load(Ordering::Relaxed)
    }

    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Ordering::Relaxed)
    }

    pub fn failed_attempts(&self) -> u64 {
        self.failed_attempts.load(Ordering::Relaxed)
    }

    pub fn events_received(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }

    pub fn sequencing_steps(&self) -> u64 {
        self.steps.load(Ordering::Relaxed)
    }

    pub fn is_stepping(&self) -> bool {
        self.stepping.load(Ordering::Relaxed)
    }

    /// Rows of the log skipped because the sequence never issued their ids, since the gateway started.
    pub fn skipped_beyond_sequence(&self) -> u64 {
        self.skipped_beyond_sequence.load(Ordering::Relaxed)
    }

    /// Rows of the log skipped because their payload is not UTF-8, since the gateway started.
    pub fn skipped_undecodable(&self) -> u64 {
        self.undecodable.load(Ordering::Relaxed)
    }

    /// Records the probe's count of rows beyond the sequence, with an error whenever more appear.
    pub(super) fn saw_beyond_sequence(&self, rows: i64, max: Option<i64>) {
        let rows = rows.max(0) as u64;
        let before = self.beyond_sequence.swap(rows, Ordering::Relaxed);
        if rows > before {
            self.skipped_beyond_sequence.fetch_add(rows - before, Ordering::Relaxed);
            error!(
                rows,
                max_id = max,
                "skipping log rows whose ids the sequence never issued: pgsse did not write them; delete them"
            );
        }
    }

    pub fn notification_queue_usage(&self) -> f64 {
        f64::from_bits(self.queue_usage.load(Ordering::Relaxed))
    }

    /// Events committed but not yet in the log, as the last probe counted them.
    pub fn pending_events(&self) -> u64 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Seconds since the oldest of [`ListenerStatus::pending_events`] committed (0 when there is none).
    pub fn oldest_pending_seconds(&self) -> f64 {
        f64::from_bits(self.oldest_pending.load(Ordering::Relaxed))
    }

    pub(super) fn set_up(&self) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.polling.store(false, Ordering::Relaxed);
        self.up.store(true, Ordering::Release);
    }

    pub(super) fn set_down(&self, err: String) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(err);
        self.up.store(false, Ordering::Release);
    }
}
