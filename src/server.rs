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
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, Instrument};

use crate::api::snapshot::Shared;
use crate::app::metrics::Metrics;
use crate::app::AppState;
use crate::config::Config;
use crate::fanout::hub::Hub;
use crate::http::cors::Cors;
use crate::http::{conn, routes};
use crate::limits::Limits;
use crate::pg::listener::{Listener, ListenerError, ListenerStatus};
use crate::pg::published::Published;
use crate::pg::retention;
use crate::pg::store::{Store, StoreError};

/// Pause after a failed accept (usually EMFILE), so the loop does not spin while descriptors are short.
const ACCEPT_RETRY: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Listener(#[from] ListenerError),
    #[error("cannot serve metrics on {0}: {1}")]
    MetricsListen(SocketAddr, std::io::Error),
}

/// Connections the kernel queues before the accept loop takes them (it caps this at `somaxconn`): a page
/// reloaded by a thousand browsers at once connects at once, and a connection the queue drops waits a
/// second for its SYN to be sent again.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds the client-facing address, with room for a reconnect storm in the accept queue.
pub fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The `--metrics-listen` address: plain HTTP/1.1, `/metrics` only, until shutdown.
async fn serve_metrics(listener: TcpListener, state: Arc<AppState>) {
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
            _ = state.shutdown.cancelled() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let header_read_timeout = state.config.header_read_timeout;
            let service = service_fn(move |req| routes::handle_metrics(state.clone(), req));
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

pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(|err| ServerError::MetricsListen(addr, err))?),
        None => None,
    };
    let hub = Arc::new(Hub::new(config.queue_capacity));
    let status = Arc::new(ListenerStatus::default());
    let listen_url = config.listen_database_url.as_deref().unwrap_or(&config.database_url);
    let pg_listener = Listener::new(listen_url, hub.clone(), status.clone(), config.probe_interval)?;
    let limits = Arc::new(Limits::new(
        config.max_streams,
        config.max_streams_per_client,
        config.max_connections_per_client,
        config.trusted_proxies.clone(),
    ));
    let state = Arc::new(AppState {
        metrics: Metrics::new(hub.clone(), status.clone(), limits.clone(), config.metrics_channel_labels),
        limits,
        store: Store::new(&config.database_url, config.pool_size, config.db_timeout)?,
        hub,
        listener: status,
        cors: Cors::new(&config.cors_origins),
        snapshots: Shared::default(),
        published: Published::default(),
        shutdown: CancellationToken::new(),
        config,
    });
    let listener_task = tokio::spawn(pg_listener.run(state.shutdown.clone()));
    if let Some(metrics_listener) = metrics_listener {
        tokio::spawn(serve_metrics(metrics_listener, state.clone()));
    }
    let retention_task = {
        let state = state.clone();
        tokio::spawn(async move {
            let config = &state.config;
            let rules = config
                .retention
                .map(retention::Rule::OlderThan)
                .into_iter()
                .chain(config.retention_events.map(retention::Rule::BeyondPerChannel))
                .collect();
            retention::run(&state.store, rules, config.prune_interval, state.shutdown.clone()).await;
        })
    };

    let permits = Arc::new(Semaphore::new(state.config.max_connections));
    let mut http1 = http1::Builder::new();
    http1
        .keep_alive(true)
        // No read for the client's close while a request is being answered: that read would take a second
        // 8 KiB buffer for every stream still opening (the first stays shared with the request's head).
        // A stream's close is watched once it is written (conn::write_stream).
        .half_close(true)
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout)
        // hyper's default would let every connection buffer about 400 KB. Its bound on the buffer is not one
        // on the head (it may read up to twice this before parsing), so routing enforces the head's.
        .max_buf_size(routes::MAX_REQUEST_HEAD);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2.max_header_list_size(routes::MAX_REQUEST_HEAD as u32);
    let builders = Arc::new(conn::Builders { http1, http2 });
    if let Ok(addr) = listener.local_addr() {
        info!(%addr, "serving");
    }

    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
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
            _ = &mut shutdown => break,
        };
        let Some(slot) = state.limits.admit_connection(peer.ip()) else {
            debug!(%peer, "closing a connection over the per-address limit");
            continue;
        };
        if let Err(err) = stream.set_nodelay(true) {
            debug!(cause = ?err, "could not set TCP_NODELAY");
        }
        let state = state.clone();
        let builders = builders.clone();
        tokio::spawn(
            async move {
                conn::serve(stream, peer, state, builders).await;
                drop((slot, permit));
            }
            .instrument(info_span!("conn", %peer)),
        );
    }

    info!("shutting down: ending streams and closing connections");
    drop(listener);
    state.shutdown.cancel();
    state.hub.close();
    // Each connection starts its graceful shutdown on the token (conn::until_done), and its task, HTTP/1
    // streams that conn writes itself included, holds a permit until it ends.
    let every_permit = u32::try_from(state.config.max_connections).unwrap_or(u32::MAX);
    tokio::select! {
        _ = permits.acquire_many(every_permit) => debug!("all connections closed"),
        _ = tokio::time::sleep(state.config.shutdown_timeout) => {
            info!(timeout = ?state.config.shutdown_timeout, "connections still open at the shutdown timeout; closing them");
        }
    }
    let _ = listener_task.await;
    let _ = retention_task.await;
    Ok(())
}
