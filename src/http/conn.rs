//! One accepted connection: the TLS handshake when configured, a deadline on the first bytes, then hyper
//! (HTTP/2 when the client opens with its preface, after ALPN or by prior knowledge; HTTP/1.1 otherwise).
//! An HTTP/1 stream's body is written here, on the connection hyper hands back, so hyper's buffers go.

use std::convert::Infallible;
use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Response, Version};
use http_body_util::Either;
use hyper::body::{Body, Frame};
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::api::reply::Body as Routed;
use crate::api::stream::SseBody;
use crate::http::access::{self, Logged};
use crate::http::idle::{Guard, Tracked};
use crate::http::parked::{Admitted, Lot};
use crate::http::socket::{Parkable, Sniffed, Stalling};
use crate::http::writing::{Http1, Parked, CLOSE_TIMEOUT};
use crate::http::{routes, Site};

/// Heartbeats' worth of time in which a client must take at least one byte of a pending write.
pub(super) const STALLED_HEARTBEATS: u32 = 4;

/// Serves one client connection until it closes or graceful shutdown ends it, and then drops `admitted`
/// (its places under the limits), or hands it on with its stream when that is parked. Not an async fn:
/// its arguments would stay in every connection's task for as long as the connection lasts, though they
/// move on at once.
pub fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    site: Arc<Site>,
    admitted: Admitted,
) -> impl Future<Output = ()> + Send {
    let lot = site.lot.clone();
    // Boxed, and so freed once the protocol is known: inline, every connection's task would stay as large
    // as its largest phase (the TLS handshake, the deadline's timer) for as long as its stream idles.
    let opening = Box::pin(open(stream, peer, site));
    async move {
        let Some(serving) = opening.await else { return };
        Lot::ended(lot.as_ref(), serving.await, admitted);
    }
}

/// The TLS handshake when configured and the first bytes, under one deadline; then the connection as its
/// protocol serves it.
async fn open(stream: TcpStream, peer: SocketAddr, site: Arc<Site>) -> Option<Serving> {
    let settings = &site.settings;
    let stream = Stalling::new(stream, settings.heartbeat * STALLED_HEARTBEATS);
    // hyper's header timeout starts only once the protocol is known, so the first bytes (and the TLS
    // handshake) get the same deadline: a client that sends nothing must not hold its place forever.
    let limit = settings.header_read_timeout;
    match settings.tls.clone() {
        None => {
            let first = timeout(limit, Sniffed::read(stream)).await;
            served(first, ["reading the first bytes failed", "no request in time"], peer, site)
        }
        Some(config) => {
            let first = timeout(limit, async {
                let stream = tokio_rustls::TlsAcceptor::from(config).accept(stream).await?;
                Sniffed::read(stream).await
            })
            .await;
            let said = ["TLS handshake or first bytes failed", "no TLS handshake and request in time"];
            served(first, said, peer, site)
        }
    }
}

/// The connection served by its protocol, once its first bytes came in time; `said` is what the log says
/// when they did not come (failed, late).
fn served<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    first: Result<io::Result<(Sniffed<IO>, bool)>, tokio::time::error::Elapsed>,
    said: [&str; 2],
    peer: SocketAddr,
    site: Arc<Site>,
) -> Option<Serving>
where
    Sniffed<IO>: Parkable,
{
    match first {
        Ok(Ok((io, http2))) => Some(serve_http(io, http2, peer, site)),
        Ok(Err(err)) => {
            debug!(cause = %err, "{}", said[0]);
            None
        }
        Err(_) => {
            debug!("{}", said[1]);
            None
        }
    }
}

/// One connection being served, boxed at its protocol's own size; an HTTP/1 stream may end it parked.
type Serving = Pin<Box<dyn Future<Output = Result<Option<Parked>, hyper::Error>> + Send>>;

