//! An HTTP/1 connection once hyper has handed it back with a stream: the stream's bytes, then the close
//! or, while it is quiet, its parking. A future of its own rather than an async fn, whose layout kept
//! every local it ever had (the connection twice, the body, the loop's futures): 1.2 KB per idle stream.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use hyper::body::Body;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{sleep, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::api::stream::SseBody;
use crate::http::access::Logged;
use crate::http::socket::Parkable;

/// Bound on closing a connection politely (TLS close_notify, FIN) once it is done.
pub(super) const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// What hyper hands back: the connection, and the body of the stream opened on it, if one was.
pub(super) type Detaching<IO> =
    Pin<Box<dyn Future<Output = Result<(IO, Option<Logged<SseBody>>), hyper::Error>> + Send>>;

/// A stream with nothing to send, its connection taken off the runtime for `http::parked` to keep.
pub(super) struct Parked {
    pub tcp: std::net::TcpStream,
    pub body: Logged<SseBody>,
}

/// Serves an HTTP/1 connection: hyper until it hands the connection back (boxed, and so freed then),
/// then the stream's bytes ([`Writing`]), then a close bounded by [`CLOSE_TIMEOUT`]; or it ends with the
/// stream [`Parked`], when `parking` and the stream has been quiet.
pub(super) struct Http1<IO> {
    state: State<IO>,
    parking: bool,
}

// Writing is large because it is where a connection spends its life; boxed, it would be one more allocation.
#[allow(clippy::large_enum_variant)]
enum State<IO> {
    Hyper(Detaching<IO>, CancellationToken),
    Writing(Writing<IO>),
    Closing(IO, Pin<Box<Sleep>>),
    Done,
}

impl<IO> Http1<IO> {
    pub(super) fn new(hyper: Detaching<IO>, shutdown: CancellationToken, parking: bool) -> Self {
        Self { state: State::Hyper(hyper, shutdown), parking }
    }

    /// A parked stream's connection, back with a task to write what woke it, after `pending` (what is
    /// left of a heartbeat the socket did not take whole while parked).
    pub(super) fn unparked(
        io: IO,
        body: Logged<SseBody>,
        pending: Bytes,
        shutdown: CancellationToken,
        parking: bool,
    ) -> Self {
        let mut writing = Writing::new(io, body, shutdown);
        writing.flushing = !pending.is_empty();
        writing.pending = pending;
        Self { state: State::Writing(writing), parking }
    }

    /// Moves on from the present state, which is returned (the state is not moved while it waits).
    fn take(&mut self) -> State<IO> {
        std::mem::replace(&mut self.state, State::Done)
    }
}

fn closing<IO>(io: IO) -> State<IO> {
    State::Closing(io, Box::pin(sleep(CLOSE_TIMEOUT)))
}

impl<IO: AsyncRead + AsyncWrite + Parkable + Unpin> Future for Http1<IO> {
    type Output = Result<Option<Parked>, hyper::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                State::Hyper(hyper, _) => {
                    let handed = ready!(hyper.as_mut().poll(cx));
                    let State::Hyper(_, shutdown) = this.take() else { return Poll::Ready(Ok(None)) };
                    this.state = match handed {
                        Err(err) => return Poll::Ready(Err(err)),
                        Ok((io, Some(body))) => State::Writing(Writing::new(io, body, shutdown)),
                        Ok((io, None)) => closing(io),
                    };
                }
                State::Writing(writing) => {
                    if writing.poll_step(cx).is_pending() {
                        if !(this.parking && writing.parks()) {
                            return Poll::Pending;
                        }
                        let State::Writing(writing) = this.take() else { return Poll::Ready(Ok(None)) };
                        return Poll::Ready(Ok(writing.park()));
                    }
                    let State::Writing(writing) = this.take() else { return Poll::Ready(Ok(None)) };
                    this.state = closing(writing.io);
                }
                State::Closing(io, deadline) => {
                    if Pin::new(io).poll_shutdown(cx).is_pending() && deadline.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.state = State::Done;
                }
                State::Done => return Poll::Ready(Ok(None)),
            }
        }
    }
}

/// Writes a stream's frames as they come, each flushed, until the stream ends, the client goes (any byte
/// it sends, or its close: it has nothing more to send on this connection), or a write fails (one that
/// makes no progress fails by itself, see `Stalling`; or until shutdown, for a write that the client does
/// not read).
struct Writing<IO> {
    io: IO,
    body: Logged<SseBody>,
    /// What is left of the frame being written.
    pending: Bytes,
    /// The frame is written, and still to be flushed.
    flushing: bool,
    shutdown: CancellationToken,
    /// Waits for shutdown only while a write waits: frames come first, and the token, shared by every
    /// stream, is then neither locked on each delivery nor waited on by streams that wait for frames.
    stopping: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
}

impl<IO> Writing<IO> {
    fn new(io: IO, body: Logged<SseBody>, shutdown: CancellationToken) -> Self {
        Self { io, body, pending: Bytes::new(), flushing: false, shutdown, stopping: None }
    }
}

impl<IO: AsyncRead + AsyncWrite + Parkable + Unpin> Writing<IO> {
    /// Whether the stream, which has just found nothing to send, should be parked: everything it wrote is
    /// flushed, it has been quiet, and its connection is a bare socket.
    fn parks(&self) -> bool {
        // The shutdown token last: reading it takes a lock that every stream shares, and a busy stream,
        // which is not parkable, must not take it on each delivery.
        !self.pending.has_remaining()
            && !self.flushing
            && self.body.body().parkable()
            && self.io.parkable()
            && !self.shutdown.is_cancelled()
    }

    /// The stream for `http::parked` to keep, its socket off the runtime; `None` if the socket failed.
    fn park(self) -> Option<Parked> {
        let tcp = self.io.into_parked()?;
        Some(Parked { tcp, body: self.body })
    }

    fn poll_step(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.pending.has_remaining() {
                match Pin::new(&mut self.io).poll_write(cx, &self.pending) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Ready(Ok(n)) => self.pending.advance(n),
                    Poll::Pending => return self.poll_shutdown(cx),
                }
                if !self.pending.has_remaining() {
                    // An empty remainder still holds the frame, which other streams may share.
                    self.pending = Bytes::new();
                }
                continue;
            }
            if self.flushing {
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.flushing = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(()),
                    Poll::Pending => return self.poll_shutdown(cx),
                }
                continue;
            }
            self.stopping = None;
            match Pin::new(&mut self.body).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.pending = frame.into_data().unwrap_or_default();
                    self.flushing = true;
                }
                Poll::Ready(_) => return Poll::Ready(()),
                Poll::Pending => {
                    let mut probe = [0; 1];
                    return Pin::new(&mut self.io).poll_read(cx, &mut ReadBuf::new(&mut probe)).map(|_| ());
                }
            }
        }
    }

    /// While a write waits: ends the stream at shutdown.
    fn poll_shutdown(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let shutdown = &self.shutdown;
        self.stopping.get_or_insert_with(|| Box::pin(shutdown.clone().cancelled_owned())).as_mut().poll(cx)
    }
}
