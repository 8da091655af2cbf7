//! The agent's disk buffer: batches wait here between batching and forwarding, and are
//! deleted only after the collector acknowledged them.
//!
//! # Contract
//!
//! - **Delete only after ack.** A record leaves the disk only when it is done: acknowledged
//!   with [`DiskBuffer::ack`], or dropped on purpose with
//!   [`DiskBuffer::drop_oldest_unacked`]. The ledger is made durable *before* any segment
//!   file is unlinked.
//! - **Nothing is lost across kill -9 at any instant.** Every record a reopened buffer
//!   finds complete (length and CRC check) is kept. A torn or corrupt tail of the last
//!   segment is cut off with a warning naming the file, offset and bytes dropped; nothing
//!   before it is touched.
//! - **Re-delivery after reopen.** After [`DiskBuffer::open`], every record that is not
//!   done is handed out again by [`DiskBuffer::next_unsent`]; a record acked before the
//!   crash is never handed out again.
//! - **Only durable records are handed out.** `next_unsent` returns a record only once it
//!   has been fsynced (its ID is at most [`DiskBuffer::durable_id`]). So a record ID the
//!   collector has seen always survives a crash or power loss and is never reused for
//!   other content, which keeps the idempotency key `"{agent_id}-{record_id}"` sound.
//!
//! # What is durable when
//!
//! [`DiskBuffer::append`] writes the framed record to the segment file at once (write(2)),
//! so it survives the process being killed, but it survives power loss only once fsynced.
//! fsync happens:
//! - inside `append` when the configured fsync interval is zero;
//! - in [`DiskBuffer::maybe_sync`] once the oldest unsynced append is an interval old
//!   (the async agent calls it at [`DiskBuffer::sync_deadline`], e.g. with
//!   `tokio::time::sleep_until`, from a blocking-capable task);
//! - in [`DiskBuffer::flush_and_sync`] (shutdown, or when the caller wants it now), when
//!   a segment is full and a new one starts, and on open;
//! - best effort when the buffer is dropped.
//!
//! [`DiskBuffer::ack`] writes the ledger durably before it returns.
//!
//! # On-disk layout
//!
//! ```text
//! DIR/buffer/
//!   segment-00000000000000000000.buf   oldest segment (20-digit sequence number)
//!   segment-00000000000000000001.buf   ... the last one is the one being appended to
//!   ledger.json                        done IDs: {"version":1,"done_through":N,"acked":[..]}
//!   *.tmp                              a crash leftover; deleted on open
//!   *.corrupt                          a segment whose header was unreadable; kept, never read
//!   quarantine/segment-N.buf(.json)    a segment sealed with a key that is not configured,
//!                                      and a note of its pending records (see `quarantine`)
//! ```
//!
//! A segment starts with a 64-byte header (integers little endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `SPOORBUF` |
//! | 8 | 2 | format version, `1` |
//! | 10 | 2 | flags: bit 0 = records are encrypted; other bits must be zero |
//! | 12 | 16 | key ID (zero when plain) |
//! | 28 | 12 | nonce prefix (random when encrypted, zero when plain) |
//! | 40 | 8 | ID of the segment's first record |
//! | 48 | 12 | reserved, zero |
//! | 60 | 4 | CRC32 of bytes 0..60 |
//!
//! Records follow back to back:
//!
//! | size | field |
//! |---|---|
//! | 4 | payload length `n` (u32, 16 ..= 2^30) |
//! | 4 | CRC32 (IEEE) of the payload |
//! | n | payload: record ID (u64), append time (u64, ms since the Unix epoch), content |
//!
//! The content is the batch the caller passed (newline-joined logfmt lines), sealed by the
//! [`RecordCipher`] named by the header flags; [`PlainCipher`] stores it as is. Record IDs
//! start at 1 and increase by one across segments. IDs of appends that failed are reused;
//! IDs are never reused once a record was handed out.
//!
//! # Recovery on open
//!
//! Segments are scanned in order and every record is checked. In the last segment, the
//! first invalid byte starts the torn tail, which is truncated (counted in
//! [`BufferStats::torn_tail_bytes_dropped`]). In an earlier segment (which was fsynced when
//! it was finished, so only media corruption gets there) the rest of the segment after a
//! bad record is skipped with a warning and counted in [`BufferStats::corrupt_records`];
//! no resync is attempted, and the damaged segment is deleted like any other once its
//! readable records are done. A segment with an unreadable header is renamed to `*.corrupt`.
//! A segment sealed with a key the cipher does not have is moved into `quarantine/` with a
//! note of its pending records, logged with its path and key ID, and the buffer carries on
//! without it; [`DiskBuffer::restore_quarantined`] takes its records back once the key is
//! configured. A record that fails authentication when it is handed out is logged with
//! its segment and offset, skipped and counted ([`BufferStats::undecryptable_records`]).
//! Segments whose records are all done are deleted (unless
//! [`BufferConfig::keep_from_id`] keeps them). A file of an unknown format version
//! stops the open with [`BufferError::UnsupportedFormat`] instead of being touched.
//!
//! # Ownership
//!
//! One [`DiskBuffer`] owns the directory; the writer and reader are one struct, so the
//! agent wraps it in a mutex or owns it in one task. Two processes must not open the same
//! directory (not checked here). All calls do blocking file I/O: from async code call them
//! in `spawn_blocking` or a dedicated thread.

