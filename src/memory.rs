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
/// How long a storm may last before the heaps are trimmed anyway: churn that never calms (a busy gateway's
/// short requests, or a client that keeps connecting) would otherwise keep a storm's memory for good.
const LONGEST: Duration = Duration::from_secs(5);
/// After a trim, none for this many times as long as it took. A trim takes about as long as the memory it
/// gives back, and holds each heap's lock while it walks it (docs/performance.md: 0.6-12 ms after 19,000
/// streams, up to 154 ms after a storm of unfinished 60 KB request heads); however clients open and close
/// connections, trims then hold the heaps at most 1% of the time.
const REST: u32 = 100;

/// Counts places taken and given back under the limits, and trims the heaps once enough have come and gone
/// and the churn has calmed (or has lasted [`LONGEST`]).
#[derive(Default)]
pub struct Scavenger {
    churn: AtomicU64,
    /// The churn's count when the heaps were last trimmed.
    trimmed_at: AtomicU64,
    wake: Notify,
    trims: AtomicU64,
}

impl Scavenger {
    /// Counts one place under the limits taken or given back (a connection, a stream, a history request).
    pub fn churned(&self) {
        let count = self.churn.fetch_add(1, Ordering::Relaxed) + 1;
        // A trim may record a count above this one between the two loads: no wake is owed for it then.
        if count.checked_sub(self.trimmed_at.load(Ordering::Relaxed)).is_some_and(|n| n % CHURN == 0) {
            self.wake.notify_one();
        }
    }

    /// How many times the heaps were trimmed.
    pub fn trims(&self) -> u64 {
        self.trims.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub fn count(&self) -> u64 {
        self.churn.load(Ordering::Relaxed)
    }

    /// Trims with `trim` (run on a blocking thread) after each storm, until `shutdown` completes.
    pub async fn run(self: Arc<Self>, trim: fn() -> bool, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut rested = Instant::now();
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
            // A wake stored while the last storm was awaited may come from churn its trim covered.
            if seen - self.trimmed_at.load(Ordering::Relaxed) < CHURN {
                continue;
            }
            self.trimmed_at.store(seen, Ordering::Relaxed);
            // Timed on the clock the heaps' locks are held by, whatever tokio's says, and without the wait
            // for a blocking thread, which holds no lock.
            let timed = move || {
                let started = std::time::Instant::now();
                (trim(), started.elapsed())
            };
            let (returned, took) = tokio::task::spawn_blocking(timed).await.unwrap_or_default();
            self.trims.fetch_add(1, Ordering::Relaxed);
            rested = Instant::now() + took * REST;
            debug!(churn = seen, returned, ?took, "trimmed the heaps after a storm of connections");
        }
    }

    /// Waits for a window with fewer than [`CALM`] places taken or given back, or [`LONGEST`]; the churn's
    /// count then.
    async fn calm(&self) -> u64 {
        let longest = Instant::now() + LONGEST;
        let mut seen = self.churn.load(Ordering::Relaxed);
        loop {
            sleep(QUIET).await;
            let now = self.churn.load(Ordering::Relaxed);
            if now - seen < CALM || Instant::now() >= longest {
                return now;
            }
            seen = now;
        }
    }
}

/// Gives glibc's free pages back to the system, and says whether there were any. Other allocators give
/// memory back on their own, or have no call for it: nothing runs then.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub const TRIM: Option<fn() -> bool> = Some(|| {
    // SAFETY: malloc_trim takes each arena's lock itself, and may be called from any thread at any time.
    unsafe { libc::malloc_trim(0) == 1 }
});
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub const TRIM: Option<fn() -> bool> = None;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// When each trim began, on tokio's (paused) clock, and how long it took on the real one.
    static TRIMS: Mutex<Vec<(Instant, Duration)>> = Mutex::new(Vec::new());
    /// What a trim takes at least, in real time, so the rest after it is at least 2 s: far longer than the
    /// two windows in which a storm that calms is trimmed.
    const TAKES: Duration = Duration::from_millis(20);

    fn timed() -> bool {
        let (at, started) = (Instant::now(), std::time::Instant::now());
        std::thread::sleep(TAKES);
        TRIMS.lock().unwrap().push((at, started.elapsed()));
        true
    }

    fn trims() -> Vec<(Instant, Duration)> {
        TRIMS.lock().unwrap().clone()
    }

    /// The trims once there are `n`, waiting up to a bound: a trim runs on a blocking thread, and tokio's
    /// clock stands still while it does.
    async fn until_trimmed(n: usize) -> Vec<(Instant, Duration)> {
        let waited = Instant::now();
        while trims().len() < n && waited.elapsed() < Duration::from_secs(60) {
            sleep(QUIET / 4).await;
        }
        trims()
    }

    /// Waits until the rest after the last trim is over.
    async fn rested() {
        let (at, took) = *trims().last().unwrap();
        sleep_until(at + took * REST + QUIET).await;
    }

    /// Places taken and given back: `n` connections opened and closed, every half window for `windows`
    /// windows, so that every window holds at least `2n` whatever its phase.
    async fn steady(scavenger: &Scavenger, n: usize, windows: u32) {
        for _ in 0..windows * 2 {
            (0..n * 2).for_each(|_| scavenger.churned());
            sleep(QUIET / 2).await;
        }
    }

    /// One test, so the record of trims is this test's alone.
    #[tokio::test(start_paused = true)]
    async fn trims_after_a_storm_that_calms_or_lasts_and_rests_after_each_trim() {
        let scavenger = Arc::new(Scavenger::default());
        let stop = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(scavenger.clone().run(timed, stop.clone().cancelled_owned()));
        let churn = |n| (0..n).for_each(|_| scavenger.churned());

        churn(999);
        sleep(QUIET * 5).await;
        assert_eq!(trims().len(), 0, "999 places are no storm");

        steady(&scavenger, 50, 10).await;
        assert_eq!(trims().len(), 0, "no trim while the churn goes on, for less than {LONGEST:?}");
        let calmed = Instant::now();
        assert_eq!(until_trimmed(1).await.len(), 1, "one trim once the churn calms");
        assert!(calmed.elapsed() <= QUIET * 2, "the trim came {:?} after the churn calmed", calmed.elapsed());

        rested().await;
        assert_ne!(scavenger.count() % CHURN, 0, "the trim's count is not a multiple, so 1,000 more are not");
        churn(999);
        sleep(QUIET * 5).await;
        assert_eq!(trims().len(), 1, "999 since the trim are not enough for another");
        churn(1);
        assert_eq!(until_trimmed(2).await.len(), 2, "the 1,000th since the trim is");

        churn(1_000);
        let trims = until_trimmed(3).await;
        assert_eq!(trims.len(), 3, "a storm right after a trim is trimmed too");
        let ((second, took), (third, _)) = (trims[1], trims[2]);
        assert!(
            third - second >= took * REST,
            "a trim that took {took:?} was followed by another {:?} later",
            third - second
        );

        rested().await;
        let started = Instant::now();
        steady(&scavenger, 300, 40).await;
        let trims = until_trimmed(4).await;
        assert_eq!(trims.len(), 4, "churn that never calms is trimmed too");
        let after = trims[3].0 - started;
        assert!(after <= LONGEST + QUIET * 2, "trimmed {after:?} into churn that never calmed");

        stop.cancel();
        task.await.unwrap();
    }
}
