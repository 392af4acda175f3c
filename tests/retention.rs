//! Retention: old events are pruned as a prefix of the log by whichever gateway gets the lock, and a
//! client resuming from a pruned id is told with a `reset` event where its history continues.

mod common;

use common::{wait_for, Gateway, SseStream, TestDb};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_events_are_pruned_and_resuming_from_them_gets_a_reset() {
    let TestDb { url, admin, app } = TestDb::messages("").await;
    for i in 1..=5 {
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("b{i}")]).await.unwrap();
    }
    common::sequence_staged(&admin).await;
    let ids: Vec<i64> =
        admin.query("SELECT id FROM pgsse.events ORDER BY id", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    // The first three are two days old, and so is the last; but the last comes after b4, which is recent,
    // and pruning takes only a prefix of the log, so it stays.
    admin
        .execute(
            "UPDATE pgsse.events SET created_at = now() - interval '2 days' WHERE id <= $1 OR id = $2",
            &[&ids[2], &ids[4]],
        )
        .await
        .unwrap();
    let mut config = common::gateway_config(&url);
    config.retention.prune_interval = std::time::Duration::from_millis(100);
    let gw = Gateway::start_with(config.clone()).await;
    let _second = Gateway::start_with(config).await;

    wait_for("the old prefix pruned", || async {
        let row =
            admin.query_one("SELECT count(*), (SELECT pruned_through FROM pgsse.meta) FROM pgsse.events", &[]).await;
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

#[tokio::test]
async fn retention_by_count_keeps_each_channels_newest_and_resets_only_where_it_pruned() {
    let TestDb { url, admin, app } = TestDb::messages("").await;
    admin.batch_execute("SELECT pgsse.create_channel('alerts')").await.unwrap();
    let mut ids = std::collections::HashMap::new();
    for name in ["a1", "m1", "m2", "m3", "a2", "m4", "m5"] {
        let written = match name.starts_with('a') {
            true => {
                admin
                    .execute("SELECT pgsse.publish('alerts', 'alert', jsonb_build_object('body', $1::text))", &[&name])
                    .await
            }
            false => app.execute("INSERT INTO messages (body) VALUES ($1)", &[&name]).await,
        };
        written.unwrap();
        common::sequence_staged(&admin).await;
        ids.insert(name, admin.query_one("SELECT max(id) FROM pgsse.events", &[]).await.unwrap().get::<_, i64>(0));
    }
    // Below the database's floor, which the gateway's login cannot lower; pgsse's admin can.
    admin.batch_execute("UPDATE pgsse.meta SET min_events = 3").await.unwrap();
    let gw = Gateway::start_configured(&url, |c| {
        c.retention.retention_events = Some(3);
        c.retention.prune_interval = std::time::Duration::from_millis(100);
    })
    .await;

    wait_for("messages cut to their newest three", || async {
        let row = admin.query_one("SELECT pruned_through FROM pgsse.channels WHERE name = 'messages'", &[]).await;
        row.is_ok_and(|r| r.get::<_, i64>(0) == ids["m2"])
    })
    .await;
    let left: Vec<String> = admin
        .query("SELECT payload->>'body' FROM pgsse.events ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(left, ["a1", "m3", "a2", "m4", "m5"], "alerts has only two, so it keeps both");

    let bodies = |events: &[common::Event]| -> Vec<String> {
        events.iter().map(|e| e.json()["body"].as_str().unwrap_or(&e.event).to_string()).collect()
    };
    let mut alerts = SseStream::ok(gw.addr, "/alerts/events", &[("last-event-id", "0")]).await;
    assert_eq!(bodies(&alerts.take(2).await), ["a1", "a2"], "no reset where nothing was pruned");

    let mut messages = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", "0")]).await;
    let reset = messages.expect().await;
    assert_eq!((reset.event.as_str(), reset.json()), ("reset", json!({"from": ids["m2"], "reason": "pruned"})));
    assert_eq!(bodies(&messages.take(3).await), ["m3", "m4", "m5"]);

    // A stream on both continues after the highest watermark among its channels: it was told to resync.
    let both = "/events?channel=alerts&channel=messages";
    let mut both = SseStream::ok(gw.addr, both, &[("last-event-id", "0")]).await;
    assert_eq!(both.expect().await.json(), json!({"from": ids["m2"], "reason": "pruned"}));
    assert_eq!(bodies(&both.take(4).await), ["m3", "a2", "m4", "m5"]);
}
