//! A query parameter that is not a filter but one letter off a parameter's name (`limt=5`) is a typo of
//! that parameter: said as such, rather than refused as a malformed filter or matching nothing.

use super::Filter;

/// The parameter among `names` that `key=value` most likely meant: `key` is one edit (a letter added,
/// dropped, changed, or two swapped) from it, and `value` is no filter.
pub fn meant<'a>(key: &str, value: &str, names: &[&'a str]) -> Option<&'a str> {
    if Filter::parse([(key, value)]).is_ok() {
        return None;
    }
    names.iter().copied().find(|name| one_edit(key, name))
}

fn one_edit(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a == b {
        return false;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (ra, rb) = (&a[prefix..], &b[prefix..]);
    match ra.len() as isize - rb.len() as isize {
        0 => ra[1..] == rb[1..] || (ra.len() >= 2 && ra[0] == rb[1] && ra[1] == rb[0] && ra[2..] == rb[2..]),
        1 => ra[1..] == *rb,
        -1 => *ra == rb[1..],
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_letter_off_a_parameter_and_no_filter() {
        let names = ["limit", "before", "snapshot"];
        assert_eq!(meant("limt", "5", &names), Some("limit"));
        assert_eq!(meant("limitt", "5", &names), Some("limit"));
        assert_eq!(meant("lmiit", "5", &names), Some("limit"));
        assert_eq!(meant("befor", "9", &names), Some("before"));
        assert_eq!(meant("snapshto", "true", &names), Some("snapshot"));
        assert_eq!(meant("limits", "gt.5", &names), None, "a filter on a key named so");
        assert_eq!(meant("status", "5", &names), None);
    }
}
