//! RFC 6570 URI Templates, both ways: expanded from a row's values (a table's Mercure topic) and turned
//! into a regular expression that a topic matches (Mercure 0.x's `topic=` selectors).

use regex::Regex;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TemplateError {
    #[error("unclosed '{{' in URI template")]
    Unclosed,
    #[error("'}}' without '{{' in URI template")]
    Unopened,
    #[error("empty or invalid variable name {0:?} in URI template")]
    Variable(String),
    #[error("URI template is too complex to match")]
    TooComplex,
}

/// One `{...}` expression: its operator (or none) and variable names; `*` and `:n` modifiers are kept
/// off the name (a row's values are scalars, so both expand the value as it is).
struct Expression<'a> {
    operator: Option<char>,
    names: Vec<&'a str>,
}

enum Part<'a> {
    Literal(&'a str),
    Expression(Expression<'a>),
}

fn parse(template: &str) -> Result<Vec<Part<'_>>, TemplateError> {
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find(['{', '}']) {
            None => {
                parts.push(Part::Literal(rest));
                break;
            }
            Some(at) if rest.as_bytes()[at] == b'}' => return Err(TemplateError::Unopened),
            Some(at) => {
                if at > 0 {
                    parts.push(Part::Literal(&rest[..at]));
                }
                let end = rest[at..].find('}').ok_or(TemplateError::Unclosed)? + at;
                parts.push(Part::Expression(expression(&rest[at + 1..end])?));
                rest = &rest[end + 1..];
            }
        }
    }
    Ok(parts)
}

fn expression(body: &str) -> Result<Expression<'_>, TemplateError> {
    let (operator, list) = match body.chars().next() {
        Some(c @ ('+' | '#' | '.' | '/' | ';' | '?' | '&')) => (Some(c), &body[1..]),
        _ => (None, body),
    };
    let mut names = Vec::new();
    for spec in list.split(',') {
        let name = spec.trim_end_matches('*');
        let name = name.split_once(':').map_or(name, |(n, len)| {
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
                ""
            } else {
                n
            }
        });
        let ok = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'%';
        if name.is_empty() || !name.bytes().all(ok) {
            return Err(TemplateError::Variable(spec.chars().take(64).collect()));
        }
        names.push(name);
    }
    Ok(Expression { operator, names })
}

/// Expands `template` with `value` for each variable (`None`: undefined, which RFC 6570 leaves out).
pub fn expand(template: &str, value: impl Fn(&str) -> Option<String>) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 16);
    for part in parse(template)? {
        let e = match part {
            Part::Literal(text) => {
                out.push_str(text);
                continue;
            }
            Part::Expression(e) => e,
        };
        let (first, sep, named, reserved) = match e.operator {
            None => ("", ",", false, false),
            Some('+') => ("", ",", false, true),
            Some('#') => ("#", ",", false, true),
            Some('.') => (".", ".", false, false),
            Some('/') => ("/", "/", false, false),
            Some(';') => (";", ";", true, false),
            Some('?') => ("?", "&", true, false),
            _ => ("&", "&", true, false),
        };
        let mut any = false;
        for name in e.names {
            let Some(v) = value(name) else { continue };
            out.push_str(if any { sep } else { first });
            any = true;
            if named {
                out.push_str(name);
                if v.is_empty() && e.operator == Some(';') {
                    continue;
                }
                out.push('=');
            }
            encode(&mut out, &v, reserved);
        }
    }
    Ok(out)
}

fn encode(out: &mut String, value: &str, reserved: bool) {
    const KEPT: &[u8] = b":/?#[]@!$&'()*+,;=";
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (reserved && KEPT.contains(&b)) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

/// A regular expression matching every expansion of `template` (whole topics only).
pub fn matcher(template: &str) -> Result<Regex, TemplateError> {
    const UNRESERVED: &str = r"(?:[A-Za-z0-9\-._~]|%[0-9A-Fa-f]{2})";
    const ANY: &str = r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})";
    let mut pattern = String::from("^");
    for part in parse(template)? {
        match part {
            Part::Literal(text) => pattern.push_str(&regex::escape(text)),
            Part::Expression(e) => pattern.push_str(&match e.operator {
                None => format!("(?:{UNRESERVED}|,)*"),
                Some('+') => format!("{ANY}*"),
                Some('#') => format!("(?:#{ANY}*)?"),
                Some('.') => format!(r"(?:\.(?:{UNRESERVED}|,)*)*"),
                Some('/') => format!("(?:/(?:{UNRESERVED}|,)*)*"),
                Some(';') => format!("(?:;(?:{UNRESERVED}|[=,])*)*"),
                _ => format!("(?:[?&](?:{UNRESERVED}|[=,])*)*"),
            }),
        }
    }
    pattern.push('$');
    regex::RegexBuilder::new(&pattern)
        .size_limit(128 * 1024)
        .dfa_size_limit(128 * 1024)
        .build()
        .map_err(|_| TemplateError::TooComplex)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "id" => Some("42".into()),
            "name" => Some("a b/c".into()),
            "empty" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_each_operator_as_rfc_6570_does() {
        for (template, want) in [
            ("https://shop.example/orders/{id}", "https://shop.example/orders/42"),
            ("/u/{name}", "/u/a%20b%2Fc"),
            ("/u/{+name}", "/u/a%20b/c"),
            ("/x{#id}", "/x#42"),
            ("/x{.id,id}", "/x.42.42"),
            ("/x{/id,missing,id}", "/x/42/42"),
            ("/x{;id,empty}", "/x;id=42;empty"),
            ("/x{?id,missing,name}", "/x?id=42&name=a%20b%2Fc"),
            ("/x?a=1{&id}", "/x?a=1&id=42"),
            ("/x/{missing}", "/x/"),
            ("/x/{id:3}/{id*}", "/x/42/42"),
        ] {
            assert_eq!(expand(template, vars).unwrap(), want, "{template}");
        }
    }

    #[test]
    fn refuses_malformed_templates() {
        assert_eq!(expand("/x/{id", vars), Err(TemplateError::Unclosed));
        assert_eq!(expand("/x/id}", vars), Err(TemplateError::Unopened));
        assert!(matches!(expand("/x/{}", vars), Err(TemplateError::Variable(_))));
        assert!(matches!(expand("/x/{a b}", vars), Err(TemplateError::Variable(_))));
        assert!(matches!(expand("/x/{id:}", vars), Err(TemplateError::Variable(_))));
    }

    #[test]
    fn matches_what_it_would_expand_to_and_nothing_wider() {
        let m = matcher("https://example.com/books/{id}").unwrap();
        assert!(m.is_match("https://example.com/books/1"));
        assert!(m.is_match("https://example.com/books/"));
        assert!(!m.is_match("https://example.com/books/1/reviews"));
        assert!(!m.is_match("https://example.com/books/1?x"));
        assert!(!m.is_match("xhttps://example.com/books/1"));
        let m = matcher("https://example.com/{+path}").unwrap();
        assert!(m.is_match("https://example.com/books/1/reviews"));
        let m = matcher("/a{?x,y}").unwrap();
        assert!(m.is_match("/a?x=1&y=2") && m.is_match("/a") && !m.is_match("/a/b"));
        let m = matcher("/a.b/{id}").unwrap();
        assert!(!m.is_match("/aXb/1"), "literals are matched literally");
        for template in ["/x/{id}", "/x/{+name}", "/x{?id,name}", "/x{/id,name}", "/x{;id,empty}"] {
            let expanded = expand(template, vars).unwrap();
            assert!(matcher(template).unwrap().is_match(&expanded), "{template} matches {expanded}");
        }
    }
}
