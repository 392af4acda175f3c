//! Network faults between the gateway and PostgreSQL, injected by the test support's TCP proxy
//! (`common::proxy`): what the gateway does on each, and how fast.
mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::proxy::FaultProxy;
use common::{call, get, log_of, received, wait_for, Follower, Gateway, TestDb, GATEWAY_ROLE};
use pgsse::config::Config;

/// A proxy in front of the test database, and a gateway config whose every connection goes through it.
async fn proxied(url: &str) -> (FaultProxy, Config) {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let target = SocketAddr::from(([127, 0, 0, 1], config.get_ports()[0]));
    let proxy = FaultProxy::start(target).await;
    let config = Config::new(proxy.url(&common::as_role(url, GATEWAY_ROLE))).unwrap();
    (proxy, config)
}

/// Polls `/healthz` all along a test; every answer must come within its bound.
struct HealthWatch {
    slowest: std::sync::Arc<std::sync::Mutex<Duration>>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthWatch {
    fn start(addr: SocketAddr) -> Self {
        let slowest = std::sync::Arc::new(std::sync::Mutex::new(Duration::ZERO));
        let task = tokio::spawn({
            let slowest = slowest.clone();
            async move {
                let mut every = tokio::time::interval(Duration::from_millis(100));
                loop {
                    every.tick().await;
                    let started = Instant::now();
                    let _ = get(addr, "/healthz", &[]).await;
                    let took = started.elapsed();
                    let mut slowest = slowest.lock().unwrap();
                    *slowest = (*slowest).max(took);
                }
            }
        });
        Self { slowest, task }
    }

    /// Asserts that `/healthz` always answered within 1 s (with a margin for the test's own scheduling).
    fn check(self) {
        self.task.abort();
        let slowest = *self.slowest.lock().unwrap();
        assert!(slowest < Duration::from_millis(1300), "/healthz once took {slowest:?}");
    }
}

/// A gateway behind a proxy, probing every second, its `/healthz` watched, with a stream that has
/// received one event.
struct Watched {
    admin: tokio_postgres::Client,
    app: tokio_postgres::Client,
    proxy: FaultProxy,
    gw: Gateway,
    watch: HealthWatch,
    follower: Follower,
}

impl Watched {
    async fn start() -> Self {
        let TestDb { url, admin, app } = TestDb::messages("").await;
        let (proxy, mut config) = proxied(&url).await;
        config.listener.probe_interval = Duration::from_secs(1);
        let gw = Gateway::start_with(config).await;
        let watch = HealthWatch::start(gw.addr);
        let follower = Follower::start(gw.addr, "/messages/events?last_event_id=0");
        app.batch_execute("INSERT INTO messages (body) VALUES ('first')").await.unwrap();
        wait_for("the first event", || async { received(&follower).len() == 1 }).await;
        Self { admin, app, proxy, gw, watch, follower }
    }
}

#[tokio::test]
async fn a_connection_that_delays_every_packet_keeps_streams_working_and_loses_nothing() {
    let TestDb { url, admin, app } = TestDb::messages("").await;
    let (proxy, config) = proxied(&url).await;
    proxy.delay(Duration::from_millis(200));
    let through = common::connect(&proxy.url(&url)).await;
    let started = Instant::now();
    through.query_one("SELECT 1", &[]).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(400), "a round trip through the proxy is delayed both ways");
    let gw = Gateway::start_with(config).await;
    let watch = HealthWatch::start(gw.addr);
    let follower = Follower::start(gw.addr, "/messages/events?last_event_id=0");
    for i in 0..10 {
        app.batch_execute(&format!("INSERT INTO messages (body) VALUES ('slow {i}')")).await.unwrap();
    }
    wait_for("every event through the slow link", || async { received(&follower).len() >= 10 }).await;
    let log = log_of(&admin).await;
    assert_eq!(log.len(), 10);
    assert_eq!(received(&follower), log, "each event once, in the log's order");
    let health = get(gw.addr, "/healthz", &[]).await.unwrap();
    assert_eq!(health.status, 200, "{}", health.body);
    watch.check();
}

