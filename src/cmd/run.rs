//! `spoor run`: runs a program and sends each line it prints to the agent as an event with
//! the task keys; the work is `spoor_sdk::run::run_command`.

use std::ffi::OsString;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Args;

/// Arguments of `spoor run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Task name (`task` on every line).
    #[arg(long)]
    task: String,
    /// Run ID (`task_id`), stable across retries; a new one when not given.
    #[arg(long)]
    task_id: Option<String>,
    /// Attempt number (`attempt`), 1 for the first try.
    #[arg(long, default_value_t = 1)]
    attempt: u32,
    /// How many tasks deep this run is (`depth`).
    #[arg(long, default_value_t = 0)]
    depth: u32,
    /// Also copy the program's stdout and stderr to this terminal.
    #[arg(long)]
    passthrough: bool,
    /// The program and its arguments, after `--`.
    #[arg(required = true, last = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// Runs the program; exits with its status (128 + N for signal N).
pub fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = spoor_sdk::Config::from_env().context("reading the SPOOR_* environment")?;
    let mut command = args.command.into_iter();
    let program = command.next().context("no program given after `--`")?;
    let options = spoor_sdk::run::RunOptions {
        task: args.task,
        task_id: args.task_id,
        attempt: args.attempt,
        depth: args.depth,
        program,
        args: command.collect(),
        passthrough: args.passthrough,
        config,
    };
    match spoor_sdk::run::run_command(options) {
        Ok(outcome) => Ok(ExitCode::from(outcome.exit_code)),
        Err(err) => {
            let code = err.exit_code();
            eprintln!("spoor: error: {:#}", anyhow::Error::from(err));
            Ok(ExitCode::from(code))
        }
    }
}
