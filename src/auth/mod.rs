//! Who may read and write which channels: nobody checks (`none`), a JWT's grant, or a legacy backend's
//! answer (`auth-url`). The grant itself, and what it allows, is in `grant`.

mod grant;
pub(crate) mod jwt;
mod url;

pub use grant::{Access, AuthError, Grant};
pub use jwt::Jwt;
pub use url::AuthUrl;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method};

/// The query parameter that may carry a token, for an `EventSource` on another origin (it cannot set headers).
pub(crate) const ACCESS_TOKEN: &str = "access_token";

pub const DEFAULT_COOKIE: &str = "pgsse_token";

const DEFAULT_AUTH_CACHE_TTL: &str = "5s";

/// Who may read and write which channels.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Access control")]
pub struct AuthArgs {
    /// Who may read and write: `none` (anyone; only on loopback unless --allow-unauthenticated-public),
    /// `jwt` (a token's `pgsse` claim grants channels), or `auth-url` (a backend's URL decides).
    #[arg(long, env = "PGSSE_AUTH", value_enum, default_value_t = AuthMode::None)]
    pub auth: AuthMode,

    /// HS256 secret for `--auth jwt`.
    #[arg(long, env = "PGSSE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file with the RS256 (RSA) or ES256 (P-256) public key for `--auth jwt`.
    #[arg(long, env = "PGSSE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// For `--auth jwt`: a token's `aud` claim must include this.
    #[arg(long, env = "PGSSE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// For `--auth jwt`: a token's `iss` claim must be this.
    #[arg(long, env = "PGSSE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Cookie that may carry the token (besides `Authorization: Bearer` and `?access_token=`).
    #[arg(long, env = "PGSSE_JWT_COOKIE", default_value = DEFAULT_COOKIE)]
    pub jwt_cookie: String,

    /// For `--auth auth-url`: the backend URL asked about each new stream or write (http only).
    #[arg(long, env = "PGSSE_AUTH_URL")]
    pub auth_url: Option<String>,

    /// How long an auth URL's answer is reused for the same cookie, authorization and request.
    #[arg(long, env = "PGSSE_AUTH_CACHE_TTL", default_value = DEFAULT_AUTH_CACHE_TTL, value_parser = crate::parse::duration)]
    pub auth_cache_ttl: Duration,

    /// Serve a non-loopback address with `--auth none`: anyone who can reach it reads and writes everything.
    #[arg(long, env = "PGSSE_ALLOW_UNAUTHENTICATED_PUBLIC")]
    pub allow_unauthenticated_public: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    None,
    Jwt,
    AuthUrl,
}

