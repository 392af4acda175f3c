//! `--auth jwt`: a signed token (HS256 secret, or an RS256/ES256 public key) whose `pgsse` claim is the
//! grant, taken from `Authorization: Bearer`, a cookie, or `?access_token=`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::header::{AUTHORIZATION, COOKIE};
use http::HeaderMap;
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

use crate::auth::grant::{Access, AuthError, Grant};

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

    /// Requires the token's `aud` to include `audience` and its `iss` to be `issuer`, where given: a
    /// token without the claim is refused too (the library checks a claim only where it is present).
    pub fn expecting(mut self, audience: Option<&str>, issuer: Option<&str>) -> Self {
        if let Some(audience) = audience {
            self.validation.set_audience(&[audience]);
            self.validation.validate_aud = true;
            self.validation.required_spec_claims.insert("aud".into());
        }
        if let Some(issuer) = issuer {
            self.validation.set_issuer(&[issuer]);
            self.validation.required_spec_claims.insert("iss".into());
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
    /// Any JSON value (some issuers send numbers), kept as its JSON text: `7` and `"7"` are two subjects.
    sub: Option<serde_json::Value>,
    /// The grant; a token without one was most likely made with the grant's keys at the top level.
    pgsse: Option<Grant>,
    aud: Option<Value>,
    iss: Option<Value>,
}

/// `aud` and `iss` as RFC 7519 has them: a string, or for `aud` a non-empty list of strings. The library
/// checks a value of those shapes only, and passes over any other once the claim is not required, so
/// another shape is refused here rather than taken as absent.
fn claim_shapes(aud: Option<&Value>, iss: Option<&Value>) -> Result<(), AuthError> {
    let aud_ok = match aud {
        None | Some(Value::Null | Value::String(_)) => true,
        Some(Value::Array(list)) => !list.is_empty() && list.iter().all(Value::is_string),
        Some(_) => false,
    };
    if !aud_ok {
        return Err(AuthError::Invalid("its aud claim is malformed: a string or a list of strings".into()));
    }
    if !matches!(iss, None | Some(Value::Null | Value::String(_))) {
        return Err(AuthError::Invalid("its iss claim is malformed: a string".into()));
    }
    Ok(())
}

fn absent(claim: Option<&Value>) -> bool {
    matches!(claim, None | Some(Value::Null))
}

/// How a token without `exp` is told: callers that accept some such tokens add how.
pub(crate) const NO_EXP: &str = "it has no exp claim";

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
        ErrorKind::MissingRequiredClaim(claim) if claim == "exp" => return AuthError::Invalid(NO_EXP.into()),
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

/// A token verified by [`Jwt::verify`]: its header's `typ`, its claims, when it ends, and the first
/// claim it lacks of those [`Lenient`] let it lack (`aud`, `iss`).
pub struct Verified<T> {
    pub typ: Option<String>,
    pub claims: T,
    pub expires: Option<SystemTime>,
    pub lacks: Option<&'static str>,
}

/// Required claims that [`Jwt::verify`] lets a token lack: `exp`, and `aud` and `iss` (still checked
/// where present; [`Verified::lacks`] then says which is missing, for the caller to judge).
#[derive(Clone, Copy, Default)]
pub struct Lenient {
    pub exp: bool,
    pub audience: bool,
}

#[derive(Deserialize)]
struct Timed<T> {
    exp: Option<u64>,
    nbf: Option<u64>,
    iat: Option<u64>,
    aud: Option<Value>,
    iss: Option<Value>,
    #[serde(flatten)]
    rest: T,
}

impl Jwt {
    /// Verifies `token` as [`Jwt::check`] does (key, algorithm, audience, issuer, times) for claims of
    /// another shape (a Mercure token's), but for the claims `lenient` lets it lack.
    pub fn verify<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        lenient: Lenient,
    ) -> Result<Verified<T>, AuthError> {
        let mut validation = self.validation.clone();
        if lenient.exp {
            validation.required_spec_claims.remove("exp");
        }
        let mut expected = Vec::new();
        for claim in ["aud", "iss"] {
            if lenient.audience && validation.required_spec_claims.remove(claim) {
                expected.push(claim);
            }
        }
        let data = decode::<Timed<T>>(token, &self.key, &validation).map_err(|e| token_error(&e))?;
        let claims = data.claims;
        claim_shapes(claims.aud.as_ref(), claims.iss.as_ref())?;
        let expires = times(claims.exp, claims.nbf, claims.iat)?;
        let lacks = [("aud", absent(claims.aud.as_ref())), ("iss", absent(claims.iss.as_ref()))]
            .into_iter()
            .find(|(claim, missing)| *missing && expected.contains(claim))
            .map(|(claim, _)| claim);
        Ok(Verified { typ: data.header.typ, claims: claims.rest, expires, lacks })
    }

    pub fn check(&self, headers: &HeaderMap, query_token: Option<&str>) -> Result<Access, AuthError> {
        let jwt = self;
        let token = bearer(headers)
            .or_else(|| cookie(headers, &jwt.cookie))
            .or(query_token)
            .ok_or_else(|| AuthError::Missing(jwt.cookie.clone()))?;
        let claims = decode::<Claims>(token, &jwt.key, &jwt.validation).map_err(|e| token_error(&e))?.claims;
        claim_shapes(claims.aud.as_ref(), claims.iss.as_ref())?;
        let expires = times(Some(claims.exp.unwrap_or_default()), claims.nbf, claims.iat)?;
        let grant = claims.pgsse.ok_or_else(|| {
            AuthError::Invalid(
                r#"it has no pgsse claim, where its grant goes: {"pgsse": {"subscribe": ["orders"], "publish": []}}"#
                    .into(),
            )
        })?;
        Ok(Access::Granted { grant, expires, subject: claims.sub.map(|sub| sub.to_string()) })
    }
}

/// Checks a token's times beyond what the library does: `nbf` and `iat` not ahead of this clock (but for
/// [`CLOCK_SKEW`]), and `exp`, where there is one, not within its own second. Returns when it ends.
fn times(exp: Option<u64>, nbf: Option<u64>, iat: Option<u64>) -> Result<Option<SystemTime>, AuthError> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let ahead = |at: Option<u64>| at.is_some_and(|t| Duration::from_secs(t) > now + CLOCK_SKEW);
    if ahead(nbf) {
        return Err(AuthError::Invalid("it is not valid yet (nbf)".into()));
    }
    if ahead(iat) {
        return Err(AuthError::Invalid("it claims to be issued in the future (iat)".into()));
    }
    let Some(exp) = exp else { return Ok(None) };
    let expires = UNIX_EPOCH
        .checked_add(Duration::from_secs(exp))
        .ok_or_else(|| AuthError::Invalid("its exp is out of range".into()))?;
    // The library compares whole seconds: within exp's second, a stream would open only to end at once.
    if expires <= SystemTime::now() {
        return Err(AuthError::Expired);
    }
    Ok(Some(expires))
}

/// The `Authorization: Bearer` token, refusing (`Err`) a header that is not exactly one such.
pub(crate) fn bearer_header(headers: &HeaderMap) -> Result<Option<&str>, ()> {
    let mut all = headers.get_all(AUTHORIZATION).iter();
    let Some(value) = all.next() else { return Ok(None) };
    if all.next().is_some() {
        return Err(());
    }
    let (scheme, token) = value.to_str().map_err(drop)?.split_once(' ').ok_or(())?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(());
    }
    Ok(Some(token))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

pub(crate) fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find_map(|(k, v)| (k == name && !v.is_empty()).then_some(v))
}
