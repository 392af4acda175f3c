//! Everything that talks to PostgreSQL: the one LISTEN connection and its pacing, the pool's reads and
//! writes of the log, sequencing, retention, migrations, and database errors in one line.

pub mod error;
pub mod keyed;
pub mod listener;
pub mod logrow;
pub mod migrate;
pub mod pacing;
pub mod preflight;
pub mod published;
pub mod replica;
pub mod retention;
pub mod sequencer;
pub mod sightings;
pub mod snapshot;
pub mod status;
pub mod store;

use std::time::Duration;

const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// The settings every gateway session has, the pool's and the LISTEN connection's alike: its name in
/// `pg_stat_activity`, a pinned search path, a bound on connecting, and keepalives with a bound on data the
/// server never acknowledges, so a peer gone without a word is found whether the connection idles or not.
pub fn session_config(
    url: &str,
    application_name: &str,
    connect_timeout: Duration,
    unacknowledged: Duration,
) -> Result<tokio_postgres::Config, tokio_postgres::Error> {
    let mut pg: tokio_postgres::Config = url.parse()?;
    pg.application_name(application_name);
    pin_session(&mut pg);
    pg.connect_timeout(connect_timeout);
    pg.keepalives(true);
    pg.keepalives_idle(KEEPALIVE_IDLE);
    pg.keepalives_interval(KEEPALIVE_INTERVAL);
    pg.keepalives_retries(KEEPALIVE_RETRIES);
    pg.tcp_user_timeout(unacknowledged);
    Ok(pg)
}

/// The database, for `serve` and `migrate` alike.
#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL, e.g. postgres://user:pass@host:5432/db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

impl DatabaseArgs {
    /// The URL given, where it is not empty (`DATABASE_URL=` is as good as unset).
    pub fn url(&self) -> Option<String> {
        self.database_url.clone().filter(|url| !url.trim().is_empty())
    }
}

/// Every name the gateway's own queries use is qualified or in `pg_catalog`: its sessions search nothing
/// else, so no function or operator that another role planted in a schema of the default path (`public`)
/// can shadow one of them, whatever the role's or database's settings say; and pg_temp last, so that no
/// temporary type or table that a table's code made in a pooled session shadows pg_catalog's. Its
/// transactions are read committed and may write, whatever the database's defaults (a serializable
/// default would fail its sequencing steps against writers, a read-only one every write).
fn pin_session(pg: &mut tokio_postgres::Config) {
    const PINNED: &str = "-c search_path=pg_catalog,pg_temp -c default_transaction_isolation=read\\ committed \
                          -c default_transaction_read_only=off";
    let options = match pg.get_options() {
        Some(given) => format!("{given} {PINNED}"),
        None => PINNED.to_string(),
    };
    pg.options(options);
}
