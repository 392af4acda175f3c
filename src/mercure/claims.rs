//! What a Mercure token allows: the topics its holder may publish to, and the private updates it may
//! receive. Protocol 1.0 reads RFC 9068 `authorization_details`; 0.x (`--mercure-legacy`) its `mercure`
//! claim.

use serde::Deserialize;
use serde_json::Value;

use crate::auth::Grant;
use crate::topic::{Selector, MAX_PATTERNS};

/// The authorization detail type Mercure's hub and clients use; the draft's text says `mercure`.
const DETAIL_TYPES: [&str; 2] = ["https://mercure.rocks/authorization-detail", "mercure"];

/// The most topic selectors one token may carry, as for one subscription's selectors.
pub const MAX_SELECTORS: usize = 100;

#[derive(Debug, Default)]
pub struct Rights {
    pub subscribe: Vec<Selector>,
    pub publish: Vec<Selector>,
    /// pgsse's own grant, where the token carries one too: its row filters hold on a table's rows.
    pub grant: Option<Grant>,
}

/// The claims a Mercure token may carry (others are ignored).
#[derive(Deserialize)]
pub struct Claims {
    authorization_details: Option<Value>,
    mercure: Option<Legacy>,
    #[serde(rename = "https://mercure.rocks/")]
    namespaced: Option<Legacy>,
    pgsse: Option<Grant>,
}

