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
pub mod status;
pub mod store;

/// The database, for `serve` and `migrate` alike.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL, e.g. postgres://user:pass@host:5432/db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}
