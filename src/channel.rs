//! Channel names: the one rule every entry point checks before a name reaches SQL or a log line.

/// Same rule as `pgsse.valid_channel` in SQL.
pub fn valid(name: &str) -> bool {
    let b = name.as_bytes();
    let ok = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty() && b.len() <= 128 && ok(b[0]) && b.iter().all(|&c| ok(c) || matches!(c, b'.' | b':' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        for good in ["messages", "a", "orders.eu", "user:42", "x-y_z", "_private", &"a".repeat(128)] {
            assert!(valid(good), "{good:?}");
        }
        for bad in ["", ".a", "-a", ":a", "a b", "a/b", "ä", "a%20", "a\n", &"a".repeat(129)] {
            assert!(!valid(bad), "{bad:?}");
        }
    }
}