mod crypto;
mod error;
mod ledger;
mod quarantine;
mod reader;
mod record;
mod writer;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // Tests may unwrap.
mod tests;

use std::collections::VecDeque;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use crypto::{CipherError, CipherParams, PlainCipher, RecordCipher};
pub use error::BufferError;
pub use quarantine::QUARANTINE_DIR;

use ledger::{Ledger, sync_dir};
use reader::{ReadError, RecordMeta, Scan, read_record, scan_segment};
use record::{HEADER_LEN, HeaderError, SegmentHeader, encode_frame, frame_len};
use writer::{SegmentIo, SegmentWriter, StdIo};

/// Name of the buffer's folder inside the agent's data directory.
pub const BUFFER_DIR: &str = "buffer";

/// Sizes and fsync policy of a [`DiskBuffer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufferConfig {
    /// A segment is finished (fsynced, and a new one started) before it would grow past
    /// this. Also bounds one record. Default 16 MiB.
    pub max_segment_bytes: u64,
    /// `append` fails with [`BufferError::Full`] rather than grow the buffer's files past
    /// this. Default 1 GiB.
    pub max_total_bytes: u64,
    /// Appends are fsynced at most this long after they are written (group commit).
    /// Zero fsyncs inside every `append`. Default 100 ms.
    pub fsync_interval: Duration,
    /// Finished segments holding a record with an ID at or above this one are kept even
    /// when all their records are done, until [`DiskBuffer::keep_from`] moves the mark.
    /// The agent keeps records whose file read positions are not yet in `positions.json`
    /// this way, so a restart can still read those positions from the records. Default
    /// `None`: done segments are deleted at once.
    pub keep_from_id: Option<u64>,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            max_segment_bytes: 16 << 20,
            max_total_bytes: 1 << 30,
            fsync_interval: Duration::from_millis(100),
            keep_from_id: None,
        }
    }
}

/// A snapshot of the buffer for metrics and the admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct BufferStats {
    /// Bytes of all segment files.
    pub bytes: u64,
    /// Number of segment files.
    pub segments: usize,
    /// Records not yet done (acknowledged or dropped).
    pub records_unacked: u64,
    /// When the oldest record not yet done was appended.
    pub oldest_unacked: Option<SystemTime>,
    /// Bytes cut from torn segment tails since open.
    pub torn_tail_bytes_dropped: u64,
    /// Corrupt records found since open (each may have cost the rest of its segment).
    pub corrupt_records: u64,
    /// Records dropped unacknowledged by `drop_oldest_unacked` since open.
    pub records_dropped: u64,
    /// Records skipped since open because they failed authentication (also counted in
    /// `corrupt_records`).
    pub undecryptable_records: u64,
    /// Segments in `quarantine/`, waiting for their key.
    pub quarantined_segments: usize,
    /// Pending records in those segments.
    pub quarantined_records: u64,
    /// Records restored from quarantine since open.
    pub restored_records: u64,
    /// Highest record ID known to be fsynced.
    pub durable_id: u64,
    /// The ID the next append gets.
    pub next_record_id: u64,
}

/// One segment file and the records found in it.
#[derive(Debug)]
struct Segment {
    path: PathBuf,
    header: SegmentHeader,
    records: Vec<RecordMeta>,
    /// Bytes of the file.
    len: u64,
}

impl Segment {
    fn last_id(&self) -> Option<u64> {
        self.records.last().map(|r| r.id)
    }
}

/// The disk buffer. See the [module docs](self) for the contract and the file format.
pub struct DiskBuffer {
    dir: PathBuf,
    config: BufferConfig,
    io: Arc<dyn SegmentIo>,
    cipher: Arc<dyn RecordCipher>,
    /// Finished segments, oldest first.
    sealed: VecDeque<Segment>,
    /// The segment being appended to (always the newest).
    active: Segment,
    active_seq: u64,
    writer: SegmentWriter,
    ledger: Ledger,
    next_id: u64,
    durable_id: u64,
    /// Every ID up to this one was handed out (or skipped) since open.
    handed_out_through: u64,
    read_handle: Option<(PathBuf, File)>,
    /// Since when acks marked by [`DiskBuffer::ack_deferred`] wait to be persisted.
    acks_pending_since: Option<Instant>,
    torn_tail_bytes_dropped: u64,
    corrupt_records: u64,
    records_dropped: u64,
    undecryptable_records: u64,
    restored_records: u64,
    /// Segments in quarantine (see [`quarantine`]).
    quarantined: Vec<quarantine::Quarantined>,
}

impl std::fmt::Debug for DiskBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiskBuffer")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("next_id", &self.next_id)
            .field("durable_id", &self.durable_id)
            .finish_non_exhaustive()
    }
}

fn segment_name(seq: u64) -> String {
    format!("segment-{seq:020}.buf")
}

