//! The collector's error types: one per job, gathered into [`Error`].

use std::path::PathBuf;

use crate::audit::AuditError;

/// A bad configuration: what is wrong and where.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("reading {path}")]
    Read {
        /// Which file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TOML that does not parse or names unknown keys.
    #[error("{}{message}", path.as_ref().map(|p| format!("{}: ", p.display())).unwrap_or_default())]
    Parse {
        /// Which file, when it came from one.
        path: Option<PathBuf>,
        /// The parser's message, which names the key.
        message: String,
    },
    /// A value that parses but breaks a rule.
    #[error("{0}")]
    Invalid(String),
}

/// Errors of the index.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IndexError {
    /// tantivy failed.
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// The index directory could not be opened.
    #[error("opening the index at {path}")]
    Open {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: tantivy::directory::error::OpenDirectoryError,
    },
    /// Reading the audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// Creating the index directory failed.
    #[error("creating {path}")]
    Io {
        /// Where.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Any error of the collector.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The audit log failed.
    #[error(transparent)]
    Audit(#[from] AuditError),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The listen address could not be bound.
    #[error(
        "cannot listen on {addr}: {source} (is another collector running? choose another address with --listen)"
    )]
    Bind {
        /// Which address.
        addr: std::net::SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Serving HTTP failed.
    #[error("serving HTTP: {0}")]
    Serve(#[source] std::io::Error),
    /// Cluster mode could not start or failed.
    #[error("cluster: {0}")]
    Cluster(#[from] crate::cluster::ClusterError),
}
