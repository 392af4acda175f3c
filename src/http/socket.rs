//! A client connection's bytes around hyper: the first bytes, read to choose the protocol and handed back,
//! and writes that fail once the client has stopped taking bytes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant, Sleep};

/// What a client speaking HTTP/2 by prior knowledge sends first.
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A connection whose first bytes were read to choose the protocol. They are handed back to hyper
/// together with whatever else has arrived, in one read: hyper sizes its read buffer by its first read,
/// and a short first read would double that buffer for as long as hyper serves the connection (keep-alive
/// requests, and every stream while it opens).
pub(super) struct Sniffed<IO> {
    inner: IO,
    first: [u8; H2_PREFACE.len()],
    len: usize,
    pos: usize,
}

impl<IO: AsyncRead + Unpin> Sniffed<IO> {
    /// Reads until the bytes are the whole HTTP/2 preface (`true`) or cannot be (`false`): an HTTP/1
    /// request is known by its first byte.
    pub(super) async fn read(mut inner: IO) -> io::Result<(Self, bool)> {
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

/// A connection whose stream can be parked as a bare socket (`http::parked`): plain TCP, with nothing it
/// read still held. A TLS connection's state lives in its session, so its streams stay with their tasks.
pub(super) trait Parkable: Sized {
    fn parkable(&self) -> bool {
        false
    }

    /// The socket, off the runtime's reactor, if [`Parkable::parkable`].
    fn into_parked(self) -> Option<std::net::TcpStream> {
        None
    }
}

impl Parkable for TcpStream {
    fn parkable(&self) -> bool {
        true
    }

    fn into_parked(self) -> Option<std::net::TcpStream> {
        self.into_std().ok()
    }
}

impl<IO> Parkable for tokio_rustls::server::TlsStream<IO> {}

impl<IO: Parkable> Parkable for Stalling<IO> {
    fn parkable(&self) -> bool {
        self.inner.parkable()
    }

    fn into_parked(self) -> Option<std::net::TcpStream> {
        self.inner.into_parked()
    }
}

impl<IO: Parkable> Parkable for Sniffed<IO> {
    fn parkable(&self) -> bool {
        self.pos == self.len && self.inner.parkable()
    }

    fn into_parked(self) -> Option<std::net::TcpStream> {
        self.parkable().then(|| self.inner.into_parked()).flatten()
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

/// A client connection whose writes fail once the client has taken no byte for `stall`: whatever is
/// being written (a stream's frames, a history page, HTTP/2 frames of any stream), a client that stopped
/// reading loses its connection, and with it everything the gateway held for it. The timer runs only while
/// the socket is full, and it is one timer per connection, moved only when it fires (to the start of the
/// current wait plus `stall`): arming one for every write that must wait slowed replay badly
/// (docs/performance.md). A client that keeps taking bytes, however slowly, is never cut here.
pub(super) struct Stalling<IO> {
    inner: IO,
    stall: Duration,
    /// Since when writes have been waiting for the client, with no byte taken.
    waiting: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<IO> Stalling<IO> {
    pub(super) fn new(inner: IO, stall: Duration) -> Self {
        Self { inner, stall, waiting: None, timer: None }
    }

    fn progress<T>(&mut self, cx: &mut Context<'_>, step: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if step.is_ready() {
            self.waiting = None;
            return step;
        }
        let due = *self.waiting.get_or_insert_with(Instant::now) + self.stall;
        // Polled only to register this task's waker, and again once it has fired: a write that waits
        // touches no timer otherwise.
        let timer = match &mut self.timer {
            None => self.timer.insert(Box::pin(sleep_until(due))),
            Some(timer) if timer.is_elapsed() => {
                if Instant::now() >= due {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client took no bytes")));
                }
                // Set while an earlier write waited: the client has taken bytes since.
                timer.as_mut().reset(due);
                timer
            }
            Some(_) => return Poll::Pending,
        };
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client took no bytes"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Stalling<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Stalling<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let step = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(cx, step)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let step = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(cx, step)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let step = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(cx, step)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    async fn write_flushed<IO: AsyncWrite + Unpin>(io: &mut IO, data: &[u8]) -> io::Result<()> {
        io.write_all(data).await?;
        io.flush().await
    }

    const STALL: Duration = Duration::from_secs(60);

    #[tokio::test(start_paused = true)]
    async fn a_write_the_client_never_takes_fails_after_the_stall() {
        let (ours, _theirs) = tokio::io::duplex(64);
        let mut ours = Stalling::new(ours, STALL);
        let started = tokio::time::Instant::now();
        let err = write_flushed(&mut ours, &[b'x'; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), STALL);
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_client_that_keeps_taking_bytes_is_never_timed_out() {
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut ours = Stalling::new(ours, STALL);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0; 64];
            while got.len() < 1024 {
                tokio::time::sleep(STALL / 2).await;
                let n = theirs.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        let started = tokio::time::Instant::now();
        write_flushed(&mut ours, &[b'x'; 1024]).await.unwrap();
        assert!(started.elapsed() > STALL * 4, "took {:?}, far longer than one stall", started.elapsed());
        assert_eq!(reader.await.unwrap(), vec![b'x'; 1024]);
    }
}
