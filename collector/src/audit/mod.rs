//! The audit log: the collector's tamper-evident source of truth.
//!
//! Every accepted log line is appended here, and fsynced, before the sender is
//! acknowledged; the search index and everything else derived is rebuilt from it.
//! Anyone holding the public key can check that nothing was changed, removed or
//! reordered (the model is CloudTrail's log file integrity validation, with RFC 6962
//! style SHA-256 chaining).
//!
//! # Main types
//! - [`AuditLog`]: the files on disk; append whole batches, `sync`, recovery at open,
//!   batch idempotency ([`AuditLog::seen_batch`]), checkpoints, retention.
//! - [`AuditWriter`]: a dedicated thread in front of the log doing group commit (many
//!   concurrent batches, one fsync) and periodic checkpoints, with a `watch` of the
//!   committed seq for followers.
//! - [`read_records`] / [`AuditReader`]: follow the log read-only (the indexer).
//! - [`verify`]: the offline check behind `spoor audit verify`.
//!
//! # On-disk layout
//! ```text
//! DIR/audit/segments/00000000000000000000.seg   records, file named by its first seq (20 digits)
//! DIR/audit/segments/00000000000000052817.seg
//! DIR/audit/checkpoints.log                     one signed checkpoint per line (JSON)
//! DIR/audit/signing.key                         Ed25519 PKCS#8 v2, mode 0600, created on first open
//! DIR/audit/public.key                          the public key: 64 lowercase hex digits and "\n"
//! ```
//!
//! A segment starts with a 16-byte header: the magic `SPOORAU1` and its first seq (u64
//! little-endian, equal to the file name). Records follow back to back. All integers
//! are little-endian:
//! ```text
//! body_len   u32        length of the body
//! body:
//!   seq        u64      gapless from 0 across segments
//!   ingest_ts  i64      nanoseconds since the Unix epoch
//!   flags      u8       bit 0: last record of its batch; other bits zero
//!   agent_len  u16, agent      UTF-8
//!   key_len    u16, batch_key  UTF-8 ("" = no idempotency key)
//!   line_len   u32, line       the logfmt line without its newline
//! hash       [u8; 32]   SHA-256(previous record's hash || body)
//! ```
//!
//! # The chain rule
//! `hash(record) = SHA-256(prev_hash || body)`, where `body` is exactly the body bytes
//! above and `prev_hash` is the stored hash of the record with the previous seq: 32 zero
//! bytes for seq 0, and after retention the `first_prev_hash` of the latest checkpoint.
//!
//! # Checkpoints
//! A [`Checkpoint`] signs (Ed25519) the head seq and hash, the time, the previous
//! checkpoint's signature (so checkpoints chain too) and the oldest retained seq with
//! the hash before it; see [`Checkpoint::signed_bytes`] for the exact bytes. They are
//! appended to `checkpoints.log` and fsynced, always after the records they cover are
//! fsynced. Records after the latest checkpoint are chained but not yet signed.
//!
//! # Durability and recovery
//! - Appends are buffered; a record is durable once [`AuditLog::sync`] returned (the
//!   writer acknowledges only then). Starting a segment fsyncs the previous one, and
//!   the next `sync` fsyncs the directory.
//! - A batch is written whole or not at all: its last record carries the batch-end flag
//!   and batches never span segments. On open, the last segment is truncated back to
//!   the end of its last complete batch, which removes a torn record (crash mid-write),
//!   garbage after it, and a half-written batch alike (logged as a warning with the
//!   byte count). The batch-key table (key -> seqs, held in memory for the retained
//!   records) is rebuilt from the records; an empty key is never deduplicated.
//! - Open refuses ([`AuditError::Corrupt`]) rather than repairs damage that no crash
//!   explains: a damaged older segment, a missing segment, or missing records that a
//!   signed checkpoint covers.
//! - Retention ([`AuditLog::apply_retention`]) removes whole segments, after signing a
//!   checkpoint that records the new oldest seq; open finishes an interrupted removal.
//!   Any other removal fails verification.

mod checkpoint;
mod error;
mod log;
mod reader;
mod record;
mod segment;
mod verify;
mod writer;

#[cfg(test)]
mod tests;

pub use checkpoint::{Checkpoint, PUBLIC_KEY_LEN, SIGNATURE_LEN, parse_public_key};
pub use error::{AuditError, VerifyProblem};
pub use log::{AuditLog, AuditOptions, unix_nanos};
pub use reader::{AuditReader, read_records};
pub use record::{AuditRecord, MAX_FIELD_LEN, MAX_LINE_LEN, ZERO_HASH};
pub use verify::{CheckpointReport, SegmentReport, VerifyProgress, VerifyReport, verify};
pub use writer::{AppendOutcome, AuditWriter, QUEUE_CAPACITY, WriterStats};

/// The first seq of each segment file, oldest first.
pub fn segment_first_seqs(data_dir: &std::path::Path) -> Result<Vec<u64>, AuditError> {
    let paths = segment::AuditPaths::new(data_dir);
    Ok(segment::list_segments(&paths)?
        .into_iter()
        .map(|(first, _)| first)
        .collect())
}