/// An HS256 secret shorter than the hash's 256 bits is guessable offline from any token it signed.
const MIN_SECRET: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum AuthConfigError {
    #[error(
        "--auth jwt needs exactly one of --jwt-secret (PGSSE_JWT_SECRET) and --jwt-public-key (PGSSE_JWT_PUBLIC_KEY)"
    )]
    JwtKey,
    #[error(
        "--jwt-secret (PGSSE_JWT_SECRET) is {0} bytes; HS256 needs at least {MIN_SECRET} (256 bits): make one with `openssl rand -hex 32`"
    )]
    ShortSecret(usize),
    #[error("--auth auth-url needs --auth-url")]
    AuthUrl,
    #[error(
        "{0} is set but --auth is none, so it would be ignored and anyone could read and write: add --auth jwt or \
         --auth auth-url (PGSSE_AUTH), or unset it"
    )]
    Ignored(&'static str),
    #[error("cannot read {0}: {1}")]
    KeyFile(PathBuf, #[source] std::io::Error),
    #[error(transparent)]
    Invalid(#[from] AuthError),
}

impl AuthArgs {
    /// The access control these flags ask for, with its key read and checked.
    pub fn build(&self) -> Result<Auth, AuthConfigError> {
        let jwt =
            |jwt: Jwt| Auth::Jwt(Box::new(jwt.expecting(self.jwt_audience.as_deref(), self.jwt_issuer.as_deref())));
        let given = [
            (self.jwt_secret.is_some(), "--jwt-secret (PGSSE_JWT_SECRET)"),
            (self.jwt_public_key.is_some(), "--jwt-public-key (PGSSE_JWT_PUBLIC_KEY)"),
            (self.auth_url.is_some(), "--auth-url (PGSSE_AUTH_URL)"),
        ];
        if let (AuthMode::None, Some((_, flag))) = (self.auth, given.iter().find(|(set, _)| *set)) {
            return Err(AuthConfigError::Ignored(flag));
        }
        Ok(match (self.auth, &self.jwt_secret, &self.jwt_public_key) {
            (AuthMode::None, _, _) => Auth::None,
            (AuthMode::Jwt, Some(secret), None) if secret.len() < MIN_SECRET => {
                return Err(AuthConfigError::ShortSecret(secret.len()));
            }
            (AuthMode::Jwt, Some(secret), None) => jwt(Jwt::hs256(secret.as_bytes(), &self.jwt_cookie)),
            (AuthMode::Jwt, None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| AuthConfigError::KeyFile(path.clone(), e))?;
                jwt(Jwt::public_key(&pem, &self.jwt_cookie)?)
            }
            (AuthMode::Jwt, _, _) => return Err(AuthConfigError::JwtKey),
            (AuthMode::AuthUrl, _, _) => {
                let url = self.auth_url.as_deref().ok_or(AuthConfigError::AuthUrl)?;
                Auth::Url(Box::new(AuthUrl::new(url, self.auth_cache_ttl)?))
            }
        })
    }
}

/// Requests refused by access control, for the metrics.
#[derive(Default)]
pub(crate) struct Denials {
    pub unauthenticated: AtomicU64,
    pub forbidden: AtomicU64,
}

impl Denials {
    /// Counts a request that ended refused for its credentials (401) or its rights (403).
    pub fn note(&self, status: http::StatusCode) {
        let counter = match status {
            http::StatusCode::UNAUTHORIZED => &self.unauthenticated,
            http::StatusCode::FORBIDDEN => &self.forbidden,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::Filter;
    use http::header::{AUTHORIZATION, COOKIE};
    use http::HeaderValue;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;
    use std::time::{SystemTime, UNIX_EPOCH};

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
            .check(&HeaderMap::new(), Some(&token(json!({"exp": future(), "nbf": now, "iat": now, "pgsse": {}}))))
            .is_ok());
        // Past what a SystemTime can hold: refused, not a panic in the connection's task.
        assert!(refusal(&auth(), json!({"exp": u64::MAX})).contains("exp is out of range"));

        let strict = auth().expecting(Some("pgsse.example"), Some("https://login.example"));
        let good = json!({"exp": future(), "aud": "pgsse.example", "iss": "https://login.example", "pgsse": {}});
        assert!(strict.check(&HeaderMap::new(), Some(&token(good))).is_ok());
        let wrong_aud = json!({"exp": future(), "aud": "other", "iss": "https://login.example"});
        assert!(refusal(&strict, wrong_aud).contains("aud claim"));
        assert!(refusal(&strict, json!({"exp": future(), "iss": "https://login.example"})).contains("no aud claim"));
        assert!(refusal(&strict, json!({"exp": future(), "aud": "pgsse.example"})).contains("no iss claim"));
        let list_iss =
            json!({"exp": future(), "aud": "pgsse.example", "iss": ["https://evil.example", "https://login.example"]});
        assert!(refusal(&strict, list_iss).contains("iss claim is malformed"), "one issuer, not any of a list");
        let numbered = json!({"exp": future(), "aud": ["pgsse.example", 1], "iss": "https://login.example"});
        assert!(refusal(&strict, numbered).contains("aud claim"));
        let lenient = json!({"exp": future(), "aud": ["pgsse.example", 1], "pgsse": {}});
        assert!(refusal(&auth(), lenient).contains("aud claim is malformed"), "even where no audience is set");
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
