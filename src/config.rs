//! The command line: subcommands, and `serve`'s flags as groups, each owned by the component it configures
//! (the front end's own group is here). Every flag has a `PGSSE_*` variable; the URL also reads `DATABASE_URL`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use crate::api::commands::CommandArgs;
pub use crate::api::events::StreamArgs;
use crate::auth::{Auth, AuthConfigError};
pub use crate::auth::{AuthArgs, AuthMode};
pub use crate::limits::LimitArgs;
pub use crate::mercure::MercureArgs;
pub use crate::pg::listener::ListenerArgs;
pub use crate::pg::replica::ReplicaArgs;
pub use crate::pg::retention::{Retention, RetentionArgs};
pub use crate::pg::store::PoolArgs;
pub use crate::pg::DatabaseArgs;
use crate::tls::TlsError;

const DEFAULT_DEMO_DIR: &str = ".pgsse-demo";
const DEFAULT_DEMO_PG_PORT: u16 = 54329;
const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
const DEFAULT_LISTEN: &str = "127.0.0.1:4000";
const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
const DEFAULT_MAX_URL_LENGTH: usize = 8 * 1024;
const DEFAULT_SHUTDOWN_TIMEOUT: &str = "5s";

#[derive(Debug, Parser)]
#[command(name = "pgsse", version, about = "PostgreSQL changes as Server-Sent Events")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Log lines as human-readable text or as JSON objects (one per line), for log collectors.
    #[arg(long, global = true, env = "PGSSE_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Install or upgrade the pgsse schema; idempotent and safe to run concurrently.
    Migrate(MigrateArgs),
    /// Start a throwaway PostgreSQL, a published `messages` table, and the gateway.
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,

    /// How long to wait for another migration (or whichever session holds its lock, named in the log)
    /// before giving up.
    #[arg(long, env = "PGSSE_MIGRATE_LOCK_TIMEOUT", default_value = "10m", value_parser = crate::parse::duration)]
    pub lock_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,
    #[command(flatten)]
    pub server: ServerArgs,
    #[command(flatten)]
    pub pool: PoolArgs,
    #[command(flatten)]
    pub listener: ListenerArgs,
    #[command(flatten)]
    pub streams: StreamArgs,
    #[command(flatten)]
    pub commands: CommandArgs,
    #[command(flatten)]
    pub auth: AuthArgs,
    #[command(flatten)]
    pub limits: LimitArgs,
    #[command(flatten)]
    pub retention: RetentionArgs,
    #[command(flatten)]
    pub mercure: MercureArgs,
    #[command(flatten)]
    pub replica: ReplicaArgs,
}

/// The HTTP front end: where it listens, how it treats connections, and what it serves besides the API.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Serving")]
pub struct ServerArgs {
    /// Address to serve HTTP on.
    #[arg(long, env = "PGSSE_LISTEN", default_value = DEFAULT_LISTEN, value_parser = crate::parse::listen_addr)]
    pub listen: SocketAddr,

    /// Maximum open client connections; further connections wait in the kernel's accept backlog.
    #[arg(long, env = "PGSSE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = crate::parse::positive)]
    pub max_connections: usize,

    /// How long open connections get to finish after SIGINT/SIGTERM.
    #[arg(long, env = "PGSSE_SHUTDOWN_TIMEOUT", default_value = DEFAULT_SHUTDOWN_TIMEOUT, value_parser = crate::parse::duration)]
    pub shutdown_timeout: Duration,

    /// A connection must send its request headers within this long, or it is closed; an HTTP/2 connection
    /// with no request open for this long is closed too (GOAWAY).
    #[arg(long, env = "PGSSE_HEADER_READ_TIMEOUT", default_value = DEFAULT_HEADER_READ_TIMEOUT,
          value_parser = crate::parse::duration)]
    pub header_read_timeout: Duration,

    /// Longest request URL accepted (longer: 414).
    #[arg(long, env = "PGSSE_MAX_URL_LENGTH", default_value_t = DEFAULT_MAX_URL_LENGTH, value_parser = crate::parse::positive)]
    pub max_url_length: usize,

    /// Origin allowed to call from a browser (repeatable, exact `scheme://host[:port]`; `*` allows any
    /// origin, without credentials).
    #[arg(long = "cors-origin", env = "PGSSE_CORS_ORIGIN", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// PEM certificate chain: serve HTTPS, with HTTP/2 offered by ALPN so a browser can open many streams
    /// over one connection. Needs --tls-key.
    #[arg(long, env = "PGSSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "PGSSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve the demo pages (`/` live feed, `/send` form) for the `messages` channel, creating its table.
    #[arg(long, env = "PGSSE_DEMO")]
    pub demo: bool,

    /// Log one line per request, and per stream when it ends: method, path (credentials left out), status,
    /// duration, bytes, events, client address and request id, in the --log-format chosen.
    #[arg(long, env = "PGSSE_ACCESS_LOG")]
    pub access_log: bool,

    /// Serve `GET /metrics` on this address instead of the main one (e.g. a port only Prometheus reaches).
    /// Under `--auth jwt` or `auth-url` it is served only here: its channel labels tell who is online.
    #[arg(long, env = "PGSSE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Label `pgsse_streams_open` by channel (`false`: one total, for channels named after users or too
    /// many to keep a series each).
    #[arg(long, env = "PGSSE_METRICS_CHANNEL_LABELS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_channel_labels: bool,

    /// Give the memory a storm of connections freed back to the system once it calms (glibc's
    /// `malloc_trim`). `false`: keep it, for no pause while a trim runs (docs/operations.md).
    #[arg(long, env = "PGSSE_TRIM_HEAPS", default_value_t = true, action = clap::ArgAction::Set)]
    pub trim_heaps: bool,

    /// Hand quiet plain-HTTP/1.1 streams (not TLS, not HTTP/2) to one background thread, which writes
    /// their heartbeats until an event, their token's expiry or a heartbeat their socket cannot take
    /// hands them back, or their client's bytes or close end them: about 0.6-0.75 KB per idle stream
    /// instead of 2-3 KB. `false`: no parking (docs/operations.md).
    #[arg(long, env = "PGSSE_PARK_IDLE_STREAMS", default_value_t = true, action = clap::ArgAction::Set)]
    pub park_idle_streams: bool,
}

