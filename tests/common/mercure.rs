//! Mercure hub test support: the conformance suites' key, tokens of both protocol versions, gateways
//! serving the hub, and a publisher's POST.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use jsonwebtoken::{encode, EncodingKey, Header};
use pgsse::auth::{Auth, Jwt, DEFAULT_COOKIE};
use serde_json::{json, Value};

use super::{call, Gateway};

pub const SECRET: &[u8] = b"!ChangeThisMercureHubJWTSecretKey!";
pub const HUB: &str = "/.well-known/mercure";
pub const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

pub fn in_an_hour() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600
}

pub fn signed(header: Header, claims: Value) -> String {
    encode(&header, &claims, &EncodingKey::from_secret(SECRET)).unwrap()
}

/// A protocol 1.0 token: RFC 9068 `at+jwt` with Mercure authorization details, for an hour.
pub fn token(actions: &[&str], topics: Value) -> String {
    token_with(actions, topics, in_an_hour(), None)
}

/// [`token`] ending at `exp`, and carrying pgsse's own `grant` too where given.
pub fn token_with(actions: &[&str], topics: Value, exp: u64, grant: Option<Value>) -> String {
    let header = Header { typ: Some("at+jwt".into()), ..Header::default() };
    let detail = json!({"type": "https://mercure.rocks/authorization-detail", "actions": actions, "topics": topics});
    let mut claims = json!({"exp": exp, "authorization_details": [detail]});
    if let Some(grant) = grant {
        claims["pgsse"] = grant;
    }
    signed(header, claims)
}

pub fn everything() -> String {
    token(&["publish", "subscribe"], json!([{"match": "*"}]))
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub async fn gateway(url: &str, set: impl FnOnce(&mut pgsse::config::MercureArgs)) -> Gateway {
    gateway_configured(url, |config| set(&mut config.mercure)).await
}

/// [`gateway`], with `set` given the whole configuration.
pub async fn gateway_configured(url: &str, set: impl FnOnce(&mut pgsse::config::Config)) -> Gateway {
    Gateway::start_configured(url, |config| {
        config.auth = Arc::new(Auth::Jwt(Box::new(Jwt::hs256(SECRET, DEFAULT_COOKIE))));
        config.mercure.mercure = true;
        set(config);
    })
    .await
}

/// The audience and issuer Mercure's conformance suites are run with.
pub const AUDIENCE: &str = "https://localhost/.well-known/mercure";
pub const ISSUER: &str = "https://localhost";

/// A gateway with the conformance suites' settings: their key, audience and issuer, anonymous
/// subscribers; `set` adds the rest.
pub async fn conformance_gateway(url: &str, set: impl FnOnce(&mut pgsse::config::MercureArgs)) -> Gateway {
    Gateway::start_configured(url, |config| {
        let jwt = Jwt::hs256(SECRET, DEFAULT_COOKIE).expecting(Some(AUDIENCE), Some(ISSUER));
        config.auth = Arc::new(Auth::Jwt(Box::new(jwt)));
        config.mercure.mercure = true;
        config.mercure.mercure_anonymous = true;
        set(&mut config.mercure);
    })
    .await
}

pub async fn publish(addr: SocketAddr, token: &str, form: &str) -> super::Response {
    let auth = bearer(token);
    call(addr, "POST", HUB, &[FORM, ("authorization", &auth)], Bytes::from(form.to_string())).await.unwrap()
}
