//! Retention: old events are pruned as a prefix of the log by whichever gateway gets the lock, and a
//! client resuming from a pruned id is told with a `reset` event where its history continues.

mod common;

use common::{connect, fresh_db, messages_table, wait_for, Gateway, SseStream};
use pgsse::config::Config;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_events_are_pruned_and_resuming_from_them_gets_a_reset() {
    let url = fresh_db().await;
    let db = connect(&url).await;
    messages_table(&db, "").await;
    for i in 1..=5 {
        db.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("b{i}")]).await.unwrap();
    }
    let ids: Vec<i64> =
        db.query("SELECT id FROM pgsse.events ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    // The first three are two days old, and so is the last; but the last comes after b4, which is recent,
    // and pruning takes only a prefix of the log, so it stays.
    db.execute(
        "UPDATE pgsse.events SET created_at = now() - interval '2 days' WHERE id <= $1 OR id = $2",
        &[&ids[2], &ids[4]],
    )
    .await
    .unwrap();
    let mut config = Config::new(&url).unwrap();
    config.prune_interval = std::time::Duration::from_millis(100);
    let gw = Gateway::start_with(config.clone()).await;
    let _second = Gateway::start_with(config).await;

    wait_for("the old prefix pruned", || async {
        let row = db.query_one("SELECT count(*), (SELECT pruned_through FROM pgsse.meta) FROM pgsse.events", &[]).await;
        row.is_ok_and(|r| r.get::<_, i64>(0) == 2 && r.get::<_, i64>(1) == ids[2])
    })
    .await;

    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", &ids[0].to_string())]).await;
    let reset = stream.expect().await;
    assert_eq!((reset.event.as_str(), reset.json()), ("reset", json!({"from": ids[2], "reason": "pruned"})));
    let rest: Vec<String> =
        stream.take(2).await.iter().map(|e| e.json()["body"].as_str().unwrap().to_string()).collect();
    assert_eq!(rest, ["b4", "b5"]);
}
