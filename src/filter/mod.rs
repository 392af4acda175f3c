//! Row filters in PostgREST style (`?user_id=eq.42&status=in.(new,paid)`), AND-ed and evaluated in the
//! gateway on each event's JSON data. Nested keys use dots: `?customer.country=eq.NZ`.

use crate::refusal::{Refusal, Refuse};
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use decimal::Decimal;

mod decimal;
mod typo;

pub use typo::meant;

/// The filter of each channel of a stream (channels without one pass everything).
pub(crate) type ChannelFilters = HashMap<String, Arc<Filter>>;

const MAX_CONDITIONS: usize = 16;
const MAX_VALUE_LEN: usize = 512;
const MAX_PATH_DEPTH: usize = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FilterError {
    #[error("invalid filter {key:?}: {why}")]
    Invalid { key: String, why: String },
    #[error("too many filters: at most {MAX_CONDITIONS}")]
    TooMany,
}

#[derive(Debug, Clone, PartialEq)]
struct Literal {
    text: String,
    number: Option<Decimal>,
}

impl Literal {
    fn new(text: &str) -> Self {
        Self { text: text.to_string(), number: Decimal::parse(text) }
    }

    fn equals(&self, value: &Value) -> bool {
        match value {
            Value::String(s) => *s == self.text,
            Value::Number(n) => self.number.as_ref().is_some_and(|l| number(n).as_ref() == Some(l)),
            Value::Bool(b) => self.text == if *b { "true" } else { "false" },
            _ => false,
        }
    }

    /// `value` compared to the literal: numbers numerically, strings by bytes, anything else not at all.
    fn order(&self, value: &Value) -> Option<std::cmp::Ordering> {
        match value {
            Value::Number(n) => Some(number(n)?.cmp(self.number.as_ref()?)),
            Value::String(s) => Some(s.as_str().cmp(self.text.as_str())),
            _ => None,
        }
    }
}

/// A JSON number exactly as written: serde_json keeps its text (the `arbitrary_precision` feature), so a
/// `numeric` of 30 digits or a `bigint` past 2^53 is compared digit for digit, never through an `f64`.
fn number(n: &serde_json::Number) -> Option<Decimal> {
    Decimal::parse(&n.to_string())
}

#[derive(Debug, Clone, PartialEq)]
enum Op {
    Eq(Literal),
    Neq(Literal),
    Lt(Literal),
    Lte(Literal),
    Gt(Literal),
    Gte(Literal),
    In(Vec<Literal>),
    IsNull,
    IsTrue,
    IsFalse,
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    path: Vec<String>,
    op: Op,
}

/// All conditions of one stream; an event passes when every one holds.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter {
    conditions: Vec<Condition>,
}

impl Filter {
    /// Parses `key=op.value` pairs. Keys are dot-separated paths into the event's data.
    pub fn parse<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Self, FilterError> {
        let mut conditions = Vec::new();
        for (key, value) in pairs {
            if conditions.len() == MAX_CONDITIONS {
                return Err(FilterError::TooMany);
            }
            conditions.push(parse_condition(key, value)?);
        }
        Ok(Self { conditions })
    }

    pub fn is_empty(&self) -> bool {
        self.conditions.is_empty()
    }

