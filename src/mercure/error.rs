//! Every way a Mercure request is refused, with the status and `WWW-Authenticate` challenge the Mercure
//! specification gives it (RFC 6750's error codes).

use crate::api::events::StreamError;
use crate::auth::AuthError;
use crate::fanout::hub::HubError;
use crate::limits::LimitError;
use crate::mercure::claims::ClaimsError;
use crate::pg::error::StoreError;
use crate::refusal::{Refusal, Refuse};

#[derive(Debug, thiserror::Error)]
pub enum MercureError {
    #[error("authentication required: send a Mercure token as {0}")]
    Missing(&'static str),
    #[error(
        "publishing needs a token in Authorization: Bearer (neither a cookie nor the URL is taken for publishing: \
         any site's form could make a browser send a cookie, and a URL's token reaches logs)"
    )]
    PublishToken,
    #[error("the Authorization header must be one `Bearer <token>`")]
    Presentation,
    #[error(transparent)]
    Token(AuthError),
    #[error("invalid token: {0}")]
    Claims(#[from] ClaimsError),
    #[error(
        "this token may not publish to topic {0:?}: its authorization_details (or 0.x mercure.publish) must match it"
    )]
    Publish(String),
    #[error("topic {0:?} is in the hub's own namespace (/.well-known/mercure): publish elsewhere")]
    Reserved(String),
    #[error("{0}")]
    Request(String),
    #[error("publish with Content-Type application/x-www-form-urlencoded")]
    ContentType,
    #[error(transparent)]
    Body(#[from] crate::api::commands::CommandError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Hub(#[from] HubError),
    #[error(transparent)]
    Stream(#[from] StreamError),
    #[error(transparent)]
    Limit(#[from] LimitError),
}

impl From<AuthError> for MercureError {
    fn from(err: AuthError) -> Self {
        MercureError::Token(err)
    }
}

impl MercureError {
    /// The `WWW-Authenticate` challenge of a refusal that has one.
    pub fn challenge(&self) -> Option<&'static str> {
        match self {
            MercureError::Missing(_) | MercureError::PublishToken => Some("Bearer"),
            MercureError::Presentation => Some(r#"Bearer error="invalid_request""#),
            MercureError::Token(err) if err.refusal() == Refusal::Unauthenticated => {
                Some(r#"Bearer error="invalid_token""#)
            }
            MercureError::Claims(_) => Some(r#"Bearer error="invalid_token""#),
            MercureError::Publish(_) | MercureError::Reserved(_) => Some(r#"Bearer error="insufficient_scope""#),
            _ => None,
        }
    }
}

impl Refuse for MercureError {
    fn refusal(&self) -> Refusal {
        match self {
            MercureError::Missing(_) | MercureError::PublishToken | MercureError::Claims(_) => Refusal::Unauthenticated,
            MercureError::Presentation | MercureError::Request(_) => Refusal::Invalid,
            MercureError::Publish(_) | MercureError::Reserved(_) => Refusal::Forbidden,
            MercureError::ContentType => Refusal::UnsupportedMediaType,
            MercureError::Token(err) => err.refusal(),
            MercureError::Body(err) => err.refusal(),
            MercureError::Store(err) => err.refusal(),
            MercureError::Hub(err) => err.refusal(),
            MercureError::Stream(err) => err.refusal(),
            MercureError::Limit(err) => err.refusal(),
        }
    }

    fn told(&self) -> String {
        match self {
            MercureError::Token(err) => err.told(),
            MercureError::Body(err) => err.told(),
            MercureError::Store(err) => err.told(),
            MercureError::Hub(err) => err.told(),
            MercureError::Stream(err) => err.told(),
            MercureError::Limit(err) => err.told(),
            err => err.to_string(),
        }
    }
}
