//! The `spoor` binary: parse arguments, set up logging, run one subcommand, map its
//! outcome to an exit code. Everything else lives in the library crates.

mod cmd;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    // reqwest is built with rustls and no default provider (`rustls-no-provider`): the
    // project uses ring, installed once per process before any HTTP client is made.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = cmd::Cli::parse();
    cmd::init_logging(cli.verbose);
    match cmd::run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            eprintln!("spoor: error: {err:#}");
            ExitCode::from(cmd::EXIT_FAILURE)
        }
    }
}

/// A closed pipe (`spoor search ... | head`) is not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