fn serve_http<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: Sniffed<IO>,
    http2: bool,
    peer: SocketAddr,
    site: Arc<Site>,
) -> Serving
where
    Sniffed<IO>: Parkable,
{
    if !http2 {
        return serve_http1(io, peer, site);
    }
    // Closed (GOAWAY) at shutdown, or once no request has been open for the header timeout: what an idle
    // HTTP/1 connection gets, since it must send its next request's head within that time.
    let closing = site.shutdown.child_token();
    let idle_limit = site.settings.header_read_timeout;
    let active = Arc::new(super::idle::Active::default());
    let requests = active.clone();
    // Boxed so the connection keeps only a pointer once the response is produced: hyper holds the service
    // future's slot for the connection's lifetime, and the routing future is large.
    let builder = site.builders.http2.clone();
    let service = service_fn(move |req| {
        Box::pin(http2_answer(site.clone(), peer, req, requests.enter()))
            as Pin<Box<dyn Future<Output = Result<Response<Tracked<Logged<Routed>>>, Infallible>> + Send>>
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    Box::pin(async move {
        let conn = pin!(conn);
        let serving = until_done(conn, &closing, http2::Connection::graceful_shutdown, |conn, cx| conn.poll(cx));
        tokio::select! {
            done = serving => done.map(|()| None),
            // GOAWAY, then a bounded wait: hyper's graceful close waits for the client to answer a PING,
            // which a client that does nothing never does.
            () = async {
                active.idle_for(idle_limit).await;
                debug!("HTTP/2 connection idle; closing it");
                closing.cancel();
                sleep(CLOSE_TIMEOUT).await;
            } => Ok(None),
        }
    })
}

/// Drives a hyper connection to its end, starting its graceful shutdown (no new requests, or GOAWAY)
/// once `shutdown` is cancelled. The server then waits for every connection's task (`server::run`).
async fn until_done<C, T>(
    mut conn: Pin<&mut C>,
    shutdown: &CancellationToken,
    graceful: fn(Pin<&mut C>),
    mut poll: impl FnMut(Pin<&mut C>, &mut Context<'_>) -> Poll<T>,
) -> T {
    let mut cancelled = pin!(shutdown.cancelled());
    let mut closing = false;
    poll_fn(|cx| {
        if !closing && cancelled.as_mut().poll(cx).is_ready() {
            graceful(conn.as_mut());
            closing = true;
        }
        poll(conn.as_mut(), cx)
    })
    .await
}

/// A request's response, with its access log entry. Built by mapping the routing future, not in an async
/// fn or block, as are the two below: hyper keeps a request's future until its response is ready, and an
/// async fn or block would keep room for the request beside the routing future it moved it into.
fn answer(
    site: Arc<Site>,
    peer: SocketAddr,
    req: http::Request<hyper::body::Incoming>,
) -> impl Future<Output = Response<Logged<Routed>>> + Send {
    let entry = log_entry(&site, peer, &req);
    routes::handle(site, peer.ip(), req).map(move |handled| {
        let Ok(response) = handled;
        access::logged(response, entry)
    })
}

/// What hyper keeps for an HTTP/1 request: its answer, with a stream's body taken out for [`Http1`].
fn http1_answer(
    site: Arc<Site>,
    peer: SocketAddr,
    req: http::Request<hyper::body::Incoming>,
    slot: Arc<Mutex<Option<Logged<SseBody>>>>,
) -> impl Future<Output = Result<Response<Http1Body>, Infallible>> + Send {
    answer(site, peer, req).map(move |response| Ok(detach(response, &slot)))
}

/// What hyper keeps for an HTTP/2 request: its answer, counted as open until its body is done.
fn http2_answer(
    site: Arc<Site>,
    peer: SocketAddr,
    req: http::Request<hyper::body::Incoming>,
    open: Guard,
) -> impl Future<Output = Result<Response<Tracked<Logged<Routed>>>, Infallible>> + Send {
    answer(site, peer, req).map(|response| Ok(response.map(|body| Tracked { body, _guard: open })))
}

/// The request's access log entry, under `--access-log`.
fn log_entry<B>(site: &Site, peer: SocketAddr, req: &http::Request<B>) -> Option<Box<access::Entry>> {
    site.settings.access_log.then(|| access::Entry::begin(req, site.limits.client(peer.ip(), req.headers())))
}

/// What hyper writes on an HTTP/1 connection: a routed response, or only the head of a stream.
type Http1Body = Either<Logged<Routed>, Detached>;

/// The body of a stream's response as hyper sees it: no length, and over at once. With the response
/// marked HTTP/1.0 that means a body delimited by the connection's close, so hyper writes the head with
/// neither length nor chunking and then hands the connection back (`poll_without_shutdown`).
struct Detached;

impl Body for Detached {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(None)
    }
}

/// HTTP/1: hyper parses requests and writes responses until a stream is opened; then this task writes
/// the stream's bytes itself ([`Http1`]). Kept by hyper, an idle stream would hold its two 8 KiB buffers
/// (read and write, the smallest hyper allows) with a page of each touched: over 8 KB of every stream's
/// memory.
fn serve_http1<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: Sniffed<IO>,
    peer: SocketAddr,
    site: Arc<Site>,
) -> Serving
where
    Sniffed<IO>: Parkable,
{
    let (shutdown, parking) = (site.shutdown.clone(), site.lot.is_some());
    Box::pin(Http1::new(Box::pin(until_detached(io, peer, site)), shutdown, parking))
}

/// Lets hyper serve the connection until it ends or a stream is opened on it, and hands back the
/// connection with that stream's body.
async fn until_detached<IO: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: Sniffed<IO>,
    peer: SocketAddr,
    site: Arc<Site>,
) -> Result<(Sniffed<IO>, Option<Logged<SseBody>>), hyper::Error> {
    let shutdown = site.shutdown.clone();
    let builder = site.builders.http1.clone();
    let opened: Arc<Mutex<Option<Logged<SseBody>>>> = Arc::default();
    let slot = opened.clone();
    let service = service_fn(move |req| {
        Box::pin(http1_answer(site.clone(), peer, req, slot.clone()))
            as Pin<Box<dyn Future<Output = Result<Response<Http1Body>, Infallible>> + Send>>
    });
    let mut conn = Box::pin(builder.serve_connection(TokioIo::new(io), service));
    let graceful = http1::Connection::graceful_shutdown;
    until_done(conn.as_mut(), &shutdown, graceful, |conn, cx| conn.get_mut().poll_without_shutdown(cx)).await?;
    let body = opened.lock().unwrap_or_else(|p| p.into_inner()).take();
    Ok((Pin::into_inner(conn).into_parts().io.into_inner(), body))
}

