//! The crate's error type: what can stop the agent from starting or running.

use std::path::PathBuf;

use crate::buffer::BufferError;
use crate::config::ConfigError;

/// Why [`crate::run`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The disk buffer could not be opened or failed for good.
    #[error("disk buffer")]
    Buffer(#[from] BufferError),
    /// A listen or admin address could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The address as configured.
        addr: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file in the data directory could not be read or written.
    #[error("I/O error on {path}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be built.
    #[error("building the HTTP client")]
    HttpClient(#[source] reqwest::Error),
    /// A key (buffer encryption or redaction) could not be loaded or created.
    #[error("encryption key")]
    Key(#[from] crate::crypto::KeyError),
    /// The redaction rules could not be built.
    #[error("redaction")]
    Redact(#[from] crate::redact::RedactError),
    /// The TLS settings for the collector could not be built.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// A task of the agent stopped unexpectedly.
    #[error("agent task failed: {0}")]
    Task(String),
}
