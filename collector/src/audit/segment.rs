//! Where the audit files live under the data directory, how segment files are named,
//! and walking the records of one segment held in memory.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use super::error::{AuditError, IoContext};
use super::record::{self, Frame, HEADER_LEN};

/// Paths of the audit files under a data directory.
#[derive(Debug, Clone)]
pub(crate) struct AuditPaths {
    /// `DIR/audit`
    pub root: PathBuf,
    /// `DIR/audit/segments`
    pub segments: PathBuf,
    /// `DIR/audit/checkpoints.log`
    pub checkpoints: PathBuf,
    /// `DIR/audit/signing.key`
    pub signing_key: PathBuf,
    /// `DIR/audit/public.key`
    pub public_key: PathBuf,
}

impl AuditPaths {
    pub(crate) fn new(data_dir: &Path) -> AuditPaths {
        let root = data_dir.join("audit");
        AuditPaths {
            segments: root.join("segments"),
            checkpoints: root.join("checkpoints.log"),
            signing_key: root.join("signing.key"),
            public_key: root.join("public.key"),
            root,
        }
    }

    /// The path of the segment whose first record is `first_seq`.
    pub(crate) fn segment(&self, first_seq: u64) -> PathBuf {
        self.segments.join(format!("{first_seq:020}.seg"))
    }
}

/// Parses a segment file name (`<20 digits>.seg`) into its first seq.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files, sorted by first seq. A missing directory has no segments.
pub(crate) fn list_segments(paths: &AuditPaths) -> Result<Vec<(u64, PathBuf)>, AuditError> {
    let dir = &paths.segments;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).ctx("listing", dir),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.ctx("listing", dir)?;
        let name = entry.file_name();
        if let Some(first) = name.to_str().and_then(parse_segment_name) {
            out.push((first, entry.path()));
        }
    }
    out.sort_by_key(|(first, _)| *first);
    Ok(out)
}

/// One step of walking a segment's bytes.
#[derive(Debug)]
pub(crate) enum Item<'a> {
    /// A whole frame at `offset`.
    Frame {
        offset: usize,
        body: &'a [u8],
        stored_hash: [u8; record::HASH_LEN],
        len: usize,
    },
    /// The bytes from `offset` on are an incomplete frame (a torn or growing tail).
    Torn { offset: usize },
    /// The frame at `offset` has an impossible length; nothing after it can be framed.
    BadLength { offset: usize, len: u32 },
}

/// Walks the frames of a segment's bytes after the header. Stops after a `Torn` or
/// `BadLength` item.
pub(crate) struct Frames<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Frames<'a> {
    /// Walks `buf`, a whole segment file including its header.
    pub(crate) fn new(buf: &'a [u8]) -> Frames<'a> {
        Frames {
            buf,
            pos: HEADER_LEN.min(buf.len()),
            done: false,
        }
    }
}

impl<'a> Iterator for Frames<'a> {
    type Item = Item<'a>;

    fn next(&mut self) -> Option<Item<'a>> {
        if self.done || self.pos >= self.buf.len() {
            return None;
        }
        let offset = self.pos;
        match record::split_frame(&self.buf[offset..]) {
            Frame::Complete {
                body,
                stored_hash,
                len,
            } => {
                self.pos += len;
                Some(Item::Frame {
                    offset,
                    body,
                    stored_hash,
                    len,
                })
            }
            Frame::Incomplete => {
                self.done = true;
                Some(Item::Torn { offset })
            }
            Frame::BadLength(len) => {
                self.done = true;
                Some(Item::BadLength { offset, len })
            }
        }
    }
}

/// Reads a whole file.
pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, AuditError> {
    fs::read(path).ctx("reading", path)
}

/// fsyncs a directory so that files created or removed in it stay so after a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    #[cfg(unix)]
    {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .ctx("syncing directory", dir)?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names() {
        let p = AuditPaths::new(Path::new("/d"));
        assert_eq!(
            p.segment(12),
            Path::new("/d/audit/segments/00000000000000000012.seg")
        );
        assert_eq!(parse_segment_name("00000000000000000012.seg"), Some(12));
        assert_eq!(parse_segment_name("0000000000000000012.seg"), None);
        assert_eq!(parse_segment_name("0000000000000000001x.seg"), None);
        assert_eq!(parse_segment_name("00000000000000000012.seg.tmp"), None);
        assert_eq!(parse_segment_name("99999999999999999999.seg"), None);
    }
}
