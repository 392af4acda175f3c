//! What a request may do: a grant lists channel patterns to subscribe and publish, and row filters per
//! channel that the client can narrow but never widen; and every reason a request is refused.

use crate::refusal::{Refusal, Refuse};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Deserialize;

use crate::filter::{Filter, FilterError};

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
    /// A grant's filter that no row of the channel can match (a column it does not publish, say): every
    /// stream would stay silent, so the token's issuer is told instead.
    #[error(
        "the token's grant filters channel {channel:?} in a way its rows cannot match ({cause}): the grant must change"
    )]
    GrantFilter { channel: String, cause: String },
    #[error("invalid auth configuration: {0}")]
    Key(String),
    #[error("authorization is unavailable, try again: {0}")]
    Unavailable(String),
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
    /// `subject` is the token's `sub` as JSON text, where it has one: the scope of its `Idempotency-Key`s.
    Granted {
        grant: Grant,
        expires: Option<SystemTime>,
        subject: Option<String>,
    },
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

    /// Whose `Idempotency-Key`s a request's are: the token's subject; everyone's ("") without
    /// authentication; `None` for a token without a subject, whose keys could be anyone's.
    pub fn key_scope(&self) -> Option<&str> {
        match self {
            Access::Open => Some(""),
            Access::Granted { subject, .. } => subject.as_deref(),
        }
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

impl Refuse for AuthError {
    fn refusal(&self) -> Refusal {
        match self {
            AuthError::Missing(_) | AuthError::Invalid(_) | AuthError::Expired | AuthError::BadGrant { .. } => {
                Refusal::Unauthenticated
            }
            AuthError::Forbidden { .. }
            | AuthError::OutsideGrant(_)
            | AuthError::FilteredClear(_)
            | AuthError::GrantFilter { .. } => Refusal::Forbidden,
            AuthError::Key(_) | AuthError::Unavailable(_) => Refusal::Unavailable,
        }
    }

    /// Its own words, an outage included: they name the auth backend, not the database.
    fn told(&self) -> String {
        self.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
