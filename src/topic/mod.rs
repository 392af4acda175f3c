//! Mercure topic selectors: exact strings, `*`, WHATWG URL Patterns and RFC 6570 URI Templates, each
//! matched against an update's topics; and template expansion for a table's topic.

pub mod template;

use std::collections::HashMap;
use std::sync::Mutex;

use regex::{Regex, RegexBuilder};
use urlpattern::regexp::RegExp;
use urlpattern::{RegexSyntax, UrlPattern, UrlPatternInit, UrlPatternMatchInput};

pub use template::{expand, TemplateError};

/// The longest selector or topic pgsse reads: longer ones are refused rather than compiled.
pub const MAX_LEN: usize = 4096;

/// The most selectors that are patterns (URL patterns, URI templates) one subscription or token may
/// hold: each is compiled for it and matched against every update's topics.
pub const MAX_PATTERNS: usize = 16;

/// The most memory one regular expression of a pattern may compile to: what a client sends may not
/// cost the gateway more than a few of these.
const PATTERN_BYTES: usize = 128 * 1024;

/// A URL pattern's regular expression, compiled within [`PATTERN_BYTES`] (a custom group such as
/// `(\w{1000})` would otherwise take megabytes and seconds).
pub struct Bounded(Regex);

impl RegExp for Bounded {
    fn syntax() -> RegexSyntax {
        RegexSyntax::Rust
    }

    fn parse(pattern: &str, _flags: &str, _force_eval: bool) -> Result<Self, ()> {
        bounded(pattern).map(Bounded).map_err(drop)
    }

    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        let captures = self.0.captures(text)?;
        Some(captures.iter().skip(1).map(|c| c.map(|m| m.as_str())).collect())
    }

    fn pattern_string(&self) -> &str {
        self.0.as_str()
    }
}

fn bounded(pattern: &str) -> Result<Regex, regex::Error> {
    RegexBuilder::new(pattern).size_limit(PATTERN_BYTES).dfa_size_limit(PATTERN_BYTES).build()
}

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
    UrlPattern(Box<UrlPattern<Bounded>>, Mutex<HashMap<String, bool>>),
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

    /// A `match_urlpattern=` selector: a WHATWG URL Pattern in its constructor-string form, absolute.
    /// Nothing is resolved against the hub's URL: resolving publishers' relative topics there would let a
    /// row's value (`//{host}/…`) name another site.
    pub fn url_pattern(pattern: &str) -> Result<Self, SelectorError> {
        if pattern.len() > MAX_LEN {
            return Err(SelectorError::TooLong(short(pattern)));
        }
        let bad = |cause: String| SelectorError::UrlPattern { pattern: short(pattern), cause };
        let init = UrlPatternInit::parse_constructor_string::<Bounded>(pattern, None).map_err(|e| match e {
            urlpattern::Error::BaseUrlRequired => bad(
                "a URL pattern must be absolute (https://…): pgsse does not resolve relative ones against the hub's \
                 URL; a relative topic such as /books/1 is matched by match=/books/1"
                    .into(),
            ),
            e => bad(e.to_string()),
        })?;
        let compiled = UrlPattern::<Bounded>::parse(init, Default::default()).map_err(|e| bad(e.to_string()))?;
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
    /// Whether the selector is a pattern, which [`MAX_PATTERNS`] bounds.
    pub fn is_pattern(&self) -> bool {
        matches!(self, Selector::UrlPattern(..) | Selector::Template(_))
    }

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
        assert!(!pattern.matches("/books/1"), "a relative topic is no URL");
        let relative = Selector::url_pattern("/books/:id");
        assert!(matches!(relative, Err(SelectorError::UrlPattern { cause, .. }) if cause.contains("absolute")));
        let pattern = Selector::url_pattern("https://example.com/*").unwrap();
        assert!(pattern.matches("https://example.com/books/1/reviews"));
        let template = Selector::template("https://example.com/books/{id}").unwrap();
        assert!(template.matches("https://example.com/books/1") && !template.matches("https://example.com/authors/1"));
        assert!(Selector::template("*").unwrap().matches("x"));
        assert!(Selector::template("foo").unwrap().matches("foo"));
        assert!(Selector::any(&[exact], &["a".into(), "https://example.com/books/1".into()]));
    }

    #[test]
    fn refuses_patterns_too_costly_to_compile() {
        let started = std::time::Instant::now();
        let costly = Selector::url_pattern(r"https://x/:a(\w{100})");
        assert!(matches!(costly, Err(SelectorError::UrlPattern { .. })), "{costly:?}");
        assert!(Selector::template(&format!("https://x/{}", "{a}".repeat(500))).is_err());
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "refused without compiling it all");
        assert!(Selector::url_pattern("https://example.com/books/:id/reviews/:review").is_ok());
        assert!(Selector::url_pattern(r"https://example.com/books/:id(\d+)").is_ok());
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
