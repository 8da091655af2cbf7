//! [`AuditLog`]: the segmented append-only log on disk. It appends whole batches,
//! fsyncs on request, recovers at open (torn tail and half-written batch removed, head
//! and batch-key table rebuilt), signs checkpoints and applies retention.
//!
//! One `AuditLog` owns the directory; it is not `Sync`-shared but driven by one owner
//! (usually the group-commit [`AuditWriter`](super::AuditWriter) thread).

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::checkpoint::{self, Checkpoint, PUBLIC_KEY_LEN, Signer, Unsigned};
use super::error::{AuditError, IoContext};
use super::record::{self, HASH_LEN, HEADER_LEN, RecordFields, ZERO_HASH};
use super::segment::{AuditPaths, Frames, Item, list_segments, read_file, sync_dir};

/// Buffered record bytes are written to the segment file once they exceed this.
const WRITE_BUFFER_BYTES: usize = 256 * 1024;

/// Settings of an [`AuditLog`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditOptions {
    /// A new segment is started before a batch that would make the current one larger
    /// than this (a single batch is never split, so a segment can exceed it by one batch).
    pub segment_max_bytes: u64,
    /// Sign a checkpoint once this many records are unsigned.
    pub checkpoint_every_records: u64,
    /// Sign a checkpoint once unsigned records are this old.
    pub checkpoint_interval: Duration,
}

impl Default for AuditOptions {
    fn default() -> AuditOptions {
        AuditOptions {
            segment_max_bytes: 64 * 1024 * 1024,
            checkpoint_every_records: 10_000,
            checkpoint_interval: Duration::from_secs(10),
        }
    }
}

/// Nanoseconds since the Unix epoch (negative before it, saturating far out).
pub fn unix_nanos(t: SystemTime) -> i64 {
    let n = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    };
    n.clamp(i64::MIN as i128, i64::MAX as i128) as i64
}

/// The append-only audit log of one data directory.
pub struct AuditLog {
    paths: AuditPaths,
    opts: AuditOptions,
    /// First seq of each segment, oldest first; never empty.
    segment_firsts: Vec<u64>,
    /// Oldest retained record and the chain hash before it.
    first_seq: u64,
    first_prev_hash: [u8; HASH_LEN],
    /// The segment being appended to.
    active: File,
    active_path: PathBuf,
    /// Length of the active segment including `buf`.
    active_len: u64,
    /// Encoded frames not yet written to `active`.
    buf: Vec<u8>,
    /// Records were written since the last fsync.
    unsynced: bool,
    /// A segment was created since the last directory fsync.
    dir_sync_pending: bool,
    next_seq: u64,
    head_hash: [u8; HASH_LEN],
    batches: HashMap<String, Range<u64>>,
    signer: Signer,
    checkpoints: File,
    latest_checkpoint: Option<Checkpoint>,
    last_checkpoint_at: SystemTime,
    fsyncs: u64,
    /// A write or fsync failed; the files may not match the state above.
    poisoned: bool,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("dir", &self.paths.root)
            .field("first_seq", &self.first_seq)
            .field("next_seq", &self.next_seq)
            .field("segments", &self.segment_firsts.len())
            .finish_non_exhaustive()
    }
}

/// What a scan of one segment established.
struct Scan {
    next_seq: u64,
    head_hash: [u8; HASH_LEN],
    /// Bytes up to the end of the last complete batch.
    valid_len: usize,
    /// Why bytes after `valid_len` are not usable (`None`: the segment ends cleanly).
    damage: Option<String>,
}

