//! Who may read and write which channels. A grant (from a JWT's `pgsse` claim, or from the auth URL of a
//! legacy backend) lists channel patterns to subscribe and publish, and row filters per channel that the
//! client can narrow but never widen.

mod url;

pub use url::AuthUrl;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, COOKIE};
use http::{HeaderMap, Method};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::filter::{Filter, FilterError};

pub const DEFAULT_COOKIE: &str = "pgsse_token";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("authentication required: send a token as Authorization: Bearer, the {0} cookie, or ?access_token=")]
    Missing(String),
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("token expired")]
    Expired,
    #[error("not allowed to {action} channel {channel:?}")]
    Forbidden { action: &'static str, channel: String },
    #[error("the row is outside this token's grant for channel {0:?}: its filter must match what is written")]
    OutsideGrant(String),
    #[error("a grant limited by a filter cannot clear channel {0:?}: clearing would remove rows outside it")]
    FilteredClear(String),
    #[error("invalid filter in the token's grant for {channel:?}: {cause}")]
    BadGrant { channel: String, cause: FilterError },
    #[error("invalid auth configuration: {0}")]
    Key(String),
    #[error("authorization is unavailable, try again: {0}")]
    Unavailable(String),
}

pub enum Auth {
    None,
    Jwt(Box<Jwt>),
    Url(Box<AuthUrl>),
}

/// Names the mode only: keys and secrets never reach a log line.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Auth::None => "Auth::None",
            Auth::Jwt(_) => "Auth::Jwt",
            Auth::Url(_) => "Auth::Url",
        })
    }
}

pub struct Jwt {
    key: DecodingKey,
    validation: Validation,
    cookie: String,
}

impl Jwt {
    pub fn hs256(secret: &[u8], cookie: &str) -> Self {
        Self::new(DecodingKey::from_secret(secret), Algorithm::HS256, cookie)
    }

    /// A PEM public key, RSA (RS256) or EC P-256 (ES256).
    pub fn public_key(pem: &[u8], cookie: &str) -> Result<Self, AuthError> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Self::new(key, Algorithm::RS256, cookie));
        }
        DecodingKey::from_ec_pem(pem)
            .map(|key| Self::new(key, Algorithm::ES256, cookie))
            .map_err(|e| AuthError::Key(format!("neither an RSA nor an EC public key in PEM: {e}")))
    }

    /// Accepts only `algorithm`: a token may not pick a weaker one (or `none`).
    fn new(key: DecodingKey, algorithm: Algorithm, cookie: &str) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_aud = false;
        Self { key, validation, cookie: cookie.to_string() }
    }

    /// Requires the token's `aud` to include `audience` and its `iss` to be `issuer`, where given.
    pub fn expecting(mut self, audience: Option<&str>, issuer: Option<&str>) -> Self {
        if let Some(audience) = audience {
            self.validation.set_audience(&[audience]);
            self.validation.validate_aud = true;
            self.validation.set_required_spec_claims(&["exp", "aud"]);
        }
        if let Some(issuer) = issuer {
            self.validation.set_issuer(&[issuer]);
        }
        self
    }
}

/// How far ahead of this gateway's clock a token's issuer may be: `nbf` and `iat` later than that are refused.
const CLOCK_SKEW: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
struct Claims {
    /// Required (the validation says so, by name, when it is missing).
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    #[serde(default)]
    pgsse: Grant,
}

/// The token's fault in words, without the library's internals.
fn token_error(err: &jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    let why = match err.kind() {
        ErrorKind::ExpiredSignature => return AuthError::Expired,
        ErrorKind::InvalidSignature => "its signature does not verify with this gateway's key",
        ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName | ErrorKind::MissingAlgorithm => {
            "it is signed with an algorithm this gateway does not accept"
        }
        ErrorKind::InvalidAudience => "its aud claim does not name this gateway (--jwt-audience)",
        ErrorKind::InvalidIssuer => "its iss claim is not the expected issuer (--jwt-issuer)",
        ErrorKind::ImmatureSignature => "it is not valid yet (nbf)",
        ErrorKind::MissingRequiredClaim(claim) => return AuthError::Invalid(format!("it has no {claim} claim")),
        ErrorKind::Json(e) => return AuthError::Invalid(format!("its claims are malformed: {}", plain_json_error(e))),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => "it is not a JWT",
        _ => "it could not be verified",
    };
    AuthError::Invalid(why.to_string())
}

/// serde's message without its position suffix (`at line 1 column 36`).
fn plain_json_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.find(" at line ") {
        Some(at) => text[..at].replace('`', ""),
        None => text.replace('`', ""),
    }
}

/// What a token allows. Patterns: `*`, `prefix.*`, or an exact channel name.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default)]
    subscribe: Vec<String>,
    #[serde(default)]
    publish: Vec<String>,
    /// Channel (or pattern) to a filter in query form, e.g. `"user_id=eq.42&status=neq.void"`.
    #[serde(default)]
    filter: HashMap<String, String>,
}

