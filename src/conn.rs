//! One accepted connection: the TLS handshake when configured, a deadline on the first bytes, then hyper
//! (HTTP/1.1, or HTTP/2 by ALPN or by prior knowledge).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Sleep;
use tracing::debug;

use crate::routes;
use crate::server::AppState;

/// Enough to tell HTTP/1 from the HTTP/2 preface (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`).
const FIRST_BYTES: usize = 24;

/// A connection that must deliver its first [`FIRST_BYTES`] within a deadline. hyper's header timeout
/// starts only once the protocol is known, so a client that sends nothing, or stalls inside the HTTP/2
/// preface, would otherwise hold its place forever.
struct FirstBytes<IO> {
    inner: IO,
    deadline: Option<Pin<Box<Sleep>>>,
    seen: usize,
}

impl<IO> FirstBytes<IO> {
    fn new(inner: IO, limit: Duration) -> Self {
        Self { inner, deadline: Some(Box::pin(tokio::time::sleep(limit))), seen: 0 }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FirstBytes<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let Some(deadline) = &mut this.deadline else { return polled };
        match &polled {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                this.seen += read;
                if this.seen >= FIRST_BYTES || read == 0 {
                    this.deadline = None;
                }
            }
            Poll::Pending if deadline.as_mut().poll(cx).is_ready() => {
                return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request in time")));
            }
            _ => {}
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FirstBytes<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Serves one client connection until it closes or graceful shutdown ends it.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    state: Arc<AppState>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    watcher: Watcher,
) {
    let limit = state.config.header_read_timeout;
    let tls = state.config.tls.clone();
    // Boxed so the connection keeps only a pointer once the response is produced: hyper holds the service
    // future's slot for the connection's lifetime, and the routing future is large.
    let service = service_fn(move |req| Box::pin(routes::handle(state.clone(), peer.ip(), req)));
    let result = match tls {
        None => watcher.watch(builder.serve_connection(TokioIo::new(FirstBytes::new(stream, limit)), service)).await,
        Some(config) => {
            let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
            let stream = match tokio::time::timeout(limit, handshake).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(err)) => return debug!(cause = %err, "TLS handshake failed"),
                Err(_) => return debug!("TLS handshake did not finish in time"),
            };
            watcher.watch(builder.serve_connection(TokioIo::new(FirstBytes::new(stream, limit)), service)).await
        }
    };
    if let Err(err) = result {
        debug!(cause = ?err, "connection ended with an error");
    }
}