#[tokio::test]
async fn the_proxy_freezes_the_connections_it_holds_and_lets_new_ones_pass() {
    let TestDb { url, .. } = TestDb::messages("").await;
    let (proxy, _) = proxied(&url).await;
    let held = common::connect(&proxy.url(&url)).await;
    proxy.freeze();
    let mut answer = Box::pin(held.query_one("SELECT 1", &[]));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut answer).await.is_err(),
        "a frozen connection answered"
    );
    let fresh = common::connect(&proxy.url(&url)).await;
    fresh.query_one("SELECT 1", &[]).await.unwrap();
    proxy.heal();
    answer.await.expect("the held query answers once the link heals");
    proxy.refuse(true);
    assert!(tokio_postgres::connect(&proxy.url(&url), tokio_postgres::NoTls).await.is_err(), "refused");
    proxy.cut();
    assert!(held.query_one("SELECT 1", &[]).await.is_err(), "a cut connection fails");
}

#[tokio::test]
async fn a_listen_connection_frozen_while_idle_is_replaced_within_two_probe_intervals() {
    let Watched { admin, app, proxy, gw: _gw, watch, follower } = Watched::start().await;

    proxy.freeze();
    let frozen = Instant::now();
    for i in 0..10 {
        app.batch_execute(&format!("INSERT INTO messages (body) VALUES ('during {i}')")).await.unwrap();
    }
    wait_for("the events written during the fault", || async { received(&follower).len() == 11 }).await;
    let took = frozen.elapsed();
    assert!(took < Duration::from_secs(3), "delivered {took:?} after the fault; two probe intervals are 2 s");
    assert_eq!(received(&follower), log_of(&admin).await, "each event once, in the log's order");
    watch.check();
}

#[tokio::test]
async fn frozen_pool_connections_answer_503_within_the_bound_and_are_dropped() {
    let TestDb { url, admin, .. } = TestDb::messages("").await;
    admin.batch_execute("SELECT pgsse.create_channel('news')").await.unwrap();
    let (proxy, mut config) = proxied(&url).await;
    config.pool.db_timeout = Duration::from_secs(1);
    config.pool.pool_size = 2;
    let gw = Gateway::start_with(config).await;
    let post = || call(gw.addr, "POST", "/news", &[("content-type", "application/json")], Bytes::from("{\"n\": 1}"));
    assert_eq!(post().await.unwrap().status, 201);

    proxy.freeze();
    let started = Instant::now();
    let health = get(gw.addr, "/healthz", &[]).await.unwrap();
    let took = started.elapsed();
    assert_eq!(health.status, 503, "{}", health.body);
    assert!(health.body.contains("pool: database did not answer within 1s"), "{}", health.body);
    assert!(took < Duration::from_millis(1500), "/healthz took {took:?}");
    for path in ["/readyz", "/healthz"] {
        let started = Instant::now();
        let answer = get(gw.addr, path, &[]).await.unwrap();
        assert!(
            started.elapsed() < Duration::from_millis(1500),
            "{path} took {:?}: {}",
            started.elapsed(),
            answer.body
        );
    }

    // Each frozen connection fails one request within the bound and leaves the pool; fresh ones pass the proxy.
    let mut failed = 0;
    loop {
        let started = Instant::now();
        let answer = post().await.unwrap();
        assert!(started.elapsed() < Duration::from_millis(2500), "a POST took {:?}", started.elapsed());
        if answer.status == 201 {
            break;
        }
        assert_eq!(answer.status, 503, "{}", answer.body);
        failed += 1;
        assert!(failed <= 2, "a frozen connection was handed out again");
    }
    let published: i64 = admin.query_one("SELECT count(*) FROM pgsse.events", &[]).await.unwrap().get(0);
    assert!(published >= 2, "the POST that answered 201 is in the log");
}

