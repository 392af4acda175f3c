//! Command line and environment configuration. Every option has a `PGSSE_*` variable (the database URL
//! also reads `DATABASE_URL`); defaults live in the consts below.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::auth::AuthUrl;
use crate::auth::{Auth, AuthError, Jwt, DEFAULT_COOKIE};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:4000";
pub const DEFAULT_HEARTBEAT: &str = "15s";
pub const DEFAULT_RETRY: &str = "3s";
pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 20_000;
pub const DEFAULT_POOL_SIZE: usize = 16;
pub const DEFAULT_SHUTDOWN_TIMEOUT: &str = "5s";
pub const DEFAULT_PROBE_INTERVAL: &str = "10s";
/// Above `pgsse.sequenced`'s 10 s lock timeout, so a POST that waits for a busy sequencing step gets its id.
pub const DEFAULT_DB_TIMEOUT: &str = "15s";
pub const DEFAULT_MAX_CHANNELS: usize = 32;
pub const DEFAULT_SNAPSHOT_MAX_ROWS: usize = 10_000;
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
pub const DEFAULT_MAX_STREAMS: usize = 10_000;
pub const DEFAULT_AUTH_CACHE_TTL: &str = "5s";
pub const DEFAULT_RETENTION: &str = "24h";
pub const DEFAULT_PRUNE_INTERVAL: &str = "1m";
pub const DEFAULT_MAX_STREAMS_PER_CLIENT: usize = 100;
pub const DEFAULT_HEADER_READ_TIMEOUT: &str = "10s";
pub const DEFAULT_BODY_READ_TIMEOUT: &str = "30s";
/// Above the per-client stream limit: each HTTP/1 stream holds a connection, and requests need a few more.
pub const DEFAULT_MAX_CONNECTIONS_PER_CLIENT: usize = 256;
pub const DEFAULT_MAX_URL_LENGTH: usize = 8 * 1024;
pub const DEFAULT_DEMO_DIR: &str = ".pgsse-demo";
pub const DEFAULT_DEMO_PG_PORT: u16 = 54329;

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
    Migrate(DatabaseArgs),
    /// Start a throwaway PostgreSQL, a published `messages` table, and the gateway.
    Demo(DemoArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL connection URL, e.g. postgres://user:pass@host:5432/db.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DatabaseArgs,

    /// Separate URL for the LISTEN connection, e.g. straight to PostgreSQL when the pool goes through
    /// PgBouncer in transaction mode (where LISTEN does not work). Default: --database-url.
    #[arg(long, env = "PGSSE_LISTEN_DATABASE_URL", hide_env_values = true)]
    pub listen_database_url: Option<String>,

    /// Address to serve HTTP on.
    #[arg(long, env = "PGSSE_LISTEN", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Serve `GET /metrics` on this address instead of the main one (e.g. a port only Prometheus reaches).
    /// Under `--auth jwt` or `auth-url` it is served only here: its channel labels tell who is online.
    #[arg(long, env = "PGSSE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Label `pgsse_streams_open` by channel (`false`: one total, for channels named after users or too
    /// many to keep a series each).
    #[arg(long, env = "PGSSE_METRICS_CHANNEL_LABELS", default_value_t = true, action = clap::ArgAction::Set)]
    pub metrics_channel_labels: bool,

    /// PEM certificate chain: serve HTTPS, with HTTP/2 offered by ALPN so a browser can open many streams
    /// over one connection. Needs --tls-key.
    #[arg(long, env = "PGSSE_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "PGSSE_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Comment sent on an idle stream this often, so proxies and clients see it is alive.
    #[arg(long, env = "PGSSE_HEARTBEAT", default_value = DEFAULT_HEARTBEAT, value_parser = parse_duration)]
    pub heartbeat: Duration,

    /// Reconnect delay the browser is told to use (`retry:` field).
    #[arg(long, env = "PGSSE_RETRY", default_value = DEFAULT_RETRY, value_parser = parse_duration)]
    pub retry: Duration,

    /// Frames queued per stream before a slow client is cut off (it resumes from the log).
    #[arg(long, env = "PGSSE_QUEUE_CAPACITY", default_value_t = DEFAULT_QUEUE_CAPACITY,
          value_parser = parse_positive)]
    pub queue_capacity: usize,

    /// Maximum open client connections; further connections wait in the kernel's accept backlog.
    #[arg(long, env = "PGSSE_MAX_CONNECTIONS", default_value_t = DEFAULT_MAX_CONNECTIONS,
          value_parser = parse_positive)]
    pub max_connections: usize,

    /// Maximum channels in one stream.
    #[arg(long, env = "PGSSE_MAX_CHANNELS", default_value_t = DEFAULT_MAX_CHANNELS,
          value_parser = parse_positive)]
    pub max_channels: usize,

    /// Most rows a stream's snapshot (`?snapshot=true`) may send; a larger one is refused, asking for a `limit`.
    #[arg(long, env = "PGSSE_SNAPSHOT_MAX_ROWS", default_value_t = DEFAULT_SNAPSHOT_MAX_ROWS,
          value_parser = parse_positive)]
    pub snapshot_max_rows: usize,

    /// Connections in the pool used for replay and lookups (the LISTEN connection is separate).
    #[arg(long, env = "PGSSE_POOL_SIZE", default_value_t = DEFAULT_POOL_SIZE,
          value_parser = parse_positive)]
    pub pool_size: usize,

    /// Longest wait for a pooled connection, and then for its answer: a request past it gets 503 and the
    /// connection is dropped (a replaying stream retries); the kernel also drops a connection whose data
    /// goes unacknowledged this long.
    #[arg(long, env = "PGSSE_DB_TIMEOUT", default_value = DEFAULT_DB_TIMEOUT, value_parser = parse_duration)]
    pub db_timeout: Duration,

    /// How long open connections get to finish after SIGINT/SIGTERM.
    #[arg(long, env = "PGSSE_SHUTDOWN_TIMEOUT", default_value = DEFAULT_SHUTDOWN_TIMEOUT, value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// How often the LISTEN connection is probed; a probe or query unanswered for this long forces a reconnect.
    #[arg(long, env = "PGSSE_PROBE_INTERVAL", default_value = DEFAULT_PROBE_INTERVAL, value_parser = parse_duration)]
    pub probe_interval: Duration,

    /// A POST body must arrive whole within this long (else 408).
    #[arg(long, env = "PGSSE_BODY_READ_TIMEOUT", default_value = DEFAULT_BODY_READ_TIMEOUT, value_parser = parse_duration)]
    pub body_read_timeout: Duration,

    /// Largest request body accepted by POST, in bytes.
    #[arg(long, env = "PGSSE_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT, value_parser = parse_positive)]
    pub body_limit: usize,

    /// Origin allowed to call from a browser (repeatable, exact `scheme://host[:port]`; `*` allows any
    /// origin, without credentials).
    #[arg(long = "cors-origin", env = "PGSSE_CORS_ORIGIN", value_delimiter = ',', value_parser = parse_origin)]
    pub cors_origins: Vec<String>,

    /// Channel on which `DELETE /{channel}` may clear everything (repeatable); `pgsse.publish_table(...,
    /// allow_clear => true)` enables it in SQL.
    #[arg(long = "allow-clear", env = "PGSSE_ALLOW_CLEAR", value_delimiter = ',')]
    pub allow_clear: Vec<String>,

    /// Let `POST /{channel}` create a channel that does not exist yet; without it such a POST is 404, and
    /// channels come from `pgsse.create_channel` or `pgsse.publish_table`.
    #[arg(long, env = "PGSSE_POST_CREATES_CHANNELS")]
    pub post_creates_channels: bool,

    /// Serve the demo pages (`/` live feed, `/send` form) for the `messages` channel, creating its table.
    #[arg(long, env = "PGSSE_DEMO")]
    pub demo: bool,

    /// Who may read and write: `none` (anyone; only on loopback unless --allow-unauthenticated-public),
    /// `jwt` (a token's `pgsse` claim grants channels), or `auth-url` (a backend's URL decides).
    #[arg(long, env = "PGSSE_AUTH", value_enum, default_value_t = AuthMode::None)]
    pub auth: AuthMode,

    /// HS256 secret for `--auth jwt`.
    #[arg(long, env = "PGSSE_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,

    /// PEM file with the RS256 (RSA) or ES256 (P-256) public key for `--auth jwt`.
    #[arg(long, env = "PGSSE_JWT_PUBLIC_KEY")]
    pub jwt_public_key: Option<PathBuf>,

    /// For `--auth jwt`: a token's `aud` claim must include this.
    #[arg(long, env = "PGSSE_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// For `--auth jwt`: a token's `iss` claim must be this.
    #[arg(long, env = "PGSSE_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Cookie that may carry the token (besides `Authorization: Bearer` and `?access_token=`).
    #[arg(long, env = "PGSSE_JWT_COOKIE", default_value = DEFAULT_COOKIE)]
    pub jwt_cookie: String,

    /// For `--auth auth-url`: the backend URL asked about each new stream or write (http only).
    #[arg(long, env = "PGSSE_AUTH_URL")]
    pub auth_url: Option<String>,

    /// How long an auth URL's answer is reused for the same cookie, authorization and request.
    #[arg(long, env = "PGSSE_AUTH_CACHE_TTL", default_value = DEFAULT_AUTH_CACHE_TTL, value_parser = parse_duration)]
    pub auth_cache_ttl: Duration,

    /// Serve a non-loopback address with `--auth none`: anyone who can reach it reads and writes everything.
    #[arg(long, env = "PGSSE_ALLOW_UNAUTHENTICATED_PUBLIC")]
    pub allow_unauthenticated_public: bool,

    /// How long events stay in the log, or `off`; older ones are pruned (a client resuming from them gets
    /// `reset`).
    #[arg(long, env = "PGSSE_RETENTION", default_value = DEFAULT_RETENTION, value_parser = parse_retention)]
    pub retention: Retention,

    /// Also keep at most this many events per channel (the newest).
    #[arg(long, env = "PGSSE_RETENTION_EVENTS", value_parser = clap::value_parser!(i64).range(1..))]
    pub retention_events: Option<i64>,

    /// How often the retention job looks for old events.
    #[arg(long, env = "PGSSE_PRUNE_INTERVAL", default_value = DEFAULT_PRUNE_INTERVAL, value_parser = parse_duration)]
    pub prune_interval: Duration,

    /// Open streams on this gateway; more get 429 with Retry-After.
    #[arg(long, env = "PGSSE_MAX_STREAMS", default_value_t = DEFAULT_MAX_STREAMS, value_parser = parse_positive)]
    pub max_streams: usize,

    /// Open streams per client address; more get 429 with Retry-After.
    #[arg(long, env = "PGSSE_MAX_STREAMS_PER_CLIENT", default_value_t = DEFAULT_MAX_STREAMS_PER_CLIENT,
          value_parser = parse_positive)]
    pub max_streams_per_client: usize,

    /// Open connections per peer address (trusted proxies excepted); more are closed as they are accepted.
    #[arg(long, env = "PGSSE_MAX_CONNECTIONS_PER_CLIENT", default_value_t = DEFAULT_MAX_CONNECTIONS_PER_CLIENT,
          value_parser = parse_positive)]
    pub max_connections_per_client: usize,

    /// Proxy address whose X-Forwarded-For names the client (repeatable); from anyone else it is ignored.
    #[arg(long = "trusted-proxy", env = "PGSSE_TRUSTED_PROXY", value_delimiter = ',')]
    pub trusted_proxies: Vec<std::net::IpAddr>,

    /// A connection must send its request headers within this long, or it is closed; an HTTP/2 connection
    /// with no request open for this long is closed too (GOAWAY).
    #[arg(long, env = "PGSSE_HEADER_READ_TIMEOUT", default_value = DEFAULT_HEADER_READ_TIMEOUT,
          value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// Longest request URL accepted (longer: 414).
    #[arg(long, env = "PGSSE_MAX_URL_LENGTH", default_value_t = DEFAULT_MAX_URL_LENGTH, value_parser = parse_positive)]
    pub max_url_length: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    None,
    Jwt,
    AuthUrl,
}

