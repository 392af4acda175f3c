//! Test support: a throwaway PostgreSQL per test binary (or `PGSSE_TEST_DATABASE_URL`), a fresh database
//! per test, a gateway on port 0, and a real HTTP client that parses SSE.
#![allow(dead_code)]

pub mod proxy;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use pgsse::config::Config;
use pgsse::demo::Cluster;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};

pub const TIMEOUT: Duration = Duration::from_secs(20);

static SHARED: OnceLock<String> = OnceLock::new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A cluster in a fresh temp dir on a free port. A detached watchdog stops it and removes the dir when
/// this test process exits, however it exits.
pub fn private_cluster() -> Cluster {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("pgsse-test-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let port = free_port();
    let cluster = Cluster::new(&dir, port).expect("PostgreSQL binaries (see README: Tests)");
    cluster.init(true).expect("initdb");
    cluster.start().expect("pg_ctl start");
    watchdog(&dir);
    cluster
}

fn watchdog(dir: &std::path::Path) {
    let script = r#"tail --pid="$1" -f /dev/null 2>/dev/null
pid=$(head -n 1 "$2/postmaster.pid" 2>/dev/null)
if [ -n "$pid" ]; then kill -QUIT "$pid" 2>/dev/null; while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done; fi
rm -rf "$2""#;
    let _ = std::process::Command::new("setsid")
        .args(["sh", "-c", script, "watchdog", &std::process::id().to_string()])
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// URL of a server to create test databases on (its `postgres` database).
fn admin_url() -> &'static str {
    SHARED.get_or_init(|| match std::env::var("PGSSE_TEST_DATABASE_URL") {
        Ok(url) => url,
        Err(_) => {
            let cluster = private_cluster();
            let url = cluster.url("postgres");
            std::mem::forget(cluster);
            url
        }
    })
}

pub async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(conn);
    client
}

/// A new, migrated database; returns its URL.
pub async fn fresh_db() -> String {
    let admin = admin_url().to_string();
    fresh_db_on(&admin).await
}

pub async fn fresh_db_on(admin: &str) -> String {
    fresh_db_with(admin, "").await
}

/// A new, migrated database made with `CREATE DATABASE ... {options}`, e.g. another encoding.
pub async fn fresh_db_with(admin: &str, options: &str) -> String {
    let url = empty_db_with(admin, options).await;
    pgsse::migrate(&url).await.expect("migrate");
    test_roles(admin, &url).await;
    url
}

/// The login a test gateway runs as: it holds only `pgsse_gateway`, plus (through the default privileges
/// below) INSERT and DELETE on the tables a test creates, for `POST` and `DELETE` on table channels.
pub const GATEWAY_ROLE: &str = "pgsse_test_gateway";
/// The login that tests write published tables with: no grant on schema pgsse at all.
pub const WRITER_ROLE: &str = "pgsse_test_writer";
/// An application's role that was also granted `pgsse_publisher`, to call `pgsse.publish` beside its writes.
pub const PUBLISHER_ROLE: &str = "pgsse_test_publisher";

/// Creates the two test logins once per cluster (roles are cluster-wide; the lock keeps concurrent tests
/// from racing on them) and gives them the table privileges an application would grant in `url`.
async fn test_roles(admin: &str, url: &str) {
    let client = connect(admin).await;
    client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock(7083711599);
             DO $$ BEGIN
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{GATEWAY_ROLE}') THEN
                     CREATE ROLE {GATEWAY_ROLE} LOGIN;
                 END IF;
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{WRITER_ROLE}') THEN
                     CREATE ROLE {WRITER_ROLE} LOGIN;
                 END IF;
                 IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{PUBLISHER_ROLE}') THEN
                     CREATE ROLE {PUBLISHER_ROLE} LOGIN IN ROLE pgsse_publisher;
                 END IF;
                 IF NOT pg_has_role('{GATEWAY_ROLE}', 'pgsse_gateway', 'MEMBER') THEN
                     GRANT pgsse_gateway TO {GATEWAY_ROLE};
                 END IF;
             END $$;
             COMMIT;"
        ))
        .await
        .expect("test roles");
    connect(url)
        .await
        .batch_execute(&format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON TABLES TO {WRITER_ROLE}, {PUBLISHER_ROLE};
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT INSERT, DELETE ON TABLES TO {GATEWAY_ROLE};
             ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE ON SEQUENCES TO {WRITER_ROLE}, {PUBLISHER_ROLE}, {GATEWAY_ROLE};"
        ))
        .await
        .expect("test privileges");
}

