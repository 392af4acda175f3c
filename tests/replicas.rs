//! Gateways on a hot standby (`--replica-database-url`), on real streaming replication started here: a
//! primary and a standby made with `pg_basebackup -R`, with `recovery_min_apply_delay` for real lag.
//! Every client gets every event once, in commit order, while writers write; a resume from an id the
//! standby has not replayed waits for it; a snapshot then live is exact; lag past the bound shows in
//! `/readyz`; the standby stopped and started again; a gateway that follows another reads each batch
//! announced once the standby holds it.

mod common;

use std::sync::OnceLock;
use std::time::Duration;

use common::{as_role, connect, get, received, wait_for, Follower, Gateway, SseStream, GATEWAY_ROLE, WRITER_ROLE};
use pgsse::demo::Cluster;
use pgsse::testing::{fresh_db_on, private_cluster, private_standby};

/// How far behind the shared standby replays: enough that a read after a commit finds it not yet there.
const DELAY: &str = "500ms";

struct Pair {
    /// The standby, where the test has one of its own (to stop and start it).
    own: Option<(Cluster, Cluster)>,
    /// The test database's URL on each.
    url: String,
    standby_url: String,
}

/// The standbys' settings: `DELAY` behind, and a query that conflicts with replay cancelled after a second
/// rather than PostgreSQL's 30 s. A query waiting for a lock that replay holds (the DDL of another
/// test's migrate) keeps a snapshot that the next cleanup record conflicts with: replay and the query would
/// wait on each other that long.
fn standby_settings() -> String {
    format!("recovery_min_apply_delay = '{DELAY}'\nmax_standby_streaming_delay = '1s'")
}

/// The primary and standby most tests share (each with a database of its own): making a pair costs
/// an initdb and a base backup.
fn shared() -> &'static (Cluster, Cluster) {
    static PAIR: OnceLock<(Cluster, Cluster)> = OnceLock::new();
    PAIR.get_or_init(|| {
        let primary = private_cluster();
        let standby = private_standby(&primary, &standby_settings());
        (primary, standby)
    })
}

/// A database on the shared pair, or on a pair of its own (`own`), with a published `messages` table
/// that the standby has already replayed.
async fn pair(own: bool) -> Pair {
    let own = own.then(|| {
        let primary = private_cluster();
        let standby = private_standby(&primary, &standby_settings());
        (primary, standby)
    });
    let (primary, standby) = match &own {
        Some((primary, standby)) => (primary, standby),
        None => {
            let (primary, standby) = shared();
            (primary, standby)
        }
    };
    let url = fresh_db_on(&primary.url("postgres"), "").await;
    connect(&url)
        .await
        .batch_execute(
            "CREATE TABLE messages (id bigserial PRIMARY KEY, body text NOT NULL);
             SELECT pgsse.publish_table('messages');",
        )
        .await
        .unwrap();
    let database = url.rsplit_once('/').unwrap().1.to_string();
    let standby_url = standby.url(&database);
    wait_for("the standby holds the published table", || {
        let url = standby_url.clone();
        async move {
            match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    client
                        .query_one("SELECT count(*) FROM pgsse.channels WHERE name = 'messages'", &[])
                        .await
                        .is_ok_and(|row| row.get::<_, i64>(0) == 1)
                }
                Err(_) => false,
            }
        }
    })
    .await;
    Pair { own, url, standby_url }
}

fn config(pair: &Pair, max_lag: Duration) -> pgsse::config::Config {
    let mut config = common::gateway_config(&pair.url);
    config.replica.replica_database_url = Some(as_role(&pair.standby_url, GATEWAY_ROLE));
    config.replica.replica_max_lag = max_lag;
    config
}

