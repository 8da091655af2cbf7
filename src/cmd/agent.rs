//! `spoor agent`: the agent's flags (shared with the slim `spoor-agent` binary), then
//! `spoor_agent::run`.

use std::process::ExitCode;

use anyhow::Context;
pub use spoor_agent::cli::AgentArgs;

pub fn run(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let config = spoor_agent::cli::load(&args)?;
    if args.check_config {
        print!("{}", spoor_agent::cli::check_report(&config));
        return Ok(ExitCode::SUCCESS);
    }
    // The agent's runtime caps the blocking pool (memory; see `spoor_agent::runtime`).
    let runtime = spoor_agent::runtime().context("starting the async runtime")?;
    runtime.block_on(spoor_agent::run_reloadable(
        config,
        spoor_agent::cli::config_source(&args),
        super::shutdown_signal(),
    ))?;
    Ok(ExitCode::SUCCESS)
}
