//! Writers stage their events and a gateway's sequencing step gives them ids: commit order across writers
//! that commit in shuffled order, whole transactions, a sequencing step cut off mid-batch or its gateway
//! killed, a backlog written while no gateway ran, an upgrade from schema 3 under a writer, and one step
//! per wake however many gateways listen.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use common::{
    connect, get, log_of, received, wait_for, Fixture, Follower, Gateway, SseStream, TestDb, TIMEOUT, WRITER_ROLE,
};
use tokio_postgres::Client;

/// Waits until `follower` has the whole log, then checks it has exactly the log.
async fn has_exactly(follower: &Follower, log: &[(i64, String)], who: &str) {
    let head = log.last().map(|(id, _)| *id);
    wait_for("the follower caught up with the log", || async { follower.last_id() >= head }).await;
    assert_eq!(received(follower), log, "{who}: every event of the log exactly once, in order");
}

/// Once everything staged is sequenced: the log holds `committed` rows, none twice, and `follower` has
/// exactly the log.
async fn every_row_once(admin: &Client, committed: u64, follower: &Follower, who: &str) {
    common::wait_sequenced(admin).await;
    let log = log_of(admin).await;
    assert_eq!(log.len() as u64, committed, "every committed row in the log");
    let distinct: HashSet<&str> = log.iter().map(|(_, body)| body.as_str()).collect();
    assert_eq!(distinct.len(), log.len(), "none twice");
    has_exactly(follower, &log, who).await;
}

/// One writer's transaction: its label (the prefix of its rows' bodies), how many rows, when its COMMIT
/// was sent and when it returned.
struct Committed {
    label: String,
    rows: usize,
    sent: Instant,
    done: Instant,
}

