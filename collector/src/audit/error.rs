//! Errors of the audit log: [`AuditError`] for operations that failed to run, and
//! [`VerifyProblem`] for what `verify` found wrong with the data (tampering, loss).

use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// An audit log operation could not be carried out.
///
/// Tampering found by [`verify`](super::verify()) is not an error: it is reported as
/// [`VerifyProblem`]s in the [`VerifyReport`](super::VerifyReport).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// A file system operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was being done, e.g. "writing".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The files on disk contradict themselves in a way recovery must not paper over
    /// (for example, records covered by a signed checkpoint are missing). Run
    /// `spoor audit verify` for a full report.
    #[error("audit log is damaged at {path}: {reason}")]
    Corrupt {
        /// The file where the damage was found.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The signing key or public key file is unusable.
    #[error("audit key {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A public key given to `verify` is not 32 raw bytes or 64 hex digits.
    #[error("public key is not 32 raw bytes or 64 hex digits")]
    BadPublicKey,
    /// The batch key was already appended; callers that want idempotency check
    /// [`AuditLog::seen_batch`](super::AuditLog::seen_batch) first.
    #[error("batch {key:?} was already appended as seq {}..{}", seqs.start, seqs.end)]
    DuplicateBatch {
        /// The batch key.
        key: String,
        /// Where the earlier copy is.
        seqs: Range<u64>,
    },
    /// A field of a record is longer than the format allows.
    #[error("{field} is {len} bytes, more than the limit of {max}")]
    FieldTooLong {
        /// "agent", "batch_key" or "line".
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A write or fsync failed earlier; the in-memory state may no longer match the
    /// files, so the log refuses further writes until it is reopened (which recovers).
    #[error("the audit log failed earlier and must be reopened")]
    Poisoned,
    /// The group-commit writer thread has stopped.
    #[error("the audit writer has shut down")]
    WriterClosed,
    /// The group this batch was part of could not be made durable; the batch is not
    /// acknowledged and may be retried.
    #[error("committing the batch failed: {reason}")]
    CommitFailed {
        /// The error the writer thread saw.
        reason: String,
    },
}

/// Attaches the operation and path to an `io::Error`.
pub(crate) trait IoContext<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, AuditError>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, op: &'static str, path: &Path) -> Result<T, AuditError> {
        self.map_err(|source| AuditError::Io {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}

/// One thing `verify` found wrong. Each names the record (by seq), checkpoint (by its
/// 1-based line number in `checkpoints.log`) or byte offset it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VerifyProblem {
    /// The hash recomputed from the previous record and this record's bytes differs from
    /// the hash stored with it: the record (or the one before it) was changed.
    #[error("hash mismatch at seq {seq}: the recomputed chain does not match the stored hash")]
    HashMismatch {
        /// The record.
        seq: u64,
    },
    /// The chain at `seq` does not match the head hash signed in a checkpoint.
    #[error(
        "hash mismatch at seq {seq}: does not match the head hash signed in checkpoint #{checkpoint}"
    )]
    CheckpointHashMismatch {
        /// The record.
        seq: u64,
        /// The checkpoint's line number.
        checkpoint: usize,
    },
    /// The hash of the record before a checkpoint's `first_seq` differs from its signed
    /// `first_prev_hash`.
    #[error(
        "hash mismatch at seq {seq}: does not match first_prev_hash signed in checkpoint #{checkpoint}"
    )]
    FirstPrevHashMismatch {
        /// The record (`first_seq - 1`).
        seq: u64,
        /// The checkpoint's line number.
        checkpoint: usize,
    },
    /// A checkpoint's Ed25519 signature does not verify with the public key.
    #[error("bad checkpoint signature: checkpoint #{checkpoint} (seq {seq})")]
    BadSignature {
        /// The checkpoint's line number.
        checkpoint: usize,
        /// The seq it claims to sign.
        seq: u64,
    },
    /// A checkpoint's `prev_signature` is not the signature of the checkpoint before it:
    /// a checkpoint was removed, inserted or reordered.
    #[error(
        "checkpoint chain broken at checkpoint #{checkpoint}: its prev_signature is not the signature of the checkpoint before it"
    )]
    CheckpointChainBroken {
        /// The checkpoint's line number.
        checkpoint: usize,
    },
    /// A checkpoint's seq or first_seq went backwards.
    #[error("checkpoint #{checkpoint} goes backwards: {what}")]
    CheckpointOutOfOrder {
        /// The checkpoint's line number.
        checkpoint: usize,
        /// Which field.
        what: String,
    },
    /// A line of `checkpoints.log` does not parse.
    #[error("malformed checkpoint #{checkpoint}: {reason}")]
    MalformedCheckpoint {
        /// The line number.
        checkpoint: usize,
        /// Why it does not parse.
        reason: String,
    },
    /// Records are missing: a whole segment or records inside one.
    #[error("missing records: seq {from} to {to} are absent (missing segment or deleted records)")]
    Gap {
        /// First missing seq.
        from: u64,
        /// Last missing seq.
        to: u64,
    },
    /// A record's seq is lower than the one expected (records reordered or duplicated).
    #[error("record seq out of order: expected seq {expected}, found seq {found}")]
    SeqOutOfOrder {
        /// The seq that should have come next.
        expected: u64,
        /// The seq found.
        found: u64,
    },
    /// A segment ends with an incomplete record although it is not the last segment.
    #[error("truncated segment: incomplete record at byte {offset} after seq {after:?}")]
    TruncatedSegment {
        /// Where the incomplete record starts.
        offset: u64,
        /// The last good record before it.
        after: Option<u64>,
    },
    /// A segment that is not the last one ends inside a batch (batches never span
    /// segments), so records were cut from its end.
    #[error("truncated segment: ends inside the batch of seq {seq}")]
    SegmentEndsInBatch {
        /// The segment's last record.
        seq: u64,
    },
    /// The log ends before the seq a checkpoint signed.
    #[error("records missing at the end: the log ends {}, but checkpoint #{checkpoint} signs up to seq {signed}", last.map_or("before any record".to_string(), |s| format!("at seq {s}")))]
    MissingSignedRecords {
        /// The last record present.
        last: Option<u64>,
        /// The checkpoint's line number.
        checkpoint: usize,
        /// The seq it signs.
        signed: u64,
    },
    /// A record frame or its fields do not parse.
    #[error("malformed record at byte {offset}: {reason}")]
    MalformedRecord {
        /// Where the record starts.
        offset: u64,
        /// Why it does not parse.
        reason: String,
    },
    /// The segment header is damaged or does not match the file name.
    #[error("bad segment header: {reason}")]
    BadHeader {
        /// What is wrong.
        reason: String,
    },
}
