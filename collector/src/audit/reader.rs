//! [`AuditReader`]: follows the audit log read-only from a given seq, for the indexer
//! and other followers, including records the writer appends later.
//!
//! The reader sees what the writer has written to the file, which may include records
//! not yet fsynced (and, after a crash, removed again by recovery). A follower that
//! must only see durable records reads up to the writer's committed seq
//! ([`AuditWriter::committed`](super::AuditWriter::committed)).

use std::fs::File;
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};

use super::error::{AuditError, IoContext};
use super::record::{self, AuditRecord, Frame, HEADER_LEN, LEN_PREFIX};
use super::segment::{AuditPaths, list_segments};

/// Follows the audit log of a data directory. Create it with [`read_records`].
///
/// [`next_record`](Self::next_record) returns `Ok(None)` when there is nothing more
/// *yet* (including when the last record is only partly written); call it again later.
/// The `Iterator` impl ends at that point, and iterating again resumes.
#[derive(Debug)]
pub struct AuditReader {
    paths: AuditPaths,
    next_seq: u64,
    current: Option<Open>,
    buf: Vec<u8>,
    /// A record at `from_seq` or later was returned, so no more skipping ahead.
    positioned: bool,
}

#[derive(Debug)]
struct Open {
    file: File,
    path: PathBuf,
    offset: u64,
}

/// Reads the audit log under `data_dir/audit` from `from_seq` on. When `from_seq` was
/// removed by retention, reading starts at the oldest retained record (each record
/// carries its seq, so the caller sees the jump).
pub fn read_records(data_dir: &Path, from_seq: u64) -> AuditReader {
    AuditReader {
        paths: AuditPaths::new(data_dir),
        next_seq: from_seq,
        current: None,
        buf: Vec::new(),
        positioned: false,
    }
}

impl AuditReader {
    /// The seq the next returned record will have (once it exists).
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The next record, or `Ok(None)` if it is not (completely) written yet.
    pub fn next_record(&mut self) -> Result<Option<AuditRecord>, AuditError> {
        loop {
            if self.current.is_none() && !self.open_segment()? {
                return Ok(None);
            }
            let Some(cur) = self.current.as_mut() else {
                return Ok(None);
            };
            match read_frame(cur, &mut self.buf)? {
                Some((rec, len)) => {
                    cur.offset += len;
                    if rec.seq < self.next_seq {
                        continue;
                    }
                    if rec.seq > self.next_seq {
                        return Err(AuditError::Corrupt {
                            path: cur.path.clone(),
                            reason: format!(
                                "expected seq {}, found seq {}",
                                self.next_seq, rec.seq
                            ),
                        });
                    }
                    self.next_seq += 1;
                    self.positioned = true;
                    return Ok(Some(rec));
                }
                None => {
                    // At the end of this segment. The writer starts the segment named
                    // `next_seq` only after this one is complete.
                    let next = self.paths.segment(self.next_seq);
                    if next != cur.path && next.exists() {
                        self.current = None;
                        continue;
                    }
                    // Still skipping ahead to `from_seq`: it may lie in a later segment
                    // (one whose first seq is at most `next_seq`).
                    if !self.positioned {
                        let segments = list_segments(&self.paths)?;
                        let later = segments.iter().rev().find(|(f, _)| *f <= self.next_seq);
                        if later.is_some_and(|(_, p)| *p != cur.path) {
                            self.current = None;
                            continue;
                        }
                    }
                    return Ok(None);
                }
            }
        }
    }

    /// Opens the segment holding `next_seq`. `false` when there is none yet.
    fn open_segment(&mut self) -> Result<bool, AuditError> {
        let segments = list_segments(&self.paths)?;
        let Some(first) = segments.first() else {
            return Ok(false);
        };
        if self.next_seq < first.0 {
            self.next_seq = first.0;
        }
        let Some((_, path)) = segments.iter().rev().find(|(f, _)| *f <= self.next_seq) else {
            return Ok(false);
        };
        let mut file = match File::open(path) {
            Ok(f) => f,
            // Removed by retention between listing and opening: list again next time.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).ctx("opening", path),
        };
        let mut header = [0u8; HEADER_LEN];
        let n = read_up_to(&mut file, &mut header).ctx("reading", path)?;
        if n < HEADER_LEN {
            return Ok(false);
        }
        record::decode_header(&header).map_err(|reason| AuditError::Corrupt {
            path: path.clone(),
            reason: format!("bad header: {reason}"),
        })?;
        self.current = Some(Open {
            file,
            path: path.clone(),
            offset: HEADER_LEN as u64,
        });
        Ok(true)
    }
}

impl Iterator for AuditReader {
    type Item = Result<AuditRecord, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

/// Reads the frame at `cur.offset`; `None` if it is not completely there (yet).
/// Returns the record and its frame length; the caller advances the offset.
fn read_frame(cur: &mut Open, buf: &mut Vec<u8>) -> Result<Option<(AuditRecord, u64)>, AuditError> {
    let (path, offset) = (cur.path.as_path(), cur.offset);
    let corrupt = |reason: String| AuditError::Corrupt {
        path: path.to_path_buf(),
        reason: format!("at byte {offset}: {reason}"),
    };
    let file = &mut cur.file;
    file.seek(SeekFrom::Start(offset)).ctx("seeking", path)?;
    buf.resize(LEN_PREFIX, 0);
    if read_up_to(file, buf).ctx("reading", path)? < LEN_PREFIX {
        return Ok(None);
    }
    let body_len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if body_len > record::MAX_BODY_LEN {
        return Err(corrupt(format!("impossible record length {body_len}")));
    }
    buf.resize(LEN_PREFIX + body_len + record::HASH_LEN, 0);
    let got = read_up_to(file, &mut buf[LEN_PREFIX..]).ctx("reading", path)?;
    if got < buf.len() - LEN_PREFIX {
        return Ok(None);
    }
    match record::split_frame(buf) {
        Frame::Complete {
            body,
            stored_hash,
            len,
        } => {
            let rec = record::decode_body(body, stored_hash).map_err(corrupt)?;
            Ok(Some((rec, len as u64)))
        }
        Frame::Incomplete => Ok(None),
        Frame::BadLength(n) => Err(corrupt(format!("impossible record length {n}"))),
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