#[derive(Deserialize)]
struct Legacy {
    #[serde(default)]
    publish: Vec<String>,
    #[serde(default)]
    subscribe: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ClaimsError {
    #[error(
        "it carries no authorization_details of type https://mercure.rocks/authorization-detail (nor, with \
         --mercure-legacy, a mercure claim)"
    )]
    None,
    #[error("this is a Mercure 0.x token (a mercure claim): start the gateway with --mercure-legacy to accept it")]
    Legacy,
    #[error("a Mercure token (authorization_details) must have typ at+jwt in its header")]
    Typ,
    #[error("a Mercure token (authorization_details) must have an exp claim")]
    NoExp,
    #[error("its authorization_details are malformed: {0}")]
    Malformed(&'static str),
    #[error("it carries more than {MAX_SELECTORS} topics, or more than {MAX_PATTERNS} patterns")]
    TooMany,
    #[error("its topic selector is invalid: {0}")]
    Selector(#[from] crate::topic::SelectorError),
}

/// Whether a header's `typ` is RFC 9068's: `at+jwt`, in any case, with or without `application/`.
pub fn is_access_token(typ: Option<&str>) -> bool {
    typ.is_some_and(|t| {
        let t = t.to_ascii_lowercase();
        t == "at+jwt" || t == "application/at+jwt"
    })
}

impl Claims {
    /// Whether these are a 0.x token's claims: a `mercure` claim, and no `authorization_details`.
    pub fn is_legacy(&self) -> bool {
        self.authorization_details.is_none() && (self.mercure.is_some() || self.namespaced.is_some())
    }

    /// The rights the claims grant. `typ` and `has_exp` are the token's, which protocol 1.0 requires;
    /// `legacy` allows a 0.x `mercure` claim.
    pub fn rights(mut self, typ: Option<&str>, has_exp: bool, legacy: bool) -> Result<Rights, ClaimsError> {
        let grant = self.pgsse.take();
        self.mercure_rights(typ, has_exp, legacy).map(|rights| Rights { grant, ..rights })
    }

    fn mercure_rights(self, typ: Option<&str>, has_exp: bool, legacy: bool) -> Result<Rights, ClaimsError> {
        if let Some(details) = self.authorization_details {
            if !is_access_token(typ) {
                return Err(ClaimsError::Typ);
            }
            if !has_exp {
                return Err(ClaimsError::NoExp);
            }
            return details_rights(&details);
        }
        match self.namespaced.or(self.mercure) {
            Some(claim) if legacy => legacy_rights(claim),
            Some(_) => Err(ClaimsError::Legacy),
            None => Err(ClaimsError::None),
        }
    }
}

fn details_rights(details: &Value) -> Result<Rights, ClaimsError> {
    let Value::Array(details) = details else { return Err(ClaimsError::Malformed("not an array")) };
    let mut rights = Rights::default();
    for detail in details {
        let Value::Object(detail) = detail else { return Err(ClaimsError::Malformed("an entry is not an object")) };
        if !detail.get("type").and_then(Value::as_str).is_some_and(|t| DETAIL_TYPES.contains(&t)) {
            continue;
        }
        let Some(Value::Array(actions)) = detail.get("actions") else {
            return Err(ClaimsError::Malformed("a Mercure entry has no actions array"));
        };
        let Some(Value::Array(topics)) = detail.get("topics") else {
            return Err(ClaimsError::Malformed("a Mercure entry has no topics array"));
        };
        if actions.is_empty() || topics.is_empty() {
            return Err(ClaimsError::Malformed("a Mercure entry's actions and topics must not be empty"));
        }
        let (mut publish, mut subscribe) = (false, false);
        for action in actions {
            match action.as_str() {
                Some("publish") => publish = true,
                Some("subscribe") => subscribe = true,
                Some(_) => {}
                None => return Err(ClaimsError::Malformed("an action is not a string")),
            }
        }
        for topic in topics {
            if rights.publish.len() + rights.subscribe.len() >= MAX_SELECTORS {
                return Err(ClaimsError::TooMany);
            }
            let Value::Object(topic) = topic else { return Err(ClaimsError::Malformed("a topic is not an object")) };
            let Some(pattern) = topic.get("match").and_then(Value::as_str).filter(|m| !m.is_empty()) else {
                return Err(ClaimsError::Malformed("a topic has no match"));
            };
            let selector = || match topic.get("match_type").map(Value::as_str) {
                None | Some(Some("exact")) => Ok(Selector::exact(pattern, true)?),
                Some(Some("urlpattern")) if pattern == "*" => Ok(Selector::All),
                Some(Some("urlpattern")) => Ok(Selector::url_pattern(pattern)?),
                _ => Err(ClaimsError::Malformed("a topic's match_type is neither exact nor urlpattern")),
            };
            let pattern_count = |r: &Rights| r.publish.iter().chain(&r.subscribe).filter(|s| s.is_pattern()).count();
            if topic.get("match_type").and_then(Value::as_str) == Some("urlpattern")
                && pattern_count(&rights) >= MAX_PATTERNS
            {
                return Err(ClaimsError::TooMany);
            }
            if publish {
                rights.publish.push(selector()?);
            }
            if subscribe {
                rights.subscribe.push(selector()?);
            }
        }
    }
    Ok(rights)
}

fn legacy_rights(claim: Legacy) -> Result<Rights, ClaimsError> {
    if claim.publish.len() + claim.subscribe.len() > MAX_SELECTORS {
        return Err(ClaimsError::TooMany);
    }
    if claim.publish.iter().chain(&claim.subscribe).filter(|s| s.contains('{')).count() > MAX_PATTERNS {
        return Err(ClaimsError::TooMany);
    }
    let selectors = |list: Vec<String>| list.iter().map(|s| Selector::template(s)).collect::<Result<Vec<_>, _>>();
    Ok(Rights { publish: selectors(claim.publish)?, subscribe: selectors(claim.subscribe)?, grant: None })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn claims(value: Value) -> Claims {
        serde_json::from_value(value).unwrap()
    }

    fn detail(actions: Value, topics: Value) -> Value {
        json!({"authorization_details": [
            {"type": "other", "anything": 1},
            {"type": "https://mercure.rocks/authorization-detail", "actions": actions, "topics": topics}
        ]})
    }

    #[test]
    fn reads_authorization_details() {
        let topics = json!([{"match": "https://a/1"}, {"match": "https://a/:id", "match_type": "urlpattern"}]);
        let rights =
            claims(detail(json!(["subscribe", "future"]), topics)).rights(Some("at+JWT"), true, false).unwrap();
        assert_eq!((rights.subscribe.len(), rights.publish.len()), (2, 0));
        assert!(rights.subscribe[1].matches("https://a/2"));
        let star = claims(detail(json!(["publish"]), json!([{"match": "*"}]))).rights(Some("at+jwt"), true, false);
        assert!(star.unwrap().publish[0].matches("anything"));
    }

    #[test]
    fn refuses_what_protocol_1_0_does_not_allow() {
        let ok = || detail(json!(["publish"]), json!([{"match": "t"}]));
        assert_eq!(claims(ok()).rights(Some("JWT"), true, false).unwrap_err(), ClaimsError::Typ);
        assert_eq!(claims(ok()).rights(Some("at+jwt"), false, true).unwrap_err(), ClaimsError::NoExp);
        for (actions, topics) in [
            (json!([]), json!([{"match": "t"}])),
            (json!([1]), json!([{"match": "t"}])),
            (json!(["publish"]), json!(["t"])),
            (json!(["publish"]), json!([{"match": ""}])),
            (json!(["publish"]), json!([{"match": "t", "match_type": "regexp"}])),
        ] {
            let err = claims(detail(actions, topics)).rights(Some("at+jwt"), true, false).unwrap_err();
            assert!(matches!(err, ClaimsError::Malformed(_)), "{err}");
        }
        let many: Vec<Value> = (0..=MAX_SELECTORS).map(|i| json!({"match": i.to_string()})).collect();
        let err = claims(detail(json!(["publish"]), Value::Array(many))).rights(Some("at+jwt"), true, false);
        assert_eq!(err.unwrap_err(), ClaimsError::TooMany);
    }

    #[test]
    fn reads_the_legacy_claim_only_when_allowed() {
        let legacy = || claims(json!({"mercure": {"publish": ["*"], "subscribe": ["https://a/{id}"]}}));
        assert_eq!(legacy().rights(None, false, false).unwrap_err(), ClaimsError::Legacy);
        let rights = legacy().rights(None, false, true).unwrap();
        assert!(rights.publish[0].matches("x") && rights.subscribe[0].matches("https://a/1"));
        assert_eq!(claims(json!({"pgsse": {}})).rights(None, true, true).unwrap_err(), ClaimsError::None);
    }
}
