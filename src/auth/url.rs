//! `--auth auth-url`: a legacy backend decides, from its own session cookie. For each new stream or write
//! the gateway asks the backend's URL, forwarding `Cookie` and `Authorization`, and caches the answer
//! briefly so a reconnect storm does not become a storm on the backend.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use tokio::time::Instant;

use crate::auth::grant::{Access, AuthError, Grant};

/// How long the backend gets to answer before the request is refused with 503.
const BACKEND_TIMEOUT: Duration = Duration::from_secs(5);
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Cached decisions at most; past that, expired ones are dropped and, if still full, nothing is added.
const MAX_CACHED: usize = 10_000;

pub struct AuthUrl {
    url: Uri,
    client: Client<HttpConnector, Empty<Bytes>>,
    ttl: Duration,
    cache: Mutex<HashMap<Vec<u8>, (Instant, Decision)>>,
}

/// What the backend said: a grant, or why not.
type Decision = Result<Access, Denied>;

#[derive(Clone, Copy)]
enum Denied {
    Unauthenticated,
    Forbidden,
}

/// A 2xx body: the grant, under `pgsse` as in a JWT or at the top level.
#[derive(Deserialize)]
#[serde(untagged)]
enum Answer {
    Claim { pgsse: Grant },
    Bare(Grant),
}

impl AuthUrl {
    pub fn new(url: &str, ttl: Duration) -> Result<Self, AuthError> {
        let uri: Uri = url.parse().map_err(|e| AuthError::Key(format!("auth url {url:?}: {e}")))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(AuthError::Key(format!("auth url {url:?}: expected http://host[:port]/path")));
        }
        let client = Client::builder(TokioExecutor::new()).build_http();
        Ok(Self { url: uri, client, ttl, cache: Mutex::new(HashMap::new()) })
    }

    pub async fn check(&self, headers: &HeaderMap, channels: &[String], method: &Method) -> Result<Access, AuthError> {
        let forwarded: Vec<(http::HeaderName, &http::HeaderValue)> = [COOKIE, AUTHORIZATION]
            .into_iter()
            .flat_map(|name| headers.get_all(&name).iter().map(move |v| (name.clone(), v)).collect::<Vec<_>>())
            .collect();
        // The whole question is the key, byte for byte and every field prefixed with its length: two
        // questions that differ anywhere (a comma inside a name, a cookie's raw bytes) never share an answer.
        let mut key = Vec::new();
        let fields = [method.as_str().as_bytes()].into_iter().chain(channels.iter().map(|c| c.as_bytes()));
        let headers = forwarded.iter().flat_map(|(name, value)| [name.as_str().as_bytes(), value.as_bytes()]);
        for field in fields.chain(headers) {
            key.extend_from_slice(&(field.len() as u64).to_le_bytes());
            key.extend_from_slice(field);
        }
        if let Some(decision) = self.cached(&key) {
            return decided(decision, channels);
        }

        let target = {
            let mut target = self.url.to_string();
            target.push(if self.url.query().is_some() { '&' } else { '?' });
            let start = target.len();
            let mut query = form_urlencoded::Serializer::for_suffix(target, start);
            query.extend_pairs(channels.iter().map(|c| ("channel", c.as_str())));
            query.append_pair("method", method.as_str()).finish()
        };
        let mut request = Request::get(target).body(Empty::new()).map_err(|e| AuthError::Unavailable(e.to_string()))?;
        for (name, value) in forwarded {
            request.headers_mut().append(name, value.clone());
        }
        let response = tokio::time::timeout(BACKEND_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| AuthError::Unavailable("the auth backend did not answer in time".into()))?
            .map_err(|_| AuthError::Unavailable("the auth backend is unreachable".into()))?;
        let status = response.status();
        let decision = match status {
            s if s.is_success() => {
                let body = Limited::new(response.into_body(), MAX_ANSWER_BYTES)
                    .collect()
                    .await
                    .map_err(|_| AuthError::Unavailable("the auth backend's answer could not be read".into()))?
                    .to_bytes();
                Ok(grant_from(&body, channels, method)?)
            }
            StatusCode::UNAUTHORIZED => Err(Denied::Unauthenticated),
            StatusCode::FORBIDDEN => Err(Denied::Forbidden),
            other => return Err(AuthError::Unavailable(format!("the auth backend answered {}", other.as_u16()))),
        };
        self.remember(key, decision.clone());
        decided(decision, channels)
    }

    fn cached(&self, key: &[u8]) -> Option<Decision> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(key).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, d)| d.clone())
    }

    fn remember(&self, key: Vec<u8>, decision: Decision) {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= MAX_CACHED {
            let ttl = self.ttl;
            cache.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        if cache.len() < MAX_CACHED {
            cache.insert(key, (Instant::now(), decision));
        }
    }
}

fn grant_from(body: &[u8], channels: &[String], method: &Method) -> Result<Access, AuthError> {
    let grant = if body.iter().all(u8::is_ascii_whitespace) {
        Grant::allowing(channels, *method != Method::GET)
    } else {
        match serde_json::from_slice::<Answer>(body) {
            Ok(Answer::Claim { pgsse } | Answer::Bare(pgsse)) => pgsse,
            Err(e) => return Err(AuthError::Unavailable(format!("the auth backend's answer is not a grant: {e}"))),
        }
    };
    Ok(Access::Granted { grant, expires: None, subject: None })
}

fn decided(decision: Decision, channels: &[String]) -> Result<Access, AuthError> {
    match decision {
        Ok(access) => Ok(access),
        Err(Denied::Unauthenticated) => {
            Err(AuthError::Invalid("the auth backend did not recognise the session".into()))
        }
        Err(Denied::Forbidden) => {
            Err(AuthError::Forbidden { action: "use", channel: channels.first().cloned().unwrap_or_default() })
        }
    }
}
