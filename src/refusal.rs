//! What kind of refusal an error is, decided by the error itself: HTTP only looks its status up, so a new
//! variant has to choose one (there is no `_ =>` to catch it silently), and says what the client is told.

use http::StatusCode;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The request is malformed, or asks for what cannot be (400).
    Invalid,
    /// No credentials, or credentials that do not verify (401).
    Unauthenticated,
    /// Credentials without the right, or a privilege the database withholds (403).
    Forbidden,
    NotFound,
    MethodNotAllowed,
    /// The request's deadline passed before its body arrived (408).
    BodyTimeout,
    /// Another request holds what this one needs, or it repeats a key in flight (409).
    Conflict,
    BodyTooLarge,
    UrlTooLong,
    UnsupportedMediaType,
    /// Well-formed, but the data cannot be taken (a constraint, the table's own code) (422).
    Unprocessable,
    /// A limit is reached; try again after `Retry-After` (429).
    Busy,
    HeadTooLarge,
    /// The database or a dependency is down or slow: nothing the client did (503).
    Unavailable,
}

impl Refusal {
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::Invalid => StatusCode::BAD_REQUEST,
            Refusal::Unauthenticated => StatusCode::UNAUTHORIZED,
            Refusal::Forbidden => StatusCode::FORBIDDEN,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Refusal::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Refusal::Conflict => StatusCode::CONFLICT,
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::UrlTooLong => StatusCode::URI_TOO_LONG,
            Refusal::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Refusal::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            Refusal::Busy => StatusCode::TOO_MANY_REQUESTS,
            Refusal::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// An error that a request can end with.
pub trait Refuse: std::fmt::Display {
    fn refusal(&self) -> Refusal;

    /// What the client is told. By default the error's own words; an error whose words may hold what only
    /// operators should see (SQL, hosts) says something else, and the log gets the words.
    fn told(&self) -> String {
        match self.refusal() {
            Refusal::Unavailable => UNAVAILABLE.to_string(),
            _ => self.to_string(),
        }
    }
}

/// What a client learns of a database that is down or failing.
pub const UNAVAILABLE: &str = "database unavailable, try again";
