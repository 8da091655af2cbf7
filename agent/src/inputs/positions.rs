//! Read positions of tailed files: where reading resumes after a restart, exactly after
//! the last line that is in the disk buffer, so lines are neither skipped nor repeated,
//! across kill -9 at any instant.
//!
//! A file is known by its device and inode (so a renamed file keeps its position) plus a
//! fingerprint: the CRC32 of its first bytes (up to 256), so an inode reused by a new file
//! is not mistaken for the old one.
//!
//! # Positions and data are atomic
//!
//! A buffer record that holds file lines starts with a small header ([`encode_header`]:
//! `\0spoor-positions ` + JSON list of positions + `\n`) with the positions its batch
//! reached. The record is the unit of durability, so a batch's lines and its positions are
//! on disk together or not at all; the forwarder strips the header ([`split_header`])
//! before sending (an event line never starts with `\0`: control bytes are escaped).
//!
//! `DATA_DIR/positions.json` is a checkpoint: the positions of every record up to the record
//! ID `through`, replaced atomically (temporary file, fsync, rename, fsync of the directory)
//! after those records are fsynced. On start, the positions are those of
//! `positions.json`, overridden in record-ID order by the headers of the records above
//! `through` that are still in the buffer, acknowledged or not; the merged result is
//! written at once. No such record can have been deleted: a finished segment holding a
//! record above the checkpoint is kept until the checkpoint covers it
//! ([`BufferConfig::keep_from_id`](crate::buffer::BufferConfig::keep_from_id)). A kill
//! between a record's write and the checkpoint therefore neither repeats its lines (its
//! header is found) nor skips any (a record lost with a torn tail takes its positions with
//! it). Batches dropped by the full-buffer policy carry no record; their positions ride
//! on the checkpoint only, so a kill before it reads those (undelivered) lines again.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::AgentError;
use crate::identity::write_atomically;

/// File name inside the data directory.
pub const POSITIONS_FILE: &str = "positions.json";

/// Most bytes covered by a fingerprint.
pub(crate) const FINGERPRINT_BYTES: u64 = 256;

/// Device and inode of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct FileKey {
    pub(crate) dev: u64,
    pub(crate) ino: u64,
}