impl Grant {
    /// Exactly `channels`, for reading or (with `publish`) writing: what a bare 2xx from an auth URL allows.
    pub fn allowing(channels: &[String], publish: bool) -> Self {
        let list = channels.to_vec();
        let (subscribe, publish) = if publish { (Vec::new(), list) } else { (list, Vec::new()) };
        Self { subscribe, publish, filter: HashMap::new() }
    }
}

/// The outcome of authenticating one request.
#[derive(Clone)]
pub enum Access {
    Open,
    Granted { grant: Grant, expires: Option<SystemTime> },
}

impl Auth {
    /// Decides a request for `channels` (a stream's, or the one a write targets) made with `method`.
    pub async fn authenticate(
        &self,
        headers: &HeaderMap,
        query_token: Option<&str>,
        channels: &[String],
        method: &Method,
    ) -> Result<Access, AuthError> {
        match self {
            Auth::None => Ok(Access::Open),
            Auth::Jwt(jwt) => jwt.check(headers, query_token),
            Auth::Url(url) => url.check(headers, channels, method).await,
        }
    }
}

impl Jwt {
    pub fn check(&self, headers: &HeaderMap, query_token: Option<&str>) -> Result<Access, AuthError> {
        let jwt = self;
        let token = bearer(headers)
            .or_else(|| cookie(headers, &jwt.cookie))
            .or(query_token)
            .ok_or_else(|| AuthError::Missing(jwt.cookie.clone()))?;
        let claims = decode::<Claims>(token, &jwt.key, &jwt.validation).map_err(|e| token_error(&e))?.claims;
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let ahead = |at: Option<u64>| at.is_some_and(|t| Duration::from_secs(t) > now + CLOCK_SKEW);
        if ahead(claims.nbf) {
            return Err(AuthError::Invalid("it is not valid yet (nbf)".into()));
        }
        if ahead(claims.iat) {
            return Err(AuthError::Invalid("it claims to be issued in the future (iat)".into()));
        }
        let expires = UNIX_EPOCH
            .checked_add(Duration::from_secs(claims.exp.unwrap_or_default()))
            .ok_or_else(|| AuthError::Invalid("its exp is out of range".into()))?;
        Ok(Access::Granted { grant: claims.pgsse, expires: Some(expires) })
    }
}

impl Access {
    pub fn may_subscribe(&self, channel: &str) -> Result<(), AuthError> {
        self.check("subscribe to", channel, |g| &g.subscribe)
    }

    pub fn may_publish(&self, channel: &str) -> Result<(), AuthError> {
        self.check("publish to", channel, |g| &g.publish)
    }

    fn check(&self, action: &'static str, channel: &str, list: fn(&Grant) -> &Vec<String>) -> Result<(), AuthError> {
        match self {
            Access::Open => Ok(()),
            Access::Granted { grant, .. } if list(grant).iter().any(|p| pattern_matches(p, channel)) => Ok(()),
            Access::Granted { .. } => Err(AuthError::Forbidden { action, channel: channel.to_string() }),
        }
    }

    /// The grant's filter for `channel` (every pattern that names it applies), AND-ed with the client's.
    pub fn filter_for(&self, channel: &str, client: Option<&Filter>) -> Result<Option<Arc<Filter>>, AuthError> {
        let mut combined = client.cloned().unwrap_or_default();
        if let Access::Granted { grant, .. } = self {
            for (pattern, query) in grant.filter.iter().filter(|(p, _)| pattern_matches(p, channel)) {
                let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
                let filter = Filter::parse(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .map_err(|cause| AuthError::BadGrant { channel: pattern.clone(), cause })?;
                combined = combined.and(filter);
            }
        }
        Ok((!combined.is_empty()).then(|| Arc::new(combined)))
    }

    pub fn expires(&self) -> Option<SystemTime> {
        match self {
            Access::Open => None,
            Access::Granted { expires, .. } => *expires,
        }
    }
}

fn pattern_matches(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('.') => channel.starts_with(prefix),
        _ => pattern == channel,
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name && !v.is_empty()).then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"test secret";

