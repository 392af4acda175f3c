//! How long an HTTP/2 connection has had no request open: hyper keeps one that only answers pings alive
//! forever, so a client could hold connections (and the gateway's places for them) doing nothing.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;

/// Requests of one connection that are being answered: from the service call until the response body
/// is done with (written, or dropped with a reset stream).
#[derive(Default)]
pub(super) struct Active {
    open: AtomicUsize,
    changed: Notify,
}

impl Active {
    pub(super) fn enter(self: &Arc<Self>) -> Guard {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.changed.notify_waiters();
        Guard(self.clone())
    }

    /// Returns once no request has been open for `limit` at a stretch.
    pub(super) async fn idle_for(&self, limit: Duration) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            // Registered before the count is read, so a change in between is not missed.
            changed.as_mut().enable();
            if self.open.load(Ordering::Acquire) > 0 {
                changed.await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(limit) => return,
                _ = changed => {}
            }
        }
    }
}

/// One open request; dropping it closes it.
pub(super) struct Guard(Arc<Active>);

impl Drop for Guard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
        self.0.changed.notify_waiters();
    }
}

/// A response body that keeps its request open until the body is done with.
pub(super) struct Tracked<B> {
    pub(super) body: B,
    pub(super) _guard: Guard,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_only_after_the_last_request_closes_and_the_limit_passes() {
        let active = Arc::new(Active::default());
        let limit = Duration::from_secs(10);
        let guard = active.enter();
        let started = tokio::time::Instant::now();
        let watcher = {
            let active = active.clone();
            tokio::spawn(async move { active.idle_for(limit).await })
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(!watcher.is_finished(), "a request is open");
        drop(guard);
        watcher.await.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(40));
    }
}