impl FileKey {
    pub(crate) fn of(meta: &std::fs::Metadata) -> Self {
        use std::os::unix::fs::MetadataExt;
        FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Where to resume reading one file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct FilePosition {
    pub(crate) key: FileKey,
    /// The path the file was found under (for people reading the file).
    pub(crate) path: PathBuf,
    /// Bytes consumed: reading resumes here.
    pub(crate) offset: u64,
    /// How many leading bytes the fingerprint covers.
    pub(crate) fp_len: u64,
    /// CRC32 of those bytes.
    pub(crate) fp_crc: u32,
    /// The buffer record holding the line that ends at `offset` (0 while not known: in a
    /// record's own header, and for positions from before this field).
    #[serde(default)]
    pub(crate) record: u64,
}

/// CRC32 of the first `len` bytes of `file`, or `None` when it has fewer.
pub(crate) fn fingerprint(file: &File, len: u64) -> std::io::Result<Option<u32>> {
    let mut buf = vec![0u8; usize::try_from(len).unwrap_or(0)];
    let mut filled = 0;
    while filled < buf.len() {
        match file.read_at(&mut buf[filled..], filled as u64)? {
            0 => return Ok(None),
            n => filled += n,
        }
    }
    Ok(Some(crc32fast::hash(&buf)))
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    version: u32,
    /// Positions of every record up to this ID are included.
    #[serde(default)]
    through: u64,
    files: Vec<FilePosition>,
}

/// Start of a record header.
const HEADER_PREFIX: &[u8] = b"\0spoor-positions ";

/// The header a buffer record starts with when its batch holds file lines.
pub(crate) fn encode_header(positions: &[FilePosition]) -> Vec<u8> {
    let mut out = HEADER_PREFIX.to_vec();
    // Serializing plain structs of numbers and strings cannot fail.
    out.extend_from_slice(&serde_json::to_vec(positions).unwrap_or_else(|_| b"[]".to_vec()));
    out.push(b'\n');
    out
}

/// Splits a record's content into the positions of its header (if it has one) and the
/// lines. A header that does not parse yields no positions (its lines are still sent).
pub(crate) fn split_header(content: &[u8]) -> (Option<Vec<FilePosition>>, &[u8]) {
    // Only this header: a record's other headers (`crate::batch_record`) stay.
    if !content.starts_with(HEADER_PREFIX) {
        return (None, content);
    }
    let end = content
        .iter()
        .position(|&b| b == b'\n')
        .map_or(content.len(), |i| i + 1);
    let positions = content[..end]
        .strip_prefix(HEADER_PREFIX)
        .and_then(|json| serde_json::from_slice(json).ok());
    (positions, &content[end..])
}

/// The positions of all files, as last persisted.
#[derive(Debug)]
pub(crate) struct Positions {
    path: PathBuf,
    files: HashMap<FileKey, FilePosition>,
    through: u64,
}

impl Positions {
    /// Loads `data_dir/positions.json` (empty when absent).
    pub(crate) fn load(data_dir: &Path) -> Result<Self, AgentError> {
        let path = data_dir.join(POSITIONS_FILE);
        let stored = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| AgentError::Io {
                path: path.clone(),
                source: std::io::Error::other(e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Stored::default(),
            Err(source) => return Err(AgentError::Io { path, source }),
        };
        Ok(Positions {
            path,
            files: stored.files.into_iter().map(|p| (p.key, p)).collect(),
            through: stored.through,
        })
    }

    /// Positions of every record up to this ID are in the checkpoint.
    pub(crate) fn through(&self) -> u64 {
        self.through
    }

    /// The checkpointed position of one file.
    pub(crate) fn get(&self, key: &FileKey) -> Option<&FilePosition> {
        self.files.get(key)
    }

    /// Drops a file's position from memory (the next commit writes the file without it).
    pub(crate) fn forget(&mut self, key: &FileKey) {
        self.files.remove(key);
    }

    /// A copy of every position, for the file input to resume from.
    pub(crate) fn snapshot(&self) -> HashMap<FileKey, FilePosition> {
        self.files.clone()
    }

    /// Records newer positions, which cover every record up to `through` (each must
    /// already be durable in the buffer), and persists them.
    pub(crate) fn commit(
        &mut self,
        updates: impl IntoIterator<Item = FilePosition>,
        through: u64,
    ) -> Result<(), AgentError> {
        let mut changed = through > self.through;
        self.through = self.through.max(through);
        for p in updates {
            if self.files.get(&p.key) != Some(&p) {
                self.files.insert(p.key, p);
                changed = true;
            }
        }
        if !changed {
            return Ok(());
        }
        let mut files: Vec<_> = self.files.values().cloned().collect();
        files.sort_by_key(|p| (p.key.dev, p.key.ino));
        let stored = Stored {
            version: 1,
            through: self.through,
            files,
        };
        let json = serde_json::to_vec_pretty(&stored).map_err(|e| AgentError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomically(&self.path, &json).map_err(|source| AgentError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

/// Whether `file` is the file `pos` describes and can resume at `pos.offset`.
pub(crate) fn resumable(file: &File, len: u64, pos: &FilePosition) -> bool {
    len >= pos.offset
        && (pos.fp_len == 0
            || matches!(fingerprint(file, pos.fp_len), Ok(Some(crc)) if crc == pos.fp_crc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_persists_and_reloads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = Positions::load(dir.path()).expect("empty");
        let pos = FilePosition {
            key: FileKey { dev: 1, ino: 2 },
            path: "/x".into(),
            offset: 10,
            fp_len: 5,
            fp_crc: 7,
            record: 0,
        };
        p.commit([pos.clone()], 7).expect("commit");
        let again = Positions::load(dir.path()).expect("load");
        assert_eq!(again.snapshot().get(&pos.key), Some(&pos));
        assert_eq!(again.through(), 7);
    }

    #[test]
    fn header_round_trips_and_plain_content_has_none() {
        let pos = FilePosition {
            key: FileKey { dev: 1, ino: 2 },
            path: "/var/log/a b\n.log".into(),
            offset: 10,
            fp_len: 5,
            fp_crc: 7,
            record: 0,
        };
        let mut content = encode_header(std::slice::from_ref(&pos));
        content.extend_from_slice(b"ts=1 msg=x\n");
        let (found, lines) = split_header(&content);
        assert_eq!(found, Some(vec![pos]));
        assert_eq!(lines, b"ts=1 msg=x\n");
        assert_eq!(split_header(b"ts=1 msg=x\n"), (None, &b"ts=1 msg=x\n"[..]));
        // Other headers are `batch_record`'s to read.
        assert_eq!(
            split_header(b"\0junk\nmsg=y\n"),
            (None, &b"\0junk\nmsg=y\n"[..])
        );
    }

    #[test]
    fn fingerprint_guards_inode_reuse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello world\n").expect("write");
        let file = File::open(&path).expect("open");
        let crc = fingerprint(&file, 5).expect("read").expect("long enough");
        let pos = FilePosition {
            key: FileKey { dev: 0, ino: 0 },
            path: path.clone(),
            offset: 12,
            fp_len: 5,
            fp_crc: crc,
            record: 0,
        };
        assert!(resumable(&file, 12, &pos));
        std::fs::write(&path, b"HELLO world\n").expect("write");
        let file = File::open(&path).expect("open");
        assert!(!resumable(&file, 12, &pos));
    }
}