/// `url` with its user replaced by `role`, as a key=value connection string (the test cluster trusts every
/// local login; append ` password=...` for one that does not).
pub fn as_role(url: &str, role: &str) -> String {
    let config: tokio_postgres::Config = url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(host) => host.clone(),
        tokio_postgres::config::Host::Unix(dir) => dir.display().to_string(),
    };
    let (port, db) = (config.get_ports()[0], config.get_dbname().unwrap());
    format!("host={host} port={port} dbname={db} user={role}")
}

/// A gateway configuration that connects as [`GATEWAY_ROLE`].
pub fn gateway_config(url: &str) -> Config {
    Config::new(as_role(url, GATEWAY_ROLE)).unwrap()
}

/// A gateway config whose LISTEN connection logs in as a role of its own, so a test can lock the
/// listener out while the pool keeps working. Returns the config and the role.
pub async fn own_listener_role(admin: &tokio_postgres::Client, url: &str) -> (Config, String) {
    let role =
        format!("{}_listener", admin.query_one("SELECT current_database()", &[]).await.unwrap().get::<_, String>(0));
    admin.batch_execute(&format!("CREATE ROLE {role} LOGIN IN ROLE pgsse_gateway PASSWORD 'listener'")).await.unwrap();
    let mut config = gateway_config(url);
    config.listener.listen_database_url = Some(format!("{} password=listener", as_role(url, &role)));
    (config, role)
}

/// A connection as [`WRITER_ROLE`], an application's role that knows nothing of pgsse.
pub async fn writer(url: &str) -> Client {
    connect(&as_role(url, WRITER_ROLE)).await
}

/// A new database without the pgsse schema.
pub async fn empty_db() -> String {
    empty_db_with(admin_url(), "").await
}

async fn empty_db_with(admin: &str, options: &str) -> String {
    let name = format!("t{}_{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed));
    let client = connect(admin).await;
    client.batch_execute(&format!("CREATE DATABASE {name} {options}")).await.unwrap();
    match admin.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => panic!("admin url without database: {admin}"),
    }
}

/// A fresh, migrated database as production uses it: `admin` (the superuser) only creates tables,
/// publishes them and reads pgsse's own tables; `app` (an application's role with no grant on pgsse)
/// makes every write to a published table.
pub struct TestDb {
    pub url: String,
    pub admin: Client,
    pub app: Client,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::on(admin_url()).await
    }

    /// A fresh database on the server whose `postgres` database `server` names, e.g. a private cluster.
    pub async fn on(server: &str) -> Self {
        Self::with(server, "").await
    }

    /// A fresh database made with `CREATE DATABASE ... {options}` on the test server.
    pub async fn created_with(options: &str) -> Self {
        Self::with(admin_url(), options).await
    }

    async fn with(server: &str, options: &str) -> Self {
        let url = fresh_db_with(server, options).await;
        let (admin, app) = (connect(&url).await, writer(&url).await);
        Self { url, admin, app }
    }

    /// A fresh database with `messages` published with `publish_args` (see [`messages_table`]).
    pub async fn messages(publish_args: &str) -> Self {
        let db = Self::new().await;
        messages_table(&db.admin, publish_args).await;
        db
    }
}

/// Creates `messages` (id, body, created_at) and publishes it with the given extra arguments.
pub async fn messages_table(db: &Client, publish_args: &str) {
    db.batch_execute(&format!(
        "CREATE TABLE messages (id bigserial PRIMARY KEY, body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
         SELECT pgsse.publish_table('messages'{publish_args});"
    ))
    .await
    .unwrap();
}

/// `users`, with a column nobody outside may see (`password_hash`), published with `args`.
pub async fn users_table(db: &tokio_postgres::Client, args: &str) {
    db.batch_execute(&format!(
        "CREATE TABLE users (id bigserial PRIMARY KEY, name text NOT NULL, password_hash text NOT NULL DEFAULT 'x');
         SELECT pgsse.publish_table('users'{args});"
    ))
    .await
    .unwrap();
}

/// Runs the sequencing step as a gateway would, until nothing staged is left: tests that read the log
/// with no gateway running (or with its listener cut off) put committed events there first.
pub async fn sequence_staged(admin: &tokio_postgres::Client) {
    admin
        .batch_execute(
            "BEGIN; LOCK TABLE pgsse.commit_order IN EXCLUSIVE MODE; SELECT pgsse.sequence_batch(1000000); COMMIT;",
        )
        .await
        .unwrap();
}

/// Waits until a running gateway has sequenced everything staged so far.
pub async fn wait_sequenced(admin: &tokio_postgres::Client) {
    wait_for("every staged event sequenced", || async {
        admin.query_one("SELECT count(*) FROM pgsse.staged", &[]).await.is_ok_and(|r| r.get::<_, i64>(0) == 0)
    })
    .await;
}

