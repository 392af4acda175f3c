//! `cargo bench --bench pgsse-bench`: the gateway as its own process, real PostgreSQL, N SSE clients and K
//! writers on this machine's loopback. Reports delivery correctness, commit-to-client latency, and the
//! gateway's CPU and memory. Every run is bounded in time and stops by itself.

mod client;
mod gateway;
mod scenarios;

use std::time::Duration;

use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(name = "pgsse-bench", about = "Load test for pgsse: latency, delivery, CPU and memory")]
pub struct Args {
    /// light, fanout, ingest, idle, replay, hoard, bulk, writepath, snapshot, snapshot-storm, post, mercure,
    /// replicas, slow, custom, or all.
    #[arg(long, default_value = "all")]
    pub scenario: String,
    /// PostgreSQL to use (its database gets a `bench` table); default: a throwaway cluster with fsync off.
    #[arg(long, env = "PGSSE_BENCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// For `custom`: SSE clients.
    #[arg(long, default_value_t = 100)]
    pub clients: usize,
    /// For `custom`: inserts per second over all writers; 0 means as fast as they can.
    #[arg(long, default_value_t = 200.0)]
    pub rate: f64,
    /// For `custom`: writer connections.
    #[arg(long, default_value_t = 2)]
    pub writers: usize,
    /// For `custom`: seconds of writing.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// For `custom`: clients that never read.
    #[arg(long, default_value_t = 0)]
    pub stalled: usize,
    /// The pgsse binary to run; default: the one built with this bench. Two builds alternated on one
    /// machine compare a change back to back.
    #[arg(long, env = "PGSSE_BENCH_GATEWAY")]
    pub gateway: Option<std::path::PathBuf>,
    /// For `writepath`: microseconds each WAL flush of its cluster waits first, as on a cloud disk (about
    /// 1,000-2,000); 0 is this machine's own disk. Needs a C compiler (`cc`).
    #[arg(long, default_value_t = 0)]
    pub flush_delay_us: u64,
    /// Bytes of padding in each row.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Print one JSON object per scenario instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    pub bench: bool,
}

fn main() {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let code = runtime.block_on(async {
        match scenarios::Bench::setup(&args).await {
            Ok(bench) => {
                let ok = bench.run(&args).await;
                bench.teardown().await;
                ok
            }
            Err(err) => {
                eprintln!("pgsse-bench: {err}");
                false
            }
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(if code { 0 } else { 1 });
}