/// The demo always serves its pages: `--demo` is not one of its flags.
#[derive(Debug, Clone, Args)]
#[command(mut_arg("demo", |arg| arg.hide(true)))]
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

pub fn parse_positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// Accepts humantime ("15s", "500ms", "1m") and plain seconds ("15").
/// `--retention`: a duration, or `off` to keep events for as long as nothing else prunes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention(pub Option<Duration>);

pub fn parse_retention(s: &str) -> Result<Retention, String> {
    match s.trim() {
        "off" => Ok(Retention(None)),
        other => parse_duration(other).map(|d| Retention(Some(d))).map_err(|e| format!("{e}, or off")),
    }
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = match s.trim().parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (use e.g. 15s, 500ms)"))?,
    };
    if d.is_zero() {
        return Err("must be greater than zero".into());
    }
    Ok(d)
}

/// An origin as browsers send it: `scheme://host[:port]`, nothing after, or `*`.
pub fn parse_origin(s: &str) -> Result<String, String> {
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

/// What `server::run` needs, resolved from the arguments.
#[derive(Debug, Clone)]
pub struct Config {
    pub database_url: String,
    /// For the LISTEN connection; the pool's URL when not set.
    pub listen_database_url: Option<String>,
    pub heartbeat: Duration,
    pub retry: Duration,
    pub queue_capacity: usize,
    pub max_connections: usize,
    pub max_channels: usize,
    pub snapshot_max_rows: usize,
    pub pool_size: usize,
    pub db_timeout: Duration,
    pub shutdown_timeout: Duration,
    pub probe_interval: Duration,
    pub body_limit: usize,
    pub body_read_timeout: Duration,
    pub cors_origins: Vec<String>,
    pub allow_clear: Vec<String>,
    pub post_creates_channels: bool,
    pub demo: bool,
    pub auth: Arc<Auth>,
    pub max_streams: usize,
    pub max_streams_per_client: usize,
    pub max_connections_per_client: usize,
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub header_read_timeout: Duration,
    pub max_url_length: usize,
    /// Age limit of events; `None` keeps them regardless of age.
    pub retention: Option<Duration>,
    /// Events kept per channel; `None` keeps them regardless of count.
    pub retention_events: Option<i64>,
    pub prune_interval: Duration,
    pub metrics_listen: Option<SocketAddr>,
    pub metrics_channel_labels: bool,
    /// Certificate chain and key, loaded and checked at startup.
    pub tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("no database given: set DATABASE_URL or pass --database-url")]
    MissingDatabaseUrl,
    #[error("invalid database url: {0}")]
    InvalidDatabaseUrl(String),
    #[error("--auth none on the public address {0}: pass --allow-unauthenticated-public, or use --auth jwt")]
    PublicWithoutAuth(SocketAddr),
    #[error(
        "--auth none with --trusted-proxy: behind a proxy every request comes from loopback, so the loopback \
         check protects nothing; use --auth jwt or --auth auth-url (or --allow-unauthenticated-public if the \
         proxy itself admits only trusted clients)"
    )]
    ProxiedWithoutAuth,
    #[error("--auth jwt needs exactly one of --jwt-secret and --jwt-public-key")]
    JwtKey,
    #[error("--auth auth-url needs --auth-url")]
    AuthUrl,
    #[error("cannot read {0}: {1}")]
    KeyFile(PathBuf, std::io::Error),
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
}

