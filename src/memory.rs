//! Gives memory freed by a storm of connections back to the system once the storm has passed: glibc keeps
//! the pages of chunks freed inside its heaps, so a gateway would otherwise hold a reconnect storm's peak
//! RSS for good (docs/performance.md), and a container's limit counts it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::debug;

/// Places taken or given back since the last trim before one is worth its cost: a stream that opens and
/// closes counts four (its connection's place and its own), and leaves about 10 KB of freed buffers (the
/// request's read and write buffers, its parsing and routing).
const CHURN: u64 = 1_000;
/// A storm is over once a window this long passes with fewer than [`CALM`] places taken or given back.
const QUIET: Duration = Duration::from_millis(200);
const CALM: u64 = 50;
/// After a trim, none for this many times as long as it took: a trim holds each heap's lock while it walks
/// it (1-17 ms at 19,000 streams, docs/performance.md), so however clients open and close connections,
/// trims hold the heaps at most 1% of the time.
const REST: u32 = 100;

/// Counts places taken and given back under the limits, and trims the heaps once enough have come and gone
/// and the churn has calmed. Under steady churn it never trims: freed memory is being reused then.
pub struct Scavenger {
    churn: AtomicU64,
    wake: Notify,
}

impl Default for Scavenger {
    fn default() -> Self {
        Self { churn: AtomicU64::new(0), wake: Notify::new() }
    }
}

impl Scavenger {
    /// Counts one place under the limits taken or given back (a connection, a stream, a request).
    pub fn churned(&self) {
        if (self.churn.fetch_add(1, Ordering::Relaxed) + 1) % CHURN == 0 {
            self.wake.notify_one();
        }
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.churn.load(Ordering::Relaxed)
    }

    /// Trims with `trim` (run on a blocking thread) after each storm, until `shutdown` completes.
    pub async fn run(self: Arc<Self>, trim: fn() -> bool, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let (mut trimmed_at, mut rested) = (0, Instant::now());
        loop {
            let calm = async {
                self.wake.notified().await;
                sleep_until(rested).await;
                self.calm().await
            };
            let seen = tokio::select! {
                seen = calm => seen,
                () = &mut shutdown => return,
            };
            if seen - trimmed_at < CHURN {
                continue;
            }
            trimmed_at = seen;
            // Timed on the clock the heaps' locks are held by, whatever tokio's says.
            let started = std::time::Instant::now();
            let returned = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
            let took = started.elapsed();
            rested = Instant::now() + took * REST;
            debug!(churn = seen, returned, ?took, "trimmed the heaps after a storm of connections");
        }
    }

    /// Waits for a window with fewer than [`CALM`] places taken or given back; the churn's count then.
    async fn calm(&self) -> u64 {
        let mut seen = self.churn.load(Ordering::Relaxed);
        loop {
            sleep(QUIET).await;
            let now = self.churn.load(Ordering::Relaxed);
            if now - seen < CALM {
                return now;
            }
            seen = now;
        }
    }
}

/// Gives glibc's free pages back to the system; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn trim() -> bool {
    // SAFETY: malloc_trim takes each arena's lock itself, and may be called from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators give memory back on their own, or have no call for it.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// When each trim began, on tokio's (paused) clock.
    static TRIMS: Mutex<Vec<Instant>> = Mutex::new(Vec::new());
    /// What a trim takes in real time, so the rest after it is 100 times that: 2 s, where a trim without that
    /// rest would follow the first within 1.2 s here.
    const TAKES: Duration = Duration::from_millis(20);

    fn timed() -> bool {
        TRIMS.lock().unwrap().push(Instant::now());
        std::thread::sleep(TAKES);
        true
    }

    async fn settle() {
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
    }

    /// The trims once there are `n`, waiting up to a bound: a trim runs on a blocking thread, and the
    /// rest after it is timed on the real clock, which may run past TAKES. Tokio's clock stands still
    /// while a blocking task runs.
    async fn until_trimmed(n: usize) -> Vec<Instant> {
        let waited = Instant::now();
        while TRIMS.lock().unwrap().len() < n && waited.elapsed() < Duration::from_secs(60) {
            sleep(QUIET / 4).await;
        }
        TRIMS.lock().unwrap().clone()
    }

    /// One test, so the record of trims is this test's alone.
    #[tokio::test(start_paused = true)]
    async fn trims_after_a_storm_never_during_steady_churn_nor_after_a_few_places_nor_again_too_soon() {
        let scavenger = Arc::new(Scavenger::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(scavenger.clone().run(timed, stop.clone().cancelled_owned()));
        let trims = || TRIMS.lock().unwrap().clone();
        let open_and_close = || (0..2).for_each(|_| scavenger.churned());

        (0..999).for_each(|_| scavenger.churned());
        sleep(QUIET * 5).await;
        settle().await;
        assert_eq!(trims().len(), 0, "999 places are no storm");

        // Steady churn: 50 connections opened and closed every half window, so that every window holds at
        // least 100 (whatever its phase), for ten windows; then calm.
        for _ in 0..20 {
            (0..50).for_each(|_| open_and_close());
            sleep(QUIET / 2).await;
        }
        settle().await;
        assert_eq!(trims().len(), 0, "no trim while connections keep coming and going");
        let calmed = Instant::now();
        assert_eq!(until_trimmed(1).await.len(), 1, "one trim once the churn calms");
        assert!(calmed.elapsed() <= QUIET * 2, "the trim came {:?} after the churn calmed", calmed.elapsed());

        (0..999).for_each(|_| scavenger.churned());
        sleep(QUIET * 3).await;
        settle().await;
        assert_eq!(trims().len(), 1, "999 closes since the trim are not enough for another");

        open_and_close();
        let trims = until_trimmed(2).await;
        assert_eq!(trims.len(), 2, "1,001 since the trim are enough for another");
        let rest = trims[1] - trims[0];
        assert!(rest >= TAKES * REST, "a trim that took {TAKES:?} or more was followed by another {rest:?} later");

        stop.cancel();
        task.await.unwrap();
    }
}
