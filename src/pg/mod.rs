//! Everything that talks to PostgreSQL: the one LISTEN connection and its pacing, the pool's reads and
//! writes of the log, sequencing, retention, migrations, and database errors in one line.

pub mod error;
pub mod listener;
pub mod logrow;
pub mod migrate;
pub mod pacing;
pub mod published;
pub mod retention;
pub mod sequencer;
pub mod store;
