//! Secrets (tokens, webhook URLs, keys) read from the environment or a file, never printed.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::ConfigError;

/// Where a secret comes from. `Debug` never shows the value.
#[derive(Clone)]
pub enum Secret {
    /// An environment variable holding it.
    Env(String),
    /// A file holding it (surrounding whitespace is trimmed).
    File(PathBuf),
    /// The value itself.
    Value(String),
}

impl Secret {
    /// Picks exactly one of the three ways of giving a secret; `what` names the setting in
    /// errors (`tokens.agents`).
    pub fn from_sources(
        what: &str,
        env: Option<&str>,
        file: Option<&Path>,
        value: Option<&str>,
    ) -> Result<Self, ConfigError> {
        match (env, file, value) {
            (Some(e), None, None) => Ok(Secret::Env(e.to_string())),
            (None, Some(f), None) => Ok(Secret::File(f.to_path_buf())),
            (None, None, Some(v)) => Ok(Secret::Value(v.to_string())),
            (None, None, None) => Err(ConfigError::Invalid(format!(
                "{what}: give the secret with one of *_env, *_file or the value itself"
            ))),
            _ => Err(ConfigError::Invalid(format!(
                "{what}: give only one of *_env, *_file or the value itself"
            ))),
        }
    }

    /// Reads the value now.
    pub fn resolve(&self) -> Result<String, ConfigError> {
        let value = match self {
            Secret::Env(var) => std::env::var(var).map_err(|_| {
                ConfigError::Invalid(format!("environment variable {var} is not set"))
            })?,
            Secret::File(path) => std::fs::read_to_string(path)
                .map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?
                .trim()
                .to_string(),
            Secret::Value(v) => v.clone(),
        };
        if value.is_empty() {
            return Err(ConfigError::Invalid("a configured secret is empty".into()));
        }
        Ok(value)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Secret::Env(var) => write!(f, "Secret(env {var})"),
            Secret::File(path) => write!(f, "Secret(file {})", path.display()),
            Secret::Value(_) => f.write_str("Secret(***)"),
        }
    }
}