    /// The top-level key of each condition (`customer` of `customer.country`).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.conditions.iter().filter_map(|c| c.path.first().map(String::as_str))
    }

    /// Both filters at once (AND): a grant's filter narrowed by what the client asked for.
    pub fn and(mut self, other: Filter) -> Self {
        self.conditions.extend(other.conditions);
        self
    }

    pub fn matches(&self, data: &Value) -> bool {
        self.conditions.iter().all(|c| {
            let value = c.path.iter().try_fold(data, |v, key| v.get(key.as_str()));
            match (&c.op, value) {
                (Op::IsNull, v) => v.is_none_or(Value::is_null),
                (Op::IsTrue, v) => v == Some(&Value::Bool(true)),
                (Op::IsFalse, v) => v == Some(&Value::Bool(false)),
                (_, None) => false,
                (Op::Eq(l), Some(v)) => l.equals(v),
                (Op::Neq(l), Some(v)) => !v.is_null() && !l.equals(v),
                (Op::In(list), Some(v)) => list.iter().any(|l| l.equals(v)),
                (Op::Lt(l), Some(v)) => l.order(v).is_some_and(std::cmp::Ordering::is_lt),
                (Op::Lte(l), Some(v)) => l.order(v).is_some_and(std::cmp::Ordering::is_le),
                (Op::Gt(l), Some(v)) => l.order(v).is_some_and(std::cmp::Ordering::is_gt),
                (Op::Gte(l), Some(v)) => l.order(v).is_some_and(std::cmp::Ordering::is_ge),
            }
        })
    }

    /// The conditions as `pgsse.snapshot` takes them, to run in SQL: `[{"key", "op", "value"}]`.
    pub fn to_sql_json(&self) -> Value {
        let text = |l: &Literal| Value::String(l.text.clone());
        let conditions = self.conditions.iter().map(|c| {
            let (op, value) = match &c.op {
                Op::Eq(l) => ("eq", text(l)),
                Op::Neq(l) => ("neq", text(l)),
                Op::Lt(l) => ("lt", text(l)),
                Op::Lte(l) => ("lte", text(l)),
                Op::Gt(l) => ("gt", text(l)),
                Op::Gte(l) => ("gte", text(l)),
                Op::In(list) => ("in", Value::Array(list.iter().map(text).collect())),
                Op::IsNull => ("is", "null".into()),
                Op::IsTrue => ("is", "true".into()),
                Op::IsFalse => ("is", "false".into()),
            };
            serde_json::json!({ "key": c.path.join("."), "op": op, "value": value })
        });
        Value::Array(conditions.collect())
    }

    /// Parses `data` (JSON text) and tests it; data that is not JSON matches no filter.
    pub fn matches_text(&self, data: &[u8]) -> bool {
        self.is_empty() || serde_json::from_slice::<Value>(data).is_ok_and(|v| self.matches(&v))
    }
}

fn parse_condition(key: &str, value: &str) -> Result<Condition, FilterError> {
    let invalid = |why: &str| FilterError::Invalid { key: crate::parse::clip(key), why: why.to_string() };
    let path: Vec<String> = key.split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) || path.len() > MAX_PATH_DEPTH {
        return Err(invalid("keys are names separated by single dots, at most 8 deep"));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(invalid("value longer than 512 bytes"));
    }
    let Some((op, operand)) = value.split_once('.') else {
        return Err(invalid("expected operator.value, e.g. eq.42 (eq, neq, lt, lte, gt, gte, in, is)"));
    };
    let op = match op {
        "eq" => Op::Eq(Literal::new(operand)),
        "neq" => Op::Neq(Literal::new(operand)),
        "lt" => Op::Lt(Literal::new(operand)),
        "lte" => Op::Lte(Literal::new(operand)),
        "gt" => Op::Gt(Literal::new(operand)),
        "gte" => Op::Gte(Literal::new(operand)),
        "in" => Op::In(parse_list(operand).ok_or_else(|| invalid("in takes a list: in.(a,b,\"c,d\")"))?),
        "is" => match operand {
            "null" => Op::IsNull,
            "true" => Op::IsTrue,
            "false" => Op::IsFalse,
            _ => return Err(invalid("is takes null, true or false")),
        },
        _ => return Err(invalid("unknown operator (eq, neq, lt, lte, gt, gte, in, is)")),
    };
    Ok(Condition { path, op })
}

/// `(a,b,"c,d")`: items separated by commas; double quotes protect commas and parentheses.
fn parse_list(text: &str) -> Option<Vec<Literal>> {
    let inner = text.strip_prefix('(')?.strip_suffix(')')?;
    let mut items = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => current.push(chars.next()?),
            ',' if !quoted => items.push(Literal::new(&std::mem::take(&mut current))),
            c => current.push(c),
        }
    }
    if quoted {
        return None;
    }
    items.push(Literal::new(&current));
    Some(items)
}

