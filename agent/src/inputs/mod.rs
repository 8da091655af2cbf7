//! Sources of lines. Each input reads raw lines, enriches them ([`crate::enrich`]) and
//! sends them to the batcher over one bounded channel, so a full channel (the batcher
//! blocked on a full buffer) stops the inputs from reading: backpressure, not loss.
//!
//! - [`socket`]: newline-delimited lines over TCP and Unix sockets.
//! - [`file`]: tailing files, with read positions in [`positions`].
//! - [`spill`]: the SDK's spill files, tailed by [`file`] and removed once acknowledged.
//! - [`syslog`]: syslog over TCP (RFC 5424 and 3164, octet-counted or newline framing).
//! - [`lines`]: the line splitter both share (size limit, CRLF left to the decoder).
//! - [`connection`]: the read loop of every connection input (socket and syslog).
//!
//! At shutdown every input stops reading and drops its sender; the batcher drains what is
//! in the channel. A socket line still in the kernel's buffers at a crash is lost to the
//! agent: TCP has no per-line acknowledgement, so resending it is the sender's job.

pub(crate) mod connection;
pub(crate) mod file;
pub(crate) mod lines;
pub(crate) mod positions;
pub(crate) mod socket;
pub(crate) mod spill;
pub(crate) mod syslog;

use positions::FilePosition;

/// One enriched line on its way to the batcher.
#[derive(Debug)]
pub(crate) struct InputLine {
    /// The encoded event, without newline.
    pub(crate) line: String,
    /// For file lines: where reading resumes once this line is durable in the buffer.
    pub(crate) position: Option<FilePosition>,
    /// The batching lane of the line's source ([`crate::batch::lane_of`]).
    pub(crate) lane: usize,
}
