//! The retention job: every interval, prune events older than `--retention` in small batches (short
//! transactions, short locks). Gateways coordinate through an advisory lock inside `pgsse.prune`.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::store::Store;

/// Rows per prune transaction.
const BATCH: i32 = 5_000;
/// Pause between batches, so a large backlog does not monopolise the database.
const BATCH_PAUSE: Duration = Duration::from_millis(50);

pub async fn run(store: &Store, retention: Duration, interval: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let mut total = 0;
        loop {
            match store.prune(retention, BATCH).await {
                Ok(n) => {
                    total += n;
                    if n < i64::from(BATCH) {
                        break;
                    }
                }
                Err(err) => {
                    warn!(cause = %err, "pruning the event log failed; trying again next interval");
                    break;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(BATCH_PAUSE) => {}
                _ = shutdown.cancelled() => return,
            }
        }
        if total > 0 {
            info!(events = total, "pruned the event log");
        } else {
            debug!("nothing to prune");
        }
    }
}
