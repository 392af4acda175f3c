//! Exact order of decimal numbers written as text (`-12.50e3`), for filters: ids beyond 2^53 and
//! PostgreSQL `numeric` values must never compare equal because they round to the same `f64`.

use std::cmp::Ordering;

/// A decimal as `sign × 0.digits × 10^exponent`, normalized (no leading or trailing zero digit), so equal
/// numbers have equal fields whatever their spelling (`42`, `42.0`, `4.2e1`, `0042`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decimal {
    negative: bool,
    digits: Vec<u8>,
    exponent: i64,
}

/// Bound on written exponents: far beyond any real value, and small enough that arithmetic never overflows.
const MAX_EXPONENT: i64 = 1 << 40;

impl Decimal {
    /// Parses JSON's number syntax, also allowing a leading `+`, leading zeros and a bare `.5`/`5.`.
    pub(super) fn parse(text: &str) -> Option<Self> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exp) = match rest.find(['e', 'E']) {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if int.len() + frac.len() == 0 || !all_digits(int) || !all_digits(frac) {
            return None;
        }
        let written_exp = match exp {
            None => 0,
            Some(e) => {
                let (neg, digits) = match e.as_bytes().first()? {
                    b'-' => (true, &e[1..]),
                    b'+' => (false, &e[1..]),
                    _ => (false, e),
                };
                if digits.is_empty() || !all_digits(digits) {
                    return None;
                }
                let magnitude = digits.trim_start_matches('0');
                let value: i64 = if magnitude.len() > 13 { MAX_EXPONENT } else { magnitude.parse().unwrap_or(0) };
                let value = value.min(MAX_EXPONENT);
                if neg {
                    -value
                } else {
                    value
                }
            }
        };
        let mut digits: Vec<u8> = int.bytes().chain(frac.bytes()).map(|b| b - b'0').collect();
        let leading = digits.iter().take_while(|&&d| d == 0).count();
        digits.drain(..leading);
        while digits.last() == Some(&0) {
            digits.pop();
        }
        if digits.is_empty() {
            return Some(Self { negative: false, digits, exponent: 0 });
        }
        let exponent = int.len() as i64 - leading as i64 + written_exp;
        Some(Self { negative, digits, exponent })
    }

    fn magnitude_cmp(&self, other: &Self) -> Ordering {
        match (self.digits.is_empty(), other.digits.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            // Normalized, the first digit is never 0, so the exponent decides first; then the digits, where
            // a strict prefix is the smaller number (trailing zeros were removed).
            (false, false) => self.exponent.cmp(&other.exponent).then_with(|| self.digits.cmp(&other.digits)),
        }
    }
}

impl Ord for Decimal {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self.negative, other.negative) {
            (false, false) => self.magnitude_cmp(other),
            (true, true) => other.magnitude_cmp(self),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
        }
    }
}

impl PartialOrd for Decimal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> Decimal {
        Decimal::parse(text).unwrap_or_else(|| panic!("{text} parses"))
    }

    #[test]
    fn spellings_of_one_number_are_equal() {
        for group in [
            &["42", "42.0", "4.2e1", "0042", "420e-1", "+42", "0.42E+2"][..],
            &["0", "-0", "0.000", "0e99", "-0.0e-5"],
            &["-1.5", "-15e-1", "-1.50"],
        ] {
            for text in group {
                assert_eq!(d(text), d(group[0]), "{text} = {}", group[0]);
            }
        }
        assert_eq!(d(".5"), d("0.5"));
        assert_eq!(d("5."), d("5"));
    }

    #[test]
    fn neighbours_that_one_f64_cannot_tell_apart_are_ordered_exactly() {
        let pairs = [
            ("1234567890123456789", "1234567890123456790"),
            ("9007199254740992", "9007199254740993"),
            ("18446744073709551615", "18446744073709551616"),
            ("-9007199254740993", "-9007199254740992"),
            ("0.1", "0.10000000000000000001"),
            ("99999999999999999999999999999999", "1e32"),
        ];
        for (lo, hi) in pairs {
            assert!(d(lo) < d(hi), "{lo} < {hi}");
            assert!(d(hi) > d(lo), "{hi} > {lo}");
            assert_ne!(d(lo), d(hi));
        }
    }

    #[test]
    fn not_numbers_and_huge_exponents() {
        for text in ["", "-", ".", "e5", "1e", "1e+", "abc", "1.2.3", "0x10", "1_000", " 1", "1 ", "NaN", "inf"] {
            assert_eq!(Decimal::parse(text), None, "{text:?}");
        }
        assert!(d("1e99999999999999999999") > d("9e1099511627775"));
        assert!(d("1e-99999999999999999999") < d("1e-1099511627775"));
        assert!(d("1e-99999999999999999999") > d("0"));
    }

    /// Exact reference: values `m × 10^-s` with |m| < 2^63 and s ≤ 18, compared in i128 at one scale.
    #[test]
    fn agrees_with_integer_arithmetic_on_random_spellings() {
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let spell = |m: i64, s: u32, style: u64| -> String {
            let (sign, abs) = if m < 0 { ("-", m.unsigned_abs()) } else { ("", m as u64) };
            match style % 3 {
                0 => format!("{sign}{abs}e-{s}"),
                1 => {
                    let text = format!("{abs:0>width$}", width = s as usize + 1);
                    let (int, frac) = text.split_at(text.len() - s as usize);
                    format!("{sign}00{int}.{frac}0")
                }
                _ => format!("{sign}{abs}000E-{}", s + 3),
            }
        };
        for _ in 0..20_000 {
            let (r1, r2) = (next(), next());
            // Small and large magnitudes both, and many near-equal pairs.
            let m1 = if r1 % 4 == 0 { (r1 >> 40) as i64 - (1 << 23) } else { r1 as i64 };
            let m2 = if r2 % 3 == 0 { m1.wrapping_add((r2 % 5) as i64 - 2) } else { r2 as i64 >> (r2 % 60) };
            let (s1, s2) = ((r1 >> 8) as u32 % 19, (r2 >> 8) as u32 % 19);
            let exact = |m: i64, s: u32| m as i128 * 10i128.pow(18 - s);
            let want = exact(m1, s1).cmp(&exact(m2, s2));
            let (a, b) = (spell(m1, s1, r1 >> 3), spell(m2, s2, r2 >> 3));
            assert_eq!(d(&a).cmp(&d(&b)), want, "{a} vs {b}");
        }
    }
}
