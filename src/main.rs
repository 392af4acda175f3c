//! The `pgsse` binary: parse configuration, start tracing, bind, and run.

use std::process::ExitCode;

use clap::Parser;
use pgsse::config::{Cli, Command, Config, LogFormat};

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
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGSSE_LOG").unwrap_or_else(|_| "pgsse=info,warn".into());
    match cli.log_format {
        // Colour only for a person at a terminal: in a file or a journal its codes are noise.
        LogFormat::Text => tracing_subscriber::fmt()
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
            .with_env_filter(filter)
            .init(),
        LogFormat::Json => tracing_subscriber::fmt().json().with_env_filter(filter).init(),
    }

    let result = match cli.command {
        Some(Command::Migrate(db)) => match db.database_url {
            None => usage("no database given: set DATABASE_URL or pass --database-url"),
            Some(url) => pgsse::migrate(&url).await.map_err(|e| e.to_string()),
        },
        Some(Command::Demo(args)) => match pgsse::demo::run(args, shutdown_signal()).await {
            Err(err) if err.is_usage() => usage(&err.to_string()),
            other => other.map_err(|e| e.to_string()),
        },
        Some(Command::Serve(args)) => serve(args).await,
        None => serve(cli.serve).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) if msg.is_empty() => ExitCode::from(EXIT_USAGE),
        Err(msg) => {
            tracing::error!(cause = %msg, "exiting");
            ExitCode::FAILURE
        }
    }
}

/// Prints a configuration error and yields the empty error that maps to exit code 64.
fn usage(msg: &str) -> Result<(), String> {
    eprintln!("pgsse: {msg}");
    Err(String::new())
}

async fn serve(args: pgsse::config::ServeArgs) -> Result<(), String> {
    let config = match Config::from_args(&args) {
        Ok(config) => config,
        Err(err) => return usage(&err.to_string()),
    };
    if config.demo {
        pgsse::demo::install(&config.database_url).await.map_err(|e| e.to_string())?;
    }
    let listener = match pgsse::bind(args.listen) {
        Ok(listener) => listener,
        Err(err) => return usage(&format!("cannot listen on {}: {err}", args.listen)),
    };
    pgsse::run(listener, config, shutdown_signal()).await.map_err(|e| e.to_string())
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