impl Config {
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let url = args.db.database_url.clone().ok_or(ConfigError::MissingDatabaseUrl)?;
        Self::with_database_url(args, url)
    }

    pub fn with_database_url(args: &ServeArgs, database_url: String) -> Result<Self, ConfigError> {
        database_url.parse::<tokio_postgres::Config>().map_err(|e| ConfigError::InvalidDatabaseUrl(e.to_string()))?;
        let auth = match (args.auth, &args.jwt_secret, &args.jwt_public_key) {
            (AuthMode::None, _, _) if !args.listen.ip().is_loopback() && !args.allow_unauthenticated_public => {
                return Err(ConfigError::PublicWithoutAuth(args.listen))
            }
            (AuthMode::None, _, _) if !args.trusted_proxies.is_empty() && !args.allow_unauthenticated_public => {
                return Err(ConfigError::ProxiedWithoutAuth)
            }
            (AuthMode::None, _, _) => Auth::None,
            (AuthMode::Jwt, Some(secret), None) if !secret.is_empty() => {
                let jwt = Jwt::hs256(secret.as_bytes(), &args.jwt_cookie);
                Auth::Jwt(Box::new(jwt.expecting(args.jwt_audience.as_deref(), args.jwt_issuer.as_deref())))
            }
            (AuthMode::Jwt, None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|e| ConfigError::KeyFile(path.clone(), e))?;
                let jwt = Jwt::public_key(&pem, &args.jwt_cookie)?;
                Auth::Jwt(Box::new(jwt.expecting(args.jwt_audience.as_deref(), args.jwt_issuer.as_deref())))
            }
            (AuthMode::Jwt, _, _) => return Err(ConfigError::JwtKey),
            (AuthMode::AuthUrl, _, _) => {
                let url = args.auth_url.as_deref().ok_or(ConfigError::AuthUrl)?;
                Auth::Url(Box::new(AuthUrl::new(url, args.auth_cache_ttl)?))
            }
        };
        if let Some(url) = &args.listen_database_url {
            url.parse::<tokio_postgres::Config>().map_err(|e| ConfigError::InvalidDatabaseUrl(e.to_string()))?;
        }
        Ok(Self {
            database_url,
            listen_database_url: args.listen_database_url.clone(),
            heartbeat: args.heartbeat,
            retry: args.retry,
            queue_capacity: args.queue_capacity,
            max_connections: args.max_connections,
            max_channels: args.max_channels,
            snapshot_max_rows: args.snapshot_max_rows,
            pool_size: args.pool_size,
            db_timeout: args.db_timeout,
            shutdown_timeout: args.shutdown_timeout,
            probe_interval: args.probe_interval,
            body_limit: args.body_limit,
            body_read_timeout: args.body_read_timeout,
            cors_origins: args.cors_origins.clone(),
            allow_clear: args.allow_clear.clone(),
            post_creates_channels: args.post_creates_channels,
            demo: args.demo,
            auth: Arc::new(auth),
            max_streams: args.max_streams,
            max_streams_per_client: args.max_streams_per_client,
            max_connections_per_client: args.max_connections_per_client,
            trusted_proxies: args.trusted_proxies.clone(),
            header_read_timeout: args.header_read_timeout,
            max_url_length: args.max_url_length,
            retention: args.retention.0,
            retention_events: args.retention_events,
            prune_interval: args.prune_interval,
            metrics_listen: args.metrics_listen,
            metrics_channel_labels: args.metrics_channel_labels,
            tls: match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
                _ => None,
            },
        })
    }

    /// Defaults for everything but the database; what tests and embedders start from.
    pub fn new(database_url: impl Into<String>) -> Result<Self, ConfigError> {
        let args = Cli::try_parse_from(["pgsse"]).map_err(|e| ConfigError::InvalidDatabaseUrl(e.to_string()))?;
        Self::with_database_url(&args.serve, database_url.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("soon").is_err());
        assert_eq!(parse_retention("off"), Ok(Retention(None)));
        assert_eq!(parse_retention("2h"), Ok(Retention(Some(Duration::from_secs(7200)))));
        assert!(parse_retention("0").unwrap_err().ends_with("or off"));
    }

    #[test]
    fn defaults_and_subcommands() {
        let cli = Cli::try_parse_from(["pgsse", "--database-url", "postgres://x@h/db"]).unwrap();
        assert!(cli.command.is_none());
        let cfg = Config::from_args(&cli.serve).unwrap();
        assert_eq!(cfg.heartbeat, Duration::from_secs(15));
        assert_eq!(cli.serve.listen.to_string(), DEFAULT_LISTEN);
        let cli = Cli::try_parse_from(["pgsse", "migrate", "--database-url", "postgres://x@h/db"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Migrate(_))));
        assert!(Cli::try_parse_from(["pgsse", "--queue-capacity", "0"]).is_err());
        assert!(Config::new("not a url").is_err());
    }

    #[test]
    fn public_addresses_need_auth_or_an_explicit_opt_out() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["pgsse", "--database-url", "postgres://x@h/db"];
            argv.extend_from_slice(extra);
            Config::from_args(&Cli::try_parse_from(argv).unwrap().serve)
        };
        assert!(matches!(parse(&["--listen", "0.0.0.0:4000"]), Err(ConfigError::PublicWithoutAuth(_))));
        assert!(parse(&["--listen", "0.0.0.0:4000", "--allow-unauthenticated-public"]).is_ok());
        assert!(parse(&["--listen", "[::1]:4000"]).is_ok());
        assert!(parse(&["--listen", "0.0.0.0:4000", "--auth", "jwt", "--jwt-secret", "s"]).is_ok());
        // Behind a proxy the peer is always loopback: that check alone would guard nothing.
        assert!(matches!(parse(&["--trusted-proxy", "127.0.0.1"]), Err(ConfigError::ProxiedWithoutAuth)));
        assert!(parse(&["--trusted-proxy", "127.0.0.1", "--auth", "jwt", "--jwt-secret", "s"]).is_ok());
        assert!(parse(&["--trusted-proxy", "127.0.0.1", "--allow-unauthenticated-public"]).is_ok());
        assert!(matches!(parse(&["--auth", "jwt"]), Err(ConfigError::JwtKey)));
        assert!(matches!(
            parse(&["--auth", "jwt", "--jwt-public-key", "/nonexistent.pem"]),
            Err(ConfigError::KeyFile(..))
        ));
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
        assert_eq!(cli.unwrap().serve.cors_origins, ["http://a.test", "https://b.test"]);
    }
}
