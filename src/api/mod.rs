//! What a request asks for, behind HTTP: opening an event stream (with its replay and snapshot), the
//! channel commands, and health. Each handler takes the narrow handle it needs, not the whole state.

pub mod commands;
pub mod events;
pub mod health;
pub mod query;
pub mod reply;
pub mod snapshot;
pub mod stream;
