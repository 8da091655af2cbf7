//! The command line: one clap enum of subcommands; each file turns its arguments into a
//! library config and calls the library.

mod agent;
mod alerts;
mod audit;
mod collector;
mod decrypt;
mod dlq;
mod run;
mod search;
mod target;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit code for "the command could not do its work".
pub const EXIT_FAILURE: u8 = 2;
/// Exit code for "the command ran and found a problem" (for example a tampered audit log).
pub const EXIT_PROBLEM: u8 = 1;

/// spoor: a logging pipeline for task code with a tamper-evident audit trail.
#[derive(Debug, Parser)]
#[command(name = "spoor", version, about, long_about = None)]
pub struct Cli {
    /// Log more about what spoor itself is doing (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector: ingest, audit log, index, search API.
    Collector(collector::CollectorArgs),
    /// Run the agent: receive and tail logs, buffer them on disk, forward them.
    Agent(Box<agent::AgentArgs>),
    /// Run a collector and an agent locally with embedded defaults (`--demo` adds a workload).
    Up(up::UpArgs),
    /// Decrypt `enc:v1:` values (the agent's `encrypt` redaction action) in lines on stdin.
    Decrypt(decrypt::DecryptArgs),
    /// Search the collector's index.
    Search(search::SearchArgs),
    /// Follow new matching lines as they are indexed.
    Tail(search::TailArgs),
    /// Alert rules: list them with their state, silence them, test a notifier.
    #[command(subcommand)]
    Alerts(alerts::AlertsCommand),
    /// Work with the audit log.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Dead letters: list, show, replay (rate-limited, resumable, idempotent), discard.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Run a program as a task: each line it prints becomes an event sent to the agent.
    Run(run::RunArgs),
}

/// Sets up spoor's own diagnostics on stderr; `SPOOR_LOG` overrides the filter.
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SPOOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    use std::io::IsTerminal as _;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the chosen subcommand.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Collector(args) => collector::run(args),
        Command::Agent(args) => agent::run(*args),
        Command::Up(args) => up::run(args),
        Command::Decrypt(args) => decrypt::run(args),
        Command::Search(args) => search::run(args),
        Command::Tail(args) => search::tail(args),
        Command::Alerts(cmd) => alerts::run(cmd),
        Command::Audit(cmd) => audit::run(cmd),
        Command::Dlq(cmd) => dlq::run(cmd),
        Command::Run(args) => run::run(args),
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    spoor_agent::cli::shutdown_signal().await;
}
