//! The retention job: every interval, prune events older than `--retention` and beyond the newest
//! `--retention-events` of each channel, in small batches (short transactions, short locks). Gateways
//! coordinate through a row lock on `pgsse.meta` inside the SQL functions (a lock no outside role can take).

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::pg::error::StoreError;
use crate::pg::store::Store;

/// Rows per prune transaction.
const BATCH: i32 = 5_000;
/// Pause between batches, so a large backlog does not monopolise the database.
const BATCH_PAUSE: Duration = Duration::from_millis(50);

const DEFAULT_PRUNE_INTERVAL: &str = "1m";
const DEFAULT_RETENTION: &str = "24h";

/// How long the log keeps events, and how often it is pruned.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Retention")]
pub struct RetentionArgs {
    /// How long events stay in the log, or `off`; older ones are pruned (a client resuming from them gets
    /// `reset`).
    #[arg(long, env = "PGSSE_RETENTION", default_value = DEFAULT_RETENTION, value_parser = parse_retention)]
    pub retention: Retention,

    /// Also keep at most this many events per channel (the newest).
    #[arg(long, env = "PGSSE_RETENTION_EVENTS", value_parser = clap::value_parser!(i64).range(1..))]
    pub retention_events: Option<i64>,

    /// How often the retention job looks for old events.
    #[arg(long, env = "PGSSE_PRUNE_INTERVAL", default_value = DEFAULT_PRUNE_INTERVAL, value_parser = crate::parse::duration)]
    pub prune_interval: Duration,
}

/// `--retention`: a duration, or `off` to keep events for as long as nothing else prunes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

fn parse_retention(s: &str) -> Result<Retention, String> {
    match s.trim() {
        "off" => Ok(Retention(None)),
        other => crate::parse::duration(other).map(|d| Retention(Some(d))).map_err(|e| format!("{e}, or off")),
    }
}

#[derive(Debug, Clone, Copy)]
enum Rule {
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

pub async fn run(store: &Store, args: &RetentionArgs, shutdown: CancellationToken) {
    let rules: Vec<Rule> = args
        .retention
        .0
        .map(Rule::OlderThan)
        .into_iter()
        .chain(args.retention_events.map(Rule::BeyondPerChannel))
        .collect();
    if rules.is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(args.prune_interval);
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