/// Each of `followers` has exactly the log of `messages` on the primary, once each in commit order, and
/// the gateway is ready.
async fn exact_and_ready(primary: &tokio_postgres::Client, followers: &[Follower], gw: &Gateway) {
    let log: Vec<i64> = primary
        .query("SELECT id FROM pgsse.events WHERE channel = 'messages' ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    for follower in followers {
        let ids: Vec<i64> = received(follower).iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, log, "each event once, in commit order");
    }
    let ready = get(gw.addr, "/readyz", &[]).await.unwrap();
    assert_eq!(ready.status, 200, "{}", ready.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_of_a_gateway_on_a_lagging_standby_get_every_event_once_in_order() {
    let pair = pair(false).await;
    let gw = Gateway::start_with(config(&pair, Duration::from_secs(10))).await;
    let followers: Vec<Follower> = (0..3).map(|_| Follower::start(gw.addr, "/messages/events")).collect();
    let app = connect(&as_role(&pair.url, WRITER_ROLE)).await;
    for n in 0..60 {
        app.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("m{n}")]).await.unwrap();
    }
    let primary = connect(&pair.url).await;
    common::wait_sequenced(&primary).await;
    wait_for("every follower has every event", || async { followers.iter().all(|f| received(f).len() >= 60) }).await;
    exact_and_ready(&primary, &followers, &gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_an_id_the_standby_has_not_replayed_waits_for_it() {
    let pair = pair(false).await;
    let gw = Gateway::start_with(config(&pair, Duration::from_secs(10))).await;
    let app = connect(&as_role(&pair.url, WRITER_ROLE)).await;
    app.execute("INSERT INTO messages (body) VALUES ('first'), ('second')", &[]).await.unwrap();
    let primary = connect(&pair.url).await;
    common::wait_sequenced(&primary).await;
    let first: i64 =
        primary.query_one("SELECT min(id) FROM pgsse.events WHERE channel = 'messages'", &[]).await.unwrap().get(0);
    // The primary issued `first` and its successor; the standby replays them a second later.
    let path = format!("/messages/events?last_event_id={first}");
    let mut stream = SseStream::ok(gw.addr, &path, &[]).await;
    let event = stream.expect().await;
    assert_eq!((event.event.as_str(), event.json()["body"].as_str()), ("insert", Some("second")), "no false reset");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_on_the_standby_then_live_is_exact() {
    let pair = pair(false).await;
    let app = connect(&as_role(&pair.url, WRITER_ROLE)).await;
    app.execute("INSERT INTO messages (body) VALUES ('a'), ('b')", &[]).await.unwrap();
    let gw = Gateway::start_with(config(&pair, Duration::from_secs(10))).await;
    wait_for("the standby has the rows", || async {
        connect(&pair.standby_url).await.query_one("SELECT count(*) FROM messages", &[]).await.unwrap().get::<_, i64>(0)
            == 2
    })
    .await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events?snapshot=true", &[]).await;
    app.execute("INSERT INTO messages (body) VALUES ('c')", &[]).await.unwrap();
    let events = stream.take(4).await;
    let shown: Vec<(String, String)> =
        events.iter().map(|e| (e.event.clone(), e.json()["body"].as_str().unwrap_or_default().to_string())).collect();
    let names: Vec<&str> = shown.iter().map(|(event, _)| event.as_str()).collect();
    assert_eq!(names, ["insert", "insert", "snapshot-end", "insert"], "{shown:?}");
    let bodies: Vec<&str> = shown.iter().map(|(_, body)| body.as_str()).collect();
    assert_eq!([bodies[0], bodies[1], bodies[3]], ["a", "b", "c"], "the rows, then the one written after: {shown:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_past_its_bound_makes_readyz_say_so_and_a_restarted_one_catches_up() {
    let pair = pair(true).await;
    let gw = Gateway::start_with(config(&pair, Duration::from_millis(100))).await;
    let mut follower = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    let app = connect(&as_role(&pair.url, WRITER_ROLE)).await;
    app.execute("INSERT INTO messages (body) VALUES ('late')", &[]).await.unwrap();
    wait_for("readyz names the lag", || async {
        get(gw.addr, "/readyz", &[]).await.is_ok_and(|r| r.status == 503 && r.body.contains("replica"))
    })
    .await;
    assert_eq!(follower.expect().await.json()["body"], "late", "the gateway keeps serving what the standby has");
    // An idle primary writes nothing for the standby to replay, so it catches up, and the gateway says so.
    wait_for("ready again once the standby caught up", || async {
        get(gw.addr, "/readyz", &[]).await.is_ok_and(|r| r.status == 200)
    })
    .await;

    let (_, standby) = pair.own.as_ref().unwrap();
    standby.stop("fast").unwrap();
    app.execute("INSERT INTO messages (body) VALUES ('while the standby was down')", &[]).await.unwrap();
    standby.start().unwrap();
    let resumed = Follower::start(gw.addr, "/messages/events?last_event_id=0");
    wait_for("the event written while the standby was down", || async {
        received(&resumed).iter().any(|(_, body)| body.contains("while the standby was down"))
    })
    .await;
}

/// A failover: the primary stops, the standby is promoted, and the primary's address now leads to it. The
/// gateway reconnects and reads the promoted standby as the primary it now is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_failover_to_the_standby_the_gateway_serves_from_it() {
    let pair = pair(true).await;
    let (primary, standby) = pair.own.as_ref().unwrap();
    let address = |port: u16| std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = common::proxy::FaultProxy::start(address(primary.port)).await;
    let mut config = config(&pair, Duration::from_secs(10));
    config.database_url = proxy.url(&as_role(&pair.url, GATEWAY_ROLE));
    let gw = Gateway::start_with(config).await;
    let follower = Follower::start(gw.addr, "/messages/events");
    connect(&as_role(&pair.url, WRITER_ROLE))
        .await
        .execute("INSERT INTO messages (body) VALUES ('before')", &[])
        .await
        .unwrap();
    wait_for("the event before the failover", || async { received(&follower).len() == 1 }).await;

    primary.stop("fast").unwrap();
    proxy.cut();
    standby.promote().unwrap();
    proxy.retarget(address(standby.port));
    let promoted = connect(&as_role(&pair.standby_url, WRITER_ROLE)).await;
    promoted.execute("INSERT INTO messages (body) VALUES ('after')", &[]).await.unwrap();
    wait_for("the event written on the promoted standby", || async {
        received(&follower).iter().any(|(_, body)| body == "after")
    })
    .await;
    let bodies: Vec<String> = received(&follower).into_iter().map(|(_, body)| body).collect();
    assert_eq!(bodies, ["before", "after"], "each once");
}

/// A standby promoted while the primary goes on (a split brain) never holds what is sequenced on the
/// primary: the gateway refuses to read it, and says why, rather than serve a log that stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_promoted_beside_a_running_primary_is_refused() {
    let pair = pair(true).await;
    let (_, standby) = pair.own.as_ref().unwrap();
    let gw = Gateway::start_with(config(&pair, Duration::from_secs(10))).await;
    standby.promote().unwrap();
    let app = connect(&as_role(&pair.url, WRITER_ROLE)).await;
    wait_for("the gateway names the split brain", || async {
        app.execute("INSERT INTO messages (body) VALUES ('on the primary')", &[]).await.unwrap();
        get(gw.addr, "/healthz", &[]).await.is_ok_and(|r| r.status == 503 && r.body.contains("point it at a standby"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_on_the_standby_that_follows_another_reads_each_announced_batch_there_once_replayed() {
    let pair = pair(false).await;
    let mut config = config(&pair, Duration::from_secs(10));
    // No probe tick reads the log during the test: each event comes from a read on an announcement.
    config.listener.probe_interval = Duration::from_secs(120);
    let (gw, metrics) = Gateway::start_with_metrics(config).await;
    let follower = Follower::start(gw.addr, "/messages/events");
    let (primary, app) = (connect(&pair.url).await, connect(&as_role(&pair.url, WRITER_ROLE)).await);
    // Announcements that are no batch's: an id the log never reaches, and no id at all.
    primary
        .batch_execute(
            "SELECT pg_notify('pgsse_' || bell_token, 'b999999999999') FROM pgsse.meta; \
             SELECT pg_notify('pgsse_' || bell_token, 'bx') FROM pgsse.meta;",
        )
        .await
        .unwrap();
    // This session runs the sequencing step after each write, one write at a time: once the gateway finds
    // events it did not move, it follows, reading on each batch announced once the standby holds it.
    let mut written = 0;
    let mut write = || {
        written += 1;
        let body = format!("m{written}");
        let (app, primary, follower) = (&app, &primary, &follower);
        async move {
            app.execute("INSERT INTO messages (body) VALUES ($1)", &[&body]).await.unwrap();
            primary.execute("CALL pgsse.sequence_step(NULL)", &[]).await.unwrap();
            wait_for("the follower has the write", || async { received(follower).len() >= written }).await;
        }
    };
    for _ in 0..20 {
        write().await;
        if common::metric(metrics, "pgsse_sequencing").await == 0 {
            break;
        }
    }
    assert_eq!(common::metric(metrics, "pgsse_sequencing").await, 0, "the gateway follows");
    let steps_before = common::metric(metrics, "pgsse_sequencing_steps_total").await;
    for _ in 0..8 {
        write().await;
    }
    // A read that came before the standby held the batch would find nothing, and only a takeover step
    // would bring the event, half a second later.
    let steps = common::metric(metrics, "pgsse_sequencing_steps_total").await - steps_before;
    assert!(steps <= 1, "each write came from the read on its announcement ({steps} steps)");
    exact_and_ready(&primary, &[follower], &gw).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_for_an_announced_id_walks_the_key_whatever_the_statistics_say() {
    let pair = pair(false).await;
    let primary = connect(&pair.url).await;
    // A log of 200,000 rows, analyzed, and a row above the ids the sequence issued (not pgsse's).
    primary
        .batch_execute(
            "INSERT INTO pgsse.events (id, channel, event, payload, txid) \
               SELECT g, 'messages', 'insert', '{}', pg_current_xact_id() FROM generate_series(1, 200000) g; \
             SELECT setval('pgsse.event_id_seq', 200000); \
             INSERT INTO pgsse.events (id, channel, event, payload, txid) \
               VALUES (1000000000, 'messages', 'insert', '{}', pg_current_xact_id()); \
             ANALYZE pgsse.events;",
        )
        .await
        .unwrap();
    // The plan a prepared statement runs after its fifth use: a generic one, which guesses that a third of
    // the rows match any `id >= $1`.
    let holds = pgsse::testing::announced_id_held();
    primary
        .batch_execute(&format!("SET plan_cache_mode = force_generic_plan; PREPARE holds(bigint) AS {holds}"))
        .await
        .unwrap();
    let plan: Vec<String> =
        primary.query("EXPLAIN EXECUTE holds(300000)", &[]).await.unwrap().iter().map(|r| r.get(0)).collect();
    let plan = plan.join("\n");
    assert!(plan.contains("Backward") && !plan.contains("Seq Scan on events"), "one step down the key:\n{plan}");
    let held = |id: i64| {
        let primary = &primary;
        async move { primary.query_one(&format!("EXECUTE holds({id})"), &[]).await.unwrap().get::<_, bool>(0) }
    };
    assert!(held(200000).await && !held(200001).await, "held through the issued head, and no further");
}
