//! `spoor collector`: run the collector, or rebuild its index (`spoor collector reindex`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use spoor_collector::CollectorConfig;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CollectorArgs {
    #[command(subcommand)]
    action: Option<CollectorAction>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Debug, Subcommand)]
enum CollectorAction {
    /// Rebuild the search index from the audit log (the collector must be stopped).
    Reindex {
        /// The collector's data directory.
        #[arg(long, env = "SPOOR_DATA_DIR")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Where the audit log, index and keys live.
    #[arg(long, env = "SPOOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Listen address for the HTTP API [default: 127.0.0.1:8740].
    #[arg(long, env = "SPOOR_LISTEN")]
    listen: Option<SocketAddr>,
    /// TOML configuration file; flags and SPOOR_* variables override it.
    #[arg(long, env = "SPOOR_CONFIG")]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    check_config: bool,
}

pub fn run(args: CollectorArgs) -> anyhow::Result<ExitCode> {
    match args.action {
        Some(CollectorAction::Reindex { data_dir }) => reindex(data_dir),
        None => serve(args.run),
    }
}

fn load(args: &RunArgs) -> anyhow::Result<CollectorConfig> {
    let mut config = match &args.config {
        Some(path) => CollectorConfig::load(path)?,
        None => CollectorConfig::default(),
    };
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    } else if args.config.is_none() {
        anyhow::bail!("--data-dir is required (or a --config file that sets data_dir)");
    }
    if let Some(l) = args.listen {
        config.listen = l;
    }
    config.validate()?;
    Ok(config)
}

fn serve(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = load(&args)?;
    if args.check_config {
        println!("configuration is valid");
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async {
        let listener = spoor_collector::server::bind(config.listen).await?;
        spoor_collector::server::run(config, listener, super::shutdown_signal()).await
    })?;
    Ok(ExitCode::SUCCESS)
}

fn reindex(data_dir: PathBuf) -> anyhow::Result<ExitCode> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_message("reindexing from the audit log");
    let done = spoor_collector::index::rebuild(&data_dir, 256 << 20, &mut |p| {
        bar.set_message(format!("{} records indexed", p.records));
        bar.tick();
    })
    .with_context(|| format!("reindexing {}", data_dir.display()))?;
    bar.finish_with_message(format!("{} records indexed", done.records));
    Ok(ExitCode::SUCCESS)
}
