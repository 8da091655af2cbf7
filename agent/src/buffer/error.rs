//! Errors of the disk buffer. Callers act on `Full` (apply the overflow policy) and
//! `DiskFull` (back off and retry); everything else is reported.

use std::io;
use std::path::PathBuf;

/// What went wrong in a [`DiskBuffer`](super::DiskBuffer) operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BufferError {
    /// Appending would take the buffer over its configured size cap. Nothing was written;
    /// the caller applies its policy (block, drop the newest, or
    /// [`drop_oldest_unacked`](super::DiskBuffer::drop_oldest_unacked)).
    #[error("buffer full: {needed} more bytes would exceed the cap of {max} bytes ({used} in use)")]
    Full {
        /// Bytes the append needed (frame, plus a segment header when it starts a segment).
        needed: u64,
        /// Bytes the buffer uses on disk now.
        used: u64,
        /// The configured cap.
        max: u64,
    },
    /// The batch cannot fit in one segment even when the segment is empty.
    #[error("batch of {len} bytes does not fit in a segment (at most {max} bytes per record)")]
    RecordTooLarge {
        /// Framed size of the batch.
        len: u64,
        /// Largest framed record a segment can hold.
        max: u64,
    },
    /// The file system ran out of space (ENOSPC or EDQUOT). The operation was rolled back:
    /// the buffer holds exactly what it held before, and later calls work once space returns.
    #[error("disk full while writing {path}")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// Any other I/O error.
    #[error("I/O error on {path}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A segment was written by a newer (or unknown) format version or uses unknown flags.
    #[error("segment {path} has an unsupported format (version {version}, flags {flags:#06x})")]
    UnsupportedFormat {
        /// The segment file.
        path: PathBuf,
        /// Format version in its header.
        version: u16,
        /// Flags in its header.
        flags: u16,
    },
    /// A segment is encrypted with a key the configured cipher cannot open.
    #[error("segment {path} is encrypted with key {key_id}, which is not available")]
    KeyUnavailable {
        /// The segment file.
        path: PathBuf,
        /// The key ID from the segment header, in hex.
        key_id: String,
    },
    /// The configuration cannot work (for example a segment too small for its header).
    #[error("invalid buffer configuration: {0}")]
    Config(String),
}

impl BufferError {
    /// Wraps an I/O error, classifying "no space" errors as [`BufferError::DiskFull`].
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> Self {
        let path = path.into();
        if is_disk_full(&source) {
            BufferError::DiskFull { path, source }
        } else {
            BufferError::Io { path, source }
        }
    }
}

/// ENOSPC (28) and EDQUOT (122 on Linux) both mean "no room to write".
fn is_disk_full(err: &io::Error) -> bool {
    err.kind() == io::ErrorKind::StorageFull || matches!(err.raw_os_error(), Some(28) | Some(122))
}