impl AuditLog {
    /// Opens the audit log under `data_dir/audit`, creating the directories and the
    /// signing key on first use, and recovers from a crash: a torn or half-written tail
    /// of the last segment is truncated back to its last complete batch (logged as a
    /// warning), the head seq and hash and the batch-key table are rebuilt by scanning
    /// the segments, and deletions of an interrupted retention are finished.
    ///
    /// Fails with [`AuditError::Corrupt`] instead of repairing when the damage is not
    /// a crash artifact: a damaged segment other than the last, a missing segment, or
    /// records covered by the latest signed checkpoint that are gone.
    pub fn open(data_dir: &Path, opts: AuditOptions) -> Result<AuditLog, AuditError> {
        let paths = AuditPaths::new(data_dir);
        fs::create_dir_all(&paths.segments).ctx("creating", &paths.segments)?;
        let signer = Signer::load_or_create(&paths)?;
        let (checkpoints, latest) = open_checkpoints(&paths, &signer)?;
        let corrupt = |path: &Path, reason: String| AuditError::Corrupt {
            path: path.to_path_buf(),
            reason,
        };

        let (first_seq, first_prev_hash) = match &latest {
            Some(cp) => (cp.first_seq, cp.first_prev_hash),
            None => (0, ZERO_HASH),
        };
        let mut listed = list_segments(&paths)?;
        // Finish an interrupted retention: drop segments wholly below `first_seq`.
        let below = listed
            .iter()
            .rposition(|(first, _)| *first <= first_seq)
            .unwrap_or(0);
        for (first, path) in listed.drain(..below) {
            fs::remove_file(&path).ctx("removing", &path)?;
            tracing::info!(
                first_seq = first,
                "Removed a segment below the retention point."
            );
        }

        if listed.is_empty() {
            if let Some(cp) = &latest {
                return Err(corrupt(
                    &paths.segments,
                    format!(
                        "no segment files, but checkpoint signs up to seq {}",
                        cp.seq
                    ),
                ));
            }
            let path = paths.segment(0);
            let mut f = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&path)
                .ctx("creating", &path)?;
            f.write_all(&record::encode_header(0))
                .ctx("writing", &path)?;
            f.sync_all().ctx("syncing", &path)?;
            listed.push((0, path));
        }
        if listed[0].0 != first_seq {
            return Err(corrupt(
                &listed[0].1,
                format!(
                    "the oldest segment starts at seq {} but the log starts at seq {first_seq}",
                    listed[0].0
                ),
            ));
        }

        let mut batches = HashMap::new();
        let mut next_seq = first_seq;
        let mut head_hash = first_prev_hash;
        let last_index = listed.len() - 1;
        let mut active_len = 0;
        for (i, (first, path)) in listed.iter().enumerate() {
            if *first != next_seq {
                return Err(corrupt(
                    path,
                    format!(
                        "segment starts at seq {first}, but the previous one ends before seq {next_seq}"
                    ),
                ));
            }
            let bytes = read_file(path)?;
            let is_last = i == last_index;
            if bytes.len() < HEADER_LEN && is_last {
                // Created just before a crash: write the header again.
                tracing::warn!(path = %path.display(), bytes = bytes.len(), "Rewrote a torn segment header.");
                let mut f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .ctx("opening", path)?;
                f.set_len(0).ctx("truncating", path)?;
                f.write_all(&record::encode_header(*first))
                    .ctx("writing", path)?;
                f.sync_all().ctx("syncing", path)?;
                active_len = HEADER_LEN as u64;
                continue;
            }
            match record::decode_header(&bytes) {
                Ok(h) if h == *first => {}
                Ok(h) => return Err(corrupt(path, format!("header says first seq {h}"))),
                Err(reason) => return Err(corrupt(path, format!("bad header: {reason}"))),
            }
            let scan = scan_segment(&bytes, next_seq, head_hash, is_last, &mut batches);
            if let Some(reason) = &scan.damage
                && !is_last
            {
                return Err(corrupt(path, reason.clone()));
            }
            if !is_last && scan.valid_len != bytes.len() {
                return Err(corrupt(path, "segment ends inside a batch".to_string()));
            }
            if let Some(cp) = &latest
                && is_last
                && cp.seq >= scan.next_seq
            {
                return Err(corrupt(
                    path,
                    format!(
                        "the log ends before seq {}, but checkpoint signs up to seq {}{}",
                        scan.next_seq,
                        cp.seq,
                        scan.damage
                            .as_ref()
                            .map_or(String::new(), |d| format!(" ({d})"))
                    ),
                ));
            }
            if scan.valid_len < bytes.len() {
                let dropped = bytes.len() - scan.valid_len;
                tracing::warn!(
                    path = %path.display(),
                    bytes = dropped,
                    reason = scan.damage.as_deref().unwrap_or("incomplete batch"),
                    "Truncated a torn tail of the audit log.",
                );
                let f = OpenOptions::new()
                    .write(true)
                    .open(path)
                    .ctx("opening", path)?;
                f.set_len(scan.valid_len as u64).ctx("truncating", path)?;
                f.sync_all().ctx("syncing", path)?;
            }
            next_seq = scan.next_seq;
            head_hash = scan.head_hash;
            active_len = scan.valid_len as u64;
        }
        sync_dir(&paths.segments)?;
        sync_dir(&paths.root)?;

