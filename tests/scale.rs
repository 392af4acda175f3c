//! Scale-out: three gateway processes on one database, each with its own LISTEN connection and no broker
//! between them. Clients spread across them while a writer inserts throughout; one gateway is killed
//! with SIGKILL and its clients resume on the others with `Last-Event-ID`.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{wait_for, Follower, TestDb};
use tokio::process::Child;

const CLIENTS: usize = 9;

async fn gateway_process(url: &str) -> (Child, SocketAddr) {
    common::gateway_process(&["--database-url", url, "--retry", "100ms"]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_deliver_every_event_once_even_when_one_is_killed() {
    let TestDb { url, admin, app: writer_db } = TestDb::messages("").await;
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(gateway_process(&common::as_role(&url, common::GATEWAY_ROLE)).await);
    }
    let addrs: Vec<SocketAddr> = gateways.iter().map(|(_, addr)| *addr).collect();
    let listeners: i64 = admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgsse-listener' \
             AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(listeners, 3, "one LISTEN connection per instance");

    // Client i starts on gateway i % 3, the way a load balancer spreads them.
    let followers: Vec<Follower> = (0..CLIENTS)
        .map(|i| {
            let mut order = addrs.clone();
            order.rotate_left(i % addrs.len());
            Follower::start_across(order, "/messages/events?last_event_id=0")
        })
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, committed) = (stop.clone(), committed.clone());
        tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(5));
            while !stop.load(Ordering::Relaxed) {
                pace.tick().await;
                let n = committed.load(Ordering::Relaxed) + 1;
                writer_db.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("w{n}")]).await.unwrap();
                committed.store(n, Ordering::Relaxed);
            }
        })
    };

    wait_for("every client receiving", || async { followers.iter().all(|f| f.count() >= 20) }).await;
    let (mut killed, _) = gateways.remove(0);
    killed.start_kill().unwrap();
    killed.wait().await.unwrap();
    let at_kill = committed.load(Ordering::Relaxed);
    wait_for("writes after the kill", || async { committed.load(Ordering::Relaxed) >= at_kill + 100 }).await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    common::wait_sequenced(&admin).await;
    let rows = admin.query("SELECT id, payload->>'body' FROM pgsse.events ORDER BY id", &[]).await.unwrap();
    let log: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(log.len() as u64, committed.load(Ordering::Relaxed), "every committed row once in the log");
    let head = log.last().unwrap().0;
    wait_for("every client caught up", || async { followers.iter().all(|f| f.last_id() >= Some(head)) }).await;
    for (i, follower) in followers.iter().enumerate() {
        let got: Vec<(i64, String)> =
            follower.events().iter().map(|e| (e.id(), e.json()["body"].as_str().unwrap().to_string())).collect();
        assert_eq!(got.len(), log.len(), "client {i}: as many events as the log holds");
        assert_eq!(got, log, "client {i}: every event exactly once, in order");
    }
    for (i, follower) in followers.iter().enumerate().filter(|(i, _)| i % 3 == 0) {
        assert!(follower.reconnects() >= 1, "client {i} lost its gateway and resumed on another");
    }
}