/// The demo always serves its pages: `--demo` is not one of its flags. It uses a database only when its
/// own command line names one: the `DATABASE_URL` of a shell set up for the app must not get the demo's
/// table and admin password.
#[derive(Debug, Clone, Args)]
#[command(
    mut_arg("demo", |arg| arg.hide(true)),
    mut_arg("database_url", |arg| arg.env(None::<&str>).help(
        "An existing database to install the demo into, instead of a throwaway cluster (DATABASE_URL is ignored)"
    ))
)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,

    /// Where the demo's PostgreSQL cluster lives (kept across runs).
    #[arg(long, env = "PGSSE_DEMO_DIR", default_value = DEFAULT_DEMO_DIR)]
    pub data_dir: PathBuf,

    /// Port of the demo's PostgreSQL (loopback only).
    #[arg(long, env = "PGSSE_DEMO_PG_PORT", default_value_t = DEFAULT_DEMO_PG_PORT)]
    pub pg_port: u16,
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after, or `*`.
fn parse_origin(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s == "*" {
        return Ok(s.to_string());
    }
    let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ', '*']) => Ok(s.to_string()),
        _ => Err(format!("{s:?} is not an origin (expected e.g. https://app.example.com or *)")),
    }
}

/// What `server::run` needs: the flags' groups as given, with the database URL, the access control and
/// the certificate resolved (and checked) at startup.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    pub server: ServerArgs,
    pub pool: PoolArgs,
    pub listener: ListenerArgs,
    pub streams: StreamArgs,
    pub commands: CommandArgs,
    pub limits: LimitArgs,
    pub retention: RetentionArgs,
    pub mercure: MercureArgs,
    pub replica: ReplicaArgs,
    pub auth: Arc<Auth>,
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no database given: set DATABASE_URL or pass --database-url")]
    MissingDatabaseUrl,
    #[error("invalid database url: {0}")]
    InvalidDatabaseUrl(#[source] tokio_postgres::Error),
    #[error("--auth none on the public address {0}: pass --allow-unauthenticated-public, or use --auth jwt")]
    PublicWithoutAuth(SocketAddr),
    #[error(
        "--auth none with --trusted-proxy: behind a proxy every request comes from loopback, so the loopback \
         check protects nothing; use --auth jwt or --auth auth-url (or --allow-unauthenticated-public if the \
         proxy itself admits only trusted clients)"
    )]
    ProxiedWithoutAuth,
    #[error(transparent)]
    Auth(#[from] AuthConfigError),
    #[error("{0}")]
    Mercure(String),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

impl Config {
    pub fn from_args(args: ServeArgs) -> Result<Self, ConfigError> {
        let url = args.db.url().ok_or(ConfigError::MissingDatabaseUrl)?;
        Self::with_database_url(args, url)
    }

    pub fn with_database_url(args: ServeArgs, database_url: String) -> Result<Self, ConfigError> {
        let check = |url: &str| url.parse::<tokio_postgres::Config>().map_err(ConfigError::InvalidDatabaseUrl);
        check(&database_url)?;
        if let Some(url) = &args.listener.listen_database_url {
            check(url)?;
        }
        if let Some(url) = args.replica.url() {
            check(url)?;
        }
        if args.auth.auth == AuthMode::None && !args.auth.allow_unauthenticated_public {
            if !args.server.listen.ip().is_loopback() {
                return Err(ConfigError::PublicWithoutAuth(args.server.listen));
            }
            if !args.limits.trusted_proxies.is_empty() {
                return Err(ConfigError::ProxiedWithoutAuth);
            }
        }
        args.mercure.check(args.auth.auth == AuthMode::Jwt).map_err(ConfigError::Mercure)?;
        let tls = match (&args.server.tls_cert, &args.server.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            _ => None,
        };
        Ok(Self {
            database_url,
            auth: Arc::new(args.auth.build()?),
            tls,
            server: args.server,
            pool: args.pool,
            listener: args.listener,
            streams: args.streams,
            commands: args.commands,
            limits: args.limits,
            retention: args.retention,
            mercure: args.mercure,
            replica: args.replica,
        })
    }

    /// Defaults for everything but the database; what tests and embedders start from.
    pub fn new(database_url: impl Into<String>) -> Result<Self, ConfigError> {
        let args = Cli::try_parse_from(["pgsse"]).expect("the defaults parse").serve;
        Self::with_database_url(args, database_url.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Config, ConfigError> {
        let mut argv = vec!["pgsse", "--database-url", "postgres://x@h/db"];
        argv.extend_from_slice(extra);
        Config::from_args(Cli::try_parse_from(argv).unwrap().serve)
    }

    #[test]
    fn defaults_and_subcommands() {
        let cli = Cli::try_parse_from(["pgsse", "--database-url", "postgres://x@h/db"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.serve.server.listen.to_string(), DEFAULT_LISTEN);
        let cfg = Config::from_args(cli.serve).unwrap();
        assert_eq!(cfg.streams.heartbeat, Duration::from_secs(15));
        assert_eq!(cfg.retention.retention.0, Some(Duration::from_secs(24 * 3600)));
        let cli = Cli::try_parse_from(["pgsse", "migrate", "--database-url", "postgres://x@h/db"]).unwrap();
        match cli.command {
            Some(Command::Migrate(args)) => assert_eq!(args.lock_timeout, crate::pg::migrate::LOCK_TIMEOUT),
            other => panic!("{other:?}"),
        }
        assert!(Cli::try_parse_from(["pgsse", "--queue-capacity", "0"]).is_err());
        assert!(Config::new("not a url").is_err());
        assert_eq!(parse(&["--retention", "off"]).unwrap().retention.retention.0, None);
        assert!(Cli::try_parse_from(["pgsse", "--retention", "0"]).unwrap_err().to_string().contains("or off"));
    }

    #[test]
    fn public_addresses_need_auth_or_an_explicit_opt_out() {
        assert!(matches!(parse(&["--listen", "0.0.0.0:4000"]), Err(ConfigError::PublicWithoutAuth(_))));
        assert!(parse(&["--listen", "0.0.0.0:4000", "--allow-unauthenticated-public"]).is_ok());
        assert!(parse(&["--listen", "[::1]:4000"]).is_ok());
        assert!(parse(&[
            "--listen",
            "0.0.0.0:4000",
            "--auth",
            "jwt",
            "--jwt-secret",
            "a secret that is 32 bytes or more!"
        ])
        .is_ok());
        // Behind a proxy the peer is always loopback: that check alone would guard nothing.
        assert!(matches!(parse(&["--trusted-proxy", "127.0.0.1"]), Err(ConfigError::ProxiedWithoutAuth)));
        assert!(parse(&[
            "--trusted-proxy",
            "127.0.0.1",
            "--auth",
            "jwt",
            "--jwt-secret",
            "a secret that is 32 bytes or more!"
        ])
        .is_ok());
        assert!(parse(&["--trusted-proxy", "127.0.0.1", "--allow-unauthenticated-public"]).is_ok());
        assert!(matches!(parse(&["--auth", "jwt"]), Err(ConfigError::Auth(AuthConfigError::JwtKey))));
        assert!(matches!(
            parse(&["--auth", "jwt", "--jwt-public-key", "/nonexistent.pem"]),
            Err(ConfigError::Auth(AuthConfigError::KeyFile(..)))
        ));
    }

    #[test]
    fn mercure_flags_need_what_they_build_on() {
        let jwt = ["--auth", "jwt", "--jwt-secret", "a secret that is 32 bytes or more!"];
        let told = |extra: &[&str]| match parse(extra) {
            Err(ConfigError::Mercure(why)) => why,
            other => panic!("{extra:?}: {:?}", other.map(|_| ())),
        };
        assert!(told(&["--mercure"]).contains("--auth jwt"));
        assert!(told(&[&jwt[..], &["--mercure-anonymous"]].concat()).contains("needs --mercure"));
        assert!(told(&[&jwt[..], &["--mercure-legacy"]].concat()).contains("needs --mercure"));
        let exp = [&jwt[..], &["--mercure", "--jwt-exp-optional"]].concat();
        assert!(told(&exp).contains("--mercure-legacy"));
        assert!(parse(&[&jwt[..], &["--mercure", "--mercure-legacy", "--jwt-exp-optional"]].concat()).is_ok());
    }

    #[test]
    fn origins() {
        for good in ["*", "http://localhost:3000", "https://app.example.com"] {
            assert_eq!(parse_origin(good).as_deref(), Ok(good));
        }
        for bad in ["localhost:3000", "http://", "https://a.com/path", "ftp://x", "http://*.example.com"] {
            assert!(parse_origin(bad).is_err(), "{bad:?}");
        }
        let cli = Cli::try_parse_from(["pgsse", "--cors-origin", "http://a.test", "--cors-origin", "https://b.test"]);
        assert_eq!(cli.unwrap().serve.server.cors_origins, ["http://a.test", "https://b.test"]);
    }
}
