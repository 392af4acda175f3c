//! One accepted connection: the TLS handshake when configured, a deadline on the first bytes, then hyper
//! (HTTP/2 when the client opens with its preface, after ALPN or by prior knowledge; HTTP/1.1 otherwise).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tracing::debug;

use crate::routes;
use crate::server::AppState;

/// What a client speaking HTTP/2 by prior knowledge sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// hyper's builders for the two protocols, configured once by the server.
pub struct Builders {
    pub http1: http1::Builder,
    pub http2: http2::Builder<TokioExecutor>,
}

/// A connection whose first bytes were read to choose the protocol. They are handed back to hyper
/// together with whatever else has arrived, in one read: hyper sizes its read buffer by its first read,
/// and a short first read would double that buffer, which an idle stream then keeps for its lifetime.
struct Sniffed<IO> {
    inner: IO,
    first: [u8; H2_PREFACE.len()],
    len: usize,
    pos: usize,
}

impl<IO: AsyncRead + Unpin> Sniffed<IO> {
    /// Reads until the bytes are the whole HTTP/2 preface (`true`) or cannot be (`false`): an HTTP/1
    /// request is known by its first byte.
    async fn read(mut inner: IO) -> io::Result<(Self, bool)> {
        let mut first = [0; H2_PREFACE.len()];
        let mut len = 0;
        while H2_PREFACE.starts_with(&first[..len]) && len < first.len() {
            match inner.read(&mut first[len..]).await? {
                0 => break,
                n => len += n,
            }
        }
        let http2 = first[..len] == H2_PREFACE[..];
        Ok((Self { inner, first, len, pos: 0 }, http2))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Sniffed<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pos == this.len {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        let n = buf.remaining().min(this.len - this.pos);
        buf.put_slice(&this.first[this.pos..this.pos + n]);
        this.pos += n;
        if buf.remaining() > 0 {
            // Whatever this adds is a bonus: pending or failed, the next read asks again.
            let _ = Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Sniffed<IO> {
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
    builders: Arc<Builders>,
    watcher: Watcher,
) {
    // hyper's header timeout starts only once the protocol is known, so the first bytes (and the TLS
    // handshake) get the same deadline: a client that sends nothing must not hold its place forever.
    let limit = state.config.header_read_timeout;
    let serving = match state.config.tls.clone() {
        // Each phase boxed: inline, every connection's task would stay as large as the largest phase (the
        // TLS handshake, the deadline's timer) for as long as its stream idles.
        None => match Box::pin(timeout(limit, Sniffed::read(stream))).await {
            Ok(Ok((io, http2))) => serve_http(io, http2, peer, state, &builders, watcher),
            Ok(Err(err)) => return debug!(cause = %err, "reading the first bytes failed"),
            Err(_) => return debug!("no request in time"),
        },
        Some(config) => {
            let accepted = Box::pin(timeout(limit, async {
                let stream = tokio_rustls::TlsAcceptor::from(config).accept(stream).await?;
                Sniffed::read(stream).await
            }));
            match accepted.await {
                Ok(Ok((io, http2))) => serve_http(io, http2, peer, state, &builders, watcher),
                Ok(Err(err)) => return debug!(cause = %err, "TLS handshake or first bytes failed"),
                Err(_) => return debug!("no TLS handshake and request in time"),
            }
        }
    };
    // Awaited outside the match: awaited inside, the task would keep room for the (TLS) stream the arm
    // bound, though it has moved into the boxed connection.
    if let Err(err) = serving.await {
        debug!(cause = ?err, "connection ended with an error");
    }
}

/// One connection being served by hyper, boxed at its protocol's own size.
type Serving = Pin<Box<dyn Future<Output = Result<(), hyper::Error>> + Send>>;

fn serve_http<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: Sniffed<IO>,
    http2: bool,
    peer: SocketAddr,
    state: Arc<AppState>,
    builders: &Builders,
    watcher: Watcher,
) -> Serving {
    // Boxed so the connection keeps only a pointer once the response is produced: hyper holds the service
    // future's slot for the connection's lifetime, and the routing future is large.
    let service = service_fn(move |req| Box::pin(routes::handle(state.clone(), peer.ip(), req)));
    match http2 {
        true => Box::pin(watcher.watch(builders.http2.serve_connection(TokioIo::new(io), service))),
        false => Box::pin(watcher.watch(builders.http1.serve_connection(TokioIo::new(io), service))),
    }
}
