//! A gateway in the test process, on a listener bound to port 0 that the test hands it.

use std::net::SocketAddr;
use std::time::Duration;

use pgsse::config::Config;
use pgsse::Sockets;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::{gateway_config, get, wait_for, TIMEOUT};

pub struct Gateway {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Starts a gateway as [`GATEWAY_ROLE`] on a database made by [`fresh_db`].
    pub async fn start(database_url: &str) -> Self {
        Self::start_with(gateway_config(database_url)).await
    }

    /// Starts as [`Gateway::start`] does, with `set` changing the configuration first.
    pub async fn start_configured(database_url: &str, set: impl FnOnce(&mut Config)) -> Self {
        let mut config = gateway_config(database_url);
        set(&mut config);
        Self::start_with(config).await
    }

    /// Starts and waits until `/healthz` says the listener is connected.
    pub async fn start_with(config: Config) -> Self {
        Self::start_on("127.0.0.1:0".parse().unwrap(), config).await
    }

    /// Like `start_with` on a given address, e.g. to restart a gateway where its clients expect it.
    pub async fn start_on(addr: SocketAddr, config: Config) -> Self {
        let gw = Self::spawn_on(addr, config).await;
        gw.wait_healthy().await;
        gw
    }

    /// Starts without waiting for the database: for gateways that are not meant to become healthy.
    pub async fn spawn(config: Config) -> Self {
        Self::spawn_on("127.0.0.1:0".parse().unwrap(), config).await
    }

    /// Starts with `/metrics` on a listener of its own (`--metrics-listen`); returns that address too.
    pub async fn start_with_metrics(config: Config) -> (Self, SocketAddr) {
        let metrics = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let metrics_addr = metrics.local_addr().unwrap();
        let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gw = Self::serve(Sockets { api, metrics: Some(metrics) }, config);
        gw.wait_healthy().await;
        (gw, metrics_addr)
    }

    async fn spawn_on(addr: SocketAddr, config: Config) -> Self {
        Self::serve(TcpListener::bind(addr).await.unwrap().into(), config)
    }

    fn serve(listeners: Sockets, config: Config) -> Self {
        let addr = listeners.api.local_addr().unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            pgsse::run(listeners, config, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        Self { addr, stop: Some(stop), task: Some(task) }
    }

    pub async fn wait_healthy(&self) {
        let addr = self.addr;
        wait_for("gateway healthy", || async move { get(addr, "/healthz", &[]).await.is_ok_and(|r| r.status == 200) })
            .await;
    }

    /// Triggers shutdown and returns how long `server::run` took to return.
    pub async fn shutdown(mut self) -> Duration {
        let started = std::time::Instant::now();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(TIMEOUT, self.task.take().unwrap()).await.expect("run returned").unwrap();
        started.elapsed()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A process's standard output, a line at a time.
pub type Log = tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>;

/// Reads a `pgsse` process's log (text format) up to its `serving addr=...` line; returns the address it
/// bound and the lines before it. With `--listen 127.0.0.1:0`, no port is chosen before it is bound.
pub async fn serving_addr(log: &mut Log) -> (SocketAddr, Vec<String>) {
    let mut before = Vec::new();
    let read = async {
        while let Some(line) = log.next_line().await.unwrap() {
            if let Some(fields) = line.split(" serving addr=").nth(1) {
                return fields.split_whitespace().next().unwrap_or_default().parse::<SocketAddr>().unwrap();
            }
            before.push(line);
        }
        panic!("pgsse exited before serving: {before:#?}");
    };
    let addr = tokio::time::timeout(TIMEOUT, read).await.expect("pgsse logged its address");
    (addr, before)
}

/// A `pgsse` process given `args`, on `127.0.0.1:0`, once it is healthy.
pub async fn gateway_process(args: &[&str]) -> (tokio::process::Child, SocketAddr) {
    let (child, addr) = gateway_process_unhealthy(args).await;
    wait_for(
        "gateway process healthy",
        || async move { get(addr, "/healthz", &[]).await.is_ok_and(|r| r.status == 200) },
    )
    .await;
    (child, addr)
}

/// Like [`gateway_process`], without waiting for the database.
pub async fn gateway_process_unhealthy(args: &[&str]) -> (tokio::process::Child, SocketAddr) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgsse"))
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .env("PGSSE_LOG", "pgsse::server=info,warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start pgsse");
    let mut log = BufReader::new(child.stdout.take().unwrap()).lines();
    let (addr, _) = serving_addr(&mut log).await;
    // Reads on, so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = log.next_line().await {} });
    (child, addr)
}

/// The setup most tests share: a fresh, migrated database with `messages` published with `publish_args`
/// (see [`super::messages_table`]), its superuser and application connections, and a gateway on it.
pub struct Fixture {
    pub url: String,
    pub admin: tokio_postgres::Client,
    pub app: tokio_postgres::Client,
    pub gw: Gateway,
}

impl Fixture {
    pub async fn messages(publish_args: &str) -> Self {
        let super::TestDb { url, admin, app } = super::TestDb::messages(publish_args).await;
        let gw = Gateway::start(&url).await;
        Self { url, admin, app, gw }
    }
}

/// Counts calls of pgsse's PL/pgSQL functions in `admin`'s database from now on (`track_functions`); new
/// sessions only, so call it before starting the gateway. See [`function_calls`].
pub async fn track_functions(admin: &tokio_postgres::Client) {
    let database: String = admin.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    admin.batch_execute(&format!("ALTER DATABASE \"{database}\" SET track_functions = 'pl'")).await.unwrap();
}

/// Calls of pgsse's functions named `names` by `gw`'s sessions (see [`track_functions`]): it shuts `gw`
/// down, since sessions report their counts as they end.
pub async fn function_calls(admin: &tokio_postgres::Client, gw: Gateway, names: &[&str]) -> i64 {
    let database: String = admin.query_one("SELECT current_database()", &[]).await.unwrap().get(0);
    gw.shutdown().await;
    wait_for("the gateway's sessions ended", || async {
        let open = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgsse%' AND datname = $1";
        admin.query_one(open, &[&database]).await.unwrap().get::<_, i64>(0) == 0
    })
    .await;
    admin.batch_execute("SELECT pg_stat_clear_snapshot()").await.unwrap();
    let calls = "SELECT coalesce(sum(calls), 0)::int8 FROM pg_stat_user_functions \
                 WHERE schemaname = 'pgsse' AND funcname = ANY($1)";
    admin.query_one(calls, &[&names]).await.unwrap().get(0)
}
