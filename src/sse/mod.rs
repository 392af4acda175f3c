//! Server-Sent Events: the wire encoding of one event, and the body that streams a subscription.

pub(crate) mod body;
pub mod wire;
