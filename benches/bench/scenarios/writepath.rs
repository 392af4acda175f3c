//! `writepath`: what publishing a table costs the writers that insert into it, on a cluster of its own with
//! `fsync=on` (a production setting): 8 and 32 writers inserting single rows flat out into a published table
//! and into an unpublished one of the same shape, alternated, with the gateway attached and 10 streams open.
//! `--flush-delay-us` makes each flush as slow as a cloud disk's, where commits wait on the disk, not the CPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgsse::demo::Cluster;

use super::{account, connect, migrate_with, Clients, Report};
use crate::gateway::Gateway;

const WRITERS: [usize; 2] = [8, 32];
const ROUNDS: usize = 3;
const ROUND: Duration = Duration::from_secs(4);
const STREAMS: usize = 10;
/// Issue 13's target: the published table keeps this share of the unpublished one's inserts per second.
const TARGET_SHARE: f64 = 60.0;
/// Issue 31's, where each flush waits as on a cloud disk (`--flush-delay-us`): the flush, not the
/// trigger, is then what an insert waits for.
const TARGET_SHARE_SLOW_FLUSH: f64 = 90.0;

pub(super) async fn writepath(gateway: &std::path::Path, payload: &str, flush_delay_us: u64) -> Vec<Report> {
    let dir = std::env::temp_dir().join(format!("pgsse-bench-writepath-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut cluster = Cluster::new(&dir, port).expect("a PostgreSQL installation");
    let shim = dir.with_extension("slowflush.so");
    if flush_delay_us > 0 {
        slow_flush(&shim);
        cluster = cluster
            .with_env("LD_PRELOAD", &shim.to_string_lossy())
            .with_env("SLOW_FLUSH_US", &flush_delay_us.to_string());
    }
    let cluster = tokio::task::spawn_blocking(move || {
        cluster.init(false).expect("initdb");
        cluster.start().expect("start the fsync=on cluster");
        cluster
    })
    .await
    .unwrap();
    let url = cluster.url("postgres");
    migrate_with(gateway, &url);
    let db = connect(&url).await;
    db.batch_execute(
        "CREATE TABLE bench (id bigserial PRIMARY KEY, sent bigint NOT NULL, pad text NOT NULL);
         CREATE TABLE plain (id bigserial PRIMARY KEY, sent bigint NOT NULL, pad text NOT NULL);
         SELECT pgsse.publish_table('bench');",
    )
    .await
    .unwrap();
    let gw = Gateway::start(gateway, &url, &[]);
    let t0 = Instant::now();
    let clients = Clients::connect(gw.addr, STREAMS, t0).await;
    let start_id = super::settled_head(&db).await;

    let mut reports = Vec::new();
    let mut total = 0;
    let started = Instant::now();
    for writers in WRITERS {
        let (mut plain, mut published) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Alternated, so neither side always runs on the warmer (or more bloated) database.
            for table in if round % 2 == 0 { ["plain", "bench"] } else { ["bench", "plain"] } {
                let (count, tps) = flat_out(&url, table, writers, payload, t0).await;
                if table == "bench" {
                    total += count;
                    published.push(tps);
                } else {
                    plain.push(tps);
                }
            }
        }
        let share: Vec<f64> = published.iter().zip(&plain).map(|(p, q)| p / q * 100.0).collect();
        let median = median(share.clone());
        let target = if flush_delay_us > 0 { TARGET_SHARE_SLOW_FLUSH } else { TARGET_SHARE };
        reports.push(Report {
            scenario: format!("writepath {writers}"),
            clients: STREAMS,
            writers,
            inserts: total,
            inserts_per_s: median_of(&published),
            note: format!(
                "fsync=on, flush delay {flush_delay_us} us; inserts/s published {} against unpublished {} (rounds alternated): {} % of it, \
                 median {median:.1}% (target >= {target}%)",
                list(&published),
                list(&plain),
                list(&share),
            ),
            ..Report::default()
        });
    }
    let wrote_for = started.elapsed();
    let end_id = super::settled_head(&db).await;
    let all_seen = clients.drain(end_id).await;
    let expected: Vec<i64> = db
        .query(
            "SELECT id FROM pgsse.events WHERE channel = 'bench' AND id > $1 AND id <= $2 ORDER BY id",
            &[&start_id, &end_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let Some(last) = reports.last_mut() {
        account(last, &expected, all_seen, start_id, wrote_for);
        last.note += &format!("; {} published rows, each checked on every stream", expected.len());
        if expected.len() as u64 != total {
            last.note += &format!("; MISMATCH: {total} rows inserted, {} events in the log", expected.len());
        }
    }
    drop(gw);
    drop(db);
    let _ = tokio::task::spawn_blocking(move || cluster.stop("fast")).await;
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_file(shim);
    reports
}

/// Builds the LD_PRELOAD library that delays PostgreSQL's flushes.
fn slow_flush(out: &std::path::Path) {
    let source = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/bench/slowflush.c");
    let status = std::process::Command::new("cc")
        .args(["-O2", "-shared", "-fPIC", "-o"])
        .arg(out)
        .args([source, "-ldl"])
        .status()
        .expect("--flush-delay-us needs a C compiler (cc)");
    assert!(status.success(), "cc {source} failed");
}

/// `writers` connections inserting one row per transaction into `table` for a round; returns the count
/// and the rate.
async fn flat_out(url: &str, table: &str, writers: usize, pad: &str, t0: Instant) -> (u64, f64) {
    let mut ready = Vec::with_capacity(writers);
    for _ in 0..writers {
        let db = connect(url).await;
        let insert = db.prepare(&format!("INSERT INTO {table} (sent, pad) VALUES ($1, $2)")).await.unwrap();
        ready.push((db, insert));
    }
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + ROUND;
    let tasks: Vec<_> = ready
        .into_iter()
        .map(|(db, insert)| {
            let (done, pad) = (done.clone(), pad.to_string());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    let sent = t0.elapsed().as_micros() as i64;
                    db.execute(&insert, &[&sent, &pad]).await.unwrap();
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let count = done.load(Ordering::Relaxed);
    (count, count as f64 / started.elapsed().as_secs_f64())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn median_of(values: &[f64]) -> f64 {
    median(values.to_vec())
}

fn list(values: &[f64]) -> String {
    values.iter().map(|v| format!("{v:.0}")).collect::<Vec<_>>().join("/")
}
