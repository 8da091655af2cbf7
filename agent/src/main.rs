//! `spoor-agent`: the agent alone, for hosts that should not carry the collector's code.
//! Same flags as `spoor agent`.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use spoor_agent::cli::{AgentArgs, config_source, load, shutdown_signal};

/// spoor-agent: receive and tail logs, redact, buffer to disk, forward to the collector.
#[derive(Debug, Parser)]
#[command(name = "spoor-agent", version, about)]
struct Cli {
    #[command(flatten)]
    args: AgentArgs,
}

fn main() -> ExitCode {
    // reqwest is built with rustls and no default provider (`rustls-no-provider`): the
    // project uses ring, installed once per process before any HTTP client is made.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPOOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let config = match load(&cli.args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("spoor-agent: error: {e}");
            return ExitCode::from(2);
        }
    };
    if cli.args.check_config {
        print!("{}", spoor_agent::cli::check_report(&config));
        return ExitCode::SUCCESS;
    }
    let runtime = match spoor_agent::runtime() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("spoor-agent: error: starting the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(spoor_agent::run_reloadable(
        config,
        config_source(&cli.args),
        shutdown_signal(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spoor-agent: error: {e}");
            ExitCode::from(2)
        }
    }
}
