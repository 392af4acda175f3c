//! The `pgsse` binary: parse configuration, start tracing, bind, and run.

use std::process::ExitCode;

use clap::Parser;
use pgsse::config::{Cli, Command, Config, LogFormat, MigrateArgs, ServeArgs};
use pgsse::Sockets;

/// BSD `EX_USAGE`: the configuration is wrong, retrying will not help.
const EXIT_USAGE: u8 = 64;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) if !err.use_stderr() => {
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // clap's first paragraph, on one line: "the following required arguments were not provided:
            // --tls-key <TLS_KEY>" needs its second line to be useful.
            let text = err.to_string();
            let mut summary: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
            // "tip: a similar argument exists: '--heartbeat'" is the fix for a typo: keep it, on the same line.
            summary.extend(
                text.lines().map(str::trim).find(|l| l.starts_with("tip:")).map(|tip| [";", tip]).into_iter().flatten(),
            );
            eprintln!("pgsse: {}", summary.join(" ").trim_start_matches("error: ").replace(" ; ", "; "));
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let mut filter =
        tracing_subscriber::EnvFilter::try_from_env("PGSSE_LOG").unwrap_or_else(|_| "pgsse=info,warn".into());
    let serving = match &cli.command {
        Some(Command::Serve(args)) => Some(args),
        None => Some(&cli.serve),
        _ => None,
    };
    if serving.is_some_and(|args| args.server.access_log) {
        let directive = format!("{}=info", pgsse::ACCESS_LOG_TARGET);
        filter = filter.add_directive(directive.parse().expect("a valid directive"));
    }
    let log = pgsse::logging::Lossy::stdout();
    match cli.log_format {
        // Colour only for a person at a terminal: in a file or a journal its codes are noise.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_writer(log.clone())
            .with_env_filter(filter)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt().json().with_writer(log.clone()).with_env_filter(filter).init(),
    }

    let result = match cli.command {
        Some(Command::Migrate(args)) => migrate(args).await,
        Some(Command::Demo(args)) => pgsse::demo::run(args, shutdown_signal()).await.map_err(|err| {
            if err.is_usage() {
                Exit::Usage(err.to_string())
            } else {
                Exit::Failure(err.into())
            }
        }),
        Some(Command::Serve(args)) => serve(args).await,
        None => serve(cli.serve).await,
    };
    let code = match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Exit::Usage(msg)) => {
            eprintln!("pgsse: {msg}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Exit::Failure(err)) => {
            tracing::error!(cause = %err, "exiting");
            ExitCode::FAILURE
        }
    };
    // The log's last lines (the one just above, say) are written by its own thread.
    log.flush(std::time::Duration::from_secs(2));
    code
}

/// Why the binary stops early: how it was started is wrong (exit 64, printed), or running failed (logged).
enum Exit {
    Usage(String),
    Failure(Box<dyn std::error::Error>),
}

async fn migrate(args: MigrateArgs) -> Result<(), Exit> {
    let url = args
        .db
        .url()
        .ok_or_else(|| Exit::Usage("no database given: set DATABASE_URL or pass --database-url".into()))?;
    pgsse::migrate_within(&url, args.lock_timeout).await.map_err(|err| Exit::Failure(err.into()))
}

async fn serve(args: ServeArgs) -> Result<(), Exit> {
    let config = Config::from_args(args).map_err(|err| Exit::Usage(err.to_string()))?;
    if config.server.demo {
        pgsse::demo::install(&config.database_url).await.map_err(|err| Exit::Failure(err.into()))?;
    }
    let listeners = Sockets::bind(&config.server).map_err(|err| Exit::Usage(err.to_string()))?;
    // Serving starts at once (a database that does not answer yet is waited for); a login that can never
    // work stops it, with the fix, so that an orchestrator shows why.
    let credentials = pgsse::credentials(config.database_url.clone(), config.listener.listen_database_url.clone());
    let refused = std::sync::OnceLock::new();
    let stop = async {
        tokio::select! {
            _ = shutdown_signal() => {}
            Err(err) = credentials => { let _ = refused.set(err); }
        }
    };
    pgsse::run(listeners, config, stop).await.map_err(|err| Exit::Failure(err.into()))?;
    match refused.into_inner() {
        Some(err) => Err(Exit::Usage(err.to_string())),
        None => Ok(()),
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = ctrl_c.await;
            return;
        }
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
