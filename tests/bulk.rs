//! One bulk transaction does not stall other channels, in the state production has `pgsse.staged` in: its
//! statistics say it is empty (a queue table after autovacuum), and again after a bulk load.
mod common;

use std::time::{Duration, Instant};

use common::{Fixture, SseStream};

const ROWS: i64 = 50_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_commit_delays_no_other_channel_and_reaches_the_log_whole() {
    let Fixture { admin, app, gw, .. } = Fixture::messages("").await;
    admin.batch_execute("SELECT pgsse.create_channel('pings')").await.unwrap();
    let mut pings = SseStream::ok(gw.addr, "/pings/events", &[]).await;
    for round in 0..2 {
        // Round 0: analyzed while empty; round 1: analyzed just after the first bulk load.
        admin.batch_execute("VACUUM ANALYZE pgsse.staged").await.unwrap();
        app.batch_execute(&format!(
            "INSERT INTO messages (body) SELECT 'bulk {round} ' || g FROM generate_series(1, {ROWS}) g"
        ))
        .await
        .unwrap();
        let committed = Instant::now();
        admin.batch_execute(&format!("SELECT pgsse.publish('pings', 'ping', '{{\"round\": {round}}}')")).await.unwrap();
        assert_eq!(pings.expect().await.json()["round"], round);
        let ping = committed.elapsed();
        common::wait_for("the bulk in the log", || async {
            let rows = "SELECT count(*) FROM pgsse.events WHERE channel = 'messages'";
            admin.query_one(rows, &[]).await.unwrap().get::<_, i64>(0) == ROWS * (round + 1)
        })
        .await;
        let whole = committed.elapsed();
        // Quadratic sequencing took 12-13 s for 20,000 rows here; linear takes well under a second.
        assert!(ping < Duration::from_secs(5), "round {round}: another channel's event took {ping:?}");
        assert!(whole < Duration::from_secs(5), "round {round}: the bulk took {whole:?} to reach the log");
    }
}
