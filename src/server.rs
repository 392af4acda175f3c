//! The accept loop and graceful shutdown. `run` takes a bound listener and a shutdown future so tests can
//! bind port 0 and stop the server themselves.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, info_span, Instrument};

use crate::config::Config;
use crate::cors::Cors;
use crate::hub::Hub;
use crate::limits::Limits;
use crate::listener::{Listener, ListenerError, ListenerStatus};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use crate::{retention, routes};

/// What an HTTP/2 connection with prior knowledge starts with; anything else is HTTP/1.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// How often a connection part-way through the HTTP/2 preface is looked at again.
const PREFACE_POLL: Duration = Duration::from_millis(10);

/// Waits, at most `limit`, until the first bytes tell HTTP/1 from HTTP/2. Only peeks: hyper reads them.
async fn protocol_known(stream: &TcpStream, limit: Duration) -> bool {
    let decided = async {
        let mut buf = [0u8; 24];
        loop {
            if stream.readable().await.is_err() {
                return false;
            }
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == H2_PREFACE.len() || buf[..n] != H2_PREFACE[..n] => return true,
                // A prefix of the preface: readiness stays set, so look again shortly rather than spin.
                Ok(_) => tokio::time::sleep(PREFACE_POLL).await,
            }
        }
    };
    tokio::time::timeout(limit, decided).await.unwrap_or(false)
}

/// Largest request head (request line and headers) read; a larger one is answered 431. hyper's default
/// would let every connection buffer about 400 KB.
const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Shared by every request.
pub struct AppState {
    pub config: Config,
    pub store: Store,
    pub hub: Arc<Hub>,
    pub listener: Arc<ListenerStatus>,
    pub cors: Cors,
    pub limits: Arc<Limits>,
    pub metrics: Arc<Metrics>,
    /// Cancelled on shutdown: ends every stream body and the listener.
    pub shutdown: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Listener(#[from] ListenerError),
}

pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let hub = Arc::new(Hub::new(config.queue_capacity));
    let status = Arc::new(ListenerStatus::default());
    let listen_url = config.listen_database_url.as_deref().unwrap_or(&config.database_url);
    let pg_listener = Listener::new(listen_url, hub.clone(), status.clone(), config.probe_interval)?;
    let limits =
        Arc::new(Limits::new(config.max_streams, config.max_streams_per_client, config.trusted_proxies.clone()));
    let state = Arc::new(AppState {
        metrics: Metrics::new(hub.clone(), status.clone(), limits.clone()),
        limits,
        store: Store::new(&config.database_url, config.pool_size)?,
        hub,
        listener: status,
        cors: Cors::new(&config.cors_origins),
        shutdown: CancellationToken::new(),
        config,
    });
    let listener_task = tokio::spawn(pg_listener.run(state.shutdown.clone()));
    let retention_task = {
        let state = state.clone();
        tokio::spawn(async move {
            let (retention, interval) = (state.config.retention, state.config.prune_interval);
            retention::run(&state.store, retention, interval, state.shutdown.clone()).await;
        })
    };

    let permits = Arc::new(Semaphore::new(state.config.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(state.config.header_read_timeout)
        .max_buf_size(MAX_REQUEST_HEAD);
    let builder = Arc::new(builder);
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
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        if let Err(err) = stream.set_nodelay(true) {
            debug!(cause = ?err, "could not set TCP_NODELAY");
        }
        let state = state.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(
            async move {
                // hyper's header timeout starts only after the protocol is known: a client that sends
                // nothing, or stalls inside the HTTP/2 preface, would otherwise hold its place forever.
                if !protocol_known(&stream, state.config.header_read_timeout).await {
                    debug!("closed a connection that did not start a request in time");
                    return;
                }
                // Boxed so the connection keeps only a pointer once the response is produced: hyper holds
                // the service future's slot for the connection's lifetime, and the routing future is large.
                let service = service_fn(move |req| Box::pin(routes::handle(state.clone(), peer.ip(), req)));
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                if let Err(err) = watcher.watch(conn.into_owned()).await {
                    debug!(cause = ?err, "connection ended with an error");
                }
                drop(permit);
            }
            .instrument(info_span!("conn", %peer)),
        );
    }

    info!("shutting down: ending streams and closing connections");
    drop(listener);
    state.shutdown.cancel();
    state.hub.close();
    tokio::select! {
        _ = graceful.shutdown() => debug!("all connections closed"),
        _ = tokio::time::sleep(state.config.shutdown_timeout) => {
            info!(timeout = ?state.config.shutdown_timeout, "connections still open at the shutdown timeout; closing them");
        }
    }
    let _ = listener_task.await;
    let _ = retention_task.await;
    Ok(())
}