        let (_, active_path) = listed[last_index].clone();
        let active = OpenOptions::new()
            .append(true)
            .open(&active_path)
            .ctx("opening", &active_path)?;
        // What a crashed process wrote may still sit only in the page cache.
        active.sync_data().ctx("syncing", &active_path)?;
        let last_checkpoint_at = latest.as_ref().map_or_else(SystemTime::now, |cp| {
            UNIX_EPOCH + Duration::from_nanos(cp.time_unix_nanos.max(0) as u64)
        });
        tracing::info!(
            first_seq,
            next_seq,
            segments = listed.len(),
            "Opened the audit log."
        );
        Ok(AuditLog {
            paths,
            opts,
            segment_firsts: listed.iter().map(|(f, _)| *f).collect(),
            first_seq,
            first_prev_hash,
            active,
            active_path,
            active_len,
            buf: Vec::new(),
            unsynced: false,
            dir_sync_pending: false,
            next_seq,
            head_hash,
            batches,
            signer,
            checkpoints,
            latest_checkpoint: latest,
            last_checkpoint_at,
            fsyncs: 0,
            poisoned: false,
        })
    }

    /// Appends one batch: one record per line, all with the same `batch_key`, `agent`
    /// and `ingest_ts_nanos`, the last one flagged as the batch end. Returns the seqs.
    ///
    /// The bytes are buffered and may reach the file in pieces; nothing is durable until
    /// [`sync`](Self::sync). A batch is all-or-nothing across crashes: recovery removes a
    /// batch whose end record is missing. A batch never spans two segments.
    ///
    /// A non-empty `batch_key` that was appended before is refused with
    /// [`AuditError::DuplicateBatch`]; an empty key is never deduplicated. An empty
    /// batch appends nothing and is not remembered.
    pub fn append_batch<L: AsRef<[u8]>>(
        &mut self,
        batch_key: &str,
        agent: &str,
        ingest_ts_nanos: i64,
        lines: &[L],
    ) -> Result<Range<u64>, AuditError> {
        self.check_usable()?;
        if !batch_key.is_empty()
            && let Some(seqs) = self.batches.get(batch_key)
        {
            return Err(AuditError::DuplicateBatch {
                key: batch_key.to_string(),
                seqs: seqs.clone(),
            });
        }
        if lines.is_empty() {
            return Ok(self.next_seq..self.next_seq);
        }
        let mut bytes = 0;
        for line in lines {
            record::check_lengths(agent, batch_key, line.as_ref())?;
            bytes += record::frame_len(agent, batch_key, line.as_ref());
        }
        if self.active_len > HEADER_LEN as u64
            && self.active_len + bytes > self.opts.segment_max_bytes
        {
            self.rotate()?;
        }
        let start = self.next_seq;
        let last = lines.len() - 1;
        for (i, line) in lines.iter().enumerate() {
            let fields = RecordFields {
                seq: self.next_seq,
                ingest_ts_nanos,
                batch_end: i == last,
                agent,
                batch_key,
                line: line.as_ref(),
            };
            self.head_hash = record::encode_frame(&mut self.buf, &self.head_hash, &fields);
            self.next_seq += 1;
        }
        self.active_len += bytes;
        self.unsynced = true;
        if !batch_key.is_empty() {
            self.batches
                .insert(batch_key.to_string(), start..self.next_seq);
        }
        if self.buf.len() >= WRITE_BUFFER_BYTES {
            self.write_out()?;
        }
        Ok(start..self.next_seq)
    }

    /// Writes buffered records to the segment file (no fsync), so readers see them.
    pub fn flush(&mut self) -> Result<(), AuditError> {
        self.check_usable()?;
        self.write_out()
    }

    /// Makes everything appended so far durable: writes the buffer, fsyncs the segment,
    /// and fsyncs the segments directory if a segment was created since the last sync.
    /// Does nothing when nothing changed.
    pub fn sync(&mut self) -> Result<(), AuditError> {
        self.check_usable()?;
        self.write_out()?;
        if self.unsynced {
            if let Err(e) = self.active.sync_data() {
                self.poisoned = true;
                return Err(e).ctx("syncing", &self.active_path);
            }
            self.fsyncs += 1;
            self.unsynced = false;
        }
        if self.dir_sync_pending {
            if let Err(e) = sync_dir(&self.paths.segments) {
                self.poisoned = true;
                return Err(e);
            }
            self.dir_sync_pending = false;
        }
        Ok(())
    }

    /// The data directory this log lives in (the parent of `audit/`).
    pub fn data_dir(&self) -> &Path {
        self.paths.root.parent().unwrap_or(&self.paths.root)
    }

    /// The seq the next record will get (the number of records ever appended).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The chain hash of the last record (or the hash before the first retained record
    /// when the log is empty).
    pub fn head_hash(&self) -> [u8; HASH_LEN] {
        self.head_hash
    }

    /// The oldest retained seq.
    pub fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The seqs of an earlier batch with this key, if it is retained.
    pub fn seen_batch(&self, batch_key: &str) -> Option<Range<u64>> {
        self.batches.get(batch_key).cloned()
    }

    /// The most recent signed checkpoint.
    pub fn latest_checkpoint(&self) -> Option<&Checkpoint> {
        self.latest_checkpoint.as_ref()
    }

    /// The Ed25519 public key that verifies the checkpoints.
    pub fn public_key(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.signer.public_key()
    }

    /// How many times segment data was fsynced since open.
    pub fn fsync_count(&self) -> u64 {
        self.fsyncs
    }

    /// How many records are not yet covered by a signed checkpoint.
    pub fn unsigned_records(&self) -> u64 {
        let signed_next = self.latest_checkpoint.as_ref().map_or(0, |cp| cp.seq + 1);
        self.next_seq.saturating_sub(signed_next)
    }

    /// How long until [`checkpoint_if_due`](Self::checkpoint_if_due) would sign by
    /// time alone; `None` when there is nothing unsigned.
    pub fn checkpoint_due_in(&self, now: SystemTime) -> Option<Duration> {
        if self.unsigned_records() == 0 {
            return None;
        }
        let elapsed = now
            .duration_since(self.last_checkpoint_at)
            .unwrap_or_default();
        Some(self.opts.checkpoint_interval.saturating_sub(elapsed))
    }

    /// Signs a checkpoint when `checkpoint_every_records` records are unsigned or
    /// unsigned records have waited `checkpoint_interval` since the last checkpoint.
    pub fn checkpoint_if_due(&mut self, now: SystemTime) -> Result<Option<Checkpoint>, AuditError> {
        let unsigned = self.unsigned_records();
        if unsigned == 0 {
            return Ok(None);
        }
        let elapsed = now
            .duration_since(self.last_checkpoint_at)
            .unwrap_or_default();
        if unsigned >= self.opts.checkpoint_every_records
            || elapsed >= self.opts.checkpoint_interval
        {
            return self.write_checkpoint_at(now);
        }
        Ok(None)
    }

    /// Syncs, then signs and appends a checkpoint of the current head (even when one
    /// of the same head exists). `None` when the log has no records.
    pub fn write_checkpoint(&mut self) -> Result<Option<Checkpoint>, AuditError> {
        self.write_checkpoint_at(SystemTime::now())
    }

    fn write_checkpoint_at(&mut self, now: SystemTime) -> Result<Option<Checkpoint>, AuditError> {
        self.check_usable()?;
        if self.next_seq == 0 {
            return Ok(None);
        }
        // A checkpoint must never sign records that are not on disk.
        self.sync()?;
        let cp = self.signer.sign(Unsigned {
            seq: self.next_seq - 1,
            head_hash: self.head_hash,
            time_unix_nanos: unix_nanos(now),
            prev_signature: self.latest_checkpoint.as_ref().map(|cp| cp.signature),
            first_seq: self.first_seq,
            first_prev_hash: self.first_prev_hash,
        });
        if let Err(e) =
            checkpoint::append_checkpoint(&mut self.checkpoints, &self.paths.checkpoints, &cp)
        {
            self.poisoned = true;
            return Err(e);
        }
        tracing::debug!(
            seq = cp.seq,
            first_seq = cp.first_seq,
            "Signed an audit checkpoint."
        );
        self.latest_checkpoint = Some(cp.clone());
        self.last_checkpoint_at = now;
        Ok(Some(cp))
    }

    /// Removes the segments whose records are all below `keep_from_seq` (never the
    /// segment being appended to). Before deleting anything it signs a checkpoint whose
    /// `first_seq` is the new oldest record and `first_prev_hash` the hash before it, so
    /// verification accepts exactly this removal. Returns how many segments were removed.
    ///
    /// Batch keys of removed records are forgotten.
    pub fn apply_retention(&mut self, keep_from_seq: u64) -> Result<usize, AuditError> {
        self.check_usable()?;
        let n = self
            .segment_firsts
            .windows(2)
            .take_while(|w| w[1] <= keep_from_seq)
            .count();
        if n == 0 {
            return Ok(0);
        }
        let new_first = self.segment_firsts[n];
        let prev_hash = self.hash_before(new_first)?;
        let (old_first, old_prev) = (self.first_seq, self.first_prev_hash);
        self.first_seq = new_first;
        self.first_prev_hash = prev_hash;
        if let Err(e) = self.write_checkpoint_at(SystemTime::now()) {
            (self.first_seq, self.first_prev_hash) = (old_first, old_prev);
            return Err(e);
        }
        let removed: Vec<u64> = self.segment_firsts.drain(..n).collect();
        self.batches.retain(|_, seqs| seqs.end > new_first);
        for first in removed {
            let path = self.paths.segment(first);
            fs::remove_file(&path).ctx("removing", &path)?;
        }
        sync_dir(&self.paths.segments)?;
        tracing::info!(
            removed = n,
            first_seq = new_first,
            "Applied audit retention."
        );
        Ok(n)
    }

    /// Syncs, writes a final checkpoint if records are unsigned, and closes the log.
    pub fn close(mut self) -> Result<(), AuditError> {
        self.sync()?;
        if self.unsigned_records() > 0 {
            self.write_checkpoint()?;
        }
        Ok(())
    }

    /// The stored hash of record `seq - 1`, read from the segment that holds it.
    fn hash_before(&mut self, seq: u64) -> Result<[u8; HASH_LEN], AuditError> {
        if seq == 0 {
            return Ok(ZERO_HASH);
        }
        self.write_out()?;
        let target = seq - 1;
        let idx = self.segment_firsts.partition_point(|&f| f <= target);
        let first = self.segment_firsts[idx.saturating_sub(1)];
        let path = self.paths.segment(first);
        let bytes = read_file(&path)?;
        for item in Frames::new(&bytes) {
            if let Item::Frame {
                body, stored_hash, ..
            } = item
                && record::body_seq(body) == Some(target)
            {
                return Ok(stored_hash);
            }
        }
        Err(AuditError::Corrupt {
            path,
            reason: format!("record {target} not found"),
        })
    }

    fn rotate(&mut self) -> Result<(), AuditError> {
        self.write_out()?;
        if let Err(e) = self.active.sync_data() {
            self.poisoned = true;
            return Err(e).ctx("syncing", &self.active_path);
        }
        self.fsyncs += 1;
        self.unsynced = false;
        let path = self.paths.segment(self.next_seq);
        let created = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(&record::encode_header(self.next_seq))
                    .map(|()| f)
            });
        match created {
            Ok(f) => {
                self.active = f;
                self.active_path = path;
                self.active_len = HEADER_LEN as u64;
                self.segment_firsts.push(self.next_seq);
                self.dir_sync_pending = true;
                tracing::debug!(first_seq = self.next_seq, "Started a new audit segment.");
                Ok(())
            }
            Err(e) => {
                self.poisoned = true;
                Err(e).ctx("creating", &path)
            }
        }
    }

    fn write_out(&mut self) -> Result<(), AuditError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        if let Err(e) = self.active.write_all(&self.buf) {
            self.poisoned = true;
            return Err(e).ctx("writing", &self.active_path);
        }
        self.buf.clear();
        Ok(())
    }

    fn check_usable(&self) -> Result<(), AuditError> {
        if self.poisoned {
            return Err(AuditError::Poisoned);
        }
        Ok(())
    }
}

