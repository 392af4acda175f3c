//! Failures between the gateway and PostgreSQL: a database crash and restart under write load, a
//! restarted gateway, a killed LISTEN connection, and a log that goes backwards (restore from backup).

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use common::{
    connect, log_of, messages_table, private_cluster, received, wait_for, Fixture, Follower, Gateway, SseStream, TestDb,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crash_and_restart_under_writes_delivers_every_committed_event_once() {
    let cluster = private_cluster();
    let TestDb { url, admin, .. } = TestDb::on(&cluster.url("postgres")).await;
    messages_table(&admin, "").await;
    let gw = Gateway::start_configured(&url, |c| {
        c.listener.probe_interval = std::time::Duration::from_millis(500);
    })
    .await;
    let follower = Follower::start(gw.addr, "/messages/events?last_event_id=0");

    // A writer that inserts without pause and reconnects whenever the database goes away.
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = {
        let (url, stop, committed) = (url.clone(), stop.clone(), committed.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            let mut pace = tokio::time::interval(std::time::Duration::from_millis(20));
            while !stop.load(Ordering::Relaxed) {
                let app = common::as_role(&url, common::WRITER_ROLE);
                let Ok((app, conn)) = tokio_postgres::connect(&app, tokio_postgres::NoTls).await else {
                    pace.tick().await;
                    continue;
                };
                tokio::spawn(conn);
                while !stop.load(Ordering::Relaxed) {
                    n += 1;
                    if app.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("w{n}")]).await.is_err() {
                        break;
                    }
                    committed.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    wait_for("events before the crash", || async { follower.count() >= 50 }).await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop("immediate").expect("immediate stop");
        cluster
    })
    .await
    .unwrap();
    let before_restart = committed.load(Ordering::Relaxed);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start().expect("restart");
        cluster
    })
    .await
    .unwrap();
    wait_for("writes after the restart", || async { committed.load(Ordering::Relaxed) >= before_restart + 200 }).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    // The crash closed `admin`.
    common::wait_sequenced(&connect(&url).await).await;
    let log = log_of(&connect(&url).await).await;
    // A commit whose answer the crash took may be in the log without having been counted.
    assert!(log.len() as u64 >= committed.load(Ordering::Relaxed), "every acknowledged write in the log");
    let head = log.last().unwrap().0;
    wait_for("follower caught up with the log", || async { follower.last_id() >= Some(head) }).await;
    let got = received(&follower);
    assert_eq!(got.len(), log.len(), "as many deliveries as committed events");
    assert_eq!(got, log, "every committed event exactly once, in id order");
    drop(cluster);
}

#[tokio::test]
async fn a_restarted_gateway_serves_what_was_written_while_it_was_down() {
    let Fixture { url, app, gw, .. } = Fixture::messages("").await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    app.execute("INSERT INTO messages (body) VALUES ('before')", &[]).await.unwrap();
    let seen = stream.expect().await;
    gw.shutdown().await;
    assert!(stream.next().await.is_none(), "stream ended by shutdown");

    for body in ["while down 1", "while down 2"] {
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&body]).await.unwrap();
    }
    let gw = Gateway::start(&url).await;
    let mut resumed = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", &seen.id().to_string())]).await;
    let got = resumed.take(2).await;
    assert_eq!(
        (got[0].json()["body"].clone(), got[1].json()["body"].clone()),
        (json!("while down 1"), json!("while down 2"))
    );
    app.execute("INSERT INTO messages (body) VALUES ('live again')", &[]).await.unwrap();
    assert_eq!(resumed.expect().await.json()["body"], "live again");
}

