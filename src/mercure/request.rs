//! What a Mercure request asks, checked before anything else happens: a subscription's selectors and last
//! event id (1.0, and 0.x with `--mercure-legacy`), and a publication's form.

use crate::mercure::claims::MAX_SELECTORS;
use crate::mercure::MercureError;
use crate::topic::{Selector, SelectorError, MAX_LEN, MAX_PATTERNS};

/// A subscription's query string, parsed.
#[derive(Debug)]
pub struct Subscribe {
    pub selectors: Vec<Selector>,
    /// `last_event_id` (or 0.x `lastEventID`), present even when empty; the header wins over it.
    pub last_event_id: Option<String>,
    /// A 0.x token in the query (`authorization`).
    pub token: Option<String>,
    /// The request spoke 0.x (a `topic`, `lastEventID` or `authorization` parameter): its answer says
    /// `Last-Event-ID` too.
    pub legacy: bool,
}

/// Text a topic, selector or id may hold: no control or format character (which would let a value look
/// like another in a log or a UI), and a bounded length.
fn printable(value: &str, max: usize) -> bool {
    value.len() <= max
        && !value.chars().any(|c| {
            c.is_control() || matches!(c, '\u{ad}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2064}' | '\u{feff}')
        })
}

/// A query or form's `name=value` pairs, each percent-decoded (`+` a space). Refused where a name or
/// value is not UTF-8 once decoded: the specification answers 400, where a lossy decoding would have
/// matched or published another text than the one sent.
fn pairs(input: &[u8]) -> Result<Vec<(String, String)>, MercureError> {
    let decode = |raw: &[u8]| {
        let spaced: Vec<u8> = raw.iter().map(|&b| if b == b'+' { b' ' } else { b }).collect();
        String::from_utf8(percent_encoding::percent_decode(&spaced).collect())
            .map_err(|_| MercureError::Request("a parameter is not UTF-8 (once percent-decoded)".into()))
    };
    let pairs = input.split(|&b| b == b'&').filter(|pair| !pair.is_empty());
    pairs
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

impl Subscribe {
    pub fn parse(query: Option<&str>, legacy_allowed: bool) -> Result<Self, MercureError> {
        let bad = |why: String| Err(MercureError::Request(why));
        let mut out = Subscribe { selectors: Vec::new(), last_event_id: None, token: None, legacy: false };
        let mut patterns = 0;
        for (name, value) in pairs(query.unwrap_or("").as_bytes())? {
            // Each selector is checked (length, characters, how many) before it is compiled: compiling is
            // what costs, and anyone may send a query.
            let compile: fn(&str) -> Result<Selector, SelectorError> = match name.as_ref() {
                "match" | "match_exact" => |v| Selector::exact(v, true),
                "match_urlpattern" => |v| if v == "*" { Ok(Selector::All) } else { Selector::url_pattern(v) },
                "topic" if legacy_allowed => {
                    out.legacy = true;
                    Selector::template
                }
                "topic" => {
                    return bad("topic= is Mercure 0.x: use match= (or start the gateway with --mercure-legacy)".into())
                }
                "last_event_id" => {
                    out.last_event_id.get_or_insert(value.to_string());
                    continue;
                }
                "lastEventID" if legacy_allowed => {
                    out.legacy = true;
                    out.last_event_id.get_or_insert(value.to_string());
                    continue;
                }
                "access_token" => {
                    return bad(
                        "access_token= is not read by the Mercure hub: send the token as Authorization: Bearer or \
                         the __Secure-mercure_access_token cookie"
                            .into(),
                    )
                }
                "authorization" if legacy_allowed => {
                    out.legacy = true;
                    out.token = Some(value.to_string());
                    continue;
                }
                other if other.to_ascii_lowercase().starts_with("match") => {
                    return bad(format!(
                        "unknown parameter {:?}: the selectors are match= (or match_exact=) and match_urlpattern=",
                        crate::parse::clip(other)
                    ))
                }
                _ => continue,
            };
            if !printable(&value, MAX_LEN) {
                return bad(format!("a selector must be at most {MAX_LEN} bytes without control characters"));
            }
            if out.selectors.len() >= MAX_SELECTORS {
                return bad(format!("at most {MAX_SELECTORS} selectors in one subscription"));
            }
            patterns +=
                usize::from(name == "match_urlpattern" && value != "*" || name == "topic" && value.contains('{'));
            if patterns > MAX_PATTERNS {
                return bad(format!(
                    "at most {MAX_PATTERNS} URL pattern or URI template selectors in one subscription"
                ));
            }
            out.selectors.push(compile(&value).map_err(|e| MercureError::Request(e.to_string()))?);
        }
        if out.selectors.is_empty() {
            return bad(if legacy_allowed {
                "missing match= (or topic=) parameter: the topics to subscribe to".into()
            } else {
                "missing match= parameter: the topics to subscribe to".into()
            });
        }
        Ok(out)
    }
}

/// A publication's form fields (`application/x-www-form-urlencoded`), checked.
#[derive(Debug, Default)]
pub struct Publish {
    pub topics: Vec<String>,
    pub data: String,
    pub private: bool,
    pub id: Option<String>,
    pub kind: Option<String>,
    pub retry: Option<u64>,
}

impl Publish {
    pub fn parse(body: &[u8]) -> Result<Self, MercureError> {
        let bad = |why: &str| Err(MercureError::Request(why.to_string()));
        let mut out = Publish::default();
        for (name, value) in pairs(body)? {
            match name.as_ref() {
                "topic" => out.topics.push(value),
                "data" => out.data = value,
                "private" => out.private = true,
                "id" => out.id = Some(value),
                "type" => out.kind = Some(value).filter(|t| !t.is_empty()),
                "retry" if value.is_empty() => {}
                "retry" => match value.parse::<u64>() {
                    Ok(retry) if value.bytes().all(|b| b.is_ascii_digit()) => out.retry = Some(retry),
                    _ => return bad("retry must be a number of milliseconds"),
                },
                _ => {}
            }
        }
        if out.topics.is_empty() {
            return bad("missing topic: the update's topic (repeat it for alternate topics)");
        }
        if out.topics.len() > MAX_SELECTORS {
            return bad("an update has at most 100 topics");
        }
        if out.topics.iter().any(|t| t.is_empty() || !printable(t, MAX_LEN)) {
            return bad("a topic must be 1 to 4096 bytes without control characters");
        }
        if out.topics.iter().any(|t| t == "*") {
            return bad("the topic * is every topic: an update cannot be published on it");
        }
        if out.data.contains('\0') {
            return bad("data must not contain NUL");
        }
        if let Some(id) = &out.id {
            if id.is_empty() || id == "earliest" || id.starts_with('#') || !printable(id, 1024) {
                return bad("id must be 1 to 1024 bytes without control characters, not earliest, and not start with # (the hub's own ids)");
            }
        }
        if out.kind.as_ref().is_some_and(|t| !printable(t, 256)) {
            return bad("type must be at most 256 bytes without control characters");
        }
        Ok(out)
    }

    /// Whether a topic is in the hub's own namespace (`/.well-known/mercure` and below), which no
    /// publisher may use: its path, dot segments resolved, as a URL would have it.
    pub fn reserved_topic(&self) -> Option<&str> {
        self.topics.iter().map(String::as_str).find(|t| {
            let path = url::Url::parse(t).ok().map(|u| u.path().to_string()).unwrap_or_else(|| t.to_string());
            path == "/.well-known/mercure" || path.starts_with("/.well-known/mercure/")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(query: &str, legacy: bool) -> String {
        match Subscribe::parse(Some(query), legacy) {
            Err(MercureError::Request(why)) => why,
            other => panic!("{query}: {other:?}"),
        }
    }

    #[test]
    fn subscriptions_read_both_protocols() {
        let s =
            Subscribe::parse(Some("match=a&match_urlpattern=https://x/:id&last_event_id=%237&foo=1"), false).unwrap();
        assert_eq!((s.selectors.len(), s.last_event_id.as_deref(), s.legacy), (2, Some("#7"), false));
        let s = Subscribe::parse(Some("topic=https://x/{id}&lastEventID=e&authorization=t"), true).unwrap();
        assert_eq!((s.last_event_id.as_deref(), s.token.as_deref(), s.legacy), (Some("e"), Some("t"), true));
        assert!(s.selectors[0].matches("https://x/1"));
        let s = Subscribe::parse(Some("match=a&lastEventID=e&authorization=t"), false).unwrap();
        assert_eq!((s.last_event_id, s.token), (None, None), "0.x parameters mean nothing to 1.0");
    }

    #[test]
    fn refuses_every_malformed_subscription() {
        assert!(refused("", false).contains("missing match="));
        assert!(refused("last_event_id=1", true).contains("topic="));
        assert!(refused("topic=a", false).contains("--mercure-legacy"));
        for name in ["matchURLPattern", "MATCH", "match_regexp", "matchExact"] {
            assert!(refused(&format!("{name}=a"), false).contains("unknown parameter"), "{name}");
        }
        assert!(refused("match_urlpattern=https://x/(", false).contains("URL pattern"));
        assert!(refused("match=a%0Ab", false).contains("control"));
        assert!(refused("match=a%E2%80%AEb", false).contains("control"), "a right-to-left override");
        assert!(refused("match=%FF", false).contains("UTF-8"));
        assert!(refused("match=a&last_event_id=%C3%28", false).contains("UTF-8"));
        let many = (0..=MAX_SELECTORS).map(|i| format!("match={i}")).collect::<Vec<_>>().join("&");
        assert!(refused(&many, false).contains("at most"));
    }

    #[test]
    fn publications_are_checked() {
        let p = Publish::parse(b"topic=a&topic=b&data=x%0A%0Ay&private=&id=urn%3Ax&type=book&retry=10&z=1").unwrap();
        assert_eq!(p.topics, ["a", "b"]);
        assert_eq!((p.data.as_str(), p.private, p.id.as_deref()), ("x\n\ny", true, Some("urn:x")));
        assert_eq!((p.kind.as_deref(), p.retry), (Some("book"), Some(10)));
        for (body, why) in [
            (&b"data=x"[..], "missing topic"),
            (b"topic=*", "every topic"),
            (b"topic=a&id=%23hub", "start with #"),
            (b"topic=a&id=earliest", "not earliest"),
            (b"topic=a&id=a%0Db", "control"),
            (b"topic=a&retry=-1", "retry"),
            (b"topic=a&retry=1e3", "retry"),
            (b"topic=a%00", "control"),
            (b"topic=a&data=%00", "NUL"),
            (b"topic=\xff", "UTF-8"),
            (b"topic=%FF", "UTF-8"),
            (b"topic=a&data=%C3", "UTF-8"),
            (b"topic=a&type=a%0Db", "type"),
        ] {
            match Publish::parse(body) {
                Err(MercureError::Request(told)) => assert!(told.contains(why), "{told}"),
                other => panic!("{other:?}"),
            }
        }
        let reserved = Publish::parse(b"topic=https://hub.example/.well-known/mercure/subscriptions/x").unwrap();
        assert!(reserved.reserved_topic().is_some());
        let dotted = Publish::parse(b"topic=https://hub.example/a/../.well-known/mercure").unwrap();
        assert!(dotted.reserved_topic().is_some(), "dot segments resolved");
        assert!(Publish::parse(b"topic=https://hub.example/.well-known/mercurex").unwrap().reserved_topic().is_none());
    }
}
