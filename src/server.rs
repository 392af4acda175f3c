//! The accept loop and graceful shutdown. `run` takes a bound listener and a shutdown future so tests can
//! bind port 0 and stop the server themselves.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, debug_span, error, info, Instrument};

use crate::app::{App, AppError};
use crate::config::{Config, ServerArgs};
use crate::http::{conn, routes, Builders, Site};

/// Pause after a failed accept (usually EMFILE), so the loop does not spin while descriptors are short.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// Connections the kernel queues before the accept loop takes them (it caps this at `somaxconn`): a page
/// reloaded by a thousand browsers at once connects at once, and a connection the queue drops waits a
/// second for its SYN to be sent again.
const LISTEN_BACKLOG: u32 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    App(#[from] AppError),
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {0}: {1}")]
pub struct BindError(SocketAddr, #[source] std::io::Error);

impl BindError {
    pub fn new(addr: SocketAddr, err: std::io::Error) -> Self {
        Self(addr, err)
    }
}

/// The sockets a gateway serves on, bound before it starts: the API's, and the metrics' own when
/// `/metrics` is served apart from it (`--metrics-listen`).
pub struct Sockets {
    pub api: TcpListener,
    pub metrics: Option<TcpListener>,
}

impl Sockets {
    /// Binds `--listen` and, when given, `--metrics-listen`.
    pub fn bind(server: &ServerArgs) -> Result<Self, BindError> {
        let metrics = match server.metrics_listen {
            Some(addr) => Some(bind(addr)?),
            None => None,
        };
        Ok(Self { api: bind(server.listen)?, metrics })
    }
}

impl From<TcpListener> for Sockets {
    fn from(api: TcpListener) -> Self {
        Self { api, metrics: None }
    }
}

/// Binds `addr`, with room for a reconnect storm in the accept queue.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let bound = || {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(LISTEN_BACKLOG)
    };
    bound().map_err(|err| BindError::new(addr, err))
}

/// Serves until `shutdown` completes, then ends every stream and waits (up to `--shutdown-timeout`) for
/// connections to close.
pub async fn run(
    listeners: impl Into<Sockets>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let Sockets { api, metrics } = listeners.into();
    let tasks = TaskTracker::new();
    let app = App::start(config, &tasks)?;
    let metrics_apart = metrics.is_some();
    if let Some(metrics) = metrics {
        tasks.spawn(serve_metrics(metrics, app.clone()));
    }
    let server = &app.config.server;
    let connections = TaskTracker::new();
    let site = Arc::new(Site::new(&app, builders(server), metrics_apart, &connections));
    accept(api, &site, &connections, shutdown).await;

    info!("shutting down: ending streams and closing connections");
    app.shut_down();
    // Each connection starts its graceful shutdown on the token (conn::until_done); its task, HTTP/1
    // streams that conn writes itself included, ends with it.
    connections.close();
    let limit = server.shutdown_timeout;
    match tokio::time::timeout(limit, connections.wait()).await {
        Ok(()) => debug!("all connections closed"),
        Err(_) => info!(timeout = ?limit, "connections still open at the shutdown timeout; closing them"),
    }
    tasks.close();
    tasks.wait().await;
    Ok(())
}

fn builders(server: &ServerArgs) -> Builders {
    let mut http1 = http1::Builder::new();
    http1
        .keep_alive(true)
        // No read for the client's close while a request is being answered: that read would take a second
        // 8 KiB buffer for every stream still opening (the first stays shared with the request's head).
        // A stream's close is watched once it is written (writing::Http1).
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        // hyper's default would let every connection buffer about 400 KB. Its bound on the buffer is not one
        // on the head (it may read up to twice this before parsing), so routing enforces the head's.
        .max_buf_size(routes::MAX_REQUEST_HEAD);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2.max_header_list_size(routes::MAX_REQUEST_HEAD as u32);
    Builders { http1, http2 }
}

/// Accepts connections, at most `--max-connections` at a time, until `shutdown` completes.
async fn accept(
    listener: TcpListener,
    site: &Arc<Site>,
    connections: &TaskTracker,
    shutdown: impl Future<Output = ()>,
) {
    if let Ok(addr) = listener.local_addr() {
        let mercure = site.mercure.is_some().then_some("/.well-known/mercure");
        info!(%addr, version = env!("CARGO_PKG_VERSION"), mercure, "serving");
    }
    let permits = Arc::new(Semaphore::new(site.settings.max_connections));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = &mut shutdown => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(err) => {
                    // Usually EMFILE or a connection reset before accept: log and keep serving.
                    error!(cause = ?err, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            _ = &mut shutdown => return,
        };
        let Some(slot) = site.limits.admit_connection(peer.ip()) else {
            debug!(%peer, "closing a connection over the per-address limit");
            continue;
        };
        if let Err(err) = stream.set_nodelay(true) {
            debug!(cause = ?err, "could not set TCP_NODELAY");
        }
        // The places under the limits go back when the connection's task ends. Passed in rather than
        // held by a block around the call: each idle stream's task would keep a second copy of all it
        // moved into the call.
        let serving = conn::serve(stream, peer, site.clone(), (slot, permit));
        // At the level and target of the connection's own lines, so it is on whenever they are: enabled,
        // a span keeps a slot of the log's registry and its fields for each open connection, and the
        // registry keeps the slots once they close (19,000 streams left 25 MB behind, docs/performance.md).
        connections.spawn(serving.instrument(debug_span!(target: "pgsse::http::conn", "conn", %peer)));
    }
}

/// The `--metrics-listen` address: plain HTTP/1.1, `/metrics` only, until shutdown.
async fn serve_metrics(listener: TcpListener, app: Arc<App>) {
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving metrics");
    }
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    error!(cause = ?err, "metrics accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                    continue;
                }
            },
            _ = app.shutdown.cancelled() => return,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let (header_read_timeout, metrics) = (app.config.server.header_read_timeout, app.metrics.clone());
            let service = service_fn(move |req| routes::handle_metrics(metrics.clone(), req));
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = conn.await {
                debug!(cause = ?err, "metrics connection ended with an error");
            }
        });
    }
}