/// Every event in the log, as (id, body), in id order: what a client must have received.
pub async fn log_of(db: &Client) -> Vec<(i64, String)> {
    let rows = db.query("SELECT id, payload->>'body' FROM pgsse.events ORDER BY id", &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// What `follower` received, as (id, body).
pub fn received(follower: &Follower) -> Vec<(i64, String)> {
    follower.events().iter().map(|e| (e.id(), e.json()["body"].as_str().unwrap_or_default().to_string())).collect()
}

/// The server's message for a statement that must fail.
pub fn db_error(result: Result<impl Sized, tokio_postgres::Error>) -> String {
    match result {
        Ok(_) => panic!("expected the database to refuse"),
        Err(err) => err.as_db_error().map_or_else(|| err.to_string(), |db| db.message().to_string()),
    }
}

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

    async fn spawn_on(addr: SocketAddr, config: Config) -> Self {
        let listener = TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            pgsse::run(listener, config, async {
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

pub struct Response {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: String,
}

impl Response {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

async fn send(
    addr: SocketAddr,
    req: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<Incoming>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender.send_request(req).await?)
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: Bytes) -> hyper::Request<Full<Bytes>> {
    let mut req = hyper::Request::builder().method(method).uri(path).header("host", "localhost");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(Full::new(body)).unwrap()
}

pub async fn get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
    call(addr, "GET", path, headers, Bytes::new()).await
}

pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<Response, Box<dyn std::error::Error + Send + Sync>> {
    let resp = tokio::time::timeout(TIMEOUT, send(addr, request(method, path, headers, body))).await??;
    let status = resp.status().as_u16();
    let headers = header_map(resp.headers());
    let body = tokio::time::timeout(TIMEOUT, resp.into_body().collect()).await??.to_bytes();
    Ok(Response { status, headers, body: String::from_utf8_lossy(&body).into_owned() })
}

fn header_map(h: &hyper::HeaderMap) -> HashMap<String, String> {
    h.iter().map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned())).collect()
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Option<String>,
    pub event: String,
    pub data: String,
}

impl Event {
    pub fn id(&self) -> i64 {
        self.id.as_deref().expect("event has an id").parse().expect("numeric id")
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("data not JSON ({e}): {}", self.data))
    }
}

/// An open SSE response, parsed as a browser's EventSource does.
pub struct SseStream {
    pub status: u16,
    pub headers: HashMap<String, String>,
    body: Incoming,
    buf: Vec<u8>,
    /// Bytes at the start of `buf` already searched for an event's end: a large event arrives in many
    /// frames (8 KiB each, hyper's reads of a body that the connection's close delimits), and searching it
    /// all again for each would make this client too slow to keep up in a debug build.
    scanned: usize,
    pub raw: Vec<u8>,
    pub comments: usize,
    pub ended: bool,
}

impl SseStream {
    pub async fn open(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let req = request("GET", path, headers, Bytes::new());
        let resp = tokio::time::timeout(TIMEOUT, send(addr, req))
            .await
            .expect("stream headers in time")
            .expect("stream request");
        Self::from_response(resp)
    }

    fn from_response(resp: hyper::Response<Incoming>) -> Self {
        let status = resp.status().as_u16();
        let headers = header_map(resp.headers());
        Self {
            status,
            headers,
            body: resp.into_body(),
            buf: Vec::new(),
            scanned: 0,
            raw: Vec::new(),
            comments: 0,
            ended: false,
        }
    }

    /// Opens every path as a stream on one HTTP/2 connection (prior knowledge, no TLS) and asserts 200s.
    pub async fn h2_streams(addr: SocketAddr, paths: &[&str]) -> Vec<Self> {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), TokioIo::new(stream))
                .await
                .expect("HTTP/2 handshake");
        tokio::spawn(conn);
        let mut streams = Vec::new();
        for path in paths {
            let req = request("GET", &format!("http://{addr}{path}"), &[], Bytes::new());
            let resp = tokio::time::timeout(TIMEOUT, sender.clone().send_request(req))
                .await
                .expect("stream headers in time")
                .expect("stream request");
            assert_eq!(resp.status(), 200, "stream {path} refused");
            assert_eq!(resp.version(), hyper::Version::HTTP_2);
            streams.push(Self::from_response(resp));
        }
        streams
    }

    /// Opens and asserts a 200 event stream.
    pub async fn ok(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Self {
        let s = Self::open(addr, path, headers).await;
        assert_eq!(s.status, 200, "stream {path} refused");
        s
    }

    /// The next dispatched event, or `None` if the stream ended. Heartbeats do not extend the deadline.
    pub async fn next(&mut self) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if let Some(event) = self.parse_one() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            match tokio::time::timeout_at(deadline, self.body.frame()).await.expect("no SSE event in time") {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.raw.extend_from_slice(&data);
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) | None => self.ended = true,
            }
        }
    }

    /// Like `next`, without a deadline: a follower stays as long as the server keeps the stream open.
    async fn next_or_end(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.parse_one() {
                return Some(event);
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(_)) | None => return None,
            }
        }
    }

    pub async fn expect(&mut self) -> Event {
        self.next().await.expect("stream ended early")
    }

    pub async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.expect().await);
        }
        out
    }

    fn parse_one(&mut self) -> Option<Event> {
        loop {
            let from = self.scanned.saturating_sub(1);
            let Some(at) = memchr::memmem::find(&self.buf[from..], b"\n\n") else {
                self.scanned = self.buf.len();
                return None;
            };
            self.scanned = 0;
            let block: Vec<u8> = self.buf.drain(..from + at + 2).collect();
            let text = String::from_utf8(block).expect("stream is UTF-8");
            let mut event = Event { id: None, event: "message".into(), data: String::new() };
            let mut has_data = false;
            for line in text.split('\n').filter(|l| !l.is_empty()) {
                if line.starts_with(':') {
                    self.comments += 1;
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => event.id = Some(value.to_string()),
                    "event" => event.event = value.to_string(),
                    "data" => {
                        if has_data {
                            event.data.push('\n');
                        }
                        event.data.push_str(value);
                        has_data = true;
                    }
                    _ => {}
                }
            }
            if has_data {
                return Some(event);
            }
        }
    }
}

