//! Reads that concurrent callers share: a caller takes the outcome of a read that began after it arrived
//! (which saw everything committed before it asked), or makes the read itself while later callers wait
//! for it. A storm of identical requests then costs a read per wave, not one per request.

use tokio::sync::{Mutex, MutexGuard};
use tokio::time::Instant;

/// The latest read and when it began.
pub struct SharedRead<T> {
    last: Mutex<Option<(Instant, T)>>,
}

impl<T> Default for SharedRead<T> {
    fn default() -> Self {
        Self { last: Mutex::new(None) }
    }
}

/// A caller's turn at the read: it holds the read until it has set what it read, or gives its turn up.
pub struct Turn<'a, T> {
    last: MutexGuard<'a, Option<(Instant, T)>>,
    asked: Instant,
}

impl<T> SharedRead<T> {
    /// Waits for the turn of a caller that arrived at `asked` (before it waited).
    pub async fn turn(&self, asked: Instant) -> Turn<'_, T> {
        Turn { last: self.last.lock().await, asked }
    }
}

impl<T> Turn<'_, T> {
    /// The outcome of a read that began at or after the caller arrived, if there is one.
    pub fn shared(&self) -> Option<&T> {
        self.last.as_ref().filter(|(began, _)| *began >= self.asked).map(|(_, value)| value)
    }

    /// Records what a read that began at `began` gave, for the callers waiting behind this one.
    pub fn set(&mut self, began: Instant, value: T) {
        *self.last = Some((began, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn callers_that_arrive_during_a_read_wait_for_the_next_and_share_it() {
        let shared = Arc::new(SharedRead::<u32>::default());
        let reads = Arc::new(AtomicU32::new(0));
        let read = |shared: Arc<SharedRead<u32>>, reads: Arc<AtomicU32>| async move {
            let mut turn = shared.turn(Instant::now()).await;
            if let Some(value) = turn.shared() {
                return *value;
            }
            let began = Instant::now();
            tokio::time::sleep(Duration::from_millis(10)).await;
            let value = reads.fetch_add(1, Ordering::SeqCst) + 1;
            turn.set(began, value);
            value
        };
        let first = tokio::spawn(read(shared.clone(), reads.clone()));
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Arrived while the first read ran: it may have missed their commits, so they share the next.
        let waves: Vec<_> = (0..5).map(|_| tokio::spawn(read(shared.clone(), reads.clone()))).collect();
        assert_eq!(first.await.unwrap(), 1);
        for wave in waves {
            assert_eq!(wave.await.unwrap(), 2, "one read for every caller that arrived during the first");
        }
        assert_eq!(reads.load(Ordering::SeqCst), 2);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(read(shared, reads).await, 3, "a later caller reads again");
    }
}
