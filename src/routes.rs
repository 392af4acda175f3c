//! Request routing and the JSON error contract: every refusal is `{"error": "..."}` with a fitting status.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use serde_json::json;

use crate::cursor::{self, CursorError};
use crate::hub::HubError;
use crate::server::AppState;
use crate::sse::SseBody;
use crate::stream::{self, StreamError};

pub type Body = Either<Full<Bytes>, SseBody>;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("method {0} not allowed here")]
    MethodNotAllowed(Method, &'static str),
    #[error("{0}")]
    Cursor(#[from] CursorError),
    #[error("{0}")]
    BadQuery(String),
    #[error("{0}")]
    Stream(#[from] StreamError),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(..) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Cursor(_) | ApiError::BadQuery(_) => StatusCode::BAD_REQUEST,
            ApiError::Stream(err) => match err {
                StreamError::Store(_) | StreamError::Hub(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_REQUEST,
            },
        }
    }

    fn into_response(self) -> Response<Body> {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(cause = %self, "request failed");
        }
        // Database errors carry SQL details; clients only learn that the database is unavailable.
        let message = match &self {
            ApiError::Stream(StreamError::Store(_)) => "database unavailable, try again".to_string(),
            ApiError::Stream(StreamError::Hub(HubError::NotStarted)) => {
                "gateway is not yet connected to the database, try again".to_string()
            }
            other => other.to_string(),
        };
        let mut resp = json_response(status, &json!({ "error": message }));
        if let ApiError::MethodNotAllowed(_, allow) = self {
            resp.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

pub fn json_response(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Either::Left(Full::new(Bytes::from(value.to_string()))));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

pub async fn handle<B>(state: Arc<AppState>, req: Request<B>) -> Result<Response<Body>, Infallible> {
    Ok(route(&state, &req).await.unwrap_or_else(ApiError::into_response))
}

async fn route<B>(state: &Arc<AppState>, req: &Request<B>) -> Result<Response<Body>, ApiError> {
    let path = req.uri().path();
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    match segments.as_slice() {
        ["healthz"] => {
            only_get(req, "GET")?;
            Ok(health(state).await)
        }
        ["events"] => {
            only_get(req, "GET")?;
            let query = Query::parse(req.uri().query())?;
            events(state, req, query.channels.clone(), &query).await
        }
        [channel, "events"] => {
            only_get(req, "GET")?;
            let query = Query::parse(req.uri().query())?;
            if !query.channels.is_empty() {
                return Err(ApiError::BadQuery("channel= is only for /events; this path names its channel".into()));
            }
            events(state, req, vec![channel.to_string()], &query).await
        }
        _ => Err(ApiError::NotFound(path.chars().take(200).collect())),
    }
}

fn only_get<B>(req: &Request<B>, allow: &'static str) -> Result<(), ApiError> {
    match *req.method() {
        Method::GET => Ok(()),
        ref other => Err(ApiError::MethodNotAllowed(other.clone(), allow)),
    }
}

/// The query parameters a stream understands; anything else is refused so typos do not pass silently.
#[derive(Default)]
struct Query {
    channels: Vec<String>,
    last_event_id: Option<String>,
}

impl Query {
    fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut q = Query::default();
        for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match key.as_ref() {
                "channel" => q.channels.push(value.into_owned()),
                "last_event_id" if q.last_event_id.is_none() => q.last_event_id = Some(value.into_owned()),
                "last_event_id" => return Err(ApiError::BadQuery("last_event_id given more than once".into())),
                other => {
                    return Err(ApiError::BadQuery(format!(
                        "unknown query parameter {:?}",
                        other.chars().take(64).collect::<String>()
                    )))
                }
            }
        }
        Ok(q)
    }
}

async fn events<B>(
    state: &Arc<AppState>,
    req: &Request<B>,
    channels: Vec<String>,
    query: &Query,
) -> Result<Response<Body>, ApiError> {
    let header = req.headers().get("last-event-id").map(HeaderValue::as_bytes);
    let resume = cursor::resolve(header, query.last_event_id.as_deref())?;
    let channels = stream::check_channels(state, channels).await?;
    tracing::debug!(?channels, ?resume, "stream opened");
    let body = stream::open(state, channels, resume).await?;
    let mut resp = Response::new(Either::Right(body));
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache, no-transform"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

async fn health(state: &AppState) -> Response<Body> {
    let listener_up = state.listener.is_up();
    let db = state.store.ping().await;
    let last_event_id = state.hub.last_id();
    if listener_up && db.is_ok() {
        return json_response(StatusCode::OK, &json!({ "status": "ok", "last_event_id": last_event_id }));
    }
    let mut reasons = Vec::new();
    if !listener_up {
        let why = state.listener.last_error().unwrap_or_else(|| "connecting".into());
        reasons.push(format!("listener: {why}"));
    }
    if let Err(err) = db {
        reasons.push(format!("pool: {err}"));
    }
    json_response(
        StatusCode::SERVICE_UNAVAILABLE,
        &json!({ "status": "unavailable", "error": reasons.join("; "), "last_event_id": last_event_id }),
    )
}