/// `writers` connections, each committing `each` transactions of 1 to 3 rows that sleep (server-side) up
/// to `max_sleep` seconds before COMMIT, so commits come in an order unlike the order of their inserts.
async fn shuffled_writers(url: &str, writers: usize, each: usize, max_sleep: f64) -> Vec<Committed> {
    let mut tasks = Vec::new();
    for w in 0..writers {
        let url = url.to_string();
        tasks.push(tokio::spawn(async move {
            let mut db = common::writer(&url).await;
            let mut done = Vec::new();
            for t in 0..each {
                let label = format!("w{w}t{t}");
                let rows = 1 + (w * 7 + t * 3) % 3;
                let tx = db.transaction().await.unwrap();
                for r in 0..rows {
                    tx.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("{label}r{r}")]).await.unwrap();
                }
                let sleep = max_sleep * (((w * 31 + t * 17) % 11) as f64 / 10.0);
                tx.execute("SELECT pg_sleep($1)", &[&sleep]).await.unwrap();
                let sent = Instant::now();
                tx.commit().await.unwrap();
                done.push(Committed { label, rows, sent, done: Instant::now() });
            }
            done
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all
}

/// Every committed row is in the log once; each transaction's rows have consecutive ids; and a transaction
/// whose COMMIT returned before another's was sent comes before it.
fn check_commit_order(log: &[(i64, String)], commits: &[Committed]) {
    let position: HashMap<&str, usize> = log.iter().enumerate().map(|(i, (_, body))| (body.as_str(), i)).collect();
    assert_eq!(position.len(), log.len(), "no body twice in the log");
    assert_eq!(log.len(), commits.iter().map(|c| c.rows).sum::<usize>(), "every committed row in the log");
    let mut span = HashMap::new();
    for c in commits {
        let at: Vec<usize> = (0..c.rows).map(|r| position[format!("{}r{r}", c.label).as_str()]).collect();
        let (first, last) = (*at.iter().min().unwrap(), *at.iter().max().unwrap());
        assert_eq!(last - first + 1, c.rows, "{}: its rows are contiguous in the log", c.label);
        assert_eq!(at, (first..=last).collect::<Vec<_>>(), "{}: its rows in the order written", c.label);
        span.insert(c.label.as_str(), (first, last));
    }
    for a in commits {
        for b in commits.iter().filter(|b| a.done < b.sent) {
            assert!(span[a.label.as_str()].1 < span[b.label.as_str()].0, "{} committed before {}", a.label, b.label);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_committing_in_shuffled_order_reach_every_stream_as_the_log_holds_them() {
    let Fixture { url, admin, gw, .. } = Fixture::messages("").await;
    let followers: Vec<Follower> =
        (0..2).map(|_| Follower::start(gw.addr, "/messages/events?last_event_id=0")).collect();
    let commits = shuffled_writers(&url, 12, 12, 0.03).await;
    common::wait_sequenced(&admin).await;
    let log = log_of(&admin).await;
    check_commit_order(&log, &commits);
    for (i, follower) in followers.iter().enumerate() {
        has_exactly(follower, &log, &format!("stream {i}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_row_transaction_arrives_whole_and_no_reader_sees_part_of_it() {
    let Fixture { url, admin, app, gw } = Fixture::messages("").await;
    let follower = Follower::start(gw.addr, "/messages/events?last_event_id=0");
    let stop = Arc::new(AtomicBool::new(false));
    let small = {
        let (url, stop) = (url.clone(), stop.clone());
        tokio::spawn(async move {
            let db = common::writer(&url).await;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                db.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("small {n}")]).await.unwrap();
            }
        })
    };
    // A reader of the log, as the gateway's role: it sees none of the big transaction or all of it.
    let poller = {
        let url = common::as_role(&url, common::GATEWAY_ROLE);
        tokio::spawn(async move {
            let db = connect(&url).await;
            let mut seen = HashSet::new();
            let polled = tokio::time::timeout(TIMEOUT, async {
                loop {
                    let row =
                        db.query_one("SELECT count(*) FROM pgsse.events WHERE payload->>'body' LIKE 'big %'", &[]);
                    let n: i64 = row.await.unwrap().get(0);
                    seen.insert(n);
                    if n == 1000 {
                        return;
                    }
                }
            });
            polled.await.expect("the big transaction reached the log");
            seen
        })
    };
    app.execute("INSERT INTO messages (body) SELECT 'big ' || n FROM generate_series(1, 1000) n", &[]).await.unwrap();
    let seen = poller.await.unwrap();
    assert!(seen.iter().all(|n| *n == 0 || *n == 1000), "a reader saw part of the transaction: {seen:?}");
    stop.store(true, Ordering::Relaxed);
    small.await.unwrap();
    common::wait_sequenced(&admin).await;
    let log = log_of(&admin).await;
    has_exactly(&follower, &log, "the stream").await;
    let big: Vec<usize> = log.iter().enumerate().filter(|(_, (_, b))| b.starts_with("big ")).map(|(i, _)| i).collect();
    assert_eq!(big.len(), 1000);
    assert_eq!(big[999] - big[0], 999, "the transaction's events are contiguous");
    let bodies: Vec<&str> = big.iter().map(|i| log[*i].1.as_str()).collect();
    assert_eq!(bodies, (1..=1000).map(|n| format!("big {n}")).collect::<Vec<_>>(), "in the order written");
}

/// A writer of multi-row transactions until `stop`, counting the rows committed.
fn bulk_writer(url: &str, stop: Arc<AtomicBool>, committed: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let url = url.to_string();
    tokio::spawn(async move {
        let db = common::writer(&url).await;
        let mut t = 0u64;
        while !stop.load(Ordering::Relaxed) {
            t += 1;
            let insert = "INSERT INTO messages (body) SELECT $1 || '.' || n FROM generate_series(1, 500) n";
            db.execute(insert, &[&format!("t{t}")]).await.unwrap();
            committed.fetch_add(500, Ordering::Relaxed);
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sequencing_backend_terminated_mid_batch_loses_and_repeats_nothing() {
    let TestDb { url, admin, .. } = TestDb::messages("").await;
    let (config, role) = common::own_listener_role(&admin, &url).await;
    let gw = Gateway::start_with(config).await;
    let follower = Follower::start(gw.addr, "/messages/events?last_event_id=0");
    let (stop, committed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let writer = bulk_writer(&url, stop.clone(), committed.clone());

    let mut terminated = 0;
    let cut = tokio::time::timeout(TIMEOUT, async {
        while terminated < 3 {
            let sql = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                       WHERE usename = $1 AND state = 'active' AND query LIKE '%pgsse.sequence_step(%'";
            terminated += admin.query_one(sql, &[&role]).await.unwrap().get::<_, i64>(0);
        }
    });
    cut.await.expect("the sequencing step was caught mid-batch three times");
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    every_row_once(&admin, committed.load(Ordering::Relaxed), &follower, "the stream").await;
}

/// The local ports of `pid`'s TCP sockets, from /proc: how a test tells which backend is whose.
fn tcp_ports_of(pid: u32) -> HashSet<i32> {
    let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| Some(link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.to_string()))
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap() + &std::fs::read_to_string("/proc/net/tcp6").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = i32::from_str_radix(fields.get(1)?.rsplit(':').next()?, 16).ok()?;
            inodes.contains(*fields.get(9)?).then_some(port)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_sequencing_gateway_hands_the_step_to_another_and_loses_nothing() {
    let TestDb { url, admin, .. } = TestDb::messages("").await;
    let gateway_url = common::as_role(&url, common::GATEWAY_ROLE);
    let args = ["--database-url", gateway_url.as_str()];
    let mut gateways = vec![common::gateway_process(&args).await, common::gateway_process(&args).await];
    let listener_of = "SELECT pid FROM pg_stat_activity WHERE application_name = 'pgsse-listener' \
                       AND client_port = ANY($1) AND datname = current_database()";
    let mut backends = Vec::new();
    for (child, _) in &gateways {
        let pid = child.id().unwrap();
        wait_for("the gateway's listener connected", || async {
            let ports: Vec<i32> = tcp_ports_of(pid).into_iter().collect();
            admin.query(listener_of, &[&ports]).await.is_ok_and(|rows| rows.len() == 1)
        })
        .await;
        let ports: Vec<i32> = tcp_ports_of(pid).into_iter().collect();
        backends.push(admin.query_one(listener_of, &[&ports]).await.unwrap().get::<_, i32>(0));
    }
    let followers: Vec<Follower> =
        gateways.iter().map(|(_, addr)| Follower::start(*addr, "/messages/events?last_event_id=0")).collect();
    let (stop, committed) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
    let writer = bulk_writer(&url, stop.clone(), committed.clone());

    // Killed while its session holds the sequencing step's lock: whichever gateway is the one stepping.
    let holder = "SELECT pid FROM pg_locks WHERE relation = 'pgsse.commit_order'::regclass AND granted \
                  AND pid = ANY($1)";
    let caught = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Some(row) = admin.query_opt(holder, &[&backends]).await.unwrap() {
                break backends.iter().position(|b| *b == row.get::<_, i32>(0)).unwrap();
            }
        }
    });
    let stepping = caught.await.expect("a gateway took the sequencing step");
    let (killed, _) = &mut gateways[stepping];
    killed.start_kill().unwrap();
    killed.wait().await.unwrap();
    let at_kill = committed.load(Ordering::Relaxed);
    let survivor = &followers[1 - stepping];
    wait_for("the other gateway sequences what is written after the kill", || async {
        survivor.count() as u64 > at_kill + 1000
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    every_row_once(&admin, committed.load(Ordering::Relaxed), survivor, "the other gateway's stream").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_on_without_a_gateway_and_the_first_to_start_sequences_the_backlog() {
    let TestDb { url, admin, .. } = TestDb::messages("").await;
    let commits = shuffled_writers(&url, 6, 10, 0.01).await;
    let rows = commits.iter().map(|c| c.rows).sum::<usize>() as i64;
    let staged: i64 = admin.query_one("SELECT count(*) FROM pgsse.staged", &[]).await.unwrap().get(0);
    assert_eq!(staged, rows, "every write succeeded and waits, staged");

    // While something else holds the step's lock, a gateway reports the backlog rather than working it off.
    let mut holder = connect(&url).await;
    let holding = holder.transaction().await.unwrap();
    holding.batch_execute("LOCK TABLE pgsse.commit_order IN EXCLUSIVE MODE").await.unwrap();
    admin.batch_execute("UPDATE pgsse.staged SET created_at = created_at - interval '1 minute'").await.unwrap();
    let gw = Gateway::start_configured(&url, |c| {
        c.listener.probe_interval = std::time::Duration::from_millis(100);
    })
    .await;
    let ready = get(gw.addr, "/readyz", &[]).await.unwrap();
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["status"], "catching up", "{}", ready.body);
    assert_eq!(ready.json()["pending_events"], rows);
    assert!(ready.json()["oldest_pending_seconds"].as_f64().unwrap() >= 60.0);
    let pending = format!("pgsse_pending_events {rows}");
    wait_for("the backlog in /metrics", || async {
        get(gw.addr, "/metrics", &[]).await.is_ok_and(|m| m.body.lines().any(|l| l == pending))
    })
    .await;

    let follower = Follower::start(gw.addr, "/messages/events?last_event_id=0");
    holding.rollback().await.unwrap();
    common::wait_sequenced(&admin).await;
    let log = log_of(&admin).await;
    check_commit_order(&log, &commits);
    has_exactly(&follower, &log, "the stream").await;
    let ready = get(gw.addr, "/readyz", &[]).await.unwrap();
    assert_eq!((ready.json()["status"].clone(), ready.json()["pending_events"].clone()), ("ready".into(), 0.into()));
}

#[tokio::test]
async fn a_transaction_that_drew_its_number_early_is_not_passed_over_by_later_ones() {
    let Fixture { url, admin, app, gw } = Fixture::messages("").await;
    let follower = Follower::start(gw.addr, "/messages/events?last_event_id=0");
    // Its row is staged, and its number drawn, at the INSERT; it commits after twenty others.
    let mut early = common::writer(&url).await;
    let early = early.transaction().await.unwrap();
    early.batch_execute("SET CONSTRAINTS ALL IMMEDIATE; INSERT INTO messages (body) VALUES ('early')").await.unwrap();
    let early_xid: i64 = early.query_one("SELECT pg_current_xact_id()::text::int8", &[]).await.unwrap().get(0);
    for i in 0..20 {
        app.batch_execute(&format!("INSERT INTO messages (body) VALUES ('later {i}')")).await.unwrap();
    }
    wait_for("the later rows in the log", || async { log_of(&admin).await.len() == 20 }).await;
    let floor = "SELECT floor_xid::text::int8 FROM pgsse.staged_floor";
    let below: i64 = admin.query_one(floor, &[]).await.unwrap().get(0);
    assert!(below <= early_xid, "the floor ({below}) rose past a writer in flight ({early_xid})");
    early.commit().await.unwrap();
    common::wait_sequenced(&admin).await;
    let log = log_of(&admin).await;
    assert_eq!(log.last().map(|(_, body)| body.as_str()), Some("early"), "{log:?}");
    has_exactly(&follower, &log, "the stream").await;
    // Once it has ended, a later batch raises the floor past it. Only a step that moves events raises the
    // floor, to the oldest transaction then running in the whole cluster (another test's, say): each look
    // writes a row, so that a batch comes after those have ended too.
    wait_for("the floor past the writer that was in flight", || async {
        app.batch_execute("INSERT INTO messages (body) VALUES ('after')").await.unwrap();
        common::wait_sequenced(&admin).await;
        admin.query_one(floor, &[]).await.unwrap().get::<_, i64>(0) > early_xid
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_answers_once_its_event_is_in_the_log() {
    let Fixture { gw, .. } = Fixture::messages(", writable => true").await;
    for n in 0..20 {
        let body = bytes::Bytes::from(format!("{{\"body\": \"post {n}\"}}"));
        let posted = common::call(gw.addr, "POST", "/messages", &[("content-type", "application/json")], body);
        let posted = posted.await.unwrap();
        assert_eq!(posted.status, 201, "{}", posted.body);
        let id: i64 = posted.headers["pgsse-event-id"].parse().unwrap();
        let below = (id - 1).to_string();
        let mut stream = SseStream::ok(gw.addr, "/messages/events", &[("last-event-id", &below)]).await;
        let event = stream.expect().await;
        assert_eq!((event.id(), event.json()["body"].clone()), (id, format!("post {n}").into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_3_install_migrated_under_a_writer_keeps_every_id_and_event() {
    let url = common::empty_db().await;
    let db = connect(&url).await;
    db.batch_execute(include_str!("fixtures/schema3.sql")).await.unwrap();
    common::fresh_db().await; // creates the test roles on this cluster
    db.batch_execute(&format!(
        "CREATE TABLE messages (id bigserial PRIMARY KEY, body text NOT NULL);
         SELECT pgsse.publish_table('messages');
         INSERT INTO messages (body) SELECT 'before ' || n FROM generate_series(1, 100) n;
         GRANT SELECT, INSERT ON messages TO {WRITER_ROLE}; GRANT USAGE ON SEQUENCE messages_id_seq TO {WRITER_ROLE};
         -- What schema 3's capture, which ran as the writer, needed.
         GRANT USAGE ON SCHEMA pgsse TO {WRITER_ROLE}; GRANT INSERT ON pgsse.events TO {WRITER_ROLE};
         GRANT USAGE ON SEQUENCE pgsse.event_id_seq TO {WRITER_ROLE};"
    ))
    .await
    .unwrap();
    let (stop, written) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())));
    let writer = {
        let (url, stop, written) = (url.clone(), stop.clone(), written.clone());
        tokio::spawn(async move {
            let db = common::writer(&url).await;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) || n < 200 {
                n += 1;
                let body = format!("during {n}");
                db.execute("INSERT INTO messages (body) VALUES ($1)", &[&body]).await.unwrap();
                written.lock().unwrap().push(body);
            }
        })
    };
    wait_for("the writer under way", || async { written.lock().unwrap().len() >= 20 }).await;
    let before = log_of(&db).await;
    pgsse::migrate(&url).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();

    let gw = Gateway::start(&url).await;
    let follower = Follower::start(gw.addr, "/messages/events?last_event_id=0");
    common::wait_sequenced(&db).await;
    let log = log_of(&db).await;
    assert_eq!(log[..before.len()], before[..], "no event lost or renumbered");
    let bodies: Vec<&str> = log.iter().map(|(_, body)| body.as_str()).collect();
    let mut want: Vec<String> = (1..=100).map(|n| format!("before {n}")).collect();
    want.extend(written.lock().unwrap().iter().cloned());
    assert_eq!(bodies, want, "every row once, in the order written");
    has_exactly(&follower, &log, "the stream").await;
}

/// A database whose default transactions are serializable and read-only (a reporting replica's settings,
/// say) does not stop the gateway: its sessions and its sequencing step run read committed and may write.
#[tokio::test]
async fn the_databases_default_isolation_and_read_only_do_not_reach_the_gateway() {
    let TestDb { url, admin, app } = TestDb::messages(", writable => true").await;
    admin
        .batch_execute(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation = serializable', current_database());
                        EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database()); END $$",
        )
        .await
        .unwrap();
    let gw = Gateway::start(&url).await;
    let mut stream = SseStream::ok(gw.addr, "/messages/events", &[]).await;
    app.execute("INSERT INTO messages (body) VALUES ('from the app')", &[]).await.unwrap();
    assert_eq!(stream.expect().await.json()["body"], "from the app");
    let posted = common::call(
        gw.addr,
        "POST",
        "/messages",
        &[("content-type", "application/json")],
        r#"{"body": "posted"}"#.into(),
    )
    .await
    .unwrap();
    assert_eq!(posted.status, 201, "{}", posted.body);
    assert_eq!(stream.expect().await.json()["body"], "posted");
    let leaked = connect(&url).await;
    let step = leaked.query_one("CALL pgsse.sequence_step(true)", &[]).await.unwrap();
    assert!(step.get::<_, i64>("moved") >= 0, "a step of a session with those defaults runs too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_four_gateways_one_runs_the_step_and_the_others_read_the_batches_it_announces() {
    let TestDb { url, admin, .. } = TestDb::messages("").await;
    let mut gateways = Vec::new();
    for _ in 0..4 {
        gateways.push(Gateway::start(&url).await);
    }
    let followers: Vec<Follower> =
        gateways.iter().map(|gw| Follower::start(gw.addr, "/messages/events?last_event_id=0")).collect();
    let steps = || async {
        let mut total = 0;
        for gw in &gateways {
            total += common::metric(gw.addr, "pgsse_sequencing_steps_total").await;
        }
        total
    };
    let before = steps().await;
    let started = Instant::now();
    let db = common::writer(&url).await;
    const WRITES: usize = 200;
    for i in 1..=WRITES {
        db.execute("INSERT INTO messages (body) VALUES ($1)", &[&format!("m{i}")]).await.unwrap();
        wait_for("every gateway delivered the write", || async { followers.iter().all(|f| f.count() >= i) }).await;
    }
    let (ran, elapsed) = (steps().await - before, started.elapsed());
    // One step per write, and each gateway's step on the 500 ms takeover clock; a gateway that stepped on
    // every wakeup would run about 2 x 4 per write.
    let idle = 4 * (elapsed.as_millis() as u64 / 500 + 2);
    assert!(ran <= WRITES as u64 + idle + 10, "{ran} steps for {WRITES} writes in {elapsed:?}");
    let mut stepping = 0;
    for gw in &gateways {
        stepping += common::metric(gw.addr, "pgsse_sequencing").await;
    }
    assert_eq!(stepping, 1, "one gateway is the one stepping");
    let log = log_of(&admin).await;
    for (i, follower) in followers.iter().enumerate() {
        has_exactly(follower, &log, &format!("gateway {i}")).await;
    }
}