impl Drop for AuditLog {
    /// Writes buffered records out (without fsync), as `BufWriter` would.
    fn drop(&mut self) {
        if !self.poisoned
            && let Err(e) = self.write_out()
        {
            tracing::error!(error = %e, "Could not write buffered audit records at drop.");
        }
    }
}

/// Scans the records of one segment (header already checked) starting from the given
/// chain state. Stops at the first damage. The result reflects only complete batches;
/// the chain hash is checked only for the last segment (`check_hashes`), whose tail
/// may hold garbage from a crash; older segments are left to `verify`.
fn scan_segment(
    bytes: &[u8],
    mut next_seq: u64,
    mut head_hash: [u8; HASH_LEN],
    check_hashes: bool,
    batches: &mut HashMap<String, Range<u64>>,
) -> Scan {
    let mut done = Scan {
        next_seq,
        head_hash,
        valid_len: HEADER_LEN,
        damage: None,
    };
    let mut batch_start = next_seq;
    for item in Frames::new(bytes) {
        let (offset, body, stored_hash, len) = match item {
            Item::Frame {
                offset,
                body,
                stored_hash,
                len,
            } => (offset, body, stored_hash, len),
            Item::Torn { offset } => {
                done.damage = Some(format!("incomplete record at byte {offset}"));
                return done;
            }
            Item::BadLength { offset, len } => {
                done.damage = Some(format!("impossible record length {len} at byte {offset}"));
                return done;
            }
        };
        let rec = match record::decode_body(body, stored_hash) {
            Ok(r) => r,
            Err(reason) => {
                done.damage = Some(format!("malformed record at byte {offset}: {reason}"));
                return done;
            }
        };
        if rec.seq != next_seq {
            done.damage = Some(format!(
                "record at byte {offset} has seq {}, expected {next_seq}",
                rec.seq
            ));
            return done;
        }
        if check_hashes && record::chain_hash(&head_hash, body) != stored_hash {
            done.damage = Some(format!("hash mismatch at seq {next_seq}"));
            return done;
        }
        head_hash = stored_hash;
        next_seq += 1;
        if rec.batch_end {
            if !rec.batch_key.is_empty() {
                batches.insert(rec.batch_key, batch_start..next_seq);
            }
            batch_start = next_seq;
            done.next_seq = next_seq;
            done.head_hash = head_hash;
            done.valid_len = offset + len;
        }
    }
    done
}

