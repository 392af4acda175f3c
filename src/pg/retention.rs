//! The retention job: every interval, prune events older than `--retention` and beyond the newest
//! `--retention-events` of each channel, in small batches (short transactions, short locks). Gateways
//! coordinate through a row lock on `pgsse.meta` inside the SQL functions (a lock no outside role can take).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::pg::store::{Store, StoreError};

/// Rows per prune transaction.
const BATCH: i32 = 5_000;
/// Pause between batches, so a large backlog does not monopolise the database.
const BATCH_PAUSE: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy)]
pub enum Rule {
    OlderThan(Duration),
    BeyondPerChannel(i64),
}

impl Rule {
    async fn prune(self, store: &Store) -> Result<i64, StoreError> {
        match self {
            Rule::OlderThan(age) => store.prune_older_than(age, BATCH).await,
            Rule::BeyondPerChannel(keep) => store.prune_beyond(keep, BATCH).await,
        }
    }
}

pub async fn run(store: &Store, rules: Vec<Rule>, interval: Duration, shutdown: CancellationToken) {
    if rules.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        for &rule in &rules {
            let mut total = 0;
            loop {
                match rule.prune(store).await {
                    Ok(n) => {
                        total += n;
                        if n < i64::from(BATCH) {
                            break;
                        }
                    }
                    Err(err) => {
                        warn!(cause = %err, ?rule, "pruning the event log failed; trying again next interval");
                        break;
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(BATCH_PAUSE) => {}
                    _ = shutdown.cancelled() => return,
                }
            }
            if total > 0 {
                info!(events = total, ?rule, "pruned the event log");
            } else {
                debug!(?rule, "nothing to prune");
            }
        }
    }
}
