//! Errors of cluster mode.

use crate::audit::AuditError;
use crate::error::IndexError;

/// Why a cluster operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// NATS or JetStream refused or failed.
    #[error("{op}: {message}")]
    Nats {
        /// What was being done.
        op: &'static str,
        /// The client's error text.
        message: String,
    },
    /// JetStream did not answer in time.
    #[error("{0}: NATS did not answer in time")]
    Timeout(&'static str),
    /// A message or value in NATS is not what spoor writes.
    #[error("{0}")]
    Protocol(String),
    /// A shard's audit log failed.
    #[error("shard {shard}: {source}")]
    Audit {
        /// The shard.
        shard: u32,
        /// The audit log's error.
        #[source]
        source: AuditError,
    },
    /// A shard's index failed.
    #[error("shard {shard}: {source}")]
    Index {
        /// The shard.
        shard: u32,
        /// The index's error.
        #[source]
        source: IndexError,
    },
    /// A file of a shard could not be prepared.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// Which file.
        path: std::path::PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl ClusterError {
    /// Wraps any NATS client error with what was being done.
    pub(crate) fn nats(op: &'static str, e: impl std::fmt::Display) -> Self {
        ClusterError::Nats {
            op,
            message: e.to_string(),
        }
    }
}