/// Takes a stream's body out of its response for [`Http1`] to write, leaving hyper only the head.
fn detach(response: Response<Logged<Routed>>, slot: &Mutex<Option<Logged<SseBody>>>) -> Response<Http1Body> {
    let (mut parts, body) = response.into_parts();
    match body.into_parts() {
        (Either::Right(stream), entry) => {
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(Logged::new(stream, entry));
            parts.version = Version::HTTP_10;
            Response::from_parts(parts, Either::Right(Detached))
        }
        (body, entry) => Response::from_parts(parts, Either::Left(Logged::new(body, entry))),
    }
}

#[cfg(test)]
mod tests {
    use super::super::routes::tests::future_size;
    use super::*;

    /// hyper keeps a request's future until its response is ready, so it should hold the routing future
    /// and little else: no second copy of the request beside the one moved into it (an async block in any
    /// of these took about 300 bytes more).
    #[test]
    fn a_request_future_holds_its_request_once() {
        type Opened = Arc<Mutex<Option<Logged<SseBody>>>>;
        type Req = http::Request<hyper::body::Incoming>;
        let handle = future_size(&routes::handle);
        let sizes = [
            ("answer", future_size(&answer)),
            ("http1_answer", future_size(&|s, p, (r, o): (Req, Opened)| http1_answer(s, p, r, o))),
            ("http2_answer", future_size(&|s, p, (r, g): (Req, Guard)| http2_answer(s, p, r, g))),
        ];
        for (name, size) in sizes {
            assert!(
                size <= handle + 64,
                "{name}'s future is {size} bytes, the routing it awaits {handle}: map that future, not in an async block"
            );
        }
    }
}