/// Sequence number of a segment file name, also for `*.corrupt` ones (so numbers are not
/// reused).
fn parse_segment_name(name: &str) -> Option<(u64, bool)> {
    let rest = name.strip_prefix("segment-")?;
    let digits = rest.get(..20)?;
    let seq = digits
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| digits.parse().ok())??;
    match &rest[20..] {
        ".buf" => Some((seq, true)),
        _ => Some((seq, false)),
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl DiskBuffer {
    /// Opens (or creates) the buffer in `data_dir/buffer` with plain records, recovering
    /// from whatever a crash left (see the module docs).
    pub fn open(data_dir: impl AsRef<Path>, config: BufferConfig) -> Result<Self, BufferError> {
        Self::open_with_cipher(data_dir, config, Arc::new(PlainCipher))
    }

    /// Like [`DiskBuffer::open`], sealing new records with `cipher`. An existing segment
    /// that needs a key `cipher` lacks is moved into quarantine (see the module docs).
    pub fn open_with_cipher(
        data_dir: impl AsRef<Path>,
        config: BufferConfig,
        cipher: Arc<dyn RecordCipher>,
    ) -> Result<Self, BufferError> {
        Self::open_with_io(data_dir.as_ref(), config, cipher, Arc::new(StdIo))
    }

    pub(crate) fn open_with_io(
        data_dir: &Path,
        config: BufferConfig,
        cipher: Arc<dyn RecordCipher>,
        io: Arc<dyn SegmentIo>,
    ) -> Result<Self, BufferError> {
        if config.max_segment_bytes < HEADER_LEN + frame_len(0) {
            return Err(BufferError::Config(format!(
                "max_segment_bytes {} is too small for one record",
                config.max_segment_bytes
            )));
        }
        let dir = data_dir.join(BUFFER_DIR);
        fs::create_dir_all(&dir).map_err(|e| BufferError::io(&dir, e))?;
        let ledger = Ledger::load(&dir)?;

        // Find segment files; remove leftovers of interrupted segment creation.
        let mut seqs = Vec::new();
        let mut max_seq = None;
        for entry in fs::read_dir(&dir).map_err(|e| BufferError::io(&dir, e))? {
            let entry = entry.map_err(|e| BufferError::io(&dir, e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with("segment-") && name.ends_with(".buf.tmp") {
                tracing::warn!(path = %entry.path().display(), "Removed a segment left half-created by a crash.");
                fs::remove_file(entry.path()).map_err(|e| BufferError::io(entry.path(), e))?;
                continue;
            }
            if let Some((seq, live)) = parse_segment_name(name) {
                max_seq = max_seq.max(Some(seq));
                if live {
                    seqs.push(seq);
                }
            }
        }
        seqs.sort_unstable();

        // (sequence, segment, whether the file ends with its last valid record)
        let mut segments: Vec<(u64, Segment, bool)> = Vec::new();
        let mut torn = 0;
        let mut corrupt = 0;
        let mut last_id = 0;
        // Highest record ID of a segment quarantined now: never reused.
        let mut quarantined_through = 0;
        for (i, &seq) in seqs.iter().enumerate() {
            let is_last = i + 1 == seqs.len();
            let path = dir.join(segment_name(seq));
            match scan_segment(&path, last_id).map_err(|e| BufferError::io(&path, e))? {
                Scan::BadHeader {
                    error: HeaderError::Unsupported { version, flags },
                    ..
                } => {
                    return Err(BufferError::UnsupportedFormat {
                        path,
                        version,
                        flags,
                    });
                }
                Scan::BadHeader { file_len, error } if is_last && file_len <= HEADER_LEN => {
                    // Segments are created via rename, so this needs outside help; the
                    // file holds no record either way.
                    tracing::warn!(path = %path.display(), bytes_dropped = file_len, %error, "Removed a last segment with a torn header.");
                    fs::remove_file(&path).map_err(|e| BufferError::io(&path, e))?;
                    torn += file_len;
                }
                Scan::BadHeader { file_len, error } => {
                    let aside = path.with_extension("buf.corrupt");
                    tracing::warn!(path = %path.display(), moved_to = %aside.display(), bytes = file_len, %error, "Segment header unreadable; moved the segment aside, its records are lost.");
                    fs::rename(&path, &aside).map_err(|e| BufferError::io(&path, e))?;
                    corrupt += 1;
                }
                Scan::Ok {
                    header,
                    records,
                    valid_end,
                    file_len,
                    stop,
                } => {
                    if !cipher.can_open(&header.cipher) {
                        let key_id = header.cipher.key_id_hex();
                        if let Some(last) = records.last() {
                            last_id = last.id;
                        }
                        let highest = records
                            .last()
                            .map_or(header.first_record_id.saturating_sub(1), |r| r.id);
                        quarantined_through = quarantined_through.max(highest);
                        let pending: Vec<u64> = records
                            .iter()
                            .map(|r| r.id)
                            .filter(|&id| !ledger.is_done(id))
                            .collect();
                        if pending.is_empty() {
                            tracing::info!(path = %path.display(), key_id, "Removed a segment sealed with a key that is not configured; all its records were acknowledged.");
                            fs::remove_file(&path).map_err(|e| BufferError::io(&path, e))?;
                            continue;
                        }
                        let note = quarantine::Note {
                            version: 1,
                            key_id: key_id.clone(),
                            pending: pending.clone(),
                        };
                        let moved_to = quarantine::quarantine(&dir, &path, &note)?;
                        tracing::error!(
                            path = %path.display(),
                            moved_to = %moved_to.display(),
                            key_id,
                            records = pending.len(),
                            "Segment is sealed with a key that is not configured: moved to quarantine, the rest of the buffer is delivered. Configure the key (encryption.key_file or encryption.old_key_files) and restart to deliver it."
                        );
                        continue;
                    }
                    let mut len = file_len;
                    let mut clean = true;
                    if let Some(stop) = stop {
                        let dropped = file_len - valid_end;
                        if is_last {
                            tracing::warn!(path = %path.display(), offset = valid_end, bytes_dropped = dropped, reason = %stop, "Truncated the torn tail of the last segment.");
                            let f = fs::OpenOptions::new()
                                .write(true)
                                .open(&path)
                                .map_err(|e| BufferError::io(&path, e))?;
                            f.set_len(valid_end)
                                .and_then(|()| f.sync_all())
                                .map_err(|e| BufferError::io(&path, e))?;
                            torn += dropped;
                            len = valid_end;
                        } else {
                            tracing::warn!(path = %path.display(), offset = valid_end, bytes_skipped = dropped, reason = %stop, "Corrupt record in a finished segment; skipping the rest of that segment.");
                            corrupt += 1;
                            clean = false;
                        }
                    }
                    if let Some(last) = records.last() {
                        last_id = last.id;
                    }
                    segments.push((
                        seq,
                        Segment {
                            path,
                            header,
                            records,
                            len,
                        },
                        clean,
                    ));
                }
            }
        }

        let highest_seen = segments
            .iter()
            .map(|(_, s, _)| {
                s.last_id()
                    .unwrap_or(0)
                    .max(s.header.first_record_id.saturating_sub(1))
            })
            .max()
            .unwrap_or(0);
        let next_id = highest_seen.max(ledger.highest()).max(quarantined_through) + 1;

        // The last segment becomes the active one (fsynced, so all found records are
        // durable); without one, or when it ends in skipped bytes (its successor's header
        // was unreadable), start a fresh segment.
        // Only a segment sealed the way new ones are (same key, or plain when the cipher
        // is plain) is appended to; after turning encryption on or off, or a key rotation,
        // new records go to a new segment.
        let fresh = cipher.new_segment();
        let resumable = segments.last().is_some_and(|(_, s, clean)| {
            *clean
                && s.header.cipher.encrypted == fresh.encrypted
                && s.header.cipher.key_id == fresh.key_id
        });
        let (active_seq, active, writer) = match if resumable { segments.pop() } else { None } {
            Some((seq, seg, _)) => {
                let f = File::open(&seg.path).map_err(|e| BufferError::io(&seg.path, e))?;
                f.sync_all().map_err(|e| BufferError::io(&seg.path, e))?;
                let writer = SegmentWriter::resume(&*io, &seg.path, seg.len)?;
                (seq, seg, writer)
            }
            None => {
                let seq = max_seq.map_or(0, |s| s + 1);
                let (seg, writer) = new_segment(&dir, seq, next_id, &*io, &*cipher)?;
                (seq, seg, writer)
            }
        };

        let mut buffer = DiskBuffer {
            dir,
            config,
            io,
            cipher,
            sealed: segments.into_iter().map(|(_, s, _)| s).collect(),
            active,
            active_seq,
            writer,
            ledger,
            next_id,
            durable_id: next_id - 1,
            handed_out_through: 0,
            read_handle: None,
            acks_pending_since: None,
            torn_tail_bytes_dropped: torn,
            corrupt_records: corrupt,
            records_dropped: 0,
            undecryptable_records: 0,
            restored_records: 0,
            quarantined: Vec::new(),
        };
        buffer.persist_ledger()?;
        buffer.release_done_segments();
        Ok(buffer)
    }

    /// Appends one batch and returns its record ID. The batch is in the file when this
    /// returns (and fsynced too when the fsync interval is zero). On error nothing was
    /// added: [`BufferError::Full`] asks the caller to apply its overflow policy,
    /// [`BufferError::DiskFull`] to retry later.
    pub fn append(&mut self, batch: &[u8]) -> Result<u64, BufferError> {
        let id = self.next_id;
        let mut sealed = self.cipher.seal(&self.active.header.cipher, id, batch);
        let mut len = frame_len(sealed.len());
        let max_record = self.config.max_segment_bytes - HEADER_LEN;
        if len > max_record {
            return Err(BufferError::RecordTooLarge {
                len,
                max: max_record,
            });
        }
        let rotate = !self.active.records.is_empty()
            && self.active.len + len > self.config.max_segment_bytes;
        let needed = len + if rotate { HEADER_LEN } else { 0 };
        let used = self.bytes();
        if used + needed > self.config.max_total_bytes {
            return Err(BufferError::Full {
                needed,
                used,
                max: self.config.max_total_bytes,
            });
        }
        if rotate {
            self.rotate()?;
            sealed = self.cipher.seal(&self.active.header.cipher, id, batch);
            len = frame_len(sealed.len());
        }
        let appended_at_ms = now_ms();
        let frame = encode_frame(id, appended_at_ms, &sealed);
        let offset = self.writer.written_end();
        let sync = self.config.fsync_interval.is_zero();
        self.writer
            .append(&frame, sync)
            .map_err(|e| BufferError::io(self.writer.path(), e))?;
        self.active.records.push(RecordMeta {
            id,
            offset,
            payload_len: u32::try_from(len - record::FRAME_PREFIX_LEN).unwrap_or(u32::MAX),
            appended_at_ms,
        });
        self.active.len = self.writer.written_end();
        self.next_id += 1;
        if sync {
            self.durable_id = id;
        }
        tracing::trace!(record_id = id, bytes = len, "Batch appended.");
        Ok(id)
    }

    /// Fsyncs if the oldest unsynced append is at least one fsync interval older than
    /// `now` (or a failed write is waiting for repair). Returns whether it synced.
    pub fn maybe_sync(&mut self, now: Instant) -> Result<bool, BufferError> {
        match self.sync_deadline() {
            Some(deadline) if now >= deadline => {
                self.flush_and_sync()?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// When [`DiskBuffer::maybe_sync`] will next have work; `None` while everything
    /// written is durable.
    pub fn sync_deadline(&self) -> Option<Instant> {
        let acks = self
            .acks_pending_since
            .map(|t| t + self.config.fsync_interval);
        if !self.writer.needs_sync() {
            return acks;
        }
        let writes = self
            .writer
            .pending_since()
            .map_or_else(Instant::now, |t| t + self.config.fsync_interval);
        Some(acks.map_or(writes, |a| a.min(writes)))
    }

    /// Fsyncs everything appended so far (and the ledger, if an update failed earlier).
    /// Afterwards [`DiskBuffer::durable_id`] covers every appended record.
    pub fn flush_and_sync(&mut self) -> Result<(), BufferError> {
        self.writer
            .sync()
            .map_err(|e| BufferError::io(self.writer.path(), e))?;
        self.durable_id = self.next_id - 1;
        if self.acks_pending_since.is_none() && !self.ledger.is_dirty() {
            return Ok(());
        }
        self.persist_ledger()?;
        self.acks_pending_since = None;
        self.release_done_segments();
        Ok(())
    }

    /// The highest record ID known to be fsynced (0 when none).
    pub fn durable_id(&self) -> u64 {
        self.durable_id
    }

    /// Hands out the next durable record that is not done and was not handed out since
    /// open, as `(record_id, content)`. `Ok(None)` means nothing more right now (more may
    /// come after appends or a sync). A record found corrupt here is skipped with a
    /// warning and counted.
    pub fn next_unsent(&mut self) -> Result<Option<(u64, Vec<u8>)>, BufferError> {
        loop {
            let Some((seg_index, meta)) = self.first_after(self.handed_out_through) else {
                return Ok(None);
            };
            if meta.id > self.durable_id {
                return Ok(None);
            }
            if self.ledger.is_done(meta.id) {
                self.handed_out_through = meta.id;
                continue;
            }
            let segment = self.segment(seg_index);
            let path = segment.path.clone();
            let params = segment.header.cipher;
            let file = match &mut self.read_handle {
                Some((p, f)) if *p == path => f,
                slot => {
                    let f = File::open(&path).map_err(|e| BufferError::io(&path, e))?;
                    &mut slot.insert((path.clone(), f)).1
                }
            };
            let problem = match read_record(file, &meta) {
                Ok(sealed) => match self.cipher.open(&params, meta.id, &sealed) {
                    Ok(content) => {
                        self.handed_out_through = meta.id;
                        return Ok(Some((meta.id, content)));
                    }
                    Err(e) => {
                        self.undecryptable_records += 1;
                        // The segment is deleted once its other records are acknowledged;
                        // keep a copy of it for whoever investigates.
                        match quarantine::keep_damaged_copy(&self.dir, &path) {
                            Ok(Some(copy)) => {
                                tracing::warn!(path = %path.display(), copy = %copy.display(), "Kept a copy of a segment holding a record that failed authentication.")
                            }
                            Ok(None) => {}
                            Err(e) => {
                                tracing::warn!(path = %path.display(), error = %e, "Could not keep a copy of a damaged segment.")
                            }
                        }
                        format!("cannot open sealed record: {e}")
                    }
                },
                Err(ReadError::Io(e)) => return Err(BufferError::io(&path, e)),
                Err(ReadError::Corrupt(reason)) => reason,
            };
            tracing::warn!(path = %path.display(), offset = meta.offset, record_id = meta.id, reason = %problem, "Skipping a record that became unreadable.");
            self.corrupt_records += 1;
            self.handed_out_through = meta.id;
            self.ledger.mark(meta.id);
        }
    }

    /// Takes back the pending records of quarantined segments whose key the cipher now
    /// has: each is read, opened, passed through `transform` and appended as a new record;
    /// once those are fsynced the quarantined file is deleted. A record that fails
    /// authentication is logged with its segment and offset and skipped. Segments still
    /// without their key stay, logged and counted in [`BufferStats::quarantined_segments`].
    /// Returns the number of records restored.
    pub fn restore_quarantined(
        &mut self,
        mut transform: impl FnMut(Vec<u8>) -> Vec<u8>,
    ) -> Result<u64, BufferError> {
        let mut waiting = Vec::new();
        let mut restored = 0;
        for q in quarantine::list(&self.dir)? {
            let (header, records) = match scan_segment(&q.path, 0)
                .map_err(|e| BufferError::io(&q.path, e))?
            {
                Scan::Ok {
                    header, records, ..
                } => (header, records),
                Scan::BadHeader { error, .. } => {
                    tracing::warn!(path = %q.path.display(), %error, "Quarantined segment has an unreadable header; left as it is.");
                    continue;
                }
            };
            if !self.cipher.can_open(&header.cipher) {
                let key_id = header.cipher.key_id_hex();
                tracing::warn!(path = %q.path.display(), key_id, records = q.pending.as_ref().map_or(records.len(), Vec::len), "A quarantined segment still waits for its key.");
                let mut q = q;
                q.pending
                    .get_or_insert_with(|| records.iter().map(|r| r.id).collect());
                waiting.push(q);
                continue;
            }
            let wanted: Vec<RecordMeta> = records
                .iter()
                .filter(|r| q.pending.as_ref().is_none_or(|p| p.contains(&r.id)))
                .copied()
                .collect();
            // Room for all of it, or none is restored now (a half-restored segment would
            // be restored again, twice, on the next start).
            let needed: u64 = wanted
                .iter()
                .map(|r| frame_len(r.payload_len as usize) + HEADER_LEN)
                .sum();
            if self.bytes() + needed > self.config.max_total_bytes {
                tracing::warn!(path = %q.path.display(), needed, "Not enough room in the buffer to restore a quarantined segment now; it stays in quarantine until a later start.");
                let mut q = q;
                q.pending
                    .get_or_insert_with(|| wanted.iter().map(|r| r.id).collect());
                waiting.push(q);
                continue;
            }
            let mut file = File::open(&q.path).map_err(|e| BufferError::io(&q.path, e))?;
            let mut from_this = 0u64;
            for meta in &wanted {
                let problem = match read_record(&mut file, meta) {
                    Ok(sealed) => match self.cipher.open(&header.cipher, meta.id, &sealed) {
                        Ok(content) => {
                            self.append(&transform(content))?;
                            from_this += 1;
                            continue;
                        }
                        Err(e) => {
                            self.undecryptable_records += 1;
                            e.to_string()
                        }
                    },
                    Err(ReadError::Io(e)) => return Err(BufferError::io(&q.path, e)),
                    Err(ReadError::Corrupt(reason)) => reason,
                };
                self.corrupt_records += 1;
                tracing::warn!(path = %q.path.display(), offset = meta.offset, record_id = meta.id, reason = %problem, "Skipping a quarantined record that cannot be read.");
            }
            self.flush_and_sync()?;
            quarantine::remove(&self.dir, &q)?;
            restored += from_this;
            tracing::info!(path = %q.path.display(), records = from_this, "Restored the records of a quarantined segment now that its key is configured.");
        }
        self.quarantined = waiting;
        self.restored_records += restored;
        Ok(restored)
    }

    /// Bytes of all segment files (cheap, unlike [`DiskBuffer::stats`]).
    pub fn used_bytes(&self) -> u64 {
        self.bytes()
    }

    /// The configured size cap ([`BufferConfig::max_total_bytes`]).
    pub fn max_bytes(&self) -> u64 {
        self.config.max_total_bytes
    }

    /// Whether every record up to `id` is durably done: acknowledged (or dead-lettered,
    /// or dropped), and the ledger saying so is on disk.
    pub fn all_done_through(&self, id: u64) -> bool {
        !self.ledger.is_dirty() && self.ledger.done_through() >= id
    }

    /// Moves the keep mark (see [`BufferConfig::keep_from_id`]) and deletes the finished
    /// segments it no longer keeps, if all their records are done.
    pub fn keep_from(&mut self, id: Option<u64>) {
        self.config.keep_from_id = id;
        self.release_done_segments();
    }

    /// Contents of every record with an ID above `id` that is still on disk, done or not,
    /// oldest first (for recovering per-record metadata after a restart). A record that
    /// cannot be read is skipped with a warning.
    pub fn contents_after(&mut self, id: u64) -> Result<Vec<(u64, Vec<u8>)>, BufferError> {
        let mut out = Vec::new();
        let mut found = Vec::new();
        for s in self.segments() {
            for r in s.records.iter().filter(|r| r.id > id) {
                found.push((s.path.clone(), s.header.cipher, *r));
            }
        }
        for (path, params, meta) in found {
            let mut file = File::open(&path).map_err(|e| BufferError::io(&path, e))?;
            match read_record(&mut file, &meta) {
                Ok(sealed) => match self.cipher.open(&params, meta.id, &sealed) {
                    Ok(content) => out.push((meta.id, content)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), record_id = meta.id, error = %e, "Cannot open a sealed record.");
                    }
                },
                Err(ReadError::Io(e)) => return Err(BufferError::io(&path, e)),
                Err(ReadError::Corrupt(reason)) => {
                    tracing::warn!(path = %path.display(), record_id = meta.id, reason = %reason, "Skipping an unreadable record.");
                }
            }
        }
        Ok(out)
    }

    /// Acknowledges one record: it is done, never handed out again, and its segment is
    /// deleted once all its records are done. Durable when this returns. Acks may come in
    /// any order; unknown or repeated IDs are ignored.
    pub fn ack(&mut self, record_id: u64) -> Result<(), BufferError> {
        self.ack_many([record_id])
    }

    /// Acknowledges records in memory only; the ledger is written at the next
    /// [`DiskBuffer::maybe_sync`] (within the fsync interval), at
    /// [`DiskBuffer::flush_and_sync`], or at once when a finished segment became all done
    /// (a segment is deleted only after the ledger that allows it is durable). An ack lost
    /// to a crash costs a resend under the same idempotency key, which the collector
    /// answers as a duplicate; the forwarder uses this so that a batch's ack does not cost
    /// an fsync under the buffer's lock.
    pub fn ack_deferred(
        &mut self,
        record_ids: impl IntoIterator<Item = u64>,
    ) -> Result<(), BufferError> {
        if self.mark_acked(record_ids) && self.acks_pending_since.is_none() {
            self.acks_pending_since = Some(Instant::now());
        }
        let keep_from = self.config.keep_from_id;
        let ledger = &self.ledger;
        let releasable = self.sealed.iter().any(|s| {
            s.records.iter().all(|r| ledger.is_done(r.id))
                && keep_from.is_none_or(|k| s.last_id().is_none_or(|last| last < k))
        });
        if releasable {
            self.persist_ledger()?;
            self.acks_pending_since = None;
            self.release_done_segments();
        }
        Ok(())
    }

    /// Acknowledges several records with one ledger write.
    pub fn ack_many(
        &mut self,
        record_ids: impl IntoIterator<Item = u64>,
    ) -> Result<(), BufferError> {
        self.mark_acked(record_ids);
        self.persist_ledger()?;
        self.acks_pending_since = None;
        self.release_done_segments();
        Ok(())
    }

    /// Marks pending records acked in the ledger (in memory); whether any was.
    fn mark_acked(&mut self, record_ids: impl IntoIterator<Item = u64>) -> bool {
        let mut marked = false;
        for id in record_ids {
            if id > self.durable_id || self.ledger.is_done(id) || self.locate(id).is_none() {
                tracing::debug!(
                    record_id = id,
                    "Ignoring ack of a record that is not pending."
                );
                continue;
            }
            self.ledger.mark(id);
            marked = true;
        }
        marked
    }

    /// Drops the oldest segment that still holds records not done, acked or not, to make
    /// room (the `drop_oldest` overflow policy). Returns the bytes freed, or `None` when
    /// no record is pending. The records count as done, and the drop is logged.
    pub fn drop_oldest_unacked(&mut self) -> Result<Option<u64>, BufferError> {
        self.release_done_segments();
        let has_pending = |s: &Segment, l: &Ledger| s.records.iter().any(|r| !l.is_done(r.id));
        if !self.sealed.iter().any(|s| has_pending(s, &self.ledger)) {
            if !has_pending(&self.active, &self.ledger) {
                return Ok(None);
            }
            self.rotate()?;
        }
        let Some(index) = self
            .sealed
            .iter()
            .position(|s| has_pending(s, &self.ledger))
        else {
            return Ok(None);
        };
        let segment = &self.sealed[index];
        let mut dropped = 0u64;
        for r in &segment.records {
            if !self.ledger.is_done(r.id) {
                dropped += 1;
            }
        }
        let ids: Vec<u64> = segment.records.iter().map(|r| r.id).collect();
        for id in ids {
            self.ledger.mark(id);
        }
        self.persist_ledger()?;
        let segment = &self.sealed[index];
        let (path, bytes) = (segment.path.clone(), segment.len);
        self.close_read_handle(&path);
        fs::remove_file(&path).map_err(|e| BufferError::io(&path, e))?;
        self.sealed.remove(index);
        sync_dir(&self.dir)?;
        self.records_dropped += dropped;
        tracing::warn!(path = %path.display(), records = dropped, bytes, "Buffer full: dropped the oldest unacknowledged batches.");
        Ok(Some(bytes))
    }

    /// A snapshot of sizes and counters.
    pub fn stats(&self) -> BufferStats {
        let mut records_unacked = 0;
        let mut oldest = None;
        for r in self.segments().flat_map(|s| &s.records) {
            if !self.ledger.is_done(r.id) {
                records_unacked += 1;
                oldest.get_or_insert(r.appended_at_ms);
            }
        }
        BufferStats {
            bytes: self.bytes(),
            segments: self.sealed.len() + 1,
            records_unacked,
            oldest_unacked: oldest.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
            torn_tail_bytes_dropped: self.torn_tail_bytes_dropped,
            corrupt_records: self.corrupt_records,
            records_dropped: self.records_dropped,
            undecryptable_records: self.undecryptable_records,
            quarantined_segments: self.quarantined.len(),
            quarantined_records: self
                .quarantined
                .iter()
                .map(|q| q.pending.as_ref().map_or(0, |p| p.len() as u64))
                .sum(),
            restored_records: self.restored_records,
            durable_id: self.durable_id,
            next_record_id: self.next_id,
        }
    }

    fn segments(&self) -> impl Iterator<Item = &Segment> {
        self.sealed.iter().chain(std::iter::once(&self.active))
    }

    fn segment(&self, index: usize) -> &Segment {
        self.sealed.get(index).unwrap_or(&self.active)
    }

    fn bytes(&self) -> u64 {
        self.segments().map(|s| s.len).sum()
    }

    /// The first record with an ID above `id`, with its segment's index.
    fn first_after(&self, id: u64) -> Option<(usize, RecordMeta)> {
        self.segments().enumerate().find_map(|(i, s)| {
            let at = s.records.partition_point(|r| r.id <= id);
            s.records.get(at).map(|r| (i, *r))
        })
    }

    fn locate(&self, id: u64) -> Option<RecordMeta> {
        self.segments().find_map(|s| {
            s.records
                .binary_search_by_key(&id, |r| r.id)
                .ok()
                .map(|i| s.records[i])
        })
    }

    /// Raises the ledger's low-water mark below the oldest record not done, then writes
    /// it if it changed.
    fn persist_ledger(&mut self) -> Result<(), BufferError> {
        let oldest_pending = self
            .segments()
            .flat_map(|s| &s.records)
            .find(|r| !self.ledger.is_done(r.id))
            .map(|r| r.id);
        // Everything below the oldest pending record is done or gone. With nothing
        // pending, every record that exists is done, and those were all handed out, so
        // all are durable: `next_id - 1` covers no record that could still vanish.
        let through = oldest_pending.map_or(self.next_id - 1, |id| id - 1);
        self.ledger.raise_to(through);
        self.ledger.store()
    }

    /// Deletes finished segments whose records are all done. The ledger must be durable
    /// first (callers persist it); a failed unlink is retried on a later call.
    fn release_done_segments(&mut self) {
        if self.ledger.is_dirty() {
            return;
        }
        let mut removed = false;
        let ledger = &self.ledger;
        let read_handle = &mut self.read_handle;
        let keep_from = self.config.keep_from_id;
        self.sealed.retain(|s| {
            if !s.records.iter().all(|r| ledger.is_done(r.id)) {
                return true;
            }
            if keep_from.is_some_and(|k| s.last_id().is_some_and(|last| last >= k)) {
                return true;
            }
            // An open descriptor would keep the deleted file's blocks allocated.
            if read_handle.as_ref().is_some_and(|(p, _)| *p == s.path) {
                *read_handle = None;
            }
            match fs::remove_file(&s.path) {
                Ok(()) => {
                    tracing::debug!(path = %s.path.display(), bytes = s.len, "Deleted a fully acknowledged segment.");
                    removed = true;
                    false
                }
                Err(e) => {
                    tracing::warn!(path = %s.path.display(), error = %e, "Could not delete a fully acknowledged segment; will retry.");
                    true
                }
            }
        });
        if removed && let Err(e) = sync_dir(&self.dir) {
            // Not fatal: a segment that reappears after a crash is all done and is
            // deleted again on open.
            tracing::warn!(error = %e, "Could not fsync the buffer directory after deleting segments.");
        }
    }

    fn close_read_handle(&mut self, path: &Path) {
        if self.read_handle.as_ref().is_some_and(|(p, _)| p == path) {
            self.read_handle = None;
        }
    }

    /// Finishes the active segment (fsync) and starts a new one.
    fn rotate(&mut self) -> Result<(), BufferError> {
        self.flush_and_sync()?;
        let seq = self.active_seq + 1;
        let (segment, writer) =
            new_segment(&self.dir, seq, self.next_id, &*self.io, &*self.cipher)?;
        let old = std::mem::replace(&mut self.active, segment);
        self.sealed.push_back(old);
        self.active_seq = seq;
        self.writer = writer;
        self.release_done_segments();
        Ok(())
    }
}

fn new_segment(
    dir: &Path,
    seq: u64,
    first_record_id: u64,
    io: &dyn SegmentIo,
    cipher: &dyn RecordCipher,
) -> Result<(Segment, SegmentWriter), BufferError> {
    let path = dir.join(segment_name(seq));
    let header = SegmentHeader {
        cipher: cipher.new_segment(),
        first_record_id,
    };
    let writer = SegmentWriter::create(io, &path, &header)?;
    Ok((
        Segment {
            path,
            header,
            records: Vec::new(),
            len: HEADER_LEN,
        },
        writer,
    ))
}

impl Drop for DiskBuffer {
    /// Best-effort fsync, so a clean shutdown that forgot `flush_and_sync` loses nothing
    /// on power loss either.
    fn drop(&mut self) {
        if let Err(e) = self.flush_and_sync() {
            tracing::warn!(error = %e, "Could not fsync the disk buffer on close.");
        }
    }
}
