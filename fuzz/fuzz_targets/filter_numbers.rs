//! Filter comparisons of numbers against an exact reference: `m × 10^-s` compared in i128 at one scale,
//! each side spelled as the fuzzer chooses (exponent, leading and trailing zeros), never through an f64.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgsse::filter::Filter;

fn spell(m: i64, s: u32, style: u8) -> String {
    let (sign, abs) = if m < 0 { ("-", m.unsigned_abs()) } else { ("", m as u64) };
    match style % 3 {
        0 => format!("{sign}{abs}e-{s}"),
        1 => {
            let text = format!("{abs:0>width$}", width = s as usize + 1);
            let (int, frac) = text.split_at(text.len() - s as usize);
            format!("{sign}0{int}.{frac}00")
        }
        _ => format!("{sign}{abs}0E-{}", s + 1),
    }
}

fuzz_target!(|input: (i64, u8, i64, u8, u8)| {
    let (m1, s1, m2, s2, style) = input;
    let (s1, s2) = (u32::from(s1 % 19), u32::from(s2 % 19));
    let exact = |m: i64, s: u32| i128::from(m) * 10i128.pow(18 - s);
    let want = exact(m1, s1).cmp(&exact(m2, s2));
    let (literal, value) = (spell(m1, s1, style), spell(m2, s2, style >> 2));
    let row: serde_json::Value = serde_json::from_str(&format!("{{\"n\": {value}}}")).unwrap();
    let holds = |op: &str| Filter::parse([("n", format!("{op}.{literal}").as_str())]).unwrap().matches(&row);
    // The filter reads "row's n OP literal"; `want` orders literal against value.
    assert_eq!(holds("eq"), want.is_eq(), "{value} eq {literal}");
    assert_eq!(holds("lt"), want.is_gt(), "{value} lt {literal}");
    assert_eq!(holds("gte"), want.is_le(), "{value} gte {literal}");
});