    fn token(claims: serde_json::Value) -> String {
        encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET)).unwrap()
    }

    fn future() -> u64 {
        SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 600
    }

    fn auth() -> Jwt {
        Jwt::hs256(SECRET, DEFAULT_COOKIE)
    }

    /// The reason a token was refused, as the client reads it.
    fn refusal(jwt: &Jwt, claims: serde_json::Value) -> String {
        match jwt.check(&HeaderMap::new(), Some(&token(claims.clone()))) {
            Ok(_) => panic!("accepted: {claims}"),
            Err(err) => err.to_string(),
        }
    }

    #[test]
    fn time_audience_and_issuer_claims_are_checked_and_refusals_name_the_claim() {
        let now = future() - 600;
        let later = now + 300;
        assert_eq!(
            refusal(&auth(), json!({"exp": future(), "nbf": later})),
            "invalid token: it is not valid yet (nbf)"
        );
        assert!(refusal(&auth(), json!({"exp": future(), "iat": later})).contains("issued in the future (iat)"));
        assert!(auth()
            .check(&HeaderMap::new(), Some(&token(json!({"exp": future(), "nbf": now, "iat": now}))))
            .is_ok());
        // Past what a SystemTime can hold: refused, not a panic in the connection's task.
        assert!(refusal(&auth(), json!({"exp": u64::MAX})).contains("exp is out of range"));

        let strict = auth().expecting(Some("pgsse.example"), Some("https://login.example"));
        let good = json!({"exp": future(), "aud": "pgsse.example", "iss": "https://login.example"});
        assert!(strict.check(&HeaderMap::new(), Some(&token(good))).is_ok());
        let wrong_aud = json!({"exp": future(), "aud": "other", "iss": "https://login.example"});
        assert!(refusal(&strict, wrong_aud).contains("aud claim"));
        assert!(refusal(&strict, json!({"exp": future(), "iss": "https://login.example"})).contains("no aud claim"));
        let wrong_iss = json!({"exp": future(), "aud": "pgsse.example", "iss": "https://evil.example"});
        assert!(refusal(&strict, wrong_iss).contains("iss claim"));

        let other_key = encode(&Header::default(), &json!({"exp": future()}), &EncodingKey::from_secret(b"other"));
        let err = auth().check(&HeaderMap::new(), Some(&other_key.unwrap())).err().unwrap().to_string();
        assert_eq!(err, "invalid token: its signature does not verify with this gateway's key");
        let missing_exp = refusal(&auth(), json!({"pgsse": {}}));
        assert_eq!(missing_exp, "invalid token: it has no exp claim");
        let bad_grant = refusal(&auth(), json!({"exp": future(), "pgsse": {"subscribe": 1}}));
        assert!(!bad_grant.contains("line 1") && !bad_grant.contains('`'), "{bad_grant}");
    }

    #[test]
    fn patterns() {
        assert!(pattern_matches("*", "anything"));
        assert!(pattern_matches("orders.*", "orders.eu"));
        assert!(!pattern_matches("orders.*", "orders"));
        assert!(!pattern_matches("orders.*", "ordersx.eu"));
        assert!(pattern_matches("messages", "messages"));
        assert!(!pattern_matches("messages", "messages2"));
        assert!(!pattern_matches("mess*", "messages"), "only a whole trailing segment may be a wildcard");
    }

    #[test]
    fn token_sources_and_failures() {
        let good = token(json!({"exp": future(), "pgsse": {"subscribe": ["a"]}}));
        let mut headers = HeaderMap::new();
        assert!(matches!(auth().check(&headers, None), Err(AuthError::Missing(_))));
        assert!(auth().check(&headers, Some(&good)).is_ok());
        headers.insert(COOKIE, HeaderValue::from_str(&format!("x=1; {DEFAULT_COOKIE}={good}")).unwrap());
        assert!(auth().check(&headers, None).is_ok());
        headers.insert(AUTHORIZATION, HeaderValue::from_static("Bearer not.a.jwt"));
        assert!(matches!(auth().check(&headers, None), Err(AuthError::Invalid(_))), "header wins");

        let expired = token(json!({"exp": 1000, "pgsse": {}}));
        assert!(matches!(auth().check(&HeaderMap::new(), Some(&expired)), Err(AuthError::Expired)));
        let other_key =
            encode(&Header::default(), &json!({"exp": future()}), &EncodingKey::from_secret(b"other")).unwrap();
        assert!(matches!(auth().check(&HeaderMap::new(), Some(&other_key)), Err(AuthError::Invalid(_))));
        let no_exp = token(json!({"pgsse": {"subscribe": ["*"]}}));
        assert!(matches!(auth().check(&HeaderMap::new(), Some(&no_exp)), Err(AuthError::Invalid(_))));
        let unknown_field = token(json!({"exp": future(), "pgsse": {"subscribe": ["*"], "admin": true}}));
        assert!(auth().check(&HeaderMap::new(), Some(&unknown_field)).is_err(), "grants are strict");
    }

    #[test]
    fn grants_allow_and_narrow() {
        let t = token(json!({"exp": future(), "pgsse": {
            "subscribe": ["orders.*", "messages"], "publish": ["messages"],
            "filter": {"orders.*": "user_id=eq.42"}}}));
        let access = auth().check(&HeaderMap::new(), Some(&t)).unwrap();
        assert!(access.may_subscribe("orders.eu").is_ok());
        assert!(matches!(access.may_subscribe("other"), Err(AuthError::Forbidden { .. })));
        assert!(access.may_publish("orders.eu").is_err());
        assert!(access.may_publish("messages").is_ok());
        let asked = Filter::parse([("user_id", "eq.7")]).unwrap();
        let f = access.filter_for("orders.eu", Some(&asked)).unwrap().unwrap();
        assert!(!f.matches(&json!({"user_id": 7})), "the client cannot widen the grant");
        assert!(!f.matches(&json!({"user_id": 42})), "and both apply");
        let grant_only = access.filter_for("orders.eu", None).unwrap().unwrap();
        assert!(grant_only.matches(&json!({"user_id": 42})));
        assert!(access.filter_for("messages", None).unwrap().is_none());
        assert!(Access::Open.may_publish("x").is_ok());
    }
}