#[tokio::test]
async fn a_killed_listen_connection_reconnects_relistens_and_catches_up() {
    let TestDb { url, admin, app } = TestDb::messages("").await;
    let (config, role) = common::own_listener_role(&admin, &url).await;
    let gw = Gateway::start_with(config).await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;

    // Killed, and kept from logging in again until the write below has committed: only the catch-up after
    // reconnecting can deliver it.
    admin.batch_execute(&format!("ALTER ROLE {role} NOLOGIN")).await.unwrap();
    let killed: i64 = admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pgsse-listener' \
             AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1, "exactly one LISTEN connection");
    common::wait_for("the listener to be down", || async {
        common::get(gw.addr, "/healthz", &[]).await.is_ok_and(|r| r.status == 503)
    })
    .await;
    app.execute("INSERT INTO messages (body) VALUES ('during reconnect')", &[]).await.unwrap();
    admin.batch_execute(&format!("ALTER ROLE {role} LOGIN")).await.unwrap();
    assert_eq!(stream.expect().await.json()["body"], "during reconnect");
    gw.wait_healthy().await;
    app.execute("INSERT INTO messages (body) VALUES ('after reconnect')", &[]).await.unwrap();
    assert_eq!(stream.expect().await.json()["body"], "after reconnect");
}

#[tokio::test]
async fn a_log_that_went_backwards_restarts_streams_with_a_reset() {
    let Fixture { admin, app, gw, .. } = Fixture::messages("").await;
    let mut first = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    for i in 1..=5 {
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("old{i}")]).await.unwrap();
    }
    let seen = first.take(5).await;
    let last_seen = seen[4].id();
    let follower = Follower::start(gw.addr, &format!("/messages/events?last_event_id={}", seen[3].id()));
    wait_for("follower replayed the last event", || async { follower.last_id() == Some(last_seen) }).await;

    // What a restore from an older backup looks like to the gateway: the newest events and ids are gone.
    admin
        .batch_execute(&format!(
            "DELETE FROM pgsse.events WHERE id > {keep}; ALTER SEQUENCE pgsse.event_id_seq RESTART WITH {next};
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgsse-listener'
         AND datname = current_database();",
            keep = seen[1].id(),
            next = seen[1].id() + 1
        ))
        .await
        .unwrap();
    assert!(first.next().await.is_none(), "live streams are ended so their clients resume");
    gw.wait_healthy().await;

    let mut resumed = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", &last_seen.to_string())]).await;
    let reset = resumed.expect().await;
    assert_eq!(reset.event, "reset");
    assert_eq!(reset.json(), json!({"from": seen[1].id(), "reason": "unknown_id"}));
    app.execute("INSERT INTO messages (body) VALUES ('new history')", &[]).await.unwrap();
    let next = resumed.expect().await;
    assert_eq!((next.id(), next.json()["body"].clone()), (seen[1].id() + 1, json!("new history")));
    wait_for("the reconnecting client gets the reset and the new event too", || async { follower.count() == 3 }).await;
    let events: Vec<(String, i64)> = follower.events().iter().map(|e| (e.event.clone(), e.id())).collect();
    assert_eq!(events[1..], [("reset".to_string(), seen[1].id()), ("insert".to_string(), seen[1].id() + 1)]);
    assert!(follower.reconnects() >= 1);
}

/// Cuts the listener's connection so it cannot come back.
async fn lock_out_listener(admin: &tokio_postgres::Client, role: &str) {
    admin
        .batch_execute(&format!(
        "ALTER ROLE {role} NOLOGIN; SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}';"
    ))
        .await
        .unwrap();
}

#[tokio::test]
async fn a_new_stream_starts_at_the_databases_present_even_while_the_listener_lags() {
    let TestDb { url, admin, app } = TestDb::messages("").await;
    let (config, role) = common::own_listener_role(&admin, &url).await;
    let gw = Gateway::start_with(config).await;

    // Opened before the event below: the gateway has read the log's head once already.
    let mut early = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    // The LISTEN connection is cut and cannot come back, so this event is in the log but not broadcast.
    lock_out_listener(&admin, &role).await;
    app.execute("INSERT INTO messages (body) VALUES ('before the stream')", &[]).await.unwrap();
    common::sequence_staged(&admin).await;
    // Opened together, so they share reads of the head; none may use a read older than its request.
    let opening: Vec<_> = (0..20).map(|_| tokio::spawn(SseStream::ok(gw.addr, "/messages/events", &[]))).collect();
    let mut streams = Vec::new();
    for stream in opening {
        streams.push(stream.await.unwrap());
    }
    admin.batch_execute(&format!("ALTER ROLE {role} LOGIN")).await.unwrap();
    gw.wait_healthy().await;
    app.execute("INSERT INTO messages (body) VALUES ('after the stream')", &[]).await.unwrap();
    for stream in &mut streams {
        assert_eq!(stream.expect().await.json()["body"], "after the stream", "nothing from before the request");
    }
    assert_eq!(early.expect().await.json()["body"], "before the stream", "the earlier stream misses nothing");
}