/// Re-checks `cond` every 20 ms until it holds; fails the test after [`TIMEOUT`].
pub async fn wait_for<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    loop {
        tick.tick().await;
        if cond().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for: {what}");
    }
}

/// One sample of `/metrics`, e.g. `pgsse_streams_open{channel="messages"}`; 0 when absent (a gauge drops
/// a label set that falls to zero).
pub async fn metric(addr: SocketAddr, sample: &str) -> u64 {
    let metrics = get(addr, "/metrics", &[]).await.unwrap().body;
    metrics.lines().find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok()).unwrap_or(0)
}

/// A client that behaves like a browser's EventSource: it keeps one stream open and, whenever the stream
/// ends or cannot be opened, reconnects with `Last-Event-ID` set to the last id it received.
pub struct Follower {
    events: std::sync::Arc<std::sync::Mutex<Vec<Event>>>,
    reconnects: std::sync::Arc<AtomicU32>,
    task: JoinHandle<()>,
}

impl Follower {
    pub fn start(addr: SocketAddr, path: &str) -> Self {
        Self::start_across(vec![addr], path)
    }

    /// Like `start`, behind a load balancer over `addrs`: it stays with one gateway while that one answers,
    /// and moves to the next when a connection fails.
    pub fn start_across(addrs: Vec<SocketAddr>, path: &str) -> Self {
        let events = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Event>::new()));
        let reconnects = std::sync::Arc::new(AtomicU32::new(0));
        let path = path.to_string();
        let task = {
            let (events, reconnects) = (events.clone(), reconnects.clone());
            tokio::spawn(async move {
                let mut last: Option<String> = None;
                // At most one reconnect per tick, like EventSource's retry delay.
                let mut pace = tokio::time::interval(Duration::from_millis(50));
                let mut at = 0;
                loop {
                    pace.tick().await;
                    let headers: Vec<(&str, &str)> = last.iter().map(|id| ("last-event-id", id.as_str())).collect();
                    let req = request("GET", &path, &headers, Bytes::new());
                    let answer = tokio::time::timeout(TIMEOUT, send(addrs[at], req)).await;
                    if !matches!(&answer, Ok(Ok(resp)) if resp.status() == 200) {
                        at = (at + 1) % addrs.len();
                    }
                    if let Ok(Ok(resp)) = answer {
                        if resp.status() == 200 {
                            let mut stream = SseStream::from_response(resp);
                            while let Some(event) = stream.next_or_end().await {
                                last = event.id.clone().or(last);
                                events.lock().unwrap().push(event);
                            }
                        }
                    }
                    reconnects.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        Self { events, reconnects, task }
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.events.lock().unwrap().len()
    }

    pub fn last_id(&self) -> Option<i64> {
        self.events.lock().unwrap().last().map(Event::id)
    }

    pub fn reconnects(&self) -> u32 {
        self.reconnects.load(Ordering::Relaxed)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A self-signed certificate for 127.0.0.1, made with the openssl command line.
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .args([&key, Path::new("-out"), &cert])
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}