/// Opens `checkpoints.log` for appending, truncating a torn last line, and returns the
/// latest checkpoint, which must be signed by this log's key.
fn open_checkpoints(
    paths: &AuditPaths,
    signer: &Signer,
) -> Result<(File, Option<Checkpoint>), AuditError> {
    let path = &paths.checkpoints;
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e).ctx("reading", path),
    };
    let (lines, torn) = checkpoint::split_checkpoint_lines(&bytes);
    if torn > 0 {
        tracing::warn!(path = %path.display(), bytes = torn, "Truncated a torn checkpoint line.");
        let f = OpenOptions::new()
            .write(true)
            .open(path)
            .ctx("opening", path)?;
        f.set_len((bytes.len() - torn) as u64)
            .ctx("truncating", path)?;
        f.sync_all().ctx("syncing", path)?;
    }
    let latest = match lines.last() {
        Some((n, line)) => {
            let cp = checkpoint::parse_line(line).map_err(|reason| AuditError::Corrupt {
                path: path.clone(),
                reason: format!("checkpoint #{n}: {reason}"),
            })?;
            if !cp.verify_signature(&signer.public_key()) {
                return Err(AuditError::Corrupt {
                    path: path.clone(),
                    reason: format!("checkpoint #{n} is not signed by signing.key"),
                });
            }
            Some(cp)
        }
        None => None,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .ctx("opening", path)?;
    Ok((file, latest))
}
