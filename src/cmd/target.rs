//! Which collector a client command talks to, and with which token: shared by `search`,
//! `tail`, `dlq` and `alerts`.

use anyhow::Context;
use clap::Args;
use spoor_query::client::Client;

#[derive(Debug, Args)]
pub struct Target {
    /// The collector's URL.
    #[arg(long, env = "SPOOR_COLLECTOR", default_value = "http://127.0.0.1:8740")]
    collector: String,
    /// File holding a token with the scope the command needs (`read` to search and list,
    /// `admin` to replay, discard, silence and test); or set SPOOR_TOKEN.
    #[arg(long, env = "SPOOR_TOKEN_FILE")]
    token_file: Option<std::path::PathBuf>,
}

impl Target {
    /// A client for the collector, with the token when one is given.
    pub fn client(&self) -> anyhow::Result<Client> {
        let token = match &self.token_file {
            Some(p) => Some(
                std::fs::read_to_string(p)
                    .with_context(|| format!("reading the token file {}", p.display()))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var("SPOOR_TOKEN").ok(),
        };
        Ok(Client::new(&self.collector, token)?)
    }
}
