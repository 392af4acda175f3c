//! Channel names: the one rule every entry point checks before a name reaches SQL or a log line.

use crate::refusal::{Refusal, Refuse};

/// A channel a request names that cannot be served: the same words and status for streams and writes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChannelError {
    #[error("invalid channel name {0:?}: use letters, digits, _ . : - (at most 128, not starting with . : -)")]
    Invalid(String),
    #[error(
        "unknown channel {0:?}: create it with pgsse.create_channel or pgsse.publish_table (or, for POST, start the \
         gateway with --post-creates-channels)"
    )]
    Unknown(String),
}

impl ChannelError {
    /// A name as a request gave it, cut short enough for a message.
    pub fn invalid(name: &str) -> Self {
        ChannelError::Invalid(crate::parse::clip(name))
    }
}

impl Refuse for ChannelError {
    fn refusal(&self) -> Refusal {
        match self {
            ChannelError::Invalid(_) => Refusal::Invalid,
            ChannelError::Unknown(_) => Refusal::NotFound,
        }
    }
}

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
