//! Mercure topic selectors: exact strings, `*`, WHATWG URL Patterns and RFC 6570 URI Templates, each
//! matched against an update's topics; and template expansion for a table's topic.

pub mod template;

use std::collections::HashMap;
use std::sync::Mutex;

use regex::Regex;
use urlpattern::{UrlPattern, UrlPatternInit, UrlPatternMatchInput};

pub use template::{expand, TemplateError};

/// The longest selector or topic pgsse reads: longer ones are refused rather than compiled.
pub const MAX_LEN: usize = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SelectorError {
    #[error("topic selector {0:?} is longer than {MAX_LEN} bytes")]
    TooLong(String),
    #[error("invalid URL pattern {pattern:?}: {cause}")]
    UrlPattern { pattern: String, cause: String },
    #[error("invalid URI template {pattern:?}: {cause}")]
    Template { pattern: String, cause: TemplateError },
}

/// Results a URL pattern remembers: matching one parses the topic as a URL and runs several regular
/// expressions, and a hub sees the same few topics again and again. Only short topics, and few: a
/// subscriber's selectors may not hold much memory that no queue counts.
const REMEMBERED: usize = 32;
const REMEMBERED_LEN: usize = 256;

pub enum Selector {
    /// `*`: every topic.
    All,
    Exact(String),
    UrlPattern(Box<UrlPattern>, Mutex<HashMap<String, bool>>),
    Template(Regex),
}

impl std::fmt::Debug for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::All => f.write_str("*"),
            Selector::Exact(s) => write!(f, "{s:?}"),
            Selector::UrlPattern(..) => f.write_str("<url pattern>"),
            Selector::Template(r) => write!(f, "<template {}>", r.as_str()),
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(128).collect()
}

impl Selector {
    /// A `match=` selector (and a 1.0 grant's plain entry): the topic itself; `*` only where `star` says.
    pub fn exact(topic: &str, star: bool) -> Result<Self, SelectorError> {
        if topic.len() > MAX_LEN {
            return Err(SelectorError::TooLong(short(topic)));
        }
        Ok(if star && topic == "*" { Selector::All } else { Selector::Exact(topic.to_string()) })
    }

    /// A `match_urlpattern=` selector: a WHATWG URL Pattern in its constructor-string form.
    pub fn url_pattern(pattern: &str) -> Result<Self, SelectorError> {
        if pattern.len() > MAX_LEN {
            return Err(SelectorError::TooLong(short(pattern)));
        }
        let bad = |cause: String| SelectorError::UrlPattern { pattern: short(pattern), cause };
        let init = UrlPatternInit::parse_constructor_string::<Regex>(pattern, None).map_err(|e| bad(e.to_string()))?;
        let compiled = UrlPattern::<Regex>::parse(init, Default::default()).map_err(|e| bad(e.to_string()))?;
        Ok(Selector::UrlPattern(Box::new(compiled), Mutex::new(HashMap::new())))
    }

    /// A 0.x `topic=` selector: `*`, or a URI Template (a plain topic is a template without expressions).
    pub fn template(pattern: &str) -> Result<Self, SelectorError> {
        if pattern.len() > MAX_LEN {
            return Err(SelectorError::TooLong(short(pattern)));
        }
        if pattern == "*" {
            return Ok(Selector::All);
        }
        if !pattern.contains(['{', '}']) {
            return Ok(Selector::Exact(pattern.to_string()));
        }
        template::matcher(pattern)
            .map(Selector::Template)
            .map_err(|cause| SelectorError::Template { pattern: short(pattern), cause })
    }

    pub fn matches(&self, topic: &str) -> bool {
        match self {
            Selector::All => true,
            Selector::Exact(s) => s == topic,
            Selector::Template(r) => r.is_match(topic),
            Selector::UrlPattern(p, seen) => {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(&hit) = seen.get(topic) {
                    return hit;
                }
                let hit =
                    url::Url::parse(topic).ok().is_some_and(|u| p.test(UrlPatternMatchInput::Url(u)).unwrap_or(false));
                if topic.len() > REMEMBERED_LEN {
                    return hit;
                }
                if seen.len() >= REMEMBERED {
                    seen.clear();
                }
                seen.insert(topic.to_string(), hit);
                hit
            }
        }
    }

    /// Whether any of `selectors` matches any of `topics`.
    pub fn any(selectors: &[Selector], topics: &[String]) -> bool {
        selectors.iter().any(|s| topics.iter().any(|t| s.matches(t)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_matches_as_its_spec_says() {
        let exact = Selector::exact("https://example.com/books/1", false).unwrap();
        assert!(exact.matches("https://example.com/books/1") && !exact.matches("https://example.com/books/10"));
        assert!(matches!(Selector::exact("*", false).unwrap(), Selector::Exact(_)), "match=* is a topic named *");
        assert!(Selector::exact("*", true).unwrap().matches("anything"));
        let pattern = Selector::url_pattern("https://example.com/books/:id").unwrap();
        assert!(pattern.matches("https://example.com/books/1"));
        assert!(pattern.matches("https://example.com/books/1"), "remembered");
        assert!(!pattern.matches("https://example.com/books/1/reviews"));
        assert!(!pattern.matches("not a url"));
        let pattern = Selector::url_pattern("https://example.com/*").unwrap();
        assert!(pattern.matches("https://example.com/books/1/reviews"));
        let template = Selector::template("https://example.com/books/{id}").unwrap();
        assert!(template.matches("https://example.com/books/1") && !template.matches("https://example.com/authors/1"));
        assert!(Selector::template("*").unwrap().matches("x"));
        assert!(Selector::template("foo").unwrap().matches("foo"));
        assert!(Selector::any(&[exact], &["a".into(), "https://example.com/books/1".into()]));
    }

    #[test]
    fn refuses_what_cannot_be_compiled() {
        assert!(matches!(
            Selector::url_pattern("https://example.com/(unclosed"),
            Err(SelectorError::UrlPattern { .. })
        ));
        assert!(matches!(Selector::template("https://example.com/{id"), Err(SelectorError::Template { .. })));
        assert!(matches!(Selector::exact(&"a".repeat(MAX_LEN + 1), false), Err(SelectorError::TooLong(_))));
    }
}