#[tokio::test]
async fn catching_up_after_an_outage_does_not_cut_streams_that_keep_up() {
    let TestDb { url, admin, app } = TestDb::messages("").await;
    let (mut config, role) = common::own_listener_role(&admin, &url).await;
    config.streams.queue_capacity = 16;
    let gw = Gateway::start_with(config).await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    app.execute("INSERT INTO messages (body) VALUES ('warmup')", &[]).await.unwrap();
    assert_eq!(stream.expect().await.json()["body"], "warmup");

    // Ten queues' worth of events commit while the listener is away.
    lock_out_listener(&admin, &role).await;
    app.execute("INSERT INTO messages (body) SELECT 'missed ' || n FROM generate_series(1, 160) n", &[]).await.unwrap();
    admin.batch_execute(&format!("ALTER ROLE {role} LOGIN")).await.unwrap();
    let bodies: Vec<String> =
        stream.take(160).await.iter().map(|e| e.json()["body"].as_str().unwrap().to_string()).collect();
    assert_eq!(bodies, (1..=160).map(|n| format!("missed {n}")).collect::<Vec<_>>(), "on the same stream");
}

#[tokio::test]
async fn under_a_flood_of_commits_the_listener_reads_on_the_clock_and_listens_again_after() {
    let Fixture { url, app, gw, .. } = Fixture::messages("").await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    let polling = || common::metric(gw.addr, "pgsse_listener_polling");
    let metrics = common::get(gw.addr, "/metrics", &[]).await.unwrap().body;
    assert!(metrics.lines().any(|l| l == "pgsse_listener_polling 0"), "{metrics}");

    // 100 rows a commit, a commit every few milliseconds: well over 2,000 events/s for most of a second.
    let writer = {
        let url = url.clone();
        tokio::spawn(async move {
            let app = common::writer(&url).await;
            for batch in 0..60 {
                app.execute(
                    "INSERT INTO messages (body) SELECT $1 || '.' || n FROM generate_series(1, 100) n",
                    &[&batch.to_string()],
                )
                .await
                .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    wait_for("the listener polls", || async { polling().await == 1 }).await;
    let bodies: Vec<String> =
        stream.take(6000).await.iter().map(|e| e.json()["body"].as_str().unwrap().to_string()).collect();
    let expected: Vec<String> = (0..60).flat_map(|b| (1..=100).map(move |n| format!("{b}.{n}"))).collect();
    assert_eq!(bodies, expected, "every event once, in order, across the switch");
    writer.await.unwrap();

    wait_for("the listener listens again", || async { polling().await == 0 }).await;
    app.execute("INSERT INTO messages (body) VALUES ('quiet')", &[]).await.unwrap();
    assert_eq!(stream.expect().await.json()["body"], "quiet");
}

#[tokio::test]
async fn a_client_resuming_while_the_database_is_down_is_answered_and_caught_up_later() {
    let cluster = private_cluster();
    let TestDb { url, admin, app } = TestDb::on(&cluster.url("postgres")).await;
    messages_table(&admin, "").await;
    for body in ["seen", "missed"] {
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&body]).await.unwrap();
    }
    drop((admin, app));
    let gw = Gateway::start(&url).await;
    let mut first = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", "0")]).await;
    assert_eq!(first.expect().await.json()["body"], "seen");
    drop(first);
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.stop("fast").expect("stop");
        cluster
    })
    .await
    .unwrap();

    // EventSource gives up for good on an error status, so the gateway must answer 200 and wait.
    let mut resumed = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", "1")]).await;
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.start().expect("restart");
        cluster
    })
    .await
    .unwrap();
    assert_eq!(resumed.expect().await.json()["body"], "missed");
    common::writer(&url).await.execute("INSERT INTO messages (body) VALUES ('after')", &[]).await.unwrap();
    assert_eq!(resumed.expect().await.json()["body"], "after");
    drop(cluster);
}

