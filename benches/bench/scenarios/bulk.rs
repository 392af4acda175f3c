//! `bulk`: one large transaction on one channel must not stall the others (issue 26). Each round commits
//! 50,000 rows to `bulk`, then one row to `bench`: how long until a `bench` stream has that row, and until
//! every bulk event is in the log, with `pgsse.staged` analyzed while empty, as autovacuum leaves it.

use std::time::{Duration, Instant};

use super::{Bench, Clients, Percentiles, Report};
use crate::gateway::Gateway;

const ROWS: i64 = 50_000;
const ROUNDS: usize = 3;
const OTHER_TARGET: Duration = Duration::from_secs(1);
const BULK_TARGET: Duration = Duration::from_secs(2);

impl Bench {
    pub(super) async fn bulk(&self) -> Report {
        self.db
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS bulk (id bigserial PRIMARY KEY, pad text NOT NULL);
                 SELECT pgsse.publish_table('bulk');",
            )
            .await
            .unwrap();
        self.db.batch_execute("VACUUM ANALYZE pgsse.staged").await.unwrap();
        let gw = Gateway::start(&self.gateway, &self.url, &[]);
        let t0 = Instant::now();
        let (mut other, mut whole) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let before = self.head().await;
            let clients = Clients::connect(gw.addr, 1, t0).await;
            self.db
                .execute("INSERT INTO bulk (pad) SELECT repeat('x', 100) FROM generate_series(1, $1::bigint)", &[&ROWS])
                .await
                .unwrap();
            let committed = Instant::now();
            let sent = t0.elapsed().as_micros() as i64;
            self.db.execute("INSERT INTO bench (sent, pad) VALUES ($1, 'after the bulk')", &[&sent]).await.unwrap();
            self.head().await;
            whole.push((committed.elapsed().as_micros()) as u32);
            let id: i64 = self
                .db
                .query_one(
                    "SELECT coalesce(max(id), 0) FROM pgsse.events WHERE channel = 'bench' AND id > $1",
                    &[&before],
                )
                .await
                .unwrap()
                .get(0);
            let seen = clients.drain(id).await;
            other.extend(seen.into_iter().flat_map(|s| s.latencies_us));
        }
        let other = Percentiles::of(other);
        let whole_p = Percentiles::of(whole.clone());
        let ok = |p: Option<Percentiles>, target: Duration| p.is_some_and(|p| p.max <= target.as_secs_f64() * 1000.0);
        Report {
            scenario: "bulk".into(),
            clients: 1,
            writers: 1,
            inserts: ROWS as u64 * ROUNDS as u64,
            latency_ms: other,
            note: format!(
                "{ROUNDS} rounds of one {ROWS}-row transaction on another channel, pgsse.staged analyzed while empty: \
                 a row committed just after it reached its stream in max {} ms (target < {} ms: {}); the bulk was \
                 all in the log {} ms after its commit, max (target < {} ms: {})",
                other.map_or("-".into(), |p| format!("{:.0}", p.max)),
                OTHER_TARGET.as_millis(),
                if ok(other, OTHER_TARGET) { "met" } else { "NOT met" },
                whole_p.map_or("-".into(), |p| format!("{:.0}", p.max)),
                BULK_TARGET.as_millis(),
                if ok(whole_p, BULK_TARGET) { "met" } else { "NOT met" },
            ),
            ..Report::default()
        }
    }
}
