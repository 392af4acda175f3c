//! Request routing and the JSON error contract: every refusal is `{"error": "..."}` with a fitting status.

use std::convert::Infallible;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::{self, FutureExt};
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use serde_json::json;

use crate::api::commands::CommandError;
use crate::api::events::StreamError;
use crate::api::query::{HistoryQuery, PostQuery, QueryError, StreamQuery};
use crate::api::reply::{json_response, Body, Reply};
use crate::api::snapshot::Shape;
use crate::app::metrics::Metrics;
use crate::auth::{Auth, AuthError, ACCESS_TOKEN};
use crate::channel::ChannelError;
use crate::cursor::{self, CursorError};
use crate::filter::{ChannelFilters, FilterError};
use crate::http::{web, Site};
use crate::limits::LimitError;
use crate::mercure::MercureError;
use crate::pg::published::ColumnsError;
use crate::refusal::{Refusal, Refuse};

/// Largest request head (request line and headers); a larger one is answered 431.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// What a client refused for a limit is told to wait before trying again.
const RETRY_AFTER_SECS: &str = "5";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method {0} not allowed here")]
    MethodNotAllowed(Method, &'static str),
    #[error(transparent)]
    Cursor(#[from] CursorError),
    #[error(transparent)]
    Query(#[from] QueryError),
    #[error("channel= is only for /events; this path names its channel")]
    ChannelInPath,
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    Filter(#[from] FilterError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("request URL longer than {0} bytes")]
    UrlTooLong(usize),
    #[error("request head (request line and headers) larger than {MAX_REQUEST_HEAD} bytes")]
    HeadTooLarge,
    #[error(transparent)]
    Mercure(#[from] MercureError),
}

impl Refuse for ApiError {
    fn refusal(&self) -> Refusal {
        match self {
            ApiError::NotFound(_) => Refusal::NotFound,
            ApiError::MethodNotAllowed(..) => Refusal::MethodNotAllowed,
            ApiError::ChannelInPath => Refusal::Invalid,
            ApiError::UrlTooLong(_) => Refusal::UrlTooLong,
            ApiError::HeadTooLarge => Refusal::HeadTooLarge,
            ApiError::Cursor(err) => err.refusal(),
            ApiError::Query(err) => err.refusal(),
            ApiError::Stream(err) => err.refusal(),
            ApiError::Command(err) => err.refusal(),
            ApiError::Filter(err) => err.refusal(),
            ApiError::Auth(err) => err.refusal(),
            ApiError::Limit(err) => err.refusal(),
            ApiError::Mercure(err) => err.refusal(),
        }
    }

    fn told(&self) -> String {
        match self {
            ApiError::Cursor(err) => err.told(),
            ApiError::Query(err) => err.told(),
            ApiError::Stream(err) => err.told(),
            ApiError::Command(err) => err.told(),
            ApiError::Filter(err) => err.told(),
            ApiError::Auth(err) => err.told(),
            ApiError::Limit(err) => err.told(),
            ApiError::Mercure(err) => err.told(),
            err => err.to_string(),
        }
    }
}

impl ApiError {
    fn into_response(self) -> Response<Body> {
        let refusal = self.refusal();
        if refusal == Refusal::Unavailable {
            tracing::warn!(cause = %self, "request failed");
        }
        let told = self.told();
        let mut resp = json_response(refusal.status(), &json!({ "error": told }));
        resp.extensions_mut().insert(super::access::Refused(told));
        match refusal {
            Refusal::Unauthenticated => {
                resp.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            Refusal::Busy => {
                resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECS));
            }
            _ => {}
        }
        if let Some(challenge) = match &self {
            ApiError::Mercure(err) => err.challenge(),
            _ => None,
        } {
            resp.headers_mut().insert(WWW_AUTHENTICATE, HeaderValue::from_static(challenge));
        }
        if let ApiError::MethodNotAllowed(_, allow) = self {
            resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

/// Answers one request. Not an async fn: hyper keeps a request's future until its response is ready, and
/// an async fn would keep room for the request it was given beside the routing future it moved it into.
pub fn handle(
    site: Arc<Site>,
    peer: IpAddr,
    req: Request<Incoming>,
) -> impl Future<Output = Result<Response<Body>, Infallible>> + Send {
    let request_headers = req.headers().clone();
    let preflight = req.method() == Method::OPTIONS;
    let routed = if head_size(&req) > MAX_REQUEST_HEAD {
        future::Either::Left(future::ready(Err(ApiError::HeadTooLarge)))
    } else if preflight {
        let mut resp = Response::new(Either::Left(Reply::new(Bytes::new())));
        *resp.status_mut() = StatusCode::NO_CONTENT;
        future::Either::Left(future::ready(Ok(resp)))
    } else {
        future::Either::Right(route(site.clone(), peer, req))
    };
    routed.map(move |routed| {
        let mut resp = routed.unwrap_or_else(ApiError::into_response);
        site.denials.note(resp.status());
        site.cors.apply(&request_headers, resp.headers_mut(), preflight);
        Ok(resp)
    })
}

/// The request head's size as HTTP/1.1 writes it: request line, each header line, and the blank line.
fn head_size<B>(req: &Request<B>) -> usize {
    let target = req.uri().path_and_query().map_or(1, |p| p.as_str().len());
    let headers: usize = req.headers().iter().map(|(name, value)| name.as_str().len() + value.len() + 4).sum();
    req.method().as_str().len() + target + " HTTP/1.1\r\n".len() + 1 + headers + 2
}

async fn route(site: Arc<Site>, peer: IpAddr, req: Request<Incoming>) -> Result<Response<Body>, ApiError> {
    let site = &*site;
    let url_length = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if url_length > site.settings.max_url_length {
        site.limits.rejections.url_too_long();
        return Err(ApiError::UrlTooLong(site.settings.max_url_length));
    }
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(&path).split('/').collect();
    if req.method() == Method::GET {
        if let Some(file) = web::module(&path).or_else(|| site.settings.demo.then(|| web::page(&path)).flatten()) {
            return Ok(file);
        }
    }
    // What an arm awaits is boxed there: inline, the largest arm's future would be every request's size, and
    // an opening stream holds its future until its response is ready (the test below).
    match segments.as_slice() {
        [".well-known", "mercure"] => match &site.mercure {
            Some(mercure) => match *req.method() {
                Method::GET => Ok(Box::pin(super::mercure::subscribe(site, mercure, peer, &req)).await?),
                Method::POST => Ok(Box::pin(super::mercure::publish(site, mercure, req)).await?),
                ref other => Err(ApiError::MethodNotAllowed(other.clone(), "GET, POST")),
            },
            None => Err(ApiError::NotFound("/.well-known/mercure: start the gateway with --mercure".into())),
        },
        [".well-known", "mercure", ..] => Err(ApiError::NotFound(
            "the Mercure subscriptions API is not served (docs/mercure.md, Not (yet) served)".into(),
        )),
        ["healthz"] => {
            only_get(&req, "GET")?;
            Ok(Box::pin(site.health.health()).await)
        }
        ["metrics"] if !site.metrics_apart && matches!(*site.auth, Auth::None) => {
            only_get(&req, "GET")?;
            Ok(metrics(&site.metrics))
        }
        // Its labels tell who is online: under auth, only --metrics-listen serves it.
        ["metrics"] => Err(ApiError::NotFound("/metrics is served only on --metrics-listen".into())),
        ["readyz"] => {
            only_get(&req, "GET")?;
            Ok(Box::pin(site.health.ready()).await)
        }
        ["events"] => {
            only_get(&req, "GET")?;
            let query = StreamQuery::parse(req.uri().query())?;
            Box::pin(events(site, peer, &req, query.channels.clone(), &query)).await
        }
        [channel, "events"] => {
            only_get(&req, "GET")?;
            let query = StreamQuery::parse(req.uri().query())?;
            if !query.channels.is_empty() {
                return Err(ApiError::ChannelInPath);
            }
            Box::pin(events(site, peer, &req, vec![channel.to_string()], &query)).await
        }
        [channel] if !channel.is_empty() => {
            let channel = channel.to_string();
            let query = req.uri().query().map(str::to_string);
            if !matches!(*req.method(), Method::GET | Method::POST | Method::DELETE) {
                return Err(ApiError::MethodNotAllowed(req.method().clone(), "GET, POST, DELETE"));
            }
            // A name that is not one is refused before anyone, a legacy auth backend included, is asked.
            if !crate::channel::valid(&channel) {
                return Err(CommandError::from(ChannelError::invalid(&channel)).into());
            }
            let token = query_token(query.as_deref());
            let channels = [channel.clone()];
            let access =
                Box::pin(site.auth.authenticate(req.headers(), token.as_deref(), &channels, req.method())).await?;
            match *req.method() {
                Method::GET => {
                    // The right first, as for every read: the query's own mistakes are told only to those
                    // who may read the channel.
                    access.may_subscribe(&channel)?;
                    let slot = site.limits.admit_request(site.limits.client(peer, req.headers()))?;
                    let asked = HistoryQuery::parse(query.as_deref())?;
                    let page = Box::pin(site.commands.history(&access, &channel, &asked)).await?;
                    Ok(page.map(|body| match body {
                        Either::Left(reply) => Either::Left(reply.holding(slot)),
                        stream => stream,
                    }))
                }
                Method::DELETE => Ok(Box::pin(site.commands.clear(&access, &channel)).await?),
                _ => {
                    let (parts, body) = req.into_parts();
                    // Refused before the body is read when the token cannot publish here, or asks wrongly.
                    access.may_publish(&channel)?;
                    let asked = PostQuery::parse(query.as_deref())?;
                    let object =
                        Box::pin(site.commands.read_object(&parts.headers, body)).await.inspect_err(|err| {
                            if matches!(err, CommandError::TooLarge(_)) {
                                site.limits.rejections.body_too_large();
                            }
                        })?;
                    Ok(Box::pin(site.commands.post(&access, &channel, &asked, &parts.headers, object)).await?)
                }
            }
        }
        _ => Err(ApiError::NotFound(crate::parse::clip(&path))),
    }
}

/// The `--metrics-listen` address serves only `/metrics`.
pub async fn handle_metrics(metrics: Arc<Metrics>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let resp = match req.uri().path() {
        "/metrics" => only_get(&req, "GET").map(|()| self::metrics(&metrics)),
        other => Err(ApiError::NotFound(crate::parse::clip(other))),
    };
    Ok(resp.unwrap_or_else(ApiError::into_response))
}

fn only_get<B>(req: &Request<B>, allow: &'static str) -> Result<(), ApiError> {
    match *req.method() {
        Method::GET => Ok(()),
        ref other => Err(ApiError::MethodNotAllowed(other.clone(), allow)),
    }
}

fn query_token(raw: Option<&str>) -> Option<String> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes()).find(|(k, _)| k == ACCESS_TOKEN).map(|(_, v)| v.into_owned())
}

async fn events<B>(
    site: &Site,
    peer: IpAddr,
    req: &Request<B>,
    channels: Vec<String>,
    query: &StreamQuery,
) -> Result<Response<Body>, ApiError> {
    let header = req.headers().get("last-event-id").map(HeaderValue::as_bytes);
    let resume = cursor::resolve(header, query.last_event_id.as_deref())?;
    let [snapshot, order, limit] = query.shape.each_ref().map(Option::as_deref);
    let events = &site.events;
    let shape = Shape::parse(snapshot, order, limit, events.args().snapshot_max_rows).map_err(StreamError::Snapshot)?;
    let channels = events.check_names(channels)?;
    let token = query.access_token.as_deref();
    let access = site.auth.authenticate(req.headers(), token, &channels, req.method()).await?;
    // Authorized first: a token learns nothing of a channel outside its grant, not even whether it exists.
    for channel in &channels {
        access.may_subscribe(channel)?;
    }
    events.check_known(&channels).await?;
    if let Some(filter) = &query.filter {
        Box::pin(events.check_filter(&channels, filter)).await?;
    }
    let mut filters = ChannelFilters::new();
    for channel in &channels {
        if let Some(granted) = access.filter_for(channel, None)? {
            Box::pin(events.check_filter(std::slice::from_ref(channel), &granted)).await.map_err(|err| match err {
                StreamError::Columns(ColumnsError::Unknown { .. } | ColumnsError::Type(_)) => {
                    ApiError::Auth(AuthError::GrantFilter { channel: channel.clone(), cause: err.to_string() })
                }
                err => ApiError::Stream(err),
            })?;
        }
        if let Some(filter) = access.filter_for(channel, query.filter.as_ref())? {
            filters.insert(channel.clone(), filter);
        }
    }
    tracing::debug!(?channels, ?resume, "stream opened");
    let client = site.limits.client(peer, req.headers());
    let slot = site.limits.admit(client)?;
    let gate = site.limits.snapshot_gate(client);
    let body = events.open(channels, resume, shape, filters, access.expires(), &gate).await?.holding(slot);
    let mut resp = Response::new(Either::Right(body));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, no-transform"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

fn metrics(metrics: &Arc<Metrics>) -> Response<Body> {
    match metrics.render() {
        Ok(text) => {
            let mut resp = Response::new(Either::Left(Reply::new(Bytes::from(text))));
            resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(crate::app::metrics::CONTENT_TYPE));
            resp
        }
        Err(_) => json_response(StatusCode::INTERNAL_SERVER_ERROR, &json!({ "error": "metrics could not be encoded" })),
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::limits::SnapshotGate;

    /// The size of the future that `f` returns, without calling it.
    pub(in crate::http) fn future_size<F: Fn(A, B, C) -> R, A, B, C, R>(_: &F) -> usize {
        std::mem::size_of::<R>()
    }

    /// An opening stream holds these futures until its response is ready, with hyper's buffers beside them:
    /// in a reconnect storm, or while the database answers slowly, thousands at once. What only some requests
    /// await (a snapshot, a query, a POST, history, a resume) is boxed where it is awaited; inline, it made
    /// `handle`'s 6.6 KB and a Mercure subscription's 3.5.
    #[test]
    fn an_opening_stream_holds_small_futures() {
        let peer = IpAddr::from([127, 0, 0, 1]);
        let handle = future_size(&super::handle);
        let events =
            future_size(&|s: &Site, r: &Request<Incoming>, q: &StreamQuery| super::events(s, peer, r, vec![], q));
        let open = future_size(&|s: &Site, g: &SnapshotGate, (): ()| {
            s.events.open(vec![], None, None, ChannelFilters::new(), None, g)
        });
        let known = future_size(&|s: &Site, (): (), (): ()| s.events.check_known(&[]));
        let mercure = future_size(&|s: &Site, m: &crate::mercure::Mercure, r: &Request<Incoming>| {
            super::super::mercure::subscribe(s, m, peer, r)
        });
        let sizes = [
            ("handle", handle, 1536),
            ("events", events, 1536),
            ("open", open, 1024),
            ("check_known", known, 256),
            ("a Mercure subscription", mercure, 1792),
        ];
        for (name, size, bound) in sizes {
            assert!(
                size <= bound,
                "the future of {name} is {size} bytes, over {bound}: box what only some requests await"
            );
        }
    }
}