#[tokio::test]
async fn a_listen_connection_frozen_during_a_flood_is_replaced_within_two_probe_intervals() {
    let Watched { admin, app, proxy, gw: _gw, watch, follower } = Watched::start().await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                app.batch_execute(&format!("INSERT INTO messages (body) VALUES ('flood {i}')")).await.unwrap();
                i += 1;
            }
        }
    });
    wait_for("the flood on the stream", || async { received(&follower).len() >= 200 }).await;

    // The listener is reading the log all the time now: the fault most likely catches a query in flight.
    proxy.freeze();
    let frozen = Instant::now();
    let committed = log_of(&admin).await.len();
    wait_for("events committed after the fault", || async { received(&follower).len() >= committed + 50 }).await;
    let took = frozen.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    flood.await.unwrap();
    assert!(took < Duration::from_secs(3), "delivered {took:?} after the fault; two probe intervals are 2 s");
    common::wait_sequenced(&admin).await;
    let log = log_of(&admin).await;
    wait_for("the whole log on the stream", || async { received(&follower).len() >= log.len() }).await;
    assert_eq!(received(&follower), log, "each event once, in the log's order");
    watch.check();
}

#[tokio::test]
async fn a_replay_on_frozen_pool_connections_ends_and_resumes_on_fresh_ones() {
    let TestDb { url, admin, app } = TestDb::messages("").await;
    let (proxy, mut config) = proxied(&url).await;
    config.pool.db_timeout = Duration::from_secs(1);
    config.pool.pool_size = 2;
    let gw = Gateway::start_with(config).await;
    let watch = HealthWatch::start(gw.addr);
    app.batch_execute("INSERT INTO messages (body) SELECT 'old ' || g FROM generate_series(1, 50) g").await.unwrap();
    common::wait_sequenced(&admin).await;
    // Both pooled connections exist before the fault.
    let (a, b) = tokio::join!(get(gw.addr, "/messages?limit=1", &[]), get(gw.addr, "/messages?limit=1", &[]));
    assert_eq!((a.unwrap().status, b.unwrap().status), (200, 200));

    proxy.freeze();
    let frozen = Instant::now();
    let follower = Follower::start(gw.addr, "/messages/events?last_event_id=0");
    let log = log_of(&admin).await;
    wait_for("the replay, on fresh connections", || async { received(&follower).len() >= log.len() }).await;
    let took = frozen.elapsed();
    assert!(took < Duration::from_secs(8), "replayed {took:?} after the fault");
    assert_eq!(received(&follower), log, "each event once, in the log's order");
    let started = Instant::now();
    get(gw.addr, "/healthz", &[]).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(1500));
    watch.check();
}

#[tokio::test]
async fn a_connection_cut_in_the_middle_of_a_large_row_loses_nothing() {
    let Watched { admin, app, proxy, gw, watch, follower } = Watched::start().await;

    // The listener's connection closes a quarter of the way into the 1 MB row.
    proxy.cut_after(256 * 1024);
    let big = "x".repeat(1024 * 1024);
    app.batch_execute(&format!("INSERT INTO messages (body) VALUES ('{big}')")).await.unwrap();
    wait_for("the large row, after the reconnect", || async { received(&follower).len() == 2 }).await;
    let got = received(&follower);
    assert_eq!(got[1].1.len(), big.len(), "the 1 MB row arrived intact");
    assert_eq!(got, log_of(&admin).await, "each event once, in the log's order");
    let metrics = get(gw.addr, "/metrics", &[]).await.unwrap().body;
    let reconnects = metrics.lines().find_map(|l| l.strip_prefix("pgsse_listener_reconnects_total "));
    assert!(reconnects.is_some_and(|n| n.trim() != "0"), "the cut connection was replaced: {reconnects:?}");
    watch.check();
}