#[tokio::test]
async fn a_log_row_with_an_id_the_sequence_never_issued_is_skipped_and_stalls_nothing() {
    let TestDb { url, admin, app } = TestDb::messages("").await;
    let gw = Gateway::start_configured(&url, |c| {
        c.listener.probe_interval = std::time::Duration::from_millis(200);
    })
    .await;
    let mut live = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    app.execute("INSERT INTO messages (body) VALUES ('before')", &[]).await.unwrap();
    let before = live.expect().await;

    // Only pgsse's owner may write the log; one that gets it wrong must not stop delivery.
    admin
        .batch_execute("INSERT INTO pgsse.events (id, channel, event, payload) VALUES (9000000000000000000, 'messages', 'insert', '{\"forged\": true}')")
        .await
        .unwrap();
    wait_for("the forged row is counted as skipped", || async {
        common::metric(gw.addr, "pgsse_events_skipped_total{reason=\"beyond_sequence\"}").await == 1
    })
    .await;
    app.execute("INSERT INTO messages (body) VALUES ('after')", &[]).await.unwrap();
    assert_eq!(live.expect().await.json()["body"], "after", "live streams go on");
    let fresh_from = before.id().to_string();
    let mut resumed = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", &fresh_from)]).await;
    assert_eq!(resumed.expect().await.json()["body"], "after", "replay skips it too");
    let mut fresh = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    let health = common::get(gw.addr, "/healthz", &[]).await.unwrap().json();
    assert!(health["last_event_id"].as_i64().unwrap() < 1000, "{health}");

    admin.batch_execute("DELETE FROM pgsse.events WHERE id = 9000000000000000000").await.unwrap();
    app.execute("INSERT INTO messages (body) VALUES ('later')", &[]).await.unwrap();
    for stream in [&mut live, &mut resumed, &mut fresh] {
        assert_eq!(stream.expect().await.json()["body"], "later");
    }
    assert!(!live.raw.windows(6).any(|w| w == b"forged"), "the forged row never reached a stream");
}

#[tokio::test]
async fn a_row_that_is_not_utf8_is_skipped_and_stops_nothing() {
    // SQL_ASCII stores any bytes as text, so a legacy app can write Latin-1 into a published table.
    let db = TestDb::created_with("ENCODING SQL_ASCII TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'").await;
    let TestDb { url, admin, app } = db;
    common::messages_table(&admin, "").await;
    let gw = Gateway::start(&url).await;
    let mut live = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    app.batch_execute("INSERT INTO messages (body) VALUES ('before'), (E'caf\\xe9'), ('after')").await.unwrap();
    let bodies = |events: Vec<common::Event>| -> Vec<String> {
        events.iter().map(|e| e.json()["body"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(bodies(live.take(2).await), ["before", "after"]);
    assert_eq!(common::metric(gw.addr, "pgsse_events_skipped_total{reason=\"undecodable\"}").await, 1);
    let mut resumed = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", "0")]).await;
    assert_eq!(bodies(resumed.take(2).await), ["before", "after"], "replay skips it too");
    let history = common::get(gw.addr, "/messages", &[]).await.unwrap();
    assert_eq!(history.status, 200, "{}", history.body);
    assert_eq!(history.json().as_array().unwrap().len(), 2);
    let health = common::get(gw.addr, "/healthz", &[]).await.unwrap();
    assert_eq!(health.status, 200, "{}", health.body);
    app.execute("INSERT INTO messages (body) VALUES ('later')", &[]).await.unwrap();
    assert_eq!(bodies(live.take(1).await), ["later"]);
}
