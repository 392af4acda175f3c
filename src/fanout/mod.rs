//! Fan-out: the hub hands each encoded frame from the listener to every subscribed stream's bounded queue.

pub mod hub;
pub mod moves;
pub mod queue;
pub mod update;
