//! The agent's command-line flags, shared by `spoor agent` and the slim `spoor-agent`
//! binary: flags and `SPOOR_*` variables applied over the config file.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Args;

use crate::{AgentConfig, ConfigError, ListenAddr};

#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Where the disk buffer, file positions and agent ID live.
    #[arg(long, env = "SPOOR_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The collector's base URL, e.g. http://127.0.0.1:8740.
    #[arg(long, env = "SPOOR_COLLECTOR")]
    collector: Option<String>,
    /// Input: `tcp:ADDR` or `unix:PATH` (repeatable) [default: tcp:127.0.0.1:8741 and
    /// unix:DATA_DIR/agent.sock].
    #[arg(long = "listen", value_parser = parse_listen)]
    listen: Vec<ListenAddr>,
    /// Files to tail (repeatable; wildcards in the file name).
    #[arg(long = "file")]
    files: Vec<String>,
    /// Accept syslog over TCP on this address (RFC 5424/3164).
    #[arg(long, env = "SPOOR_SYSLOG")]
    syslog: Option<SocketAddr>,
    /// An SDK spill directory to pick up (repeatable).
    #[arg(long = "spill-dir")]
    spill_dirs: Vec<PathBuf>,
    /// Address for /metrics and /healthz [default: 127.0.0.1:8742].
    #[arg(long, env = "SPOOR_ADMIN")]
    admin: Option<SocketAddr>,
    /// TOML configuration file; flags and SPOOR_* variables override it.
    #[arg(long, env = "SPOOR_CONFIG")]
    config: Option<PathBuf>,
    /// Check the configuration and exit.
    #[arg(long)]
    pub check_config: bool,
}

fn parse_listen(text: &str) -> Result<ListenAddr, String> {
    text.parse::<ListenAddr>().map_err(|e| e.to_string())
}

/// Builds the agent's configuration: file < environment < flags.
pub fn load(args: &AgentArgs) -> Result<AgentConfig, ConfigError> {
    let mut config = AgentConfig::load(args.config.as_deref())?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if let Some(c) = &args.collector {
        config.collector = c.clone();
    }
    if !args.listen.is_empty() {
        config.listen = Some(args.listen.clone());
    }
    config.files.extend(args.files.iter().cloned());
    config.spill_dirs.extend(args.spill_dirs.iter().cloned());
    if let Some(a) = args.syslog {
        config.syslog = Some(a);
    }
    if let Some(a) = args.admin {
        config.admin = a;
    }
    config.validate()?;
    Ok(config)
}

/// Resolves on Ctrl-C or SIGTERM: the daemons' shutdown trigger.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