impl Refuse for FilterError {
    fn refusal(&self) -> Refusal {
        match self {
            FilterError::Invalid { .. } | FilterError::TooMany => Refusal::Invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(query: &[(&str, &str)]) -> Filter {
        Filter::parse(query.iter().copied()).unwrap()
    }

    #[test]
    fn each_operator() {
        let row = json!({"user_id": 42, "status": "paid", "amount": 150.5, "vip": true, "note": null,
                         "customer": {"country": "NZ", "age": 30}});
        let pass: &[&[(&str, &str)]] = &[
            &[("user_id", "eq.42")],
            &[("user_id", "eq.42.0")],
            &[("status", "eq.paid")],
            &[("status", "neq.new")],
            &[("amount", "gte.100"), ("amount", "lt.151")],
            &[("amount", "gt.150"), ("amount", "lte.150.5")],
            &[("status", "in.(new,paid)")],
            &[("status", "in.(\"pa,id\",paid)")],
            &[("note", "is.null"), ("missing", "is.null")],
            &[("vip", "is.true"), ("vip", "eq.true")],
            &[("customer.country", "eq.NZ"), ("customer.age", "gt.18")],
            &[("status", "gt.new")],
        ];
        for q in pass {
            assert!(filter(q).matches(&row), "{q:?} should match");
        }
        let fail: &[&[(&str, &str)]] = &[
            &[("user_id", "eq.43")],
            &[("user_id", "neq.42")],
            &[("status", "eq.PAID")],
            &[("amount", "lt.100")],
            &[("status", "in.(new,shipped)")],
            &[("vip", "is.false")],
            &[("note", "eq.null")],
            &[("note", "neq.x")],
            &[("missing", "eq.x")],
            &[("customer.age", "gt.abc")],
            &[("customer", "eq.NZ")],
            &[("user_id", "eq.42"), ("status", "eq.new")],
        ];
        for q in fail {
            assert!(!filter(q).matches(&row), "{q:?} should not match");
        }
        assert!(Filter::default().matches(&row));
    }

    #[test]
    fn big_integers_and_decimals_compare_exactly() {
        let row: Value = serde_json::from_str(
            r#"{"user_id": 1234567890123456790, "big": 9007199254740993, "n": 0.30000000000000000001}"#,
        )
        .unwrap();
        for (key, value, want) in [
            ("user_id", "eq.1234567890123456789", false),
            ("user_id", "eq.1234567890123456790", true),
            ("user_id", "gt.1234567890123456789", true),
            ("user_id", "lte.1234567890123456789", false),
            ("user_id", "in.(1234567890123456789,1)", false),
            ("big", "eq.9007199254740992", false),
            ("big", "eq.9007199254740993", true),
            ("big", "neq.9007199254740992", true),
            ("big", "lt.9007199254740993.5", true),
            ("n", "eq.0.3", false),
            ("n", "gt.0.3", true),
            ("n", "eq.30000000000000000001e-20", true),
        ] {
            assert_eq!(filter(&[(key, value)]).matches(&row), want, "{key}={value}");
        }
    }

    #[test]
    fn malformed_filters_name_the_problem() {
        for (key, value, why) in [
            ("a", "42", "operator.value"),
            ("a", "like.x", "unknown operator"),
            ("a", "is.maybe", "null, true or false"),
            ("a", "in.x", "list"),
            ("a", "in.(\"open", "list"),
            ("a..b", "eq.1", "dots"),
            ("", "eq.1", "dots"),
            ("a.b.c.d.e.f.g.h.i", "eq.1", "dots"),
        ] {
            let err = Filter::parse([(key, value)]).unwrap_err().to_string();
            assert!(err.contains(why), "{key}={value}: {err}");
        }
        let long = format!("eq.{}", "x".repeat(600));
        assert!(Filter::parse([("a", long.as_str())]).is_err());
        let many: Vec<(&str, &str)> = (0..17).map(|_| ("a", "eq.1")).collect();
        assert_eq!(Filter::parse(many), Err(FilterError::TooMany));
    }

    #[test]
    fn conditions_for_sql() {
        let f = filter(&[("status", "in.(open,\"a,b\")"), ("user_id", "gte.4"), ("note", "is.null")]);
        assert_eq!(
            f.to_sql_json(),
            json!([{"key": "status", "op": "in", "value": ["open", "a,b"]},
                   {"key": "user_id", "op": "gte", "value": "4"},
                   {"key": "note", "op": "is", "value": "null"}])
        );
    }

    #[test]
    fn text_that_is_not_json_matches_nothing() {
        assert!(!filter(&[("a", "eq.1")]).matches_text(b"not json"));
        assert!(Filter::default().matches_text(b"not json"));
    }
}
