//! `/.well-known/mercure`: the Mercure hub's HTTP side. Subscriptions (GET) and publications (POST), with
//! the headers and challenges Mercure's specification gives them.

use std::net::IpAddr;

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Request, Response};
use http_body_util::Either;
use hyper::body::Incoming;

use crate::api::commands::CommandError;
use crate::api::reply::{content_type_is, Body, Reply};
use crate::http::Site;
use crate::mercure::{Mercure, MercureError, Publish, Subscribe};

pub async fn subscribe<B>(
    site: &Site,
    mercure: &Mercure,
    peer: IpAddr,
    req: &Request<B>,
) -> Result<Response<Body>, MercureError> {
    let request = Subscribe::parse(req.uri().query(), mercure.legacy())?;
    let caller = mercure.caller(req.headers(), request.token.as_deref(), true)?;
    // The browser's own header on reconnect wins over the id the page first asked for.
    let header_id = req
        .headers()
        .get("last-event-id")
        .and_then(|v| std::str::from_utf8(v.as_bytes()).ok())
        .filter(|v| !v.is_empty());
    let asked_legacy = request.legacy;
    let slot = site.limits.admit(site.limits.client(peer, req.headers()))?;
    let (body, shown) = mercure.subscribe(caller, request, header_id.map(str::to_string)).await?;
    let mut resp = Response::new(Either::Right(body.holding(slot)));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("private, no-cache, no-store, must-revalidate, max-age=0"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    if let Some(value) = shown.and_then(|s| HeaderValue::from_str(&s).ok()) {
        if asked_legacy {
            headers.insert("last-event-id", value.clone());
        }
        headers.insert("mercure-last-event-id", value);
    }
    Ok(resp)
}

pub async fn publish(site: &Site, mercure: &Mercure, req: Request<Incoming>) -> Result<Response<Body>, MercureError> {
    let (parts, body) = req.into_parts();
    // Only from the Authorization header: a cookie would let any site's form publish with a visitor's token.
    let caller = mercure.caller(&parts.headers, None, false)?;
    if caller.is_none() {
        return Err(MercureError::PublishToken);
    }
    if !content_type_is(&parts.headers, "application/x-www-form-urlencoded") {
        return Err(MercureError::ContentType);
    }
    let form = site.commands.read_body(&parts.headers, body).await.inspect_err(|err| {
        if matches!(err, CommandError::TooLarge(_)) {
            site.limits.rejections.body_too_large();
        }
    })?;
    let id = mercure.publish(caller, Publish::parse(&form)?).await?;
    let mut resp = Response::new(Either::Left(Reply::new(Bytes::from(id))));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(resp)
}
